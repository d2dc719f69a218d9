package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
)

// ackedOp is the harness's own record of an op whose Append returned:
// the device acknowledged it. The checks compare every replica with it.
type ackedOp struct {
	node   int
	store  string
	device string
	seq    uint64
	hash   ledger.Hash
	id     string // sale id (op id)
	kind   ledger.Kind
	deltas []skuDelta // what the op does to its store's stock (a refund: what it asks)
	// refund only: the sale it names and its place in the order refunds
	// of one sale are honoured in (hlc, device, seq, hash): two terminals
	// may refund the same line while partitioned, and only the first
	// counts (ledger/refunds.go).
	refundOf string
	hlc      crdt.Timestamp
	// exempt: made by a device after the backup it was later restored
	// from, and held by no other replica when the restore happened. Its
	// disk was replaced: it may be gone, and that is not a lost ack.
	exempt bool
}

type skuDelta struct {
	sku string
	n   int64
}

// setup makes the opening ops: the catalog, written by the first anchor
// (or the first manager), and each store's opening stock, received by its
// first device.
func (w *world) setup() {
	author := -1
	if len(w.anchors) > 0 {
		author = w.anchors[0]
	} else {
		for _, n := range w.nodes {
			if n.spec.role == ledger.RoleManager {
				author = n.idx
				break
			}
		}
	}
	for _, c := range w.sc.Catalog {
		name := c.Name
		if name == "" {
			name = c.SKU
		}
		w.append(w.nodes[author], ledger.FleetScope, ledger.KindCatalogUpsert,
			&ledger.CatalogItem{SKU: c.SKU, Name: name, UnitPrice: c.Price, Currency: w.sc.Currency}, nil)
	}
	for _, st := range w.stores {
		w.allotSetup(st)
		first := w.nodes[w.byStore[st][0]]
		for _, c := range w.sc.Catalog {
			if c.Stock > 0 {
				w.append(first, st, ledger.KindStockReceived, &ledger.StockReceived{SKU: c.SKU, Qty: c.Stock},
					[]skuDelta{{c.SKU, c.Stock}})
			}
		}
	}
}

// scheduleWorkload starts each selling device's Poisson process of
// actions, each manager's price changes (in the device's lane) and the
// fleet's transfers (global: they touch two stores).
func (w *world) scheduleWorkload() {
	wl := w.sc.Workload
	start := int64(wl.Start)
	if wl.OpsPerMinute > 0 {
		mean := float64(time.Minute) / wl.OpsPerMinute
		for _, st := range w.stores {
			for _, i := range w.byStore[st] {
				w.nodes[i].ln.at(start+exp(w.rng, mean), &event{kind: evAct, node: i, fn: nil, gen: actTrade})
			}
		}
	}
	if wl.PriceChangesPerHour > 0 {
		mean := float64(time.Hour) / wl.PriceChangesPerHour
		for _, n := range w.nodes {
			if n.spec.role == ledger.RoleManager {
				n.ln.at(start+exp(w.rng, mean), &event{kind: evAct, node: n.idx, gen: actPrice})
			}
		}
	}
	if wl.TransfersPerHour > 0 {
		w.at(start+exp(w.rng, float64(time.Hour)/wl.TransfersPerHour), &event{kind: evAct, node: -1, gen: actTransfer})
	}
}

// The processes an evAct event belongs to (in its gen field).
const (
	actTrade uint64 = iota
	actPrice
	actTransfer
)

// exp draws an exponential delay of the given mean, in ns.
func exp(r *rand.Rand, mean float64) int64 { return int64(r.ExpFloat64() * mean) }

// act runs one step of a workload process, in ln (the device's lane, or
// the global queue for transfers), and schedules the next. The random
// workload stops at MaxOps: each window, the lanes share out what is left
// of it, so the total never passes it whatever the lanes do at once.
func (w *world) act(ln *lane, e *event) {
	wl := w.sc.Workload
	if ln.now >= int64(wl.End) || (wl.MaxOps > 0 && w.randomOps >= wl.MaxOps) {
		return
	}
	var mean float64
	switch e.gen {
	case actTrade:
		mean = float64(time.Minute) / wl.OpsPerMinute
	case actPrice:
		mean = float64(time.Hour) / wl.PriceChangesPerHour
	default:
		mean = float64(time.Hour) / wl.TransfersPerHour
	}
	ln.at(exp(ln.rng, mean), e)
	if e.gen == actTransfer {
		w.randomTransfer()
		return
	}
	if wl.MaxOps > 0 && ln.budget <= 0 {
		return // this window's share is spent; the process goes on
	}
	n := w.nodes[e.node]
	r := ln.rng
	if !w.ready(n) {
		return
	}
	if e.gen == actPrice {
		sku := pickSKU(r, w.skus, w.weights)
		if sku == "" {
			return
		}
		p := w.price[sku] * int64(80+r.IntN(41)) / 100
		if r.IntN(4) == 0 { // now and then the whole catalog entry: a new name too
			w.random(n, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: sku,
				Name: fmt.Sprintf("%s (%s)", sku, n.spec.name), UnitPrice: p, Currency: w.sc.Currency}, nil)
			return
		}
		w.random(n, ledger.FleetScope, ledger.KindPriceSet, &ledger.PriceSet{SKU: sku, UnitPrice: p, Currency: w.sc.Currency}, nil)
		return
	}
	m := wl.Mix
	k := r.IntN(m.Sale + m.Refund + m.Received + m.Counted + m.Resolve)
	switch {
	case k < m.Sale:
	case k < m.Sale+m.Refund:
		if w.refund(n) {
			return
		}
	case k < m.Sale+m.Refund+m.Received:
		sku := pickSKU(r, w.skus, w.weights)
		if sku == "" {
			return
		}
		q := int64(5 + r.IntN(16))
		w.random(n, n.spec.store, ledger.KindStockReceived, &ledger.StockReceived{SKU: sku, Qty: q}, []skuDelta{{sku, q}})
		return
	case k < m.Sale+m.Refund+m.Received+m.Counted:
		sku := pickSKU(r, w.skus, w.weights)
		if sku == "" {
			return
		}
		seen := n.l.OnHand(n.spec.store, sku)
		counted := max(0, seen+int64(r.IntN(5))-2)
		w.random(n, n.spec.store, ledger.KindStockCounted, &ledger.StockCounted{SKU: sku, OnHand: counted, Seen: seen},
			[]skuDelta{{sku, counted - seen}})
		return
	default:
		if k := w.resolve(n, "backorder", 1); k > 0 {
			w.countRandom(n, k)
			return
		}
	}
	w.sale(n)
}

// countRandom counts k random workload ops made on n: against the lane's
// share during a window, directly between windows.
func (w *world) countRandom(n *node, k int) {
	if w.inWindow {
		n.ln.randomOps += k
		n.ln.budget -= k
		return
	}
	w.randomOps += k
}

// ready reports whether n runs and may write. A restored device needs no
// rule of the harness's own: the ledger refuses its writes while its own
// chain is short of what is known of it, and moves to a new epoch after
// OwnWait (ledger.RaiseOwnFloor; restore gives it its device record).
func (w *world) ready(n *node) bool { return n.alive }

// sale rings up one or two lines at the price this terminal knows.
func (w *world) sale(n *node) {
	prices := map[string]int64{}
	for _, c := range n.l.Catalog() {
		prices[c.SKU] = c.UnitPrice
	}
	r := n.ln.rng
	lines := 1
	if r.IntN(10) < 3 {
		lines = 2
	}
	var body ledger.Sale
	var deltas []skuDelta
	for range lines {
		sku := pickSKU(r, w.skus, w.weights)
		if sku == "" || (len(body.Lines) > 0 && body.Lines[0].SKU == sku) {
			continue
		}
		p, ok := prices[sku]
		if !ok {
			p = w.price[sku]
		}
		q := int64(1 + r.IntN(3))
		body.Lines = append(body.Lines, ledger.SaleLine{SKU: sku, Qty: q, UnitPrice: p})
		deltas = append(deltas, skuDelta{sku, -q})
	}
	if len(body.Lines) == 0 {
		return
	}
	body.Currency, body.Payment = w.sc.Currency, [...]string{"cash", "card"}[r.IntN(2)]
	w.random(n, n.spec.store, ledger.KindSale, &body, deltas)
}

// pickSKU draws a SKU by the catalog's weights ("" when all are zero).
func pickSKU(r *rand.Rand, skus []string, weights []int) string {
	total := 0
	for _, wt := range weights {
		total += wt
	}
	if total == 0 {
		return ""
	}
	k := r.IntN(total)
	for i, wt := range weights {
		if k < wt {
			return skus[i]
		}
		k -= wt
	}
	return ""
}

// refund returns part of a recent sale of n's store that the customer
// brings back: the terminal looks it up by its id, as a POS does with a
// receipt, and refunds it only when it holds the sale and sees no refund.
func (w *world) refund(n *node) bool {
	r := n.ln.rng
	recent := n.ln.storeSales[n.spec.store]
	recent = recent[max(0, len(recent)-50):]
	if len(recent) == 0 {
		return false
	}
	s, ok := n.l.Sale(recent[r.IntN(len(recent))].id)
	if !ok || s.Refunded != 0 {
		return false
	}
	l := s.Lines[0]
	q := 1 + r.Int64N(l.Qty)
	w.random(n, n.spec.store, ledger.KindRefund, &ledger.Refund{Sale: s.ID, Lines: []ledger.RefundLine{{SKU: l.SKU, Qty: q}},
		Amount: q * l.UnitPrice}, []skuDelta{{l.SKU, q}})
	return true
}

// resolve closes up to limit open conflicts n sees (limit ≤ 0: all).
func (w *world) resolve(n *node, action string, limit int) int {
	done := 0
	for _, c := range n.l.Conflicts(n.spec.store) {
		if c.Resolution != nil || (limit > 0 && done >= limit) {
			continue
		}
		if w.append(n, n.spec.store, ledger.KindConflictResolved, &ledger.ConflictResolved{Conflict: c.ID, Action: action}, nil) {
			done++
		}
	}
	return done
}

// randomTransfer moves stock between two random stores (a global event).
func (w *world) randomTransfer() {
	i := w.rng.IntN(len(w.stores))
	j := (i + 1 + w.rng.IntN(len(w.stores)-1)) % len(w.stores)
	if sku := pickSKU(w.rng, w.skus, w.weights); sku != "" {
		w.randomOps += w.transferStock(w.stores[i], w.stores[j], sku, int64(1+w.rng.IntN(5)))
	}
}

// transferStock writes the two halves of a transfer: both by the first
// live anchor, else each by a live manager of its store. It returns the
// number of ops made.
func (w *world) transferStock(from, to, sku string, q int64) int {
	w.transfer++
	id := fmt.Sprintf("x%d", w.transfer)
	body := ledger.StockTransferred{SKU: sku, Qty: q, From: from, To: to, Transfer: id}
	out, in := body, body
	for _, a := range w.anchors {
		if n := w.nodes[a]; w.ready(n) {
			return w.append2(n, n, from, to, &out, &in)
		}
	}
	mf, mt := w.liveManager(from), w.liveManager(to)
	if mf == nil || mt == nil {
		return 0
	}
	return w.append2(mf, mt, from, to, &out, &in)
}

func (w *world) append2(nf, nt *node, from, to string, out, in *ledger.StockTransferred) int {
	k := 0
	if w.append(nf, from, ledger.KindStockTransferred, out, []skuDelta{{out.SKU, -out.Qty}}) {
		k++
	}
	if w.append(nt, to, ledger.KindStockTransferred, in, []skuDelta{{in.SKU, in.Qty}}) {
		k++
	}
	return k
}

func (w *world) liveManager(store string) *node {
	for _, i := range w.byStore[store] {
		if n := w.nodes[i]; n.spec.role == ledger.RoleManager && w.ready(n) {
			return n
		}
	}
	return nil
}

// random appends an op of the random workload (counted against MaxOps).
func (w *world) random(n *node, store string, kind ledger.Kind, body any, deltas []skuDelta) {
	if w.append(n, store, kind, body, deltas) {
		w.countRandom(n, 1)
	}
}

// append makes a local op on n, records it once acknowledged and pushes
// it. A refusal is counted by reason: the ledger refusing a restored
// device's sale (ErrOwnHistoryBehind) is the protection working.
func (w *world) append(n *node, store string, kind ledger.Kind, body any, deltas []skuDelta) bool {
	ln := n.ln
	o, err := n.l.Append(w.ctx, store, kind, body)
	if err != nil {
		why := refusal(err)
		ln.ops.Refused = incr(ln.ops.Refused, why)
		w.traceOp('R', n, nil, why)
		revoked := why == string(ledger.ReasonRevoked) && w.isRevoked(n) // it learned it was revoked
		if why == refusedAllot {
			w.allotRefused(n, store, err)
		} else if why != "own_history_behind" && why != "own_chain_forked" && !revoked {
			ln.failures = append(ln.failures, w.failure(InvWorkload, store, n.spec.name, "op acknowledged",
				fmt.Sprintf("Append %s: %v", kind, err)))
		}
		return false
	}
	rec := &ackedOp{node: n.idx, store: store, device: o.Device, seq: o.Seq, hash: o.Hash(), id: o.ID(), kind: kind, deltas: deltas, hlc: o.HLC}
	if r, ok := body.(*ledger.Refund); ok {
		rec.refundOf = r.Sale
	}
	n.ops = append(n.ops, rec)
	if kind == ledger.KindSale {
		ln.storeSales[store] = append(ln.storeSales[store], rec)
	}
	ln.acked = append(ln.acked, rec)
	if ln.maxSeq[store] == nil {
		ln.maxSeq[store] = map[string]uint64{}
	}
	ln.maxSeq[store][o.Device] = max(ln.maxSeq[store][o.Device], o.Seq)
	ln.ops.Total++
	ln.ops.ByKind = incr(ln.ops.ByKind, string(kind))
	ln.wire.OpBytes += uint64(len(o.Raw()))
	ln.wire.IdealBytes += uint64(len(o.Raw())) * uint64(w.nReplicas(store)-1)
	w.traceOp('A', n, o, "")
	if w.sc.Push == "relay" {
		w.pushTo(n, []*ledger.Op{o}, -1)
	} else {
		w.drain(n)
	}
	return true
}

func refusal(err error) string {
	switch {
	case errors.Is(err, ledger.ErrOwnHistoryBehind):
		return "own_history_behind"
	case errors.Is(err, ledger.ErrOwnChainForked):
		return "own_chain_forked"
	case errors.Is(err, ledger.ErrAllotmentExhausted):
		return refusedAllot
	case ledger.RejectReason(err) != "":
		return string(ledger.RejectReason(err))
	}
	return "error"
}
