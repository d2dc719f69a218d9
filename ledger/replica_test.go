package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// DESIGN §3–§5: the state is a CRDT. Replicas that receive the same signed
// ops, in any order, with duplicates and gaps, end in the same state, list
// the same conflicts, and print the same digest.

var testSKUs = []string{"TEA", "MUG", "CAKE", "JAM"}

// author is a device that writes ops into its own ledger.
type author struct {
	dev   *ledgertest.Device
	l     *ledger.Ledger
	sales []*ledger.Op // its own sales, for refunds
}

// workload is a seeded history of one store: three terminals, one manager
// writing the catalog and prices fleet-wide, stock receipts and counts,
// refunds. raws holds every op once, as its authors made them.
type workload struct {
	fleet   *ledgertest.Fleet
	authors []*author
	certs   []*ledger.Certificate
	raws    [][]byte
}

func genWorkload(t *testing.T, seed uint64, steps int) *workload {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 1))
	w := &workload{fleet: ledgertest.NewFleet(seed)}
	devs := []*ledgertest.Device{
		w.fleet.Enroll("s1", ledger.RoleTerminal),
		w.fleet.Enroll("s1", ledger.RoleTerminal),
		w.fleet.Enroll("s1", ledger.RoleTerminal),
		w.fleet.Enroll("s1", ledger.RoleManager),
	}
	for _, d := range devs {
		w.certs = append(w.certs, d.Cert)
	}
	for _, d := range devs {
		l, err := w.fleet.Open(ctx, ledgertest.MemStore(), d, w.certs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		w.authors = append(w.authors, &author{dev: d, l: l})
	}
	manager := w.authors[3]
	add := func(a *author, store string, kind ledger.Kind, b any) *ledger.Op {
		t.Helper()
		o, err := a.l.Append(ctx, store, kind, b)
		if err != nil {
			t.Fatalf("%s appends %s: %v", a.dev.ID(), kind, err)
		}
		w.raws = append(w.raws, slices.Clone(o.Raw()))
		return o
	}
	for _, sku := range testSKUs {
		add(manager, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: sku, Name: "item " + sku, UnitPrice: 100, Currency: "EUR"})
	}
	for step := range steps {
		a := w.authors[rng.IntN(3)] // a terminal
		sku := testSKUs[rng.IntN(len(testSKUs))]
		switch p := rng.IntN(100); {
		case p < 55:
			o := add(a, "s1", ledger.KindSale, ledgertest.Sale(sku, 1+rng.Int64N(3), 100+rng.Int64N(50)))
			a.sales = append(a.sales, o)
		case p < 63 && len(a.sales) > 0:
			// A refund of any sale the terminal holds: between syncs two
			// terminals may refund the same line, an over_refund conflict.
			held := a.l.Sales("s1")
			s := held[rng.IntN(len(held))]
			b := &ledger.Refund{Sale: s.ID, Lines: []ledger.RefundLine{{SKU: s.Lines[0].SKU, Qty: 1}}, Amount: s.Lines[0].UnitPrice}
			o, err := a.l.Append(ctx, "s1", ledger.KindRefund, b)
			if errors.Is(err, ledger.ErrRefundExceedsSale) {
				continue // this terminal sees it refunded already
			}
			if err != nil {
				t.Fatal(err)
			}
			w.raws = append(w.raws, slices.Clone(o.Raw()))
		case p < 73:
			add(a, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: sku, Qty: 1 + rng.Int64N(10)})
		case p < 78:
			add(a, "s1", ledger.KindStockCounted, &ledger.StockCounted{SKU: sku, OnHand: rng.Int64N(20), Seen: a.l.OnHand("s1", sku)})
		case p < 86:
			add(manager, ledger.FleetScope, ledger.KindPriceSet, &ledger.PriceSet{SKU: sku, UnitPrice: 90 + rng.Int64N(30), Currency: "EUR"})
		case p < 92:
			add(manager, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: sku, Name: fmt.Sprintf("item %s v%d", sku, step), UnitPrice: 100, Currency: "EUR"})
		case p < 94:
			add(manager, "s1", ledger.KindPolicySet, &ledger.Policy{OfflineMethods: []string{"cash"}, MaxOfflineSale: rng.Int64N(10000)})
		default:
			add(manager, "s1", ledger.KindSale, ledgertest.Sale(sku, 1, 120))
		}
		if step%50 == 49 { // the terminals meet now and then
			syncAll(t, w.ledgers()...)
		}
	}
	return w
}

func (w *workload) ledgers() []*ledger.Ledger {
	var out []*ledger.Ledger
	for _, a := range w.authors {
		out = append(out, a.l)
	}
	return out
}

// syncAll runs version-vector anti-entropy between every pair of ledgers
// over the scopes they hold, until nothing moves.
func syncAll(t *testing.T, ls ...*ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	for {
		moved := false
		for _, a := range ls {
			for _, b := range ls {
				if a == b {
					continue
				}
				for _, scope := range a.Scopes() {
					if !b.HoldsScope(scope) {
						continue
					}
					err := a.Ops(ctx, scope, b.VersionVector(scope), 64<<10, func(batch []ledger.RawOp) error {
						moved = true
						return applyOK(t, b, rawBytes(batch))
					})
					if err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if !moved {
			return
		}
	}
}

func rawBytes(batch []ledger.RawOp) [][]byte {
	out := make([][]byte, len(batch))
	for i, r := range batch {
		out[i] = r.Bytes
	}
	return out
}

// applyOK applies a batch and fails the test on any rejection.
func applyOK(t *testing.T, l *ledger.Ledger, batch [][]byte) error {
	t.Helper()
	rs, err := l.ApplyBatch(context.Background(), batch)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Outcome == ledger.Rejected {
			t.Fatalf("op %v rejected: %v", r.Op, r.Err)
		}
	}
	return nil
}

// deliver applies raws to l in a random order, with duplicates, with about
// a tenth of the ops withheld and delivered last, in batches of random size.
func deliver(t *testing.T, l *ledger.Ledger, raws [][]byte, rng *rand.Rand) {
	t.Helper()
	var now, later [][]byte
	for _, i := range rng.Perm(len(raws)) {
		if rng.IntN(10) == 0 {
			later = append(later, raws[i])
		} else {
			now = append(now, raws[i])
		}
	}
	for range max(1, len(raws)/5) {
		now = slices.Insert(now, rng.IntN(len(now)+1), raws[rng.IntN(len(raws))])
	}
	for range len(later) / 3 {
		later = slices.Insert(later, rng.IntN(len(later)+1), raws[rng.IntN(len(raws))])
	}
	seq := append(now, later...)
	outcomes := map[ledger.Outcome]int{}
	for len(seq) > 0 {
		n := min(len(seq), 1+rng.IntN(64))
		rs, err := l.ApplyBatch(context.Background(), seq[:n])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Outcome == ledger.Rejected || r.Outcome == ledger.Forked {
				t.Fatalf("op %v: %v %v", r.Op, r.Outcome, r.Err)
			}
			outcomes[r.Outcome]++
		}
		seq = seq[n:]
	}
	if h := l.Stats().Held; h != 0 {
		t.Fatalf("%d ops still held after every op was delivered", h)
	}
	// The order really was scrambled: duplicates arrived and, in any
	// sizeable history, ops waited for their predecessors.
	if outcomes[ledger.Duplicate] == 0 || (len(raws) >= 50 && outcomes[ledger.Held] == 0) {
		t.Fatalf("delivery exercised too little: outcomes %v", outcomes)
	}
}

// snapshot is everything a replica shows that must agree across replicas.
type snapshot struct {
	DigestStore, DigestFleet string
	Sales                    []ledger.SaleRecord
	Stock                    []ledger.StockItem
	Conflicts                []ledger.Conflict
	VVStore, VVFleet         crdt.VersionVector
	Catalog                  []ledger.CatalogItem
	Policy                   ledger.Policy
	Forks                    []ledger.Fork
}

func snap(l *ledger.Ledger, store string) snapshot {
	p, _ := l.Policy(store)
	return snapshot{
		DigestStore: l.Digest(store), DigestFleet: l.Digest(ledger.FleetScope),
		Sales: l.Sales(store), Stock: l.Stock(store), Conflicts: l.Conflicts(store),
		VVStore: l.VersionVector(store), VVFleet: l.VersionVector(ledger.FleetScope),
		Catalog: l.Catalog(), Policy: p, Forks: l.Forks(),
	}
}

func sameSnapshot(t *testing.T, name string, got, want snapshot) {
	t.Helper()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s: %s differs:\n got %+v\nwant %+v", name, gv.Type().Field(i).Name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}

// openReplicas opens n replicas of store s1: a read-only inspector, an
// anchor and terminals, each knowing the certificates.
func openReplicas(t *testing.T, f *ledgertest.Fleet, n int, certs []*ledger.Certificate) ([]*ledger.Ledger, []ds.Batching, []*ledgertest.Device) {
	t.Helper()
	ctx := context.Background()
	var ls []*ledger.Ledger
	var stores []ds.Batching
	var devs []*ledgertest.Device
	for i := range n {
		var d *ledgertest.Device
		switch i {
		case 0: // read-only inspector: no device
		case 1:
			d = f.Enroll(ledger.FleetScope, ledger.RoleAnchor)
		default:
			d = f.Enroll("s1", ledger.RoleTerminal)
		}
		st := ledgertest.MemStore()
		l, err := f.Open(ctx, st, d, certs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		ls, stores, devs = append(ls, l), append(stores, st), append(devs, d)
	}
	return ls, stores, devs
}

func TestReplicasConvergeInAnyOrder(t *testing.T) {
	ctx := context.Background()
	w := genWorkload(t, 42, 600)
	syncAll(t, w.ledgers()...)

	// The reference: every op once, in authoring order.
	ref, _, _ := openReplicas(t, w.fleet, 1, w.certs)
	for _, raw := range w.raws {
		if err := applyOK(t, ref[0], [][]byte{raw}); err != nil {
			t.Fatal(err)
		}
	}
	want := snap(ref[0], "s1")
	if len(want.Sales) == 0 || len(want.Stock) == 0 || len(want.Catalog) != len(testSKUs) {
		t.Fatalf("workload too thin: %d sales, %d stock items, %d catalog items", len(want.Sales), len(want.Stock), len(want.Catalog))
	}
	if want.VVStore.Sum()+want.VVFleet.Sum() != uint64(len(w.raws)) {
		t.Fatalf("reference holds %d ops, workload made %d", want.VVStore.Sum()+want.VVFleet.Sum(), len(w.raws))
	}
	t.Logf("%d ops: %d sales, %d conflicts", len(w.raws), len(want.Sales), len(want.Conflicts))

	for i, a := range w.authors {
		sameSnapshot(t, fmt.Sprintf("author %d after sync", i), snap(a.l, "s1"), want)
	}
	replicas, stores, devs := openReplicas(t, w.fleet, 6, w.certs)
	for i, r := range replicas {
		deliver(t, r, w.raws, rand.New(rand.NewPCG(uint64(i), 99)))
		sameSnapshot(t, fmt.Sprintf("replica %d", i), snap(r, "s1"), want)
	}

	// A replica reopened from its store rebuilds exactly the same state.
	replicas[2].Close()
	re, err := ledger.Open(ctx, stores[2], w.fleet.Config(devs[2], nil))
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	sameSnapshot(t, "reopened replica", snap(re, "s1"), want)
}

// TestOversellSameConflictEverywhere: stock 3, two terminals each sell 2
// while apart. Every replica names the same sale as oversold by 1, and one
// conflict.resolved op closes it everywhere.
func TestOversellSameConflictEverywhere(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(3)
	a := f.Enroll("s1", ledger.RoleTerminal)
	b := f.Enroll("s1", ledger.RoleTerminal)
	certs := []*ledger.Certificate{a.Cert, b.Cert}
	la, err := f.Open(ctx, ledgertest.MemStore(), a, certs...)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := f.Open(ctx, ledgertest.MemStore(), b, certs...)
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte
	must := func(l *ledger.Ledger, kind ledger.Kind, body any) *ledger.Op {
		t.Helper()
		o, err := l.Append(ctx, "s1", kind, body)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, slices.Clone(o.Raw()))
		return o
	}
	must(la, ledger.KindStockReceived, &ledger.StockReceived{SKU: "MUG", Qty: 3})
	syncAll(t, la, lb)
	// Apart: each sees 3 on hand and sells 2.
	if la.OnHand("s1", "MUG") != 3 || lb.OnHand("s1", "MUG") != 3 {
		t.Fatal("both terminals should see 3 mugs before selling")
	}
	sa := must(la, ledger.KindSale, ledgertest.Sale("MUG", 2, 800))
	sb := must(lb, ledger.KindSale, ledgertest.Sale("MUG", 2, 800))
	// The later sale in (hlc, device, seq) order is the oversold one.
	late := sb
	if c := sb.HLC.Compare(sa.HLC); c < 0 || (c == 0 && sb.Device < sa.Device) {
		late = sa
	}
	wantID := "oversell:s1:MUG:" + late.ID()

	replicas, _, _ := openReplicas(t, f, 5, certs)
	replicas = append(replicas, la, lb)
	for i, r := range replicas[:5] {
		deliver(t, r, raws, rand.New(rand.NewPCG(uint64(i), 7)))
	}
	syncAll(t, la, lb)
	for i, r := range replicas {
		cs := r.Conflicts("s1")
		if len(cs) != 1 {
			t.Fatalf("replica %d: %d conflicts %+v, want 1", i, len(cs), cs)
		}
		c := cs[0]
		if c.ID != wantID || c.Sale != late.ID() || c.Oversold != 1 || c.OnHand != -1 || c.SKU != "MUG" || c.Resolution != nil {
			t.Fatalf("replica %d: conflict %+v, want %s oversold by 1, open", i, c, wantID)
		}
		if r.Digest("s1") != replicas[0].Digest("s1") {
			t.Fatalf("replica %d: digest differs", i)
		}
	}

	// Terminal a resolves it (a backorder); every replica sees it resolved.
	res := must(la, ledger.KindConflictResolved, &ledger.ConflictResolved{Conflict: wantID, Action: "backorder"})
	for _, r := range replicas[:5] {
		if err := applyOK(t, r, [][]byte{res.Raw()}); err != nil {
			t.Fatal(err)
		}
	}
	syncAll(t, la, lb)
	for i, r := range replicas {
		cs := r.Conflicts("s1")
		if len(cs) != 1 || cs[0].Resolution == nil || cs[0].Resolution.Action != "backorder" {
			t.Fatalf("replica %d: conflicts %+v, want %s resolved by backorder", i, cs, wantID)
		}
		if r.Digest("s1") != replicas[0].Digest("s1") {
			t.Fatalf("replica %d: digest differs after the resolution", i)
		}
	}
}
