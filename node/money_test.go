package node

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"storemesh/ledger"
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
