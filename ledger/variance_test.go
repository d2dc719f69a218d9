package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"storemesh/ledger"
)

// TestPriceVariance: a till sells at the list price, then at a price of
// its own, then after HQ's price change at the old price; a replica that
// gets the price change before the sales shows the same two variances.
func TestPriceVariance(t *testing.T) {
	rf := newRevFleet(t, 12, map[string][2]string{"mgr": {"s1", "manager"}, "t1": {"s1", "terminal"}})
	mgr, t1 := rf.ledgers["mgr"], rf.ledgers["t1"]
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	set := func(d time.Time) { rf.clocks["mgr"].Set(d); rf.clocks["t1"].Set(d) }
	set(at)
	revAppend(t, mgr, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: "TEA", Name: "Tea", UnitPrice: 350, Currency: "EUR"})
	syncFleet := func(from, to *ledger.Ledger) {
		t.Helper()
		syncInto(t, from, to, ledger.FleetScope, "s1")
	}
	syncFleet(mgr, t1)
	set(at.Add(time.Minute))
	revAppend(t, t1, "s1", ledger.KindSale, &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "TEA", Qty: 1, UnitPrice: 350}}, Currency: "EUR", Payment: "cash"})
	set(at.Add(2 * time.Minute))
	own := revAppend(t, t1, "s1", ledger.KindSale, &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "TEA", Qty: 2, UnitPrice: 300}}, Currency: "EUR", Payment: "cash"})
	set(at.Add(3 * time.Minute))
	revAppend(t, mgr, ledger.FleetScope, ledger.KindPriceSet, &ledger.PriceSet{SKU: "TEA", UnitPrice: 400, Currency: "EUR"})
	set(at.Add(4 * time.Minute))
	stale := revAppend(t, t1, "s1", ledger.KindSale, &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "TEA", Qty: 1, UnitPrice: 350}}, Currency: "EUR", Payment: "cash"})

	// The manager gets the sales after its price change; a fresh replica
	// gets the fleet scope last.
	syncFleet(t1, mgr)
	fresh := rf.replica(t, nil)
	syncInto(t, t1, fresh, "s1")
	syncInto(t, mgr, fresh, ledger.FleetScope)
	var ref string
	for i, l := range []*ledger.Ledger{mgr, fresh} {
		lines, more, err := l.PriceVariance(ledger.SalesQuery{Store: "s1"})
		if err != nil || more {
			t.Fatal(err, more)
		}
		if len(lines) != 2 || lines[0].Sale != own.ID() || lines[0].ListPrice != 350 || lines[0].Difference != -100 ||
			lines[1].Sale != stale.ID() || lines[1].ListPrice != 400 || lines[1].Difference != -50 {
			t.Fatalf("replica %d: %+v", i, lines)
		}
		if got := fmt.Sprint(lines); i == 0 {
			ref = got
		} else if got != ref {
			t.Fatalf("replicas differ:\n%s\n%s", ref, got)
		}
	}
	if lines, more, _ := mgr.PriceVariance(ledger.SalesQuery{Store: "s1", Limit: 1}); len(lines) != 1 || !more {
		t.Fatalf("limit 1: %+v %v", lines, more)
	}
}
