package pg_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
	"storemesh/sink"
	"storemesh/sink/pg"
	"storemesh/sink/sinktest"
)

// memAnchor is an anchor's ledger in memory: the benchmarks measure the
// sink, not the anchor's disk.
func memAnchor(b *testing.B) *ledger.Ledger {
	f := ledgertest.NewFleet(11)
	a := f.Enroll(ledger.FleetScope, ledger.RoleAnchor, ledgertest.Expiring(time.Now().Add(24*time.Hour)))
	cfg := f.Config(a, nil)
	cfg.Now = func() int64 { return time.Now().UnixNano() }
	l, err := ledger.Open(context.Background(), ledgertest.MemStore(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

// timed wraps the PostgreSQL target and notes when each op's batch committed.
type timed struct {
	*pg.Target
	mu   sync.Mutex
	done map[string]time.Time
}

func (t *timed) Write(ctx context.Context, scope string, ops []sink.Op, cur crdt.VersionVector) error {
	err := t.Target.Write(ctx, scope, ops, cur)
	if err == nil {
		now := time.Now()
		t.mu.Lock()
		for _, o := range ops {
			t.done[o.ID()] = now
		}
		t.mu.Unlock()
	}
	return err
}

// BenchmarkPostgresSinkThroughput: a backlog of 10,000 ops (sales of two
// lines, a refund every third, a stock receipt every fifth) drained into
// an empty database; ops/s is the figure (DESIGN §10: at least 5,000).
func BenchmarkPostgresSinkThroughput(b *testing.B) {
	l := memAnchor(b)
	workload(b, l, 0, 6820) // 6,820 sales + 2,274 refunds + 1,364 receipts ≈ 10,458 ops
	total := opCount(l)
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		url := sinktest.Database(b)
		tg, err := pg.New(pg.Config{URL: url, Anchor: "bench", Ledger: l})
		if err != nil {
			b.Fatal(err)
		}
		if err := tg.Check(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		sc := sink.DefaultConfig()
		if v := os.Getenv("SINK_BATCH"); v != "" {
			sc.BatchOps, _ = strconv.Atoi(v)
		}
		r, err := sink.Start(l, tg, sc)
		if err != nil {
			b.Fatal(err)
		}
		for r.Status().Backlog > 0 {
			time.Sleep(time.Millisecond)
		}
		elapsed += time.Since(start)
		b.StopTimer()
		r.Close()
	}
	b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "ops/s")
}

// BenchmarkPostgresSinkLag: 100 sales/s for 10 s; the time from a sale
// being durable on the anchor (Append returned) to its batch committed in
// PostgreSQL, median and p99.
func BenchmarkPostgresSinkLag(b *testing.B) {
	for range b.N {
		l := memAnchor(b)
		url := sinktest.Database(b)
		pt, err := pg.New(pg.Config{URL: url, Anchor: "bench", Ledger: l})
		if err != nil {
			b.Fatal(err)
		}
		tg := &timed{Target: pt, done: map[string]time.Time{}}
		r, err := sink.Start(l, tg, sink.DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		durable := map[string]time.Time{}
		tick := time.NewTicker(10 * time.Millisecond)
		for i := range 1000 {
			<-tick.C
			o, err := l.Append(context.Background(), []string{"s1", "s2"}[i%2], ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
			if err != nil {
				b.Fatal(err)
			}
			durable[o.ID()] = time.Now()
		}
		tick.Stop()
		for r.Status().Backlog > 0 {
			time.Sleep(time.Millisecond)
		}
		r.Close()
		var lags []time.Duration
		tg.mu.Lock()
		for id, at := range durable {
			lags = append(lags, tg.done[id].Sub(at))
		}
		tg.mu.Unlock()
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-ms")
	}
}
