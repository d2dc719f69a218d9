package ledger

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"storemesh/crdt"
)

// Revocation (DESIGN §6): a device.revoked op names the revoked device, its
// certificate and, per chain of that device, a cut-off in the device's own
// sequence. The device's ops past the cut-off are excluded from the state,
// the version vectors, the digests and what sync serves, and refused when
// they arrive; everything up to it stays. Nothing here depends on a time an
// author picks, so every replica holding the same ops excludes the same
// ones, whatever the order they arrived in.
//
// Who may revoke whom (least privilege), judged from the op alone:
//
//	author            terminal of     manager of    manager of     anchor
//	                  its own store   its store     another store
//	manager           yes             no            no             no
//	anchor            yes (any store) yes           yes            no
//	fleet statement   yes             yes           yes            yes
//
// A fleet statement is the fleet key's signature over the revoked device
// and the cut-offs (SignRevocation), carried in the op by any manager or
// anchor; its authority is the fleet's, not the carrier's.
//
// Body version 1 (a device id and a reason, no certificate, no cut-offs)
// still decodes, is stored and relayed, but revokes nothing: it cannot be
// judged offline (who the device is, what its author may revoke) nor
// applied identically (it names no cut-off). No released build issued one.

// revokedVersion is the body version of device.revoked this build writes.
const revokedVersion = 2

// Limits on a revocation body.
const (
	MaxCutoffs      = 1024 // chains of the revoked device named in one revocation
	maxRevokeReason = 500
)

// ErrAlreadyRevoked refuses a revocation of a device that is revoked.
var ErrAlreadyRevoked = errors.New("ledger: device is already revoked")

// ReasonRevokeAuthority refuses a revocation its author may not make
// (DESIGN §6: a manager revokes its own store's terminals; anchors and
// managers of other stores need an anchor or the fleet's statement).
const ReasonRevokeAuthority Reason = "revocation_not_allowed"

// Cutoff is the last included seq of one chain of a revoked device: its
// ops in Store's scope on chain Chain (the device id, or an epoch of it,
// see ChainID) with a higher seq are excluded. A chain of the device that
// a revocation does not name is cut at 0.
type Cutoff struct {
	Store string `cbor:"1,keyasint" json:"store"`
	Chain string `cbor:"2,keyasint" json:"chain"`
	Seq   uint64 `cbor:"3,keyasint" json:"seq"`
}

// DeviceRevoked revokes a device fleet-wide (body version 2; version 1 had
// only Device and Reason).
type DeviceRevoked struct {
	Device  string   `cbor:"1,keyasint" json:"device"`
	Reason  string   `cbor:"2,keyasint,omitempty" json:"reason,omitempty"`
	Cert    []byte   `cbor:"3,keyasint,omitempty" json:"-"`                 // the revoked device's certificate, encoded
	Cutoffs []Cutoff `cbor:"4,keyasint,omitempty" json:"cutoffs,omitempty"` // sorted by (store, chain), one per chain
	// FleetSig, when set, is the fleet key's signature over (fleet,
	// device, cut-offs): the fleet's authority, whoever carries it.
	FleetSig []byte `cbor:"5,keyasint,omitempty" json:"-"`
}

func (b *DeviceRevoked) validate() error { return b.validateVersion(revokedVersion) }

func (b *DeviceRevoked) validateVersion(v uint16) error {
	if b.Device == "" || len(b.Device) > 128 || ChainOwner(b.Device) != b.Device {
		return fmt.Errorf("device id missing")
	}
	if len(b.Reason) > maxRevokeReason {
		return fmt.Errorf("reason longer than %d bytes", maxRevokeReason)
	}
	if v < 2 {
		return nil
	}
	c, err := DecodeCertificate(b.Cert)
	if err != nil {
		return fmt.Errorf("revoked device's certificate: %v", err)
	}
	if c.Device != b.Device {
		return fmt.Errorf("certificate of %s for a revocation of %s", c.Device, b.Device)
	}
	if len(b.Cutoffs) > MaxCutoffs {
		return fmt.Errorf("%d cut-offs (max %d)", len(b.Cutoffs), MaxCutoffs)
	}
	for i, k := range b.Cutoffs {
		if k.Store != FleetScope && !ValidStoreID(k.Store) {
			return fmt.Errorf("cut-off %d: bad store %q", i+1, k.Store)
		}
		if !validChainID(k.Chain) || ChainOwner(k.Chain) != b.Device {
			return fmt.Errorf("cut-off %d: chain %q is not one of %s", i+1, k.Chain, b.Device)
		}
		if i > 0 && compareCutoff(b.Cutoffs[i-1], k) >= 0 {
			return fmt.Errorf("cut-offs not sorted by (store, chain) or repeated")
		}
	}
	if len(b.FleetSig) != 0 && len(b.FleetSig) != ed25519.SignatureSize {
		return fmt.Errorf("fleet statement is %d bytes", len(b.FleetSig))
	}
	return nil
}

func compareCutoff(a, b Cutoff) int {
	return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.Chain, b.Chain))
}

// SortCutoffs puts cut-offs in the order a revocation body needs.
func SortCutoffs(cs []Cutoff) { slices.SortFunc(cs, compareCutoff) }

// revocationStatement is what a fleet statement signs.
func revocationStatement(fleetID, device string, cutoffs []Cutoff) ([]byte, error) {
	if len(cutoffs) == 0 {
		cutoffs = []Cutoff{} // nil and empty sign the same
	}
	b, err := crdt.Marshal(struct {
		_       struct{} `cbor:",toarray"`
		Fleet   string
		Device  string
		Cutoffs []Cutoff
	}{Fleet: fleetID, Device: device, Cutoffs: cutoffs})
	if err != nil {
		return nil, err
	}
	return append([]byte("storemesh-revoke-v1\x00"), b...), nil
}

// SignRevocation makes the fleet's statement that device is revoked with
// cutoffs (sorted: SortCutoffs), for DeviceRevoked.FleetSig.
func SignRevocation(k *FleetKey, device string, cutoffs []Cutoff) ([]byte, error) {
	msg, err := revocationStatement(k.ID(), device, cutoffs)
	if err != nil {
		return nil, fmt.Errorf("ledger: encode revocation statement: %w", err)
	}
	return ed25519.Sign(k.Private, msg), nil
}

// Authority ranks, strongest first: they order the judgement of
// revocations (judgeRevocations).
const (
	rankFleet = iota
	rankAnchor
	rankManager
)

// judgeAuthority checks that author may make revocation b and returns its
// rank. It needs nothing but the fleet key, the author's certificate and
// the op: every replica judges it the same.
func judgeAuthority(fleet ed25519.PublicKey, author *Certificate, b *DeviceRevoked) (int, error) {
	target, err := DecodeCertificate(b.Cert)
	if err != nil {
		return 0, err
	}
	if err := target.Verify(fleet, time.Time{}); err != nil {
		return 0, reject(ReasonCertInvalid, "revoked device's certificate: %v", err)
	}
	if len(b.FleetSig) > 0 {
		msg, err := revocationStatement(FleetID(fleet), b.Device, b.Cutoffs)
		if err != nil || !ed25519.Verify(fleet, msg, b.FleetSig) {
			return 0, reject(ReasonRevokeAuthority, "the fleet statement revoking %s does not verify", b.Device)
		}
		return rankFleet, nil
	}
	switch {
	case author.Role == RoleAnchor && target.Role != RoleAnchor:
		return rankAnchor, nil
	case author.Role == RoleAnchor:
		return 0, reject(ReasonRevokeAuthority, "an anchor may not revoke anchor %s: it needs the fleet's statement", b.Device)
	case author.Role == RoleManager && target.Role == RoleTerminal && target.Store == author.Store:
		return rankManager, nil
	case author.Role == RoleManager:
		return 0, reject(ReasonRevokeAuthority, "a manager of %s may revoke only its own store's terminals, not %s %s of %s: it needs an anchor or the fleet's statement",
			author.Store, target.Role, b.Device, target.Store)
	default:
		return 0, reject(ReasonRole, "a %s may not revoke devices", author.Role)
	}
}

// revocation is one placed, durable device.revoked op of version 2 whose
// author had the authority to make it.
type revocation struct {
	chain  string // the author's chain id (op Device) in FleetScope
	seq    uint64
	hlc    crdt.Timestamp
	hash   Hash
	rank   int
	target *Certificate
	body   *DeviceRevoked
	cuts   map[chainKey]uint64
}

func (r *revocation) compare(o *revocation) int {
	return cmp.Or(cmp.Compare(r.rank, o.rank), r.hlc.Compare(o.hlc), cmp.Compare(r.chain, o.chain),
		cmp.Compare(r.seq, o.seq), slices.Compare(r.hash[:], o.hash[:]))
}

// RevokedDevice is a device some effective revocation covers.
type RevokedDevice struct {
	Device  string   `json:"device"`
	Name    string   `json:"name"`
	Store   string   `json:"store"`
	Role    Role     `json:"role"`
	Cutoffs []Cutoff `json:"cutoff"` // effective: the lowest of its revocations, per chain; chains not named are cut at 0
	Reason  string   `json:"reason,omitempty"`
	By      string   `json:"by"` // author of the first effective revocation, in judgement order
	Fleet   bool     `json:"fleet_statement,omitempty"`
	Op      string   `json:"op"` // that revocation's op id
}

// revoked is one device's effective revocation.
type revoked struct {
	cuts map[chainKey]uint64 // chains named by every effective revocation of the device; any other chain is cut at 0
	by   []*revocation       // judgement order
}

// revState is the ledger's revocation bookkeeping. Called under l.mu.
type revState struct {
	all     []*revocation
	devices map[string]*revoked // effective revocations by device
	// lens is the durable contiguous length of every chain, kept once the
	// first revocation became durable (before, it equals the version
	// vector); the version vector holds min(length, cut-off).
	lens  map[chainKey]uint64
	dirty bool // a revocation became durable: judge again after the batch
}

// cutOf returns the cut-off of chain (scope, chain) and whether its device
// is revoked. Called under l.mu.
func (l *Ledger) cutOf(scope, chain string) (uint64, bool) {
	if len(l.rv.devices) == 0 {
		return 0, false
	}
	d := l.rv.devices[ChainOwner(chain)]
	if d == nil {
		return 0, false
	}
	return d.cuts[chainKey{scope, chain}], true
}

// beyondCut reports whether seq of chain (scope, chain) lies past a
// revoked device's cut-off. Called under l.mu.
func (l *Ledger) beyondCut(scope, chain string, seq uint64) bool {
	c, ok := l.cutOf(scope, chain)
	return ok && seq > c
}

func revokedErr(o *Op, cut uint64) error {
	return reject(ReasonRevoked, "%s is revoked: its ops in %s past seq %d are excluded", ChainOwner(o.Device), o.Store, cut)
}

// admitRemote refuses a remote op past its device's cut-off, and a
// revocation its author may not make. Called under l.mu.
func (l *Ledger) admitRemote(p pendingOp) error {
	o := p.op
	if c, ok := l.cutOf(o.Store, o.Device); ok && o.Seq > c {
		return revokedErr(o, c)
	}
	if b, ok := p.body.(*DeviceRevoked); ok && o.BodyV >= revokedVersion {
		author, err := pickCert(l.certs[ChainOwner(o.Device)], o)
		if err != nil {
			return err
		}
		if _, err := judgeAuthority(l.cfg.Fleet, author, b); err != nil {
			return err
		}
	}
	return nil
}

// admitLocal is admitRemote for Append. Called under l.mu.
func (l *Ledger) admitLocal(store, chain string, seq uint64, b body) error {
	if c, ok := l.cutOf(store, chain); ok && seq > c {
		return reject(ReasonRevoked, "this device is revoked: its ops in %s past seq %d are excluded", store, c)
	}
	if rb, ok := b.(*DeviceRevoked); ok {
		if _, err := judgeAuthority(l.cfg.Fleet, l.cfg.Self, rb); err != nil {
			return err
		}
	}
	return nil
}

// includeDurable is materialise's hook: it keeps the chain lengths, notes
// durable revocations, and reports whether o is within its device's
// cut-off (false: o stays stored, as evidence, but is not materialised).
// Called under l.mu in commit order.
func (l *Ledger) includeDurable(p pendingOp) bool {
	o := p.op
	if b, ok := p.body.(*DeviceRevoked); ok && o.BodyV >= revokedVersion {
		l.noteRevocation(o, b)
	}
	if l.rv.lens != nil {
		k := chainKey{o.Store, o.Device}
		if o.Seq == l.rv.lens[k]+1 {
			l.rv.lens[k] = o.Seq
		}
	}
	return !l.beyondCut(o.Store, o.Device, o.Seq)
}

// newRevocation is the judged form of revocation op o, or nil when its
// author, by the certificates known (certs, by ChainOwner), may not make
// it: such an op revokes nothing.
func newRevocation(fleet ed25519.PublicKey, certs map[string][]*Certificate, o *Op, b *DeviceRevoked) *revocation {
	author, err := pickCert(certs[ChainOwner(o.Device)], o)
	if err != nil {
		return nil // stored before this build judged authority; revokes nothing
	}
	rank, err := judgeAuthority(fleet, author, b)
	if err != nil {
		return nil
	}
	target, _ := DecodeCertificate(b.Cert) // judgeAuthority decoded it
	r := &revocation{chain: o.Device, seq: o.Seq, hlc: o.HLC, hash: o.hash, rank: rank, target: target, body: b,
		cuts: make(map[chainKey]uint64, len(b.Cutoffs))}
	for _, c := range b.Cutoffs {
		r.cuts[chainKey{c.Store, c.Chain}] = c.Seq
	}
	return r
}

func (l *Ledger) noteRevocation(o *Op, b *DeviceRevoked) {
	r := newRevocation(l.cfg.Fleet, l.certs, o, b)
	if r == nil {
		return
	}
	if l.rv.lens == nil {
		l.rv.lens = make(map[chainKey]uint64, len(l.chains))
		for scope, vv := range l.vv {
			for d, s := range vv {
				l.rv.lens[chainKey{scope, d}] = s
			}
		}
	}
	l.rv.all = append(l.rv.all, r)
	l.rv.dirty = true
}

// judgeRevocations computes the effective revocations from every durable
// one, as a function of that set alone:
//
//  1. Revocations are taken in order of authority (fleet statement, anchor,
//     manager), then (hlc, author chain, seq, hash).
//  2. One whose own op lies past its author's cut-off, as set by the ones
//     already taken, is void: a revoked manager or anchor revokes no one
//     after its cut-off, however it dates its op.
//  3. If, once all are taken, an effective one lies past its author's
//     cut-off (a later one cut its author below it), it is dropped and the
//     judgement starts again without it; each round drops at least one, so
//     it ends.
//
// With the authority table, only a fleet statement can revoke a device
// that can revoke back, so rule 1 decides every cycle for the fleet.
func judgeRevocations(all []*revocation) map[string]*revoked {
	cands := slices.Clone(all)
	slices.SortFunc(cands, (*revocation).compare)
	for {
		devs := map[string]*revoked{}
		beyond := func(r *revocation) bool {
			d := devs[ChainOwner(r.chain)]
			return d != nil && r.seq > d.cuts[chainKey{FleetScope, r.chain}]
		}
		for _, r := range cands {
			if beyond(r) {
				continue // void
			}
			d := devs[r.body.Device]
			if d == nil {
				d = &revoked{cuts: maps2(r.cuts)}
				devs[r.body.Device] = d
			} else {
				for k, s := range d.cuts {
					if c, ok := r.cuts[k]; !ok {
						delete(d.cuts, k)
					} else if c < s {
						d.cuts[k] = c
					}
				}
			}
			d.by = append(d.by, r)
		}
		var keep []*revocation
		dropped := false
		for _, r := range cands {
			if d := devs[r.body.Device]; d != nil && slices.Contains(d.by, r) && beyond(r) {
				dropped = true
				continue
			}
			keep = append(keep, r)
		}
		if !dropped {
			return devs
		}
		cands = keep
	}
}

func maps2(m map[chainKey]uint64) map[chainKey]uint64 {
	out := make(map[chainKey]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// settleRevocations judges the revocations again after a batch made one
// durable and, when that changes which placed ops are included, rebuilds
// the version vectors and the state from the stored ops. Revocations are
// rare; the rebuild reads the whole log once. Called under l.mu, after a
// batch is materialised and before the next one is written.
func (l *Ledger) settleRevocations() {
	if !l.rv.dirty {
		return
	}
	l.rv.dirty = false
	old := l.rv.devices
	l.rv.devices = judgeRevocations(l.rv.all)
	changed := false
	for k := range l.rv.lens {
		d := ChainOwner(k.device)
		if old[d] == nil && l.rv.devices[d] == nil {
			continue
		}
		want := l.rv.lens[k]
		if c, ok := l.cutOf(k.scope, k.device); ok {
			want = min(want, c)
		}
		if l.vv[k.scope][k.device] != want {
			changed = true
			break
		}
	}
	l.dropHeldBeyondCut()
	if !changed {
		return
	}
	if err := l.rebuild(context.Background()); err != nil {
		l.failed = err
		l.log.Error("ledger: rebuilding the state after a revocation failed; writes stopped", "err", err)
		return
	}
	l.log.Warn("state rebuilt after a revocation", "revoked", len(l.rv.devices))
}

// dropHeldBeyondCut refuses held ops that a revocation put past their
// device's cut-off. Called under l.mu.
func (l *Ledger) dropHeldBeyondCut() {
	h := l.held
	for k := range h.ops {
		if !l.beyondCut(k.scope, k.device, k.seq) {
			continue
		}
		c, _ := l.cutOf(k.scope, k.device)
		for _, x := range h.take(k.chainKey, k.seq) {
			l.countReject(x.p.op, revokedErr(x.p.op, c))
		}
	}
}

// rebuild recomputes the durable version vectors and the state from the
// stored ops, leaving out every op past its device's cut-off. Called under
// l.mu with no batch being written.
func (l *Ledger) rebuild(ctx context.Context) error {
	st := newState()
	vv := map[string]crdt.VersionVector{}
	lens := map[chainKey]uint64{}
	err := l.scan(ctx, "/o", func(key string, val []byte) error {
		o, err := DecodeOp(val)
		if err != nil {
			return &CorruptError{Key: key, Err: err}
		}
		b, err := decodeStored(o)
		if err != nil {
			return &CorruptError{Key: key, Err: err}
		}
		k := chainKey{o.Store, o.Device}
		if o.Seq == lens[k]+1 {
			lens[k] = o.Seq
		}
		if l.beyondCut(o.Store, o.Device, o.Seq) {
			return nil
		}
		v := vv[o.Store]
		if v == nil {
			v = crdt.VersionVector{}
			vv[o.Store] = v
		}
		if o.Seq == v[o.Device]+1 {
			v[o.Device] = o.Seq
		}
		st.apply(o, b)
		return nil
	})
	if err != nil {
		return err
	}
	l.st, l.vv, l.rv.lens = st, vv, lens
	return nil
}

// clampLacks removes from a peer's vector what lies past cut-offs, so a
// replica never asks for ops it would refuse. Called under l.mu.
func (l *Ledger) clampLacks(scope string, theirs crdt.VersionVector) crdt.VersionVector {
	if len(l.rv.devices) == 0 {
		return theirs
	}
	var out crdt.VersionVector
	for d, s := range theirs {
		if c, ok := l.cutOf(scope, d); ok && s > c {
			if out == nil {
				out = theirs.Clone()
			}
			out[d] = c
		}
	}
	if out == nil {
		return theirs
	}
	return out
}

// Revoked reports whether device (a peer id) is revoked by an effective
// revocation.
func (l *Ledger) Revoked(device string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rv.devices[ChainOwner(device)] != nil
}

// Revocations lists the revoked devices, sorted by device.
func (l *Ledger) Revocations() []RevokedDevice {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]RevokedDevice, 0, len(l.rv.devices))
	for dev, d := range l.rv.devices {
		first := d.by[0]
		rd := RevokedDevice{Device: dev, Name: first.target.Name, Store: first.target.Store, Role: first.target.Role,
			Reason: first.body.Reason, By: ChainOwner(first.chain), Fleet: first.rank == rankFleet, Op: opID(first.hash)}
		for k, s := range d.cuts {
			rd.Cutoffs = append(rd.Cutoffs, Cutoff{Store: k.scope, Chain: k.device, Seq: s})
		}
		SortCutoffs(rd.Cutoffs)
		out = append(out, rd)
	}
	slices.SortFunc(out, func(a, b RevokedDevice) int { return cmp.Compare(a.Device, b.Device) })
	return out
}

func opID(h Hash) string { o := Op{hash: h}; return o.ID() }

// DefaultCutoffs returns, for every chain of device this replica holds, its
// highest contiguous seq: what a revocation issued here keeps.
func (l *Ledger) DefaultCutoffs(device string) []Cutoff {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Cutoff
	for scope, vv := range l.vv {
		for chain, s := range vv {
			if ChainOwner(chain) == device && s > 0 {
				out = append(out, Cutoff{Store: scope, Chain: chain, Seq: s})
			}
		}
	}
	SortCutoffs(out)
	return out
}

// RevokeRequest is what Revoke needs; Cutoffs nil means DefaultCutoffs.
type RevokeRequest struct {
	Device   string
	Reason   string
	Cutoffs  []Cutoff
	FleetSig []byte // optional fleet statement (SignRevocation)
}

// Revoke appends a revocation of req.Device signed by this device. It
// refuses a device it holds no certificate of (ReasonUnknownDevice), one
// already revoked (ErrAlreadyRevoked) and one this device may not revoke
// without the fleet's statement (ReasonRevokeAuthority).
func (l *Ledger) Revoke(ctx context.Context, req RevokeRequest) (*Op, error) {
	if l.cfg.Key == nil {
		return nil, ErrNoKey
	}
	l.mu.Lock()
	certs := slices.Clone(l.certs[req.Device])
	already := l.rv.devices[req.Device] != nil
	l.mu.Unlock()
	if len(certs) == 0 || ChainOwner(req.Device) != req.Device {
		return nil, reject(ReasonUnknownDevice, "no certificate of %s", req.Device)
	}
	if already {
		return nil, ErrAlreadyRevoked
	}
	cert := slices.MaxFunc(certs, func(a, b *Certificate) int { return cmp.Compare(a.Expiry, b.Expiry) })
	cuts := req.Cutoffs
	if cuts == nil {
		cuts = l.DefaultCutoffs(req.Device)
	}
	cuts = slices.Clone(cuts)
	SortCutoffs(cuts)
	b := &DeviceRevoked{Device: req.Device, Reason: req.Reason, Cert: cert.Encode(), Cutoffs: cuts, FleetSig: req.FleetSig}
	return l.Append(ctx, FleetScope, KindDeviceRevoked, b)
}
