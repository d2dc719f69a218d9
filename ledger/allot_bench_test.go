package ledger_test

import (
	"context"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// BenchmarkAllotSale is one durable sale of an allotted SKU against one of
// an ordinary SKU (Append on badger, fsync per sale, as BenchmarkAppend),
// and the same in memory (MemStore), where the allotment check's own cost
// shows: the rights lookup is incremental, not a replay of the SKU's
// history.
func BenchmarkAllotSale(b *testing.B) {
	for _, store := range []string{"badger", "mem"} {
		for _, kind := range []string{"ordinary", "allotted"} {
			b.Run(store+"/"+kind, func(b *testing.B) {
				ctx := context.Background()
				f := ledgertest.NewFleet(9)
				var ds = ledgertest.MemStore()
				if store == "badger" {
					bs, err := ledger.OpenBadger(b.TempDir())
					if err != nil {
						b.Fatal(err)
					}
					defer bs.Close()
					ds = bs
				}
				l := ok(f.Open(ctx, ds, f.Enroll("s1", ledger.RoleManager)))(b)
				defer l.Close()
				sku := "TEA"
				if kind == "allotted" {
					sku = "SCARF"
					if _, err := l.Append(ctx, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: sku, Allotted: true}); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: sku, Qty: ledger.MaxQty}); err != nil {
					b.Fatal(err)
				}
				sale := ledgertest.Sale(sku, 1, 350)
				for b.Loop() {
					if _, err := l.Append(ctx, "s1", ledger.KindSale, sale); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
