package sim

import (
	"fmt"
	"slices"
	"strings"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// backup is a copy of a node's datastore and how many of the node's
// acknowledged ops it covers.
type backup struct {
	store ds.Batching
	ops   int
}

// scheduleEvents queues the scenario's events in file order. Flaps draw
// their whole schedule now, so the rest of the run's randomness does not
// depend on when they fire.
func (w *world) scheduleEvents() {
	for _, e := range w.sc.Events {
		at := int64(e.At)
		desc := describe(e)
		switch {
		case e.Cut != nil:
			lis := w.linksBetween(w.sc.match(e.Cut[0]), w.sc.match(e.Cut[1]))
			w.do(at, func() { w.cut(lis, int64(e.For), desc) })
		case e.Partition != nil:
			lis := w.partitionLinks(e.Partition)
			w.do(at, func() { w.cut(lis, int64(e.For), desc) })
		case e.Crash != "":
			for _, i := range w.sc.match(e.Crash) {
				w.do(at, func() { w.crash(w.nodes[i], int64(e.For)) })
			}
		case e.Backup != nil:
			name := e.Backup.Name
			for _, i := range w.sc.match(e.Backup.Node) {
				w.do(at, func() { w.backup(w.nodes[i], name) })
			}
		case e.Restore != nil:
			r := *e.Restore
			for _, i := range w.sc.match(r.Node) {
				w.do(at, func() { w.restore(w.nodes[i], r) })
			}
		case e.Clock != nil:
			c := *e.Clock
			for _, i := range w.sc.match(c.Node) {
				w.do(at, func() { w.nodes[i].clk.set(w.now, int64(c.Offset), c.DriftPPM) })
			}
		case e.Flap != nil:
			w.flap(at, *e.Flap, desc)
		case e.Sell != nil:
			o := *e.Sell
			for _, i := range w.sc.match(o.Node) {
				w.do(at, func() { w.scripted(w.nodes[i], o, true) })
			}
		case e.Receive != nil:
			o := *e.Receive
			for _, i := range w.sc.match(o.Node) {
				w.do(at, func() { w.scripted(w.nodes[i], o, false) })
			}
		case e.Resolve != nil:
			action := e.Resolve.Action
			if action == "" {
				action = "backorder"
			}
			for _, i := range w.sc.match(e.Resolve.Node) {
				w.do(at, func() {
					if n := w.nodes[i]; n.alive {
						w.resolve(n, action, 0)
					}
				})
			}
		case e.Transfer != nil:
			t := *e.Transfer
			w.do(at, func() { w.transferStock(t.From, t.To, t.SKU, t.Qty) })
		case e.Revoke != nil:
			r := *e.Revoke
			by, targets := w.sc.match(r.By)[0], w.sc.match(r.Node)
			w.do(at, func() { w.revoke(w.nodes[by], targets, r.Fleet) })
		}
	}
}

func describe(e Event) string {
	switch {
	case e.Cut != nil:
		return "cut " + strings.Join(e.Cut, " | ")
	case e.Partition != nil:
		var gs []string
		for _, g := range e.Partition {
			gs = append(gs, strings.Join(g, ","))
		}
		return "partition " + strings.Join(gs, " | ")
	case e.Crash != "":
		return "crash " + e.Crash
	case e.Restore != nil:
		return "restore " + e.Restore.Node
	case e.Flap != nil:
		return "flap " + strings.Join(e.Flap.Between, " | ")
	}
	return ""
}

// linksBetween lists the links with one end in as and the other in bs.
func (w *world) linksBetween(as, bs []int) []int {
	var out []int
	for li, lk := range w.links {
		if (slices.Contains(as, lk.a) && slices.Contains(bs, lk.b)) || (slices.Contains(as, lk.b) && slices.Contains(bs, lk.a)) {
			out = append(out, li)
		}
	}
	return out
}

// partitionLinks lists the links whose ends are in different groups.
func (w *world) partitionLinks(groups [][]string) []int {
	group := map[int]int{}
	for g, pats := range groups {
		for _, p := range pats {
			for _, i := range w.sc.match(p) {
				group[i] = g + 1
			}
		}
	}
	var out []int
	for li, lk := range w.links {
		if ga, gb := group[lk.a], group[lk.b]; ga != 0 && gb != 0 && ga != gb {
			out = append(out, li)
		}
	}
	return out
}

// flap draws a schedule of cuts: up for an exponential time of mean
// Every, then down for Down/2 to 3·Down/2, clipped to heal by Until.
func (w *world) flap(at int64, f FlapEvent, desc string) {
	lis := w.linksBetween(w.sc.match(f.Between[0]), w.sc.match(f.Between[1]))
	until := int64(f.Until)
	t := at
	for {
		t += exp(w.rng, float64(f.Every))
		if t >= until {
			return
		}
		d := int64(f.Down)/2 + w.rng.Int64N(int64(f.Down))
		d = min(d, until-t)
		w.do(t, func() { w.cut(lis, d, desc) })
		t += d
	}
}

// crash kills n: its ledger and sessions (all in memory) are gone; its
// datastore, the disk, stays. It restarts after d (d < 0: the caller
// restarts it).
func (w *world) crash(n *node, d int64) {
	if !n.alive {
		return
	}
	for _, li := range n.links {
		w.closeLink(li)
	}
	n.alive, n.l, n.pulls, n.anchor, n.near, n.pending = false, nil, nil, nil, nil, nil
	if d >= 0 {
		w.rep.Marks = append(w.rep.Marks, Mark{From: secs(w.now), To: secs(w.now + d), What: "crash " + n.spec.name})
		w.do(d, func() { w.restart(n) })
	}
}

// restart reopens n's ledger over its datastore and redials its links.
func (w *world) restart(n *node) {
	if n.alive {
		return
	}
	if err := w.open(n); err != nil {
		w.fatal("%v", err)
		return
	}
	w.healed()
	for _, li := range n.links {
		w.dial(li)
	}
}

func (w *world) backup(n *node, name string) {
	c, err := copyStore(w, n.store)
	if err != nil {
		w.fatal("backup %s: %v", n.spec.name, err)
		return
	}
	if w.backups[name] == nil {
		w.backups[name] = map[int]*backup{}
	}
	w.backups[name][n.idx] = &backup{store: c, ops: len(n.ops)}
}

// restore crashes n, puts a copy of an old backup in place of its
// datastore and restarts it, cut off from every peer for r.Offline.
// The ops n acknowledged after the backup that no other replica held at
// this moment are gone with the replaced disk: they are marked exempt.
func (w *world) restore(n *node, r RestoreEvent) {
	b := w.backups[r.Backup][n.idx]
	if b == nil {
		w.fatal("restore %s: no backup %q of it", n.spec.name, r.Backup)
		return
	}
	var record []ledger.OwnChainState // the device folder's own-chain record, which the restore does not replace
	if n.l != nil && !r.SellBeforeSync {
		record = n.l.OwnChains()
	}
	w.crash(n, -1)
	elsewhere := w.holdersOf(n)
	for _, a := range n.ops[b.ops:] {
		if !elsewhere(a) {
			a.exempt = true
		}
	}
	for sc, m := range n.ln.maxSeq { // the device's highest seqs may have gone with its disk
		for d := range m {
			if ledger.ChainOwner(d) == n.dev.ID() {
				delete(m, d)
			}
		}
		for _, a := range n.ops {
			if a.store == sc && !a.exempt {
				m[a.device] = max(m[a.device], a.seq)
			}
		}
	}
	c, err := copyStore(w, b.store)
	if err != nil {
		w.fatal("restore %s: %v", n.spec.name, err)
		return
	}
	n.store = c
	w.rep.Restored = append(w.rep.Restored, n.spec.name)
	if r.Offline > 0 {
		w.cut(slices.Clone(n.links), int64(r.Offline), "restore "+n.spec.name+" (offline)")
	}
	w.restart(n)
	if n.l != nil {
		// What the node does with its device folder's record on open
		// (node.pairRecord): the ledger waits for the refill, then writes
		// a new epoch.
		for _, oc := range record {
			n.l.RaiseOwnFloor(oc.Scope, oc.Chain, oc.Recorded, "device record")
		}
	}
}

// holdersOf returns a test of whether a node other than n holds an op
// durably. Crashed nodes are read from their datastore.
func (w *world) holdersOf(n *node) func(*ackedOp) bool {
	var ls []*ledger.Ledger
	for _, m := range w.nodes {
		switch {
		case m == n:
		case m.alive:
			ls = append(ls, m.l)
		default:
			cfg := w.fleet.Config(nil, ledgertest.NewClock())
			cfg.SigCache = w.sigs
			l, err := ledger.Open(w.ctx, m.store, cfg)
			if err != nil {
				w.fatal("read %s: %v", m.spec.name, err)
				continue
			}
			ls = append(ls, l)
		}
	}
	return func(a *ackedOp) bool {
		for _, l := range ls {
			if l.HoldsScope(a.store) && slices.Contains(l.HashesAt(a.store, a.device, a.seq), a.hash) {
				return true
			}
		}
		return false
	}
}

// scripted makes a scenario's sale or receipt on n.
func (w *world) scripted(n *node, o ScriptedOp, sale bool) {
	if !n.alive {
		return
	}
	if !sale {
		w.append(n, n.spec.store, ledger.KindStockReceived, &ledger.StockReceived{SKU: o.SKU, Qty: o.Qty}, []skuDelta{{o.SKU, o.Qty}})
		return
	}
	p := w.price[o.SKU]
	for _, c := range n.l.Catalog() {
		if c.SKU == o.SKU {
			p = c.UnitPrice
		}
	}
	body := &ledger.Sale{Lines: []ledger.SaleLine{{SKU: o.SKU, Qty: o.Qty, UnitPrice: p}}, Currency: w.sc.Currency, Payment: "cash"}
	w.append(n, n.spec.store, ledger.KindSale, body, []skuDelta{{o.SKU, -o.Qty}})
}

// copyStore copies every key of a datastore, as a backup tool would.
func copyStore(w *world, src ds.Batching) (ds.Batching, error) {
	res, err := src.Query(w.ctx, dsq.Query{})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	dst := ledgertest.MemStore()
	for {
		r, ok := res.NextSync()
		if !ok {
			return dst, nil
		}
		if r.Error != nil {
			return nil, r.Error
		}
		if err := dst.Put(w.ctx, ds.NewKey(r.Key), append([]byte(nil), r.Value...)); err != nil {
			return nil, fmt.Errorf("copy %s: %w", r.Key, err)
		}
	}
}
