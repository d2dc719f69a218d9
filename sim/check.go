package sim

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	"storemesh/ledger"
)

// The invariants a run must keep (doc.go says why each matters).
const (
	InvConvergence  = "convergence"     // every replica of a scope has the same Digest
	InvLostAck      = "no-lost-ack"     // every acknowledged op is in every replica of its scope
	InvCountedOnce  = "counted-once"    // each replica's sale log has every acknowledged sale exactly once
	InvStock        = "stock-conserved" // OnHand equals the harness's own sum of acknowledged ops
	InvConflicts    = "same-conflicts"  // every replica of a scope lists the same conflicts
	InvForks        = "forks-flagged"   // equivocating devices are flagged on every replica, and only they
	InvWorkload     = "workload"        // an op the simulator built was refused for a reason it should not be
	InvHQAcked      = "hq-acknowledged" // every store device learns what HQ holds of its store (its "queued for HQ" drains)
	InvRevoked      = "revoked-dropped" // ops past a revoked device's cut-off are on no replica
	InvRunError     = "error"           // the run could not finish (Explore only)
	maxListedPerInv = 3
)

// Failure is one broken invariant: which, where, expected against got,
// and the seed that reproduces it.
type Failure struct {
	Scenario  string `json:"scenario"`
	Seed      uint64 `json:"seed"`
	Invariant string `json:"invariant"`
	Scope     string `json:"scope,omitempty"`
	Node      string `json:"node,omitempty"`
	Expected  string `json:"expected"`
	Got       string `json:"got"`
	Detail    string `json:"detail,omitempty"`
}

func (f Failure) String() string {
	where := ""
	if f.Scope != "" {
		where += " scope " + f.Scope
	}
	if f.Node != "" {
		where += " node " + f.Node
	}
	s := fmt.Sprintf("FAIL %s (seed %d)%s: expected %s, got %s", f.Invariant, f.Seed, where, f.Expected, f.Got)
	if f.Detail != "" {
		s += "; " + f.Detail
	}
	return s
}

func (w *world) failure(inv, scope, node, expected, got string) Failure {
	return Failure{Scenario: w.sc.Name, Seed: w.seed, Invariant: inv, Scope: scope, Node: node, Expected: expected, Got: got}
}

func (w *world) fail(f Failure) { w.rep.Failures = append(w.rep.Failures, f) }

// checkAll checks every invariant on every scope and every replica. Scopes
// are checked in parallel (the ledgers' queries are safe for concurrent
// use and the checks only read); failures are then put back in scope
// order, so the report stays byte-identical.
func (w *world) checkAll() {
	byScope := map[string][]int{}
	for k, a := range w.acked {
		byScope[a.store] = append(byScope[a.store], k)
	}
	w.salesOf = map[*node]map[string][]string{}
	for _, n := range w.nodes {
		if n.alive && n.spec.role == ledger.RoleAnchor {
			w.salesOf[n] = saleIDsByStore(n.l)
		}
	}
	scopes := w.scopes()
	fails := make([][]Failure, len(scopes))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), 4)) {
		wg.Go(func() {
			for i := range next {
				c := *w // shares the (read-only) nodes and records
				c.rep = &Report{}
				c.checkScope(scopes[i], byScope[scopes[i]])
				fails[i] = c.rep.Failures
			}
		})
	}
	for i := range scopes {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, f := range fails {
		w.rep.Failures = append(w.rep.Failures, f...)
	}
}

func (w *world) checkScope(sc string, ops []int) {
	var reps []*node
	for _, i := range w.replicas(sc) {
		n := w.nodes[i]
		if !n.alive {
			w.fail(w.failure(InvConvergence, sc, n.spec.name, "running", "crashed at the end of the run"))
			continue
		}
		reps = append(reps, n)
	}
	if len(reps) == 0 {
		return
	}
	w.checkDigests(sc, reps)
	for _, n := range reps {
		w.checkOps(sc, n, ops)
		if q := w.hqQueued[n]; q > 0 {
			w.fail(w.failure(InvHQAcked, sc, n.spec.name, "no op of the store counted as queued for HQ",
				fmt.Sprintf("%d ops queued %.0f s after convergence", q, secs(w.hqAt-w.convergedAt))))
		}
	}
	w.checkConflicts(sc, reps)
	w.checkAllot(sc, reps)
}

// checkDigests compares each replica's digest with the most common one.
func (w *world) checkDigests(sc string, reps []*node) {
	count := map[string]int{}
	digests := make([]string, len(reps))
	best := ""
	for i, n := range reps {
		digests[i] = n.l.Digest(sc)
		count[digests[i]]++
		if best == "" || count[digests[i]] > count[best] {
			best = digests[i]
		}
	}
	var ref *node
	for i, n := range reps {
		if digests[i] == best && ref == nil {
			ref = n
		}
	}
	for i, n := range reps {
		if digests[i] != best {
			f := w.failure(InvConvergence, sc, n.spec.name, "digest "+best[:16]+" (as "+ref.spec.name+")", "digest "+digests[i][:16])
			f.Detail = vvDiff(ref.l, n.l, sc) + fmt.Sprintf("; %d ops held", n.l.Stats().Held)
			w.fail(f)
		}
	}
}

// vvDiff says where two replicas' version vectors of a scope differ.
func vvDiff(a, b *ledger.Ledger, sc string) string {
	va, vb := a.VersionVector(sc), b.VersionVector(sc)
	var ds []string
	for _, d := range unionKeys(va, vb) {
		if va[d] != vb[d] {
			ds = append(ds, fmt.Sprintf("%s %d vs %d", d, va[d], vb[d]))
		}
	}
	if len(ds) == 0 {
		return "same version vector (fork branches or state differ)"
	}
	if len(ds) > 4 {
		ds = append(ds[:4], fmt.Sprintf("and %d more", len(ds)-4))
	}
	return "version vector " + strings.Join(ds, ", ")
}

// unionKeys returns the keys of a and b, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	var ks []string
	for k := range a {
		ks = append(ks, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

// checkOps checks one replica against the harness's record of the ops
// acknowledged in scope: none lost, each sale once, stock conserved, and
// forked devices flagged. The expected stock and sale log count every
// acknowledged op, plus the exempt ones (lost with a restored device's
// disk) where the replica holds them.
func (w *world) checkOps(sc string, n *node, ops []int) {
	var lost []string
	stock := map[string]int64{}
	sales := map[string]bool{}
	soldBy := map[string]*ackedOp{}
	var refunds []*ackedOp
	at := map[devSeq][]ledger.Hash{} // hashes of acknowledged ops at each device/seq
	var kept []string
	for _, k := range ops {
		a := w.acked[k]
		has := n.l.HoldsOp(sc, a.device, a.seq, a.hash)
		if w.excluded(sc, a.device, a.seq) {
			if has {
				kept = append(kept, fmt.Sprintf("%s/%d(%s)", a.device, a.seq, a.kind))
			}
			continue // dropped everywhere: not in the stock or the sale log either
		}
		switch {
		case !has && a.exempt:
			continue // gone with a replaced disk, and this replica never got it
		case !has:
			lost = append(lost, fmt.Sprintf("%s/%d(%s)", a.device, a.seq, a.kind))
		default:
			key := devSeq{a.device, a.seq}
			at[key] = append(at[key], a.hash)
		}
		if a.kind == ledger.KindRefund {
			refunds = append(refunds, a)
			continue
		}
		for _, d := range a.deltas {
			stock[d.sku] += d.n
		}
		if a.kind == ledger.KindSale {
			sales[a.id] = true
			soldBy[a.id] = a
		}
	}
	if len(kept) > 0 {
		f := w.failure(InvRevoked, sc, n.spec.name, "no op past a revoked device's cut-off", fmt.Sprintf("%d held", len(kept)))
		f.Detail = "first held: " + strings.Join(kept[:min(len(kept), maxListedPerInv)], ", ")
		w.fail(f)
	}
	for sku, q := range honouredRefunds(refunds, soldBy) {
		stock[sku] += q
	}
	if len(lost) > 0 {
		f := w.failure(InvLostAck, sc, n.spec.name, "every acknowledged op", fmt.Sprintf("%d missing", len(lost)))
		f.Detail = "first missing: " + strings.Join(lost[:min(len(lost), maxListedPerInv)], ", ")
		w.fail(f)
	}
	w.checkForks(sc, n, at)
	if sc == ledger.FleetScope {
		return
	}
	got := map[string]int64{}
	for _, it := range n.l.Stock(sc) {
		got[it.SKU] = it.OnHand
	}
	var bad []string
	for _, sku := range unionKeys(stock, got) {
		if stock[sku] != got[sku] {
			bad = append(bad, fmt.Sprintf("%s expected %d got %d", sku, stock[sku], got[sku]))
		}
	}
	if len(bad) > 0 {
		f := w.failure(InvStock, sc, n.spec.name, "on hand = received − sold + refunded ± transfers ± counts", fmt.Sprintf("%d SKUs off", len(bad)))
		f.Detail = strings.Join(bad[:min(len(bad), maxListedPerInv)], "; ")
		w.fail(f)
	}
	w.checkSales(sc, n, sales)
}

// checkSales: the sale log has unique ids and is exactly the acknowledged
// sales.
func (w *world) checkSales(sc string, n *node, want map[string]bool) {
	seen := map[string]int{}
	var twice, extra []string
	ids := w.saleIDs(n, sc)
	slices.Sort(ids) // failures list ids in a stable order
	for _, id := range ids {
		seen[id]++
		if seen[id] == 2 {
			twice = append(twice, id)
		}
		if !want[id] && seen[id] == 1 {
			extra = append(extra, id)
		}
	}
	missing := 0
	for id := range want {
		if seen[id] == 0 {
			missing++
		}
	}
	if len(twice) > 0 || len(extra) > 0 || missing > 0 {
		f := w.failure(InvCountedOnce, sc, n.spec.name, fmt.Sprintf("%d sales, each once", len(want)),
			fmt.Sprintf("%d listed twice, %d never acknowledged, %d missing", len(twice), len(extra), missing))
		f.Detail = strings.Join(append(twice, extra...)[:min(len(twice)+len(extra), maxListedPerInv)], ", ")
		w.fail(f)
	}
}

// saleIDs returns the ids in n's sale log of scope. An anchor's whole log
// is read once, before the checks, and split by store.
func (w *world) saleIDs(n *node, sc string) []string {
	if m := w.salesOf[n]; m != nil {
		return slices.Clone(m[sc])
	}
	return n.l.SaleIDs(sc)
}

func saleIDsByStore(l *ledger.Ledger) map[string][]string {
	m := map[string][]string{}
	for _, s := range l.Sales("") {
		m[s.Store] = append(m[s.Store], s.ID)
	}
	return m
}

type devSeq struct {
	device string
	seq    uint64
}

// checkForks: a device is flagged in scope exactly when two acknowledged
// ops this replica holds share a seq.
func (w *world) checkForks(sc string, n *node, at map[devSeq][]ledger.Hash) {
	want := map[string]bool{}
	for key, hs := range at {
		if len(hs) > 1 {
			want[key.device] = true
		}
	}
	got := map[string]bool{}
	for _, f := range n.l.Forks() {
		if f.Store == sc {
			got[f.Device] = true
		}
	}
	var missing, extra []string
	for d := range want {
		if !got[d] {
			missing = append(missing, d)
		}
	}
	for d := range got {
		if !want[d] {
			extra = append(extra, d)
		}
	}
	if len(missing)+len(extra) > 0 {
		slices.Sort(missing)
		slices.Sort(extra)
		f := w.failure(InvForks, sc, n.spec.name, fmt.Sprintf("%d forked devices flagged", len(want)),
			fmt.Sprintf("%d not flagged, %d flagged without a fork", len(missing), len(extra)))
		f.Detail = "not flagged: " + strings.Join(missing, ",") + "; unexpected: " + strings.Join(extra, ",")
		w.fail(f)
	}
}

// checkConflicts compares every replica's conflict list with the first's.
func (w *world) checkConflicts(sc string, reps []*node) {
	if sc == ledger.FleetScope {
		return
	}
	enc := func(n *node) (string, int) {
		cs := n.l.Conflicts(sc)
		b, _ := json.Marshal(cs)
		h := hashString(b)
		return h, len(cs)
	}
	ref, nref := enc(reps[0])
	for _, n := range reps[1:] {
		if h, k := enc(n); h != ref {
			w.fail(w.failure(InvConflicts, sc, n.spec.name, fmt.Sprintf("%d conflicts as %s (%s)", nref, reps[0].spec.name, ref[:12]),
				fmt.Sprintf("%d conflicts (%s)", k, h[:12])))
		}
	}
}

func hashString(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// honouredRefunds is the stock refunds give back, by a plain reading of
// the rule: per sale, refunds in (hlc, device, seq, hash) order each get
// the units of a SKU the sale still has unrefunded, and no more; a
// refund of a sale not held gives nothing.
func honouredRefunds(refunds []*ackedOp, soldBy map[string]*ackedOp) map[string]int64 {
	slices.SortFunc(refunds, func(a, b *ackedOp) int {
		return cmp.Or(a.hlc.Compare(b.hlc), cmp.Compare(a.device, b.device), cmp.Compare(a.seq, b.seq), bytes.Compare(a.hash[:], b.hash[:]))
	})
	left := map[string]map[string]int64{} // sale → sku → units not yet refunded
	out := map[string]int64{}
	for _, r := range refunds {
		s := soldBy[r.refundOf]
		if s == nil || s.store != r.store {
			continue
		}
		l := left[s.id]
		if l == nil {
			l = map[string]int64{}
			for _, d := range s.deltas {
				l[d.sku] -= d.n // a sale's deltas are negative
			}
			left[s.id] = l
		}
		for _, d := range r.deltas {
			take := min(d.n, l[d.sku])
			l[d.sku] -= take
			out[d.sku] += take
		}
	}
	return out
}
