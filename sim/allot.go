package sim

import (
	"errors"
	"fmt"
	"slices"

	"storemesh/ledger"
)

// Stock allotments (issue 14) in the simulator: a catalog entry with
// "allotted": true is marked allotted in every store at time 0 (allot.set
// by the store's first manager, else the first anchor) before its opening
// stock is received, so the receiving device holds those units. Every
// node runs the ledger's AllotReactor — the same code as the real node —
// after each frame it takes in and on each tick, and writes what it asks
// for through the harness's append (recorded, pushed, checked like any
// op). Sales the ledger refuses for want of units are counted under
// "allotment_exhausted" and, when a device of the same store held units
// at that moment (or the refusing device saw units at HQ), also under
// "allotment_exhausted_elsewhere": the price of safety.

// InvAllot: an allotted SKU is never oversold, and every replica of its
// store shows the same allotment.
const InvAllot = "allotment"

// Refusal reasons the allotment adds to Report.Ops.Refused.
const (
	refusedAllot          = "allotment_exhausted"
	refusedAllotElsewhere = "allotment_exhausted_elsewhere"
)

func (w *world) allotSKUs() []string {
	var out []string
	for _, c := range w.sc.Catalog {
		if c.Allotted {
			out = append(out, c.SKU)
		}
	}
	return out
}

// allotSetup marks the allotted SKUs of store st and gives every node its
// reactor. Runs in setup, a global event.
func (w *world) allotSetup(st string) {
	skus := w.allotSKUs()
	if len(skus) == 0 {
		return
	}
	if w.reactors == nil {
		w.reactors = make([]*ledger.AllotReactor, len(w.nodes))
		for i := range w.reactors {
			r, err := ledger.NewAllotReactor(ledger.ReactorConfig{})
			if err != nil {
				w.fatal("allot reactor: %v", err)
				return
			}
			w.reactors[i] = r
		}
	}
	author := -1
	for _, i := range w.byStore[st] {
		if w.nodes[i].spec.role == ledger.RoleManager {
			author = i
			break
		}
	}
	if author < 0 && len(w.anchors) > 0 {
		author = w.anchors[0]
	}
	if author < 0 {
		w.fatal("store %s: an allotted SKU needs a manager or an anchor to mark it", st)
		return
	}
	for _, sku := range skus {
		w.append(w.nodes[author], st, ledger.KindAllotSet, &ledger.AllotSet{SKU: sku, Allotted: true}, nil)
	}
}

// react runs n's reactor once and writes the ops it asks for.
func (w *world) react(n *node) {
	if w.reactors == nil || !n.alive || n.l == nil {
		return
	}
	scope := n.spec.store
	if n.spec.role == ledger.RoleAnchor {
		scope = ""
	}
	for _, in := range w.reactors[n.idx].Step(n.dev.Cert, n.l.Allotments(scope), n.ln.now) {
		w.append(n, in.Store, in.Kind, in.Body, nil)
	}
}

// allotRefused counts a sale refused for want of units, and whether units
// existed elsewhere: held by another running device of the store (its own
// view of its own rights, which never overstates them) or, as the refusing
// device saw, at HQ. Runs in n's lane, which holds every device of n's
// store.
func (w *world) allotRefused(n *node, store string, err error) {
	var ae *ledger.AllotmentError
	if !errors.As(err, &ae) {
		return
	}
	elsewhere := false
	for _, i := range w.byStore[store] {
		m := w.nodes[i]
		if m == n || !m.alive || m.l == nil {
			continue
		}
		if st, ok := m.l.Allotment(store, ae.SKU); ok && st.Rights(m.dev.ID()) > 0 {
			elsewhere = true
		}
	}
	for _, h := range ae.Elsewhere {
		if h.Role == ledger.RoleAnchor {
			elsewhere = true
		}
	}
	if elsewhere {
		n.ln.ops.Refused = incr(n.ln.ops.Refused, refusedAllotElsewhere)
	}
}

// checkAllot: on every replica of store sc, each allotted SKU's total is
// its on_hand and not negative, no device overspent, no oversell names
// it, and every replica shows the same allotment.
func (w *world) checkAllot(sc string, reps []*node) {
	if sc == ledger.FleetScope || len(w.allotSKUs()) == 0 {
		return
	}
	var ref string
	for k, n := range reps {
		sts := n.l.Allotments(sc)
		for i := range sts {
			st := &sts[i]
			st.Received = nil
			if oh := n.l.OnHand(sc, st.SKU); st.Total != oh || st.Total < 0 || len(st.Overspent) > 0 {
				w.fail(w.failure(InvAllot, sc, n.spec.name, "allotted "+st.SKU+": total = on_hand ≥ 0, nobody overspent",
					fmt.Sprintf("total %d, on_hand %d, overspent %v", st.Total, oh, st.Overspent)))
			}
		}
		if len(sts) != len(w.allotSKUs()) {
			w.fail(w.failure(InvAllot, sc, n.spec.name, fmt.Sprintf("%d allotted SKUs", len(w.allotSKUs())), fmt.Sprintf("%d", len(sts))))
		}
		for _, c := range n.l.Conflicts(sc) {
			// An over_refund (two partitioned terminals refunding one
			// line) is flagged for HQ but takes nothing from stock.
			if c.Kind == ledger.ConflictOversell && slices.Contains(w.allotSKUs(), c.SKU) {
				w.fail(w.failure(InvAllot, sc, n.spec.name, "no oversell of an allotted SKU", c.ID))
			}
		}
		got := fmt.Sprintf("%+v", sts)
		if k == 0 {
			ref = got
		} else if got != ref {
			w.fail(w.failure(InvAllot, sc, n.spec.name, "the allotment "+reps[0].spec.name+" shows", got))
		}
	}
}
