package ledger_test

import (
	"context"
	"testing"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

func named(name string) ledgertest.DeviceOpt {
	return func(c *ledger.Certificate) { c.Name = name }
}

func receiptOf(t *testing.T, l *ledger.Ledger, o *ledger.Op) string {
	t.Helper()
	rec, ok := l.Sale(o.ID())
	if !ok {
		t.Fatalf("sale %s missing", o.ID())
	}
	return rec.Receipt
}

// Receipt numbers are gapless per device for sales and, separately, for
// refunds, whatever other ops the device writes in between, and they
// continue after a restart (replay).
func TestReceiptsGaplessAcrossRestart(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(71)
	d := f.Enroll("s1", ledger.RoleTerminal, named("till-1"))
	st := ledgertest.MemStore()
	l, err := f.Open(ctx, st, d)
	if err != nil {
		t.Fatal(err)
	}
	s1 := mustAppend(t, l, ledger.KindSale, teaAndCake())
	mustAppend(t, l, ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 3})
	r1 := mustAppend(t, l, ledger.KindRefund, cakeRefund(s1.ID()))
	s2 := mustAppend(t, l, ledger.KindSale, teaAndCake())
	mustAppend(t, l, ledger.KindStockCounted, &ledger.StockCounted{SKU: "TEA", OnHand: 1, Seen: l.OnHand("s1", "TEA")})
	r2 := mustAppend(t, l, ledger.KindRefund, cakeRefund(s2.ID()))
	s3 := mustAppend(t, l, ledger.KindSale, teaAndCake())
	for o, want := range map[*ledger.Op]string{s1: "till-1·0001", s2: "till-1·0002", s3: "till-1·0003"} {
		if got := receiptOf(t, l, o); got != want {
			t.Errorf("sale at seq %d: receipt %q, want %q", o.Seq, got, want)
		}
	}
	for o, want := range map[*ledger.Op]string{r1: "till-1·R0001", r2: "till-1·R0002"} {
		rs := l.Refunds(map[*ledger.Op]*ledger.Op{r1: s1, r2: s2}[o].ID()).Refunds
		if len(rs) != 1 || rs[0].Receipt != want {
			t.Errorf("refund at seq %d: %+v, want receipt %q", o.Seq, rs, want)
		}
	}
	if rec, ok := l.SaleByReceipt("till-1·0002"); !ok || rec.ID != s2.ID() {
		t.Errorf("SaleByReceipt(till-1·0002) = %s %v, want %s", rec.ID, ok, s2.ID())
	}
	l.Close()

	l, err = f.Open(ctx, st, d)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s4 := mustAppend(t, l, ledger.KindSale, teaAndCake())
	if got := receiptOf(t, l, s4); got != "till-1·0004" {
		t.Errorf("after restart: %q, want till-1·0004", got)
	}
	r3 := mustAppend(t, l, ledger.KindRefund, cakeRefund(s4.ID()))
	if rs := l.Refunds(s4.ID()).Refunds; len(rs) != 1 || rs[0].Receipt != "till-1·R0003" || rs[0].ID != r3.ID() {
		t.Errorf("refund after restart: %+v, want till-1·R0003", rs)
	}
}

// An anchor's sales of two stores share one counter: receipts never
// repeat across stores.
func TestReceiptsUniqueAcrossStoresOnAnchor(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(72)
	a := f.Enroll(ledger.FleetScope, ledger.RoleAnchor, named("hq"))
	l, err := f.Open(ctx, ledgertest.MemStore(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seen := map[string]string{}
	for i := range 6 {
		store := []string{"s1", "s2"}[i%2]
		o, err := l.Append(ctx, store, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		if err != nil {
			t.Fatal(err)
		}
		r := receiptOf(t, l, o)
		if prev, dup := seen[r]; dup {
			t.Errorf("receipt %s of %s repeats %s", r, store, prev)
		}
		seen[r] = store
	}
	if _, ok := seen["hq·0006"]; !ok {
		t.Errorf("receipts %v, want hq·0001 … hq·0006", seen)
	}
}

// Two certificates with one name still give unique receipts; a later
// epoch of a device counts afresh with its epoch in the number; an op
// written before receipt numbers keeps a readable fallback.
func TestReceiptsSharedNameEpochAndOldOps(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(73)
	ts := openTills(t, f, 1)
	twin := f.Enroll("s1", ledger.RoleTerminal, named("till-1"))
	l := ts[0].l
	own := mustAppend(t, l, ledger.KindSale, teaAndCake())
	if got := receiptOf(t, l, own); got != "till-1·0001" {
		t.Fatalf("receipt %q", got)
	}
	if _, err := l.AddCertificate(ctx, twin.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	at := ledgertest.Epoch.Add(time.Hour)
	seal := func(device string, seq uint64, bodyV uint16, b any) *ledger.Op {
		enc, err := crdt.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		o := &ledger.Op{V: 1, Fleet: l.FleetID(), Store: "s1", Device: device, Seq: seq,
			HLC: crdt.Timestamp{Wall: at.UnixNano()}, Kind: ledger.KindSale, BodyV: bodyV, Body: enc}
		if err := o.Seal(twin.Key); err != nil {
			t.Fatal(err)
		}
		return o
	}
	withNo := func(n uint64) *ledger.Sale { s := ledgertest.Sale("TEA", 1, 350); s.ReceiptSeq = n; return s }
	twinSale := seal(twin.ID(), 1, 2, withNo(1))
	epochSale := seal(ledger.ChainID(twin.ID(), 2), 1, 2, withNo(1))
	oldSale := seal(ledger.ChainID(twin.ID(), 3), 1, 1, ledgertest.Sale("TEA", 1, 350))
	applyOK(t, l, [][]byte{twinSale.Raw(), epochSale.Raw(), oldSale.Raw()})

	sfx := twin.ID()[len(twin.ID())-4:]
	ownSfx := ts[0].dev.ID()[len(ts[0].dev.ID())-4:]
	for o, want := range map[*ledger.Op]string{
		own:       "till-1#" + ownSfx + "·0001",
		twinSale:  "till-1#" + sfx + "·0001",
		epochSale: "till-1#" + sfx + "·2·0001",
		oldSale:   ledger.ReceiptNo(oldSale.Device, 1),
	} {
		if got := receiptOf(t, l, o); got != want {
			t.Errorf("%s: receipt %q, want %q", o.Device, got, want)
		}
		if want != ledger.ReceiptNo(oldSale.Device, 1) {
			if rec, ok := l.SaleByReceipt(want); !ok || rec.ID != o.ID() {
				t.Errorf("SaleByReceipt(%q) = %q %v, want %s", want, rec.ID, ok, o.ID())
			}
		}
	}
}

// A SKU whose stock nobody records is not stock-tracked: selling it never
// oversells. A stock op makes it tracked in its store; the catalog can
// say either way.
func TestUntrackedSKUsNeverOversell(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(74)
	mgr := f.Enroll("s1", ledger.RoleManager)
	l, err := f.Open(ctx, ledgertest.MemStore(), mgr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mustAppend(t, l, ledger.KindSale, ledgertest.Sale("COFFEE", 3, 250))
	if cs := l.Conflicts("s1"); len(cs) != 0 {
		t.Fatalf("coffee with no stock ops: conflicts %+v", cs)
	}
	mustAppend(t, l, ledger.KindStockReceived, &ledger.StockReceived{SKU: "COFFEE", Qty: 1})
	if cs := l.Conflicts("s1"); len(cs) != 1 || cs[0].Oversold != 2 {
		t.Fatalf("after a stock op: conflicts %+v, want the sale oversold by 2", cs)
	}
	upsert := func(stock string) {
		t.Helper()
		if _, err := l.Append(ctx, ledger.FleetScope, ledger.KindCatalogUpsert,
			&ledger.CatalogItem{SKU: "COFFEE", Name: "Coffee", UnitPrice: 250, Currency: "EUR", Stock: stock}); err != nil {
			t.Fatal(err)
		}
	}
	upsert(ledger.StockUntracked)
	if cs := l.Conflicts("s1"); len(cs) != 0 {
		t.Fatalf("catalog says untracked: conflicts %+v", cs)
	}
	mustAppend(t, l, ledger.KindSale, ledgertest.Sale("SERVICE", 1, 1000))
	if cs := l.Conflicts("s1"); len(cs) != 0 {
		t.Fatalf("service: conflicts %+v", cs)
	}
	if _, err := l.Append(ctx, ledger.FleetScope, ledger.KindCatalogUpsert,
		&ledger.CatalogItem{SKU: "SERVICE", Name: "Service", UnitPrice: 1000, Currency: "EUR", Stock: ledger.StockTracked}); err != nil {
		t.Fatal(err)
	}
	if cs := l.Conflicts("s1"); len(cs) != 1 || cs[0].SKU != "SERVICE" {
		t.Fatalf("catalog says tracked: conflicts %+v, want the service sale", cs)
	}
	if _, err := l.Append(ctx, ledger.FleetScope, ledger.KindCatalogUpsert,
		&ledger.CatalogItem{SKU: "X", Name: "x", UnitPrice: 1, Currency: "EUR", Stock: "maybe"}); ledger.RejectReason(err) != ledger.ReasonBody {
		t.Errorf("stock \"maybe\": %v, want bad_body", err)
	}
}

// A transfer op moves its own store's stock: one whose store is neither
// its From nor its To is refused, locally and from a peer, and counted.
func TestTransferOutsideItsStoresRefused(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(75)
	ts := openTills(t, f, 2)
	tr := &ledger.StockTransferred{SKU: "TEA", Qty: 2, From: "s2", To: "s3", Transfer: "t1"}
	_, err := ts[0].l.Append(ctx, "s1", ledger.KindStockTransferred, tr)
	if ledger.RejectReason(err) != ledger.ReasonBody {
		t.Fatalf("local: %v, want bad_body", err)
	}
	if n := ts[0].l.Stats().Rejected[ledger.ReasonBody]; n != 1 {
		t.Errorf("local refusal counted %d times", n)
	}
	bad := sealOp(t, ts[0].l.FleetID(), ts[1].dev, "s1", 1, nil, ledgertest.Epoch.Add(time.Hour), ledger.KindStockTransferred, tr)
	rs, err := ts[0].l.ApplyBatch(ctx, [][]byte{bad.Raw()})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Outcome != ledger.Rejected || ledger.RejectReason(rs[0].Err) != ledger.ReasonBody {
		t.Fatalf("remote: %v %v, want rejected bad_body", rs[0].Outcome, rs[0].Err)
	}
	if n := ts[0].l.Stats().Rejected[ledger.ReasonBody]; n != 2 {
		t.Errorf("refusals counted %d, want 2", n)
	}
	if got := ts[0].l.OnHand("s1", "TEA"); got != 0 {
		t.Errorf("s1 TEA moved to %d", got)
	}
	// A good transfer still moves stock.
	mustAppend(t, ts[0].l, ledger.KindStockTransferred, &ledger.StockTransferred{SKU: "TEA", Qty: 2, From: "s1", To: "s3", Transfer: "t2"})
	if got := ts[0].l.OnHand("s1", "TEA"); got != -2 {
		t.Errorf("s1 TEA %d after sending 2", got)
	}
}
