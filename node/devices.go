package node

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"storemesh/ledger"
)

// Error codes of the device routes.
const (
	CodeUnknownDevice      = "unknown_device"
	CodeRevokeNotAllowed   = "revocation_not_allowed"
	CodeAlreadyRevoked     = "already_revoked"
	CodeBadFleetStatement  = "bad_fleet_statement"
	maxRevokeReasonPayload = 500
)

// deviceView is GET /v1/devices/{id}: a device this replica holds a
// certificate of, its chains here and its revocation, if any.
type deviceView struct {
	Device  string                `json:"device"`
	Name    string                `json:"name"`
	Store   string                `json:"store"`
	Role    ledger.Role           `json:"role"`
	Chains  []ledger.Cutoff       `json:"chains"` // highest contiguous seq of each of its chains held here: the default cut-offs
	Revoked *ledger.RevokedDevice `json:"revoked"`
	// Ops is how many of its ops this replica holds (every chain);
	// Forked, whether some chain of it is flagged; LastContact, when
	// this node last heard from it directly (null: never, or only
	// through other peers).
	Ops         uint64     `json:"ops"`
	Forked      bool       `json:"forked"`
	LastContact *time.Time `json:"last_contact"`
}

func (n *Node) device(id string) (deviceView, error) {
	return n.newDeviceViews().view(id)
}

// deviceViews reads once what every device's view needs (revocations,
// forks, peers), so listing n devices costs one read of each, not n.
type deviceViews struct {
	n       *Node
	revoked map[string]ledger.RevokedDevice
	forked  map[string]bool
	contact map[string]time.Time
}

func (n *Node) newDeviceViews() *deviceViews {
	d := &deviceViews{n: n, revoked: map[string]ledger.RevokedDevice{}, forked: map[string]bool{}, contact: map[string]time.Time{}}
	for _, r := range n.l.Revocations() {
		d.revoked[r.Device] = r
	}
	for _, f := range n.l.Forks() {
		d.forked[ledger.ChainOwner(f.Device)] = true
	}
	for _, p := range n.mesh().Peers() {
		if !p.LastSync.IsZero() {
			d.contact[p.ID] = p.LastSync.UTC()
		}
	}
	return d
}

func (d *deviceViews) view(id string) (deviceView, error) {
	certs := d.n.l.Certificate(id)
	if len(certs) == 0 {
		return deviceView{}, apiErr(CodeUnknownDevice, "no certificate of device %q on this replica", id)
	}
	c := certs[len(certs)-1]
	v := deviceView{Device: id, Name: c.Name, Store: c.Store, Role: c.Role, Chains: d.n.l.DefaultCutoffs(id), Forked: d.forked[id]}
	if v.Chains == nil {
		v.Chains = []ledger.Cutoff{}
	}
	if r, ok := d.revoked[id]; ok {
		v.Revoked = &r
	}
	for _, c := range v.Chains {
		v.Ops += c.Seq
	}
	if t, ok := d.contact[id]; ok {
		v.LastContact = &t
	}
	return v, nil
}

// handleListDevices is GET /v1/devices: every device this replica holds a
// certificate of (the fleet's enrolment bounds the list), by id.
func (n *Node) handleListDevices(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r.URL.Query(), "store"); err != nil {
		return err
	}
	store := r.URL.Query().Get("store")
	out := []deviceView{}
	views := n.newDeviceViews()
	seen := map[string]bool{}
	for _, c := range n.l.Certificates() {
		if seen[c.Device] || (store != "" && c.Store != store) {
			continue
		}
		seen[c.Device] = true
		v, err := views.view(c.Device)
		if err != nil {
			continue // its certificate went between the two reads
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
	return nil
}

func (n *Node) handleGetDevice(w http.ResponseWriter, r *http.Request) error {
	v, err := n.device(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

type revokeReq struct {
	Reason string `json:"reason"`
	// Cutoff, when given, is every chain kept (any other chain of the
	// device is cut at 0); chain defaults to the device id. Default: each
	// chain's highest seq held here.
	Cutoff []ledger.Cutoff `json:"cutoff"`
	// FleetStatement is the fleet key's signature over the device and the
	// cut-offs (storemesh revoke --fleet), base64: the fleet's authority.
	FleetStatement string `json:"fleet_statement"`
}

// handleRevoke issues a device.revoked op (managers and anchors).
func (n *Node) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var req revokeReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	if n.self.Role == ledger.RoleTerminal {
		return apiErr(CodeRoleNotAllowed, "a terminal may not revoke devices; ask a manager or HQ")
	}
	if req.Reason == "" {
		return apiErr(CodeMissingField, "reason is required")
	}
	if len(req.Reason) > maxRevokeReasonPayload {
		return apiErr(CodeFieldTooLong, "reason is %d bytes; the limit is %d", len(req.Reason), maxRevokeReasonPayload)
	}
	if _, err := n.device(id); err != nil {
		return err
	}
	lr := ledger.RevokeRequest{Device: id, Reason: req.Reason}
	if req.Cutoff != nil {
		lr.Cutoffs = make([]ledger.Cutoff, 0, len(req.Cutoff))
		for _, c := range req.Cutoff {
			if c.Chain == "" {
				c.Chain = id
			}
			lr.Cutoffs = append(lr.Cutoffs, c)
		}
	}
	if req.FleetStatement != "" {
		sig, err := base64.StdEncoding.DecodeString(req.FleetStatement)
		if err != nil || len(sig) != 64 {
			return apiErr(CodeBadFleetStatement, "fleet_statement must be the base64 of a 64-byte signature (storemesh revoke --fleet)")
		}
		lr.FleetSig = sig
	}
	o, err := n.l.Revoke(context.WithoutCancel(r.Context()), lr)
	switch {
	case errors.Is(err, ledger.ErrAlreadyRevoked):
		return &apiError{Code: CodeAlreadyRevoked, Message: "device " + id + " is already revoked", Err: err}
	case ledger.RejectReason(err) == ledger.ReasonRevokeAuthority:
		code := CodeRevokeNotAllowed
		if lr.FleetSig != nil {
			code = CodeBadFleetStatement
		}
		return &apiError{Code: code, Message: err.Error(), Err: err}
	case ledger.RejectReason(err) == ledger.ReasonBody:
		return &apiError{Code: CodeBadJSON, Message: "cutoff: " + err.Error(), Err: err}
	case err != nil:
		return err
	}
	n.log.Warn("device revoked", "device", id, "reason", req.Reason, "op", o.ID())
	v, _ := n.device(id)
	writeJSON(w, http.StatusCreated, map[string]any{"op_id": o.ID(), "device": v})
	return nil
}
