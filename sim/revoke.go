package sim

import (
	"fmt"
	"path"
	"slices"

	"storemesh/ledger"
)

// RevokeEvent makes manager or anchor By revoke the devices matching Node,
// keeping what By holds of them at that moment (ledger.DefaultCutoffs).
// With Fleet, the revocation carries the fleet key's statement (needed to
// revoke an anchor, or a device By may not revoke on its own).
type RevokeEvent struct {
	By    string `json:"by"`
	Node  string `json:"node"`
	Fleet bool   `json:"fleet,omitempty"`
}

// simRevocation is what the harness expects of one revocation it made:
// the revoked node, and per (scope, chain) the last seq kept (a chain not
// named is cut at 0).
type simRevocation struct {
	node int
	cuts map[[2]string]uint64
}

// checkRevoke validates a revoke event. The harness judges what is
// expected itself and assumes no revoker is revoked (a revoker's own
// revocation would then need the ledger's voiding rule): a node may not
// be both.
func (sc *Scenario) checkRevoke(where string, r *RevokeEvent) []error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf("%s: "+f, append([]any{where}, a...)...)) }
	by := sc.match(r.By)
	if len(by) != 1 {
		bad("revoke: \"by\" %q must match exactly one node", r.By)
	} else if role := sc.nodes[by[0]].role; role != ledger.RoleManager && role != ledger.RoleAnchor {
		bad("revoke: %s is a %s; only managers and anchors revoke", r.By, role)
	}
	targets := sc.match(r.Node)
	if len(targets) == 0 {
		bad("revoke: %q matches no node", r.Node)
	}
	for _, e := range sc.Events {
		if e.Revoke == nil {
			continue
		}
		for _, i := range sc.match(e.Revoke.Node) {
			if ok, _ := path.Match(r.By, sc.nodes[i].name); ok {
				bad("revoke: %s revokes but is revoked too (the harness does not model a revoked revoker)", r.By)
			}
		}
	}
	return errs
}

// revoke makes by revoke every node of targets through the ledger, as
// POST /v1/devices/{id}/revoke does, and records what every replica is
// then expected to drop.
func (w *world) revoke(by *node, targets []int, fleet bool) {
	if !by.alive {
		return
	}
	for _, i := range targets {
		t := w.nodes[i]
		cuts := by.l.DefaultCutoffs(t.dev.ID())
		if cuts == nil {
			cuts = []ledger.Cutoff{}
		}
		b := &ledger.DeviceRevoked{Device: t.dev.ID(), Reason: "sim", Cert: t.dev.Cert.Encode(), Cutoffs: cuts}
		if fleet {
			sig, err := ledger.SignRevocation(w.fleet.Key, b.Device, cuts)
			if err != nil {
				w.fatal("sign a revocation: %v", err)
				return
			}
			b.FleetSig = sig
		}
		if !w.append(by, ledger.FleetScope, ledger.KindDeviceRevoked, b, nil) {
			continue // counted as a workload failure
		}
		r := &simRevocation{node: i, cuts: map[[2]string]uint64{}}
		for _, c := range cuts {
			r.cuts[[2]string{c.Store, c.Chain}] = c.Seq
		}
		if w.revoked == nil {
			w.revoked = map[string][]*simRevocation{}
		}
		w.revoked[t.dev.ID()] = append(w.revoked[t.dev.ID()], r)
	}
}

// isRevoked reports whether the harness revoked node n.
func (w *world) isRevoked(n *node) bool { return len(w.revoked[n.dev.ID()]) > 0 }

// excluded reports whether the op of chain device at seq in scope lies past
// a revocation's cut-off: every replica must then drop it.
func (w *world) excluded(scope, device string, seq uint64) bool {
	for _, r := range w.revoked[ledger.ChainOwner(device)] {
		if seq > r.cuts[[2]string{scope, device}] {
			return true
		}
	}
	return false
}

// keptSeq is the highest seq of device's chain in scope a replica is
// expected to hold when s were acknowledged.
func (w *world) keptSeq(scope, device string, s uint64) uint64 {
	rs := w.revoked[ledger.ChainOwner(device)]
	for _, r := range rs {
		s = min(s, r.cuts[[2]string{scope, device}])
	}
	return s
}

// RevokedStats is what the run's revocations did.
type RevokedStats struct {
	Devices          []string `json:"devices"`            // node names, sorted
	Dropped          int      `json:"dropped"`            // acknowledged ops past a cut-off
	RefusedOnArrival uint64   `json:"refused_on_arrival"` // device_revoked rejections, summed over the replicas
}

func (w *world) countRevoked() {
	if len(w.revoked) == 0 {
		return
	}
	rv := &RevokedStats{}
	for _, n := range w.nodes {
		if w.isRevoked(n) {
			rv.Devices = append(rv.Devices, n.spec.name)
		} else if n.alive {
			rv.RefusedOnArrival += n.l.Stats().Rejected[ledger.ReasonRevoked]
		}
	}
	slices.Sort(rv.Devices)
	for _, a := range w.acked {
		if w.excluded(a.store, a.device, a.seq) {
			rv.Dropped++
		}
	}
	w.rep.Revoked = rv
}
