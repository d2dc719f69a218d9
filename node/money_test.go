package node

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// The issue 11 report across two real nodes (libp2p on loopback, badger):
// sell TEA×2 + CAKE×1 on till-1, refund the CAKE on till-2, wait for sync:
// till-1 must refuse the second CAKE refund (it accepted it before).
func TestDoubleRefundAcrossNodesRefused(t *testing.T) {
	f := newTestFleet(t, 31)
	till1 := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "till-1"))
	till2 := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-2"), func(c *Config) { c.Peers = []string{tcpAddr(t, till1)} })
	setItem(t, till1, "TEA", "Tea", 350)
	setItem(t, till1, "CAKE", "Cake", 300)
	synced := func() bool {
		return till1.l.Digest("s1") == till2.l.Digest("s1") && till1.l.Digest(ledger.FleetScope) == till2.l.Digest(ledger.FleetScope)
	}
	body := map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 2}, {"sku": "CAKE", "qty": 1}}, "payment": map[string]any{"method": "cash"}}
	var s saleResult
	must(t, till1, 201, "POST", "/v1/sales", body).decode(t, &s)
	waitFor(t, 10*time.Second, "till-2 to get the sale", synced)
	cake := map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "CAKE", "qty": 1}}}
	var r refundResult
	must(t, till2, 201, "POST", "/v1/refunds", cake).decode(t, &r)
	if r.Amount != 300 || r.Honoured != 300 || !strings.HasPrefix(r.Receipt, "till-2·R0001") {
		t.Errorf("refund on till-2: %+v", r)
	}
	waitFor(t, 10*time.Second, "till-1 to get the refund", synced)
	if c := call(t, till1, "POST", "/v1/refunds", cake).code(); c != CodeRefundExceedsSale {
		t.Fatalf("second CAKE refund on till-1: %s, want %s", c, CodeRefundExceedsSale)
	}
	// The whole sale cannot be refunded either; the teas still can.
	if c := call(t, till1, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID}).code(); c != CodeRefundExceedsSale {
		t.Errorf("whole refund: %s", c)
	}
	must(t, till1, 201, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "TEA", "qty": 2}}})
	waitFor(t, 10*time.Second, "the tea refund to sync", synced)
	for _, n := range []*Node{till1, till2} {
		rec, _ := n.l.Sale(s.SaleID)
		if rec.Refunded != 1000 || onHandOf(t, n, "CAKE") != 0 || onHandOf(t, n, "TEA") != 0 {
			t.Errorf("refunded %d, cake %d, tea %d", rec.Refunded, onHandOf(t, n, "CAKE"), onHandOf(t, n, "TEA"))
		}
	}
}

// Receipt numbers through the API: gapless per device for sales (stock
// and refund ops in between take none), returned by POST and GET, and a
// sale can be fetched by its receipt number.
func TestReceiptNumbersInTheAPI(t *testing.T) {
	n := startNode(t, newTestFleet(t, 32).enroll(t, "s1", ledger.RoleManager, "till-1"))
	setItem(t, n, "TEA", "Tea", 350)
	var a, b saleResult
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash")).decode(t, &a)
	must(t, n, 201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 5})
	var r refundResult
	must(t, n, 201, "POST", "/v1/refunds", map[string]any{"sale_id": a.SaleID}, "Idempotency-Key", "r1").decode(t, &r)
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 2, "cash"), "Idempotency-Key", "s2").decode(t, &b)
	if a.Receipt != "till-1·0001" || b.Receipt != "till-1·0002" || r.Receipt != "till-1·R0001" {
		t.Errorf("receipts %q %q, refund %q; want till-1·0001, till-1·0002, till-1·R0001", a.Receipt, b.Receipt, r.Receipt)
	}
	var again refundResult
	must(t, n, 201, "POST", "/v1/refunds", map[string]any{"sale_id": a.SaleID}, "Idempotency-Key", "r1").decode(t, &again)
	if again.Receipt != r.Receipt || again.RefundID != r.RefundID {
		t.Errorf("replayed refund %+v, want %+v", again, r)
	}
	var got ledger.SaleRecord
	must(t, n, 200, "GET", "/v1/sales/"+url.PathEscape(b.Receipt), nil).decode(t, &got)
	if got.ID != b.SaleID || got.Receipt != b.Receipt {
		t.Errorf("GET by receipt: %+v", got)
	}
	var list struct{ Sales []ledger.SaleRecord }
	must(t, n, 200, "GET", "/v1/sales", nil).decode(t, &list)
	if len(list.Sales) != 2 || list.Sales[0].Receipt != a.Receipt || list.Sales[1].Receipt != b.Receipt || list.Sales[0].Refunded != 350 {
		t.Errorf("sales %+v", list.Sales)
	}
	if c := call(t, n, "GET", "/v1/sales/"+url.PathEscape("till-1·0009"), nil).code(); c != CodeUnknownSale {
		t.Errorf("unknown receipt: %s", c)
	}
}

// A coffee whose stock nobody records never oversells; the catalog can
// say a SKU is tracked, and the field round-trips.
func TestUntrackedCatalogItems(t *testing.T) {
	n := startNode(t, newTestFleet(t, 33).enroll(t, "s1", ledger.RoleManager, "m"))
	setItem(t, n, "COFFEE", "Coffee", 250)
	must(t, n, 201, "POST", "/v1/sales", sale("COFFEE", 3, "cash"))
	if st := n.status(); st.Conflicts != 0 {
		t.Errorf("coffee with no stock ops: %d conflicts", st.Conflicts)
	}
	var item ledger.CatalogItem
	must(t, n, 200, "PUT", "/v1/catalog/COFFEE", map[string]any{"name": "Coffee", "unit_price": 250, "currency": "EUR", "stock": "tracked"}).decode(t, &item)
	if item.Stock != ledger.StockTracked {
		t.Errorf("PUT answered %+v", item)
	}
	if st := n.status(); st.Conflicts != 1 {
		t.Errorf("tracked coffee sold with no stock: %d conflicts, want 1", st.Conflicts)
	}
}

// The double refund across a partition: a till that was offline refunded
// the same CAKE as till-1 did over HTTP. Once its refund arrives, every
// node shows the same over_refund conflict, the cake is back in stock
// once, and the sale's refunded counts it once.
func TestPartitionedDoubleRefundConflictEverywhere(t *testing.T) {
	ctx := context.Background()
	f := newTestFleet(t, 34)
	till1 := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "till-1"))
	till2 := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-2"), func(c *Config) { c.Peers = []string{tcpAddr(t, till1)} })
	setItem(t, till1, "TEA", "Tea", 350)
	setItem(t, till1, "CAKE", "Cake", 300)
	must(t, till1, 201, "POST", "/v1/stock/received", map[string]any{"sku": "CAKE", "qty": 5})
	body := map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 2}, {"sku": "CAKE", "qty": 1}}, "payment": map[string]any{"method": "cash"}}
	var s saleResult
	must(t, till1, 201, "POST", "/v1/sales", body).decode(t, &s)

	// till-3 got the sale before it went offline, and refunds the cake.
	dev3 := f.enroll(t, "s1", ledger.RoleTerminal, "till-3")
	cfg := ledger.DefaultConfig()
	cfg.Fleet, cfg.Self, cfg.Key = dev3.Fleet, dev3.Cert, dev3.Key
	till3, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer till3.Close()
	if _, err := till3.AddCertificate(ctx, till1.self.Encode()); err != nil {
		t.Fatal(err)
	}
	var saleRaw [][]byte // till-1's chain up to the sale
	if err := till1.l.Range(ctx, "s1", s.Device, 0, s.Seq, 1<<20, func(b []ledger.RawOp) error {
		for _, r := range b {
			saleRaw = append(saleRaw, r.Bytes)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := till3.ApplyBatch(ctx, saleRaw); err != nil {
		t.Fatal(err)
	}
	offline, err := till3.Append(ctx, "s1", ledger.KindRefund, &ledger.Refund{Sale: s.SaleID, Lines: []ledger.RefundLine{{SKU: "CAKE", Qty: 1}}, Amount: 300})
	if err != nil {
		t.Fatal(err)
	}
	cake := map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "CAKE", "qty": 1}}}
	must(t, till1, 201, "POST", "/v1/refunds", cake) // till-1 does not know of till-3's yet

	// till-3 comes back: its certificate and its refund reach till-1.
	for _, n := range []*Node{till1, till2} {
		if _, err := n.l.AddCertificate(ctx, dev3.Cert.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if rs, err := till1.l.ApplyBatch(ctx, [][]byte{offline.Raw()}); err != nil || rs[0].Outcome != ledger.Applied {
		t.Fatalf("till-3's refund at till-1: %v %+v", err, rs)
	}
	waitFor(t, 10*time.Second, "till-2 to sync", func() bool { return till1.l.Digest("s1") == till2.l.Digest("s1") })
	for i, n := range []*Node{till1, till2} {
		var cs struct{ Conflicts []ledger.Conflict }
		must(t, n, 200, "GET", "/v1/conflicts", nil).decode(t, &cs)
		if len(cs.Conflicts) != 1 || cs.Conflicts[0].Kind != ledger.ConflictOverRefund || cs.Conflicts[0].Sale != s.SaleID || cs.Conflicts[0].Excess != 300 {
			t.Errorf("till-%d: conflicts %+v, want one over_refund", i+1, cs.Conflicts)
		}
		rec, _ := n.l.Sale(s.SaleID)
		if rec.Refunded != 300 || onHandOf(t, n, "CAKE") != 5 {
			t.Errorf("till-%d: refunded %d, CAKE %d; want 300 and 5 (one refund counted)", i+1, rec.Refunded, onHandOf(t, n, "CAKE"))
		}
		if st := n.status(); st.Conflicts != 1 {
			t.Errorf("till-%d: status shows %d conflicts", i+1, st.Conflicts)
		}
	}
}
