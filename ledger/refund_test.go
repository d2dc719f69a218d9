package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// Refunds are bounded by their sale in the replicated state (issue 11):
// the same on every replica, whatever the order ops arrive in.

type till struct {
	dev *ledgertest.Device
	l   *ledger.Ledger
}

// openTills opens n terminals of s1 (and a manager for the catalog), each
// knowing every certificate.
func openTills(t *testing.T, f *ledgertest.Fleet, n int) []till {
	t.Helper()
	ctx := context.Background()
	var devs []*ledgertest.Device
	var certs []*ledger.Certificate
	for i := range n {
		d := f.Enroll("s1", ledger.RoleTerminal, func(c *ledger.Certificate) { c.Name = fmt.Sprintf("till-%d", i+1) })
		devs, certs = append(devs, d), append(certs, d.Cert)
	}
	var out []till
	for _, d := range devs {
		l, err := f.Open(ctx, ledgertest.MemStore(), d, certs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		out = append(out, till{d, l})
	}
	return out
}

func teaAndCake() *ledger.Sale {
	return &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "TEA", Qty: 2, UnitPrice: 350}, {SKU: "CAKE", Qty: 1, UnitPrice: 300}},
		Currency: "EUR", Payment: "cash"}
}

func cakeRefund(sale string) *ledger.Refund {
	return &ledger.Refund{Sale: sale, Lines: []ledger.RefundLine{{SKU: "CAKE", Qty: 1}}, Amount: 300}
}

func mustAppend(t *testing.T, l *ledger.Ledger, kind ledger.Kind, b any) *ledger.Op {
	t.Helper()
	o, err := l.Append(context.Background(), "s1", kind, b)
	if err != nil {
		t.Fatalf("append %s: %v", kind, err)
	}
	return o
}

// The report: sell TEA×2 + CAKE×1 on till-1, refund the CAKE on
// till-2, sync: till-1 must refuse a second CAKE refund.
func TestRefundBoundedBySaleAcrossReplicas(t *testing.T) {
	ts := openTills(t, ledgertest.NewFleet(61), 2)
	sale := mustAppend(t, ts[0].l, ledger.KindSale, teaAndCake())
	syncAll(t, ts[0].l, ts[1].l)
	mustAppend(t, ts[1].l, ledger.KindRefund, cakeRefund(sale.ID()))
	syncAll(t, ts[0].l, ts[1].l)

	_, err := ts[0].l.Append(context.Background(), "s1", ledger.KindRefund, cakeRefund(sale.ID()))
	if !errors.Is(err, ledger.ErrRefundExceedsSale) {
		t.Fatalf("second CAKE refund: %v, want ErrRefundExceedsSale", err)
	}
	// What is left can still be refunded: one tea, priced as sold.
	_, err = ts[0].l.Append(context.Background(), "s1", ledger.KindRefund,
		&ledger.Refund{Sale: sale.ID(), Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 1}}, Amount: 351})
	if !errors.Is(err, ledger.ErrRefundExceedsSale) {
		t.Fatalf("tea refund above its price: %v, want ErrRefundExceedsSale", err)
	}
	mustAppend(t, ts[0].l, ledger.KindRefund, &ledger.Refund{Sale: sale.ID(), Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 1}}, Amount: 350})
	_, err = ts[0].l.Append(context.Background(), "s1", ledger.KindRefund, &ledger.Refund{Sale: "nosuchsale", Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 1}}})
	if !errors.Is(err, ledger.ErrUnknownSale) {
		t.Fatalf("refund of an unknown sale: %v, want ErrUnknownSale", err)
	}
	syncAll(t, ts[0].l, ts[1].l)
	for i, tl := range ts {
		rec, _ := tl.l.Sale(sale.ID())
		rf := tl.l.Refunds(sale.ID())
		if rec.Refunded != 650 || rf.Amount != 650 || rf.Units["CAKE"] != 1 || rf.Units["TEA"] != 1 || len(rf.Refunds) != 2 {
			t.Errorf("till-%d: refunded %d, %+v", i+1, rec.Refunded, rf)
		}
		if got := tl.l.OnHand("s1", "CAKE"); got != 0 {
			t.Errorf("till-%d: CAKE on hand %d, want 0 (sold 1, refunded 1)", i+1, got)
		}
		if cs := tl.l.Conflicts("s1"); len(cs) != 0 {
			t.Errorf("till-%d: conflicts %+v", i+1, cs)
		}
	}
}

// Two tills offline refund the same line: every replica, whatever the
// order, shows one deterministic over_refund conflict, credits the stock
// once and counts the refund once; a conflict.resolved op closes it.
func TestDoubleRefundConflictInAnyOrder(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(62)
	ts := openTills(t, f, 3)
	received := mustAppend(t, ts[0].l, ledger.KindStockReceived, &ledger.StockReceived{SKU: "CAKE", Qty: 5})
	sale := mustAppend(t, ts[0].l, ledger.KindSale, teaAndCake())
	syncAll(t, ts[0].l, ts[1].l, ts[2].l)
	// Partitioned: till-2 and till-3 each refund the cake.
	r2 := mustAppend(t, ts[1].l, ledger.KindRefund, cakeRefund(sale.ID()))
	r3 := mustAppend(t, ts[2].l, ledger.KindRefund, cakeRefund(sale.ID()))
	// The later of the two by (hlc, device, seq, hash) is the excess.
	later := r3
	if r3.HLC.Compare(r2.HLC) < 0 || (r3.HLC == r2.HLC && r3.Device < r2.Device) {
		later = r2
	}
	wantID := "overrefund:" + later.ID()

	ops := [][]byte{received.Raw(), sale.Raw(), r2.Raw(), r3.Raw()}
	var certs []*ledger.Certificate
	for _, tl := range ts {
		certs = append(certs, tl.dev.Cert)
	}
	var digest string
	check := func(name string, l *ledger.Ledger) {
		t.Helper()
		cs := l.Conflicts("s1")
		if len(cs) != 1 || cs[0].ID != wantID || cs[0].Kind != ledger.ConflictOverRefund || cs[0].Refund != later.ID() ||
			cs[0].Sale != sale.ID() || cs[0].SKU != "CAKE" || cs[0].Oversold != 1 || cs[0].Excess != 300 {
			t.Errorf("%s: conflicts %+v, want one %s", name, cs, wantID)
		}
		if got := l.OnHand("s1", "CAKE"); got != 5 {
			t.Errorf("%s: CAKE on hand %d, want 5 (5 received, 1 sold, 1 refunded once)", name, got)
		}
		if rec, _ := l.Sale(sale.ID()); rec.Refunded != 300 {
			t.Errorf("%s: refunded %d, want 300", name, rec.Refunded)
		}
		if open, _ := l.OpenConflicts("s1"); open != 1 {
			t.Errorf("%s: %d open conflicts, want 1", name, open)
		}
		d := l.Digest("s1")
		if digest == "" {
			digest = d
		} else if d != digest {
			t.Errorf("%s: digest %s, want %s", name, d[:12], digest[:12])
		}
	}
	// Every arrival order, the refunds before their sale included.
	perms := [][]int{{0, 1, 2, 3}, {0, 1, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}, {2, 0, 1, 3}, {3, 1, 0, 2}}
	for _, p := range perms {
		rep, err := f.Open(ctx, ledgertest.MemStore(), nil, certs...)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range p {
			applyOK(t, rep, [][]byte{ops[i]})
		}
		check(fmt.Sprint("order ", p), rep)
		rep.Close()
	}
	syncAll(t, ts[1].l, ts[0].l)
	syncAll(t, ts[2].l, ts[0].l, ts[1].l)
	for i, tl := range ts {
		check(fmt.Sprintf("till-%d", i+1), tl.l)
	}
	// Resolved with the existing conflict.resolved op.
	mustAppend(t, ts[0].l, ledger.KindConflictResolved, &ledger.ConflictResolved{Conflict: wantID, Action: "refund", Note: "cash back"})
	syncAll(t, ts[0].l, ts[1].l, ts[2].l)
	for i, tl := range ts {
		cs := tl.l.Conflicts("s1")
		if len(cs) != 1 || cs[0].Resolution == nil || cs[0].Resolution.Action != "refund" {
			t.Errorf("till-%d after resolve: %+v", i+1, cs)
		}
		if open, resolved := tl.l.OpenConflicts("s1"); open != 0 || resolved != 1 {
			t.Errorf("till-%d: %d open, %d resolved", i+1, open, resolved)
		}
	}
}

// A refund that names a SKU its sale did not sell is honoured 0 for it
// and flagged; one that asks more money than the units it returns were
// sold for is honoured up to their price.
func TestRefundOfUnsoldSKUFlagged(t *testing.T) {
	f := ledgertest.NewFleet(63)
	ts := openTills(t, f, 2)
	sale := mustAppend(t, ts[0].l, ledger.KindSale, teaAndCake())
	at := ledgertest.Epoch.Add(time.Hour)
	bad := sealOp(t, ts[0].l.FleetID(), ts[1].dev, "s1", 1, nil, at, ledger.KindRefund,
		&ledger.Refund{Sale: sale.ID(), Lines: []ledger.RefundLine{{SKU: "MUG", Qty: 1}, {SKU: "TEA", Qty: 1}}, Amount: 900})
	applyOK(t, ts[0].l, [][]byte{bad.Raw()})
	cs := ts[0].l.Conflicts("s1")
	if len(cs) != 1 || cs[0].SKU != "MUG" || cs[0].Oversold != 1 || cs[0].Excess != 550 {
		t.Fatalf("conflicts %+v, want one for MUG with 550 excess", cs)
	}
	rf := ts[0].l.Refunds(sale.ID())
	if rf.Amount != 350 || rf.Units["TEA"] != 1 || rf.Units["MUG"] != 0 || !rf.Refunds[0].Conflict {
		t.Errorf("refunds %+v", rf)
	}
	if got := ts[0].l.OnHand("s1", "MUG"); got != 0 {
		t.Errorf("MUG on hand %d, want 0: an unsold SKU is never credited", got)
	}
}

// Audit verify counts refunds with the same rule and reports a double
// refund instead of passing it.
func TestAuditCountsRefundsOnce(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(64)
	ts := openTills(t, f, 2)
	sale := mustAppend(t, ts[0].l, ledger.KindSale, teaAndCake())
	syncAll(t, ts[0].l, ts[1].l)
	mustAppend(t, ts[0].l, ledger.KindRefund, cakeRefund(sale.ID()))
	mustAppend(t, ts[1].l, ledger.KindRefund, cakeRefund(sale.ID()))
	syncAll(t, ts[0].l, ts[1].l)
	var b strings.Builder
	if _, err := ts[0].l.Export(ctx, &b); err != nil {
		t.Fatal(err)
	}
	rep, err := ledger.VerifyBundle(strings.NewReader(b.String()), ledger.VerifyOptions{Fleet: f.Key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if want := []ledger.RefundTotal{{Store: "s1", Refunds: 2, Amount: 300, Conflicts: 1}}; !slices.Equal(rep.Refunds, want) {
		t.Errorf("refund totals %+v, want %+v", rep.Refunds, want)
	}
	if len(rep.RefundConflicts) != 1 || rep.RefundConflicts[0].ID != ts[0].l.Conflicts("s1")[0].ID {
		t.Errorf("refund conflicts in the report %+v, want the ledger's %+v", rep.RefundConflicts, ts[0].l.Conflicts("s1"))
	}
}
