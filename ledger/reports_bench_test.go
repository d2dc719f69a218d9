package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// BenchmarkSalesReport: a month of a till's trade (20,000 sales of 40
// SKUs over 30 days, in memory); a report by day or by SKU for the whole
// month, from the aggregates, against listing the sale log it would
// otherwise scan.
func BenchmarkSalesReport(b *testing.B) {
	f := ledgertest.NewFleet(5)
	d := f.Enroll("s1", ledger.RoleTerminal)
	clock := ledgertest.NewClock()
	l, err := ledger.Open(context.Background(), ledgertest.MemStore(), f.Config(d, clock))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	start := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	const n = 20000
	for i := range n {
		clock.Set(start.Add(time.Duration(i) * 30 * 24 * time.Hour / n))
		s := ledgertest.Sale(fmt.Sprintf("SKU%02d", i%40), int64(1+i%3), 350)
		if _, err := l.Append(context.Background(), "s1", ledger.KindSale, s); err != nil {
			b.Fatal(err)
		}
	}
	for _, by := range []string{ledger.ByDay, ledger.BySKU} {
		b.Run("report-by-"+by, func(b *testing.B) {
			for b.Loop() {
				rows, err := l.SalesReport(ledger.ReportQuery{Store: "s1", By: by, From: "2026-11-01", To: "2026-11-30"})
				if err != nil || len(rows) == 0 {
					b.Fatal(rows, err)
				}
			}
		})
	}
	b.Run("list-sale-log", func(b *testing.B) {
		for b.Loop() {
			if len(l.Sales("s1")) != n {
				b.Fatal("short")
			}
		}
	})
}
