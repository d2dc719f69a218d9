package ledger_test

import (
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// TestSalesReport: two tills over two days; the report by each dimension
// agrees with the sale log, refunds count on their day by the rule, and a
// double refund from two partitioned tills counts once.
func TestSalesReport(t *testing.T) {
	rf := newRevFleet(t, 11, map[string][2]string{"t1": {"s1", "terminal"}, "t2": {"s1", "terminal"}})
	t1, t2 := rf.ledgers["t1"], rf.ledgers["t2"]
	day1 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rf.clocks["t1"].Set(day1)
	rf.clocks["t2"].Set(day1)
	card := &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "TEA", Qty: 2, UnitPrice: 350}, {SKU: "CAKE", Qty: 1, UnitPrice: 500}}, Currency: "EUR", Payment: "card"}
	s1 := revAppend(t, t1, "s1", ledger.KindSale, card)                      // 1200
	revAppend(t, t1, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))  // 350 cash
	revAppend(t, t2, "s1", ledger.KindSale, ledgertest.Sale("CAKE", 2, 500)) // 1000 cash
	pull(t, t1, t2)
	pull(t, t2, t1)
	day2 := day1.Add(24 * time.Hour)
	rf.clocks["t1"].Set(day2)
	rf.clocks["t2"].Set(day2)
	// Partitioned, both tills refund the cake of the card sale.
	cake := &ledger.Refund{Sale: s1.ID(), Lines: []ledger.RefundLine{{SKU: "CAKE", Qty: 1}}, Amount: 500}
	revAppend(t, t1, "s1", ledger.KindRefund, cake)
	revAppend(t, t2, "s1", ledger.KindRefund, cake)
	revAppend(t, t2, "s1", ledger.KindSale, ledgertest.Sale("TEA", 3, 350)) // 1050 cash
	pull(t, t1, t2)
	pull(t, t2, t1)

	type row struct{ sales, units, gross, refunds, net int64 }
	want := map[string]map[string]row{
		ledger.ByDay:     {"2026-12-01": {3, 6, 2550, 0, 2550}, "2026-12-02": {1, 3, 1050, 500, 550}},
		ledger.ByPayment: {"card": {1, 3, 1200, 500, 700}, "cash": {3, 6, 2400, 0, 2400}},
		ledger.BySKU:     {"TEA": {3, 6, 2100, 0, 2100}, "CAKE": {2, 3, 1500, 500, 1000}},
		ledger.ByDevice:  {rf.devs["t1"].ID(): {2, 4, 1550, -1, -1}, rf.devs["t2"].ID(): {2, 5, 2050, -1, -1}},
	}
	for _, l := range []*ledger.Ledger{t1, t2} {
		var devRefunds int64
		for dim, rows := range want {
			got, err := l.SalesReport(ledger.ReportQuery{Store: "s1", By: dim})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(rows) {
				t.Fatalf("by %s: %+v", dim, got)
			}
			for _, g := range got {
				w := rows[g.Key]
				if g.Sales != w.sales || g.Units != w.units || g.Gross != w.gross || g.Currency != "EUR" ||
					(w.refunds >= 0 && (g.Refunds != w.refunds || g.Net != w.net)) {
					t.Errorf("by %s, %s: %+v, want %+v", dim, g.Key, g, w)
				}
				if dim == ledger.ByDevice {
					devRefunds += g.Refunds
				}
			}
		}
		if devRefunds != 500 {
			t.Errorf("refunds by device add up to %d, want 500 (the double refund counted once)", devRefunds)
		}
		one, err := l.SalesReport(ledger.ReportQuery{Store: "s1", By: ledger.ByDay, From: "2026-12-02", To: "2026-12-02"})
		if err != nil || len(one) != 1 || one[0].Key != "2026-12-02" || one[0].RefundCount != 1 || one[0].RefundUnits != 1 {
			t.Errorf("one day: %+v %v", one, err)
		}
	}
	for _, q := range []ledger.ReportQuery{{By: "week"}, {By: ledger.ByDay, From: "2026-13-01"}, {By: ledger.ByDay, From: "2026-12-02", To: "2026-12-01"}} {
		if _, err := t1.SalesReport(q); err == nil {
			t.Errorf("query %+v accepted", q)
		}
	}
}

// TestSalesReportStoreDays: days are the store's local dates once it has
// a time zone, and a change of zone re-buckets what was already sold.
func TestSalesReportStoreDays(t *testing.T) {
	rf := newRevFleet(t, 14, map[string][2]string{"mgr": {"s1", "manager"}})
	l := rf.ledgers["mgr"]
	rf.clocks["mgr"].Set(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)) // 01:00 on the 2nd in Auckland (UTC+13)
	revAppend(t, l, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	day := func() string {
		t.Helper()
		rows, err := l.SalesReport(ledger.ReportQuery{Store: "s1", By: ledger.ByDay})
		if err != nil || len(rows) != 1 {
			t.Fatalf("%+v %v", rows, err)
		}
		return rows[0].Key
	}
	if d := day(); d != "2026-12-01" {
		t.Fatalf("undeclared store: day %s, want the UTC date", d)
	}
	revAppend(t, l, "s1", ledger.KindStoreSet, &ledger.StoreRecord{Name: "Stall", Currency: "NZD", TimeZone: "Pacific/Auckland"})
	if d := day(); d != "2026-12-02" {
		t.Fatalf("Auckland: day %s, want 2026-12-02", d)
	}
	if page, _, _ := l.SalesPage(ledger.SalesQuery{Store: "s1", From: "2026-12-02", To: "2026-12-02"}); len(page) != 1 {
		t.Fatalf("the sale log's day filter follows the zone: %d", len(page))
	}
	revAppend(t, l, "s1", ledger.KindStoreSet, &ledger.StoreRecord{Name: "Stall", Currency: "USD", TimeZone: "America/Los_Angeles"})
	if d := day(); d != "2026-12-01" {
		t.Fatalf("Los Angeles: day %s, want 2026-12-01", d)
	}
}
