package sink_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
	"storemesh/sink"
)

// fake is a Target in memory: it can fail, or block, on demand.
type fake struct {
	mu      sync.Mutex
	cursor  sink.Cursor
	written map[string]int
	failN   int           // fail this many Writes first
	block   chan struct{} // when set, Write waits for it to close
	loads   int
}

func (f *fake) Name() string { return "fake" }
func (f *fake) Cursor(context.Context) (sink.Cursor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	return f.cursor.Clone(), nil
}
func (f *fake) Write(ctx context.Context, scope string, ops []sink.Op, cur crdt.VersionVector) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range ops {
		f.written[o.ID()]++ // "published" even when the cursor write then fails
	}
	if f.failN > 0 {
		f.failN--
		return errors.New("injected failure")
	}
	f.cursor[scope] = cur.Clone()
	return nil
}
func (f *fake) Idle(context.Context) error { return nil }
func (f *fake) Close() error               { return nil }

func openLedger(t *testing.T) *ledger.Ledger {
	f := ledgertest.NewFleet(3)
	a := f.Enroll(ledger.FleetScope, ledger.RoleAnchor)
	l, err := f.Open(context.Background(), ledgertest.MemStore(), a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendSales(t *testing.T, l *ledger.Ledger, n int) []string {
	var ids []string
	for i := range n {
		o, err := l.Append(context.Background(), []string{"s1", "s2"}[i%2], ledger.KindSale, ledgertest.Sale("TEA", 1, 100))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID())
	}
	return ids
}

func runner(t *testing.T, l *ledger.Ledger, f *fake) *sink.Runner {
	cfg := sink.DefaultConfig()
	cfg.BatchOps = 7
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	r, err := sink.Start(l, f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunnerRetriesFromTheTargetsCursor: failed writes are retried from
// the cursor the target reports, every op lands, the backlog drains.
func TestRunnerRetriesFromTheTargetsCursor(t *testing.T) {
	l := openLedger(t)
	ids := appendSales(t, l, 50)
	f := &fake{cursor: sink.Cursor{}, written: map[string]int{}, failN: 3}
	r := runner(t, l, f)
	ids = append(ids, appendSales(t, l, 30)...)
	waitFor(t, "the backlog to drain", func() bool { return r.Status().Backlog == 0 })
	st := r.Status()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if f.written[id] == 0 {
			t.Errorf("op %s never written", id)
		}
	}
	if st.Failures != 3 || st.LastError != "" || st.LastOK == nil || f.loads < 4 {
		t.Errorf("status %+v, cursor loads %d: want 3 failures, recovered, the cursor reloaded after each", st, f.loads)
	}
	for _, s := range []string{"s1", "s2"} {
		if got, want := f.cursor[s], l.VersionVector(s); got.Compare(want) != crdt.Equal {
			t.Errorf("cursor of %s %v, ledger %v", s, got, want)
		}
	}
}

// TestRunnerNeverBlocksTheLedger: a target stuck in Write does not slow
// the ledger: writes go on and the backlog grows.
func TestRunnerNeverBlocksTheLedger(t *testing.T) {
	l := openLedger(t)
	f := &fake{cursor: sink.Cursor{}, written: map[string]int{}, block: make(chan struct{})}
	r := runner(t, l, f)
	appendSales(t, l, 200) // would hang if the subscription waited for the sink
	if b := r.Status().Backlog; b != 200 {
		t.Errorf("backlog %d, want 200", b)
	}
	close(f.block)
	waitFor(t, "the backlog to drain", func() bool { return r.Status().Backlog == 0 })
}

func TestRefundLineAmounts(t *testing.T) {
	sale := &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "A", Qty: 2, UnitPrice: 300}, {SKU: "B", Qty: 1, UnitPrice: 101}}}
	for _, tc := range []struct {
		r    ledger.Refund
		sale *ledger.Sale
		want []int64
	}{
		{ledger.Refund{Lines: []ledger.RefundLine{{SKU: "A", Qty: 1}, {SKU: "B", Qty: 1}}, Amount: 401}, sale, []int64{300, 101}},
		{ledger.Refund{Lines: []ledger.RefundLine{{SKU: "A", Qty: 2}, {SKU: "B", Qty: 1}}, Amount: 350}, sale, []int64{299, 51}},
		{ledger.Refund{Lines: []ledger.RefundLine{{SKU: "A", Qty: 1}, {SKU: "B", Qty: 2}}, Amount: 100}, nil, []int64{33, 67}},
		{ledger.Refund{Lines: []ledger.RefundLine{{SKU: "A", Qty: 1}}, Amount: 0}, sale, []int64{0}},
	} {
		got := sink.RefundLineAmounts(&tc.r, tc.sale)
		var sum int64
		for _, v := range got {
			sum += v
		}
		if sum != tc.r.Amount || len(got) != len(tc.want) {
			t.Errorf("%+v: %v sums to %d", tc.r, got, sum)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%+v: %v, want %v", tc.r, got, tc.want)
				break
			}
		}
	}
}

func TestDecode(t *testing.T) {
	l := openLedger(t)
	ctx := context.Background()
	o, err := l.Append(ctx, "s1", ledger.KindStockTransferred, &ledger.StockTransferred{SKU: "TEA", Qty: 4, From: "s1", To: "s2", Transfer: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	d := sink.Decode(o)
	if sku, delta, ok := d.StockDelta(); !ok || sku != "TEA" || delta != -4 {
		t.Errorf("transfer out of s1: %s %d %v", sku, delta, ok)
	}
	if d.Day() != time.Unix(0, o.HLC.Wall).UTC().Format(time.DateOnly) || d.Owner != o.Device {
		t.Errorf("day %s owner %s", d.Day(), d.Owner)
	}
	c, err := l.Append(ctx, "s1", ledger.KindStockCounted, &ledger.StockCounted{SKU: "TEA", OnHand: 10, Seen: 14})
	if err != nil {
		t.Fatal(err)
	}
	if _, delta, ok := sink.Decode(c).StockDelta(); !ok || delta != -4 {
		t.Errorf("count: %d %v", delta, ok)
	}
}
