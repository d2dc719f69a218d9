package ledger_test

import (
	"context"
	"fmt"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// conflictLedger is a terminal's ledger (in memory) whose store holds
// conflicts oversold sale lines over 100 SKUs with no stock, on top of
// history sales of 10 units each against stock received for them: the
// oversell detector must find the few oversold lines among all of them.
func conflictLedger(b *testing.B, conflicts, history int) *ledger.Ledger {
	b.Helper()
	ctx := context.Background()
	f := ledgertest.NewFleet(9)
	d := f.Enroll("s1", ledger.RoleTerminal)
	l, err := f.Open(ctx, ledgertest.MemStore(), d)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	const skus = 100
	for i := range skus {
		if _, err := l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: fmt.Sprintf("SKU%03d", i), Qty: int64(history / skus)}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range history + conflicts {
		if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale(fmt.Sprintf("SKU%03d", i%skus), 1, 350)); err != nil {
			b.Fatal(err)
		}
	}
	if n := len(l.Conflicts("s1")); n != conflicts {
		b.Fatalf("%d conflicts, want %d", n, conflicts)
	}
	return l
}

// BenchmarkDigestConflicts is Digest of a store with 10,000 open oversell
// conflicts among 50,000 sale lines: what every /v1/digest, sync
// comparison and simulator check pays.
func BenchmarkDigestConflicts(b *testing.B) {
	l := conflictLedger(b, 10_000, 40_000)
	for b.Loop() {
		l.Digest("s1")
	}
}

// BenchmarkConflictsList is Conflicts of the same store: what the status
// tick, /metrics and GET /v1/conflicts pay.
func BenchmarkConflictsList(b *testing.B) {
	l := conflictLedger(b, 10_000, 40_000)
	for b.Loop() {
		l.Conflicts("s1")
	}
}
