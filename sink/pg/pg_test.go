package pg_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
	"storemesh/sink"
	"storemesh/sink/pg"
	"storemesh/sink/sinktest"
)

// anchorLedger is an anchor's ledger on real badger with a wall clock
// (days are UTC dates of real time).
func anchorLedger(t testing.TB) (*ledger.Ledger, *ledgertest.Fleet) {
	t.Helper()
	f := ledgertest.NewFleet(7)
	a := f.Enroll(ledger.FleetScope, ledger.RoleAnchor,
		ledgertest.Expiring(time.Now().Add(24*time.Hour)))
	bs, err := ledger.OpenBadger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.Config(a, nil)
	cfg.Now = func() int64 { return time.Now().UnixNano() }
	l, err := ledger.Open(context.Background(), bs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); bs.Close() })
	return l, f
}

// workload writes n rounds of sales, a refund of every third sale and a
// stock receipt of every fifth, across two stores.
func workload(t testing.TB, l *ledger.Ledger, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		store := []string{"s1", "s2"}[i%2]
		sku := []string{"TEA", "CAKE", "JAM"}[i%3]
		s := &ledger.Sale{Lines: []ledger.SaleLine{{SKU: sku, Qty: int64(1 + i%4), UnitPrice: 250}, {SKU: "BAG", Qty: 1, UnitPrice: 10}},
			Currency: "EUR", Payment: "cash"}
		o, err := l.Append(ctx, store, ledger.KindSale, s)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			r := &ledger.Refund{Sale: o.ID(), Lines: []ledger.RefundLine{{SKU: sku, Qty: 1}}, Amount: 250}
			if _, err := l.Append(ctx, store, ledger.KindRefund, r); err != nil {
				t.Fatal(err)
			}
		}
		if i%5 == 0 {
			if _, err := l.Append(ctx, store, ledger.KindStockReceived, &ledger.StockReceived{SKU: sku, Qty: 10}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func startSink(t testing.TB, l *ledger.Ledger, url, anchor string) *sink.Runner {
	t.Helper()
	tg, err := pg.New(pg.Config{URL: url, Anchor: anchor, Ledger: l, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := sink.DefaultConfig()
	cfg.BatchOps = 50
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.Logger = testLogger()
	r, err := sink.Start(l, tg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func testLogger() *slog.Logger {
	if os.Getenv("SINK_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func waitDrained(t testing.TB, r *sink.Runner) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := r.Status()
		if st.Backlog == 0 && st.LastError == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink did not drain: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func opCount(l *ledger.Ledger) int {
	n := 0
	for _, s := range l.Scopes() {
		n += int(l.VersionSum(s))
	}
	return n
}

// checkDB: every op of l exactly once, and sales_daily equal to a
// recomputation from the ledger's sales and refunds.
func checkDB(t testing.TB, l *ledger.Ledger, url string) {
	t.Helper()
	ctx := context.Background()
	c := sinktest.Connect(t, url)
	var ops, distinct int
	if err := c.QueryRow(ctx, `SELECT count(*), count(DISTINCT op_id) FROM ops`).Scan(&ops, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := opCount(l); ops != want || distinct != want {
		t.Errorf("ops table has %d rows (%d distinct), the ledger %d ops", ops, distinct, want)
	}
	type key struct{ store, day, sku string }
	type agg struct{ sold, gross, ru, ra int64 }
	want := map[key]agg{}
	sales := map[string]ledger.SaleRecord{}
	for _, s := range l.Sales("") {
		sales[s.ID] = s
		day := time.UnixMilli(s.At).UTC().Format(time.DateOnly)
		for _, ln := range s.Lines {
			k := key{s.Store, day, ln.SKU}
			a := want[k]
			a.sold += ln.Qty
			a.gross += ln.Qty * ln.UnitPrice
			want[k] = a
		}
	}
	var nSales, nRefunds int
	for _, scope := range l.Scopes() {
		err := l.Ops(ctx, scope, nil, 1<<20, func(b []ledger.RawOp) error {
			for _, raw := range b {
				o, err := ledger.DecodeOp(raw.Bytes)
				if err != nil {
					return err
				}
				so := sink.Decode(o)
				switch b := so.Body.(type) {
				case *ledger.Sale:
					nSales++
				case *ledger.Refund:
					nRefunds++
					for _, ln := range b.Lines {
						k := key{o.Store, so.Day(), ln.SKU}
						a := want[k]
						a.ru += ln.Qty
						a.ra += 250 // the workload refunds one unit at 250
						want[k] = a
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if nSales != len(sales) {
		t.Fatalf("ledger ops hold %d sales, Sales %d", nSales, len(sales))
	}
	rows, err := c.Query(ctx, `SELECT store, day::text, sku, units_sold, gross, refunded_units, refunded_amount, net FROM sales_daily`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[key]agg{}
	for rows.Next() {
		var k key
		var a agg
		var net int64
		if err := rows.Scan(&k.store, &k.day, &k.sku, &a.sold, &a.gross, &a.ru, &a.ra, &net); err != nil {
			t.Fatal(err)
		}
		if net != a.gross-a.ra {
			t.Errorf("%v: net %d, gross-refunded %d", k, net, a.gross-a.ra)
		}
		got[k] = a
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sales_daily:\n got %v\nwant %v", got, want)
	}
	var lines, refunds int
	if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM sale_lines), (SELECT count(*) FROM refunds)`).Scan(&lines, &refunds); err != nil {
		t.Fatal(err)
	}
	if lines != 2*nSales || refunds != nRefunds {
		t.Errorf("sale_lines %d (want %d), refunds %d (want %d)", lines, 2*nSales, refunds, nRefunds)
	}
}

func TestPostgresSinkExactlyOnce(t *testing.T) {
	url := sinktest.Database(t)
	l, _ := anchorLedger(t)
	workload(t, l, 0, 200)
	r := startSink(t, l, url, "anchorA")
	waitDrained(t, r)
	workload(t, l, 200, 100) // ops while running
	waitDrained(t, r)
	checkDB(t, l, url)

	// A restart of the sink resumes from its cursor: nothing twice.
	r.Close()
	workload(t, l, 300, 50)
	r = startSink(t, l, url, "anchorA")
	waitDrained(t, r)
	checkDB(t, l, url)

	c := sinktest.Connect(t, url)
	var devices, stores int
	if err := c.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM stores)`).Scan(&devices, &stores); err != nil {
		t.Fatal(err)
	}
	if devices != 1 || stores != 2 {
		t.Errorf("devices %d (want 1: the anchor), stores %d (want 2)", devices, stores)
	}

	// A store record reaches the stores table with its name and zone.
	if _, err := l.Append(context.Background(), "s1", ledger.KindStoreSet, &ledger.StoreRecord{Name: "Market stall", Currency: "EUR", TimeZone: "Europe/Paris"}); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, r)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var name, zone, source *string
		err := c.QueryRow(context.Background(), `SELECT name, time_zone, source FROM stores WHERE store = 's1'`).Scan(&name, &zone, &source)
		if err == nil && name != nil && *name == "Market stall" && *zone == "Europe/Paris" && *source == "record" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stores row of s1: %v %v %v %v", name, zone, source, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPostgresSinkConnectionsKilled: the sink's connections are killed
// (pg_terminate_backend) again and again while ops keep coming; the
// backlog shows, and it drains to every op exactly once.
func TestPostgresSinkConnectionsKilled(t *testing.T) {
	url := sinktest.Database(t)
	db := sinktest.DBName(url)
	l, _ := anchorLedger(t)
	r := startSink(t, l, url, "anchorA")
	killed := 0
	for round := range 20 {
		workload(t, l, round*40, 40)
		killed += sinktest.KillConnections(t, db, "storemesh-sink")
	}
	if killed == 0 {
		t.Fatal("no sink connection was killed: the test proves nothing")
	}
	waitDrained(t, r)
	if r.Status().Failures == 0 {
		t.Error("the sink saw no failure although its connections were killed")
	}
	checkDB(t, l, url)
}

// TestPostgresSinkTwoAnchors: two anchors' sinks over the same ops and one
// database write each op once, and the daily table counts it once.
func TestPostgresSinkTwoAnchors(t *testing.T) {
	url := sinktest.Database(t)
	l, _ := anchorLedger(t)
	workload(t, l, 0, 300)
	a := startSink(t, l, url, "anchorA")
	b := startSink(t, l, url, "anchorB")
	workload(t, l, 300, 100)
	waitDrained(t, a)
	waitDrained(t, b)
	checkDB(t, l, url)
}

// TestPostgresSinkDownAtStart: an unreachable database is not fatal: the
// sink counts the backlog, reports the error and retries.
func TestPostgresSinkDownAtStart(t *testing.T) {
	l, _ := anchorLedger(t)
	workload(t, l, 0, 10)
	r := startSink(t, l, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", "anchorA")
	deadline := time.Now().Add(30 * time.Second)
	for r.Status().Failures < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no retry: %+v", r.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := r.Status()
	if st.Backlog != uint64(opCount(l)) || st.LastError == "" || st.LastOK != nil {
		t.Errorf("status %+v, want backlog %d, an error, never ok", st, opCount(l))
	}
}

func TestPostgresSchemaTooNew(t *testing.T) {
	url := sinktest.Database(t)
	l, _ := anchorLedger(t)
	tg, err := pg.New(pg.Config{URL: url, Anchor: "a", Ledger: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tg.Check(ctx); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	c := sinktest.Connect(t, url)
	if _, err := c.Exec(ctx, `INSERT INTO storemesh_schema (version, description) VALUES ($1, 'from the future')`, pg.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	err = tg.Check(ctx)
	if !errors.Is(err, pg.ErrSchemaTooNew) {
		t.Fatalf("Check on a newer schema: %v, want ErrSchemaTooNew", err)
	}
	t.Log(err)
	if _, err := pg.New(pg.Config{URL: "postgres://%zz", Anchor: "a", Ledger: l}); err == nil {
		t.Error("a malformed URL was accepted")
	}
}

// TestPostgresSinkHonouredRefunds: two tills refund the same sale in
// full while apart. The anchor honours the earlier refund only (the other
// is an over_refund conflict), whichever reaches PostgreSQL first:
// sales_daily's refunded figures and the honoured columns follow the
// ledger, and the refunds' bodies stay as sent.
func TestPostgresSinkHonouredRefunds(t *testing.T) {
	url := sinktest.Database(t)
	l, f := anchorLedger(t)
	ctx := context.Background()
	d1, d2 := f.Enroll("s1", ledger.RoleTerminal), f.Enroll("s1", ledger.RoleTerminal)
	c1, c2 := ledgertest.NewClock(), ledgertest.NewClock()
	c2.Set(ledgertest.Epoch.Add(time.Hour)) // till 2's refund is the later one
	open := func(d *ledgertest.Device, c *ledgertest.Clock) *ledger.Ledger {
		cfg := f.Config(d, c)
		tl, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tl.Close() })
		for _, c := range []*ledger.Certificate{d1.Cert, d2.Cert} {
			if _, err := tl.AddCertificate(ctx, c.Encode()); err != nil {
				t.Fatal(err)
			}
		}
		return tl
	}
	t1, t2 := open(d1, c1), open(d2, c2)
	for _, c := range []*ledger.Certificate{d1.Cert, d2.Cert} {
		if _, err := l.AddCertificate(ctx, c.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	s, err := t1.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 2, 350))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t2.Apply(ctx, s.Raw()); err != nil {
		t.Fatal(err)
	}
	full := &ledger.Refund{Sale: s.ID(), Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 2}}, Amount: 700}
	r1, err := t1.Append(ctx, "s1", ledger.KindRefund, full)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := t2.Append(ctx, "s1", ledger.KindRefund, full)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(o *ledger.Op) {
		if _, err := l.Apply(ctx, o.Raw()); err != nil {
			t.Fatal(err)
		}
	}
	apply(s)
	apply(r2) // the later refund first: honoured in full for now
	r := startSink(t, l, url, "anchorA")
	waitDrained(t, r)
	c := sinktest.Connect(t, url)
	check := func(want1, want2 int64) {
		t.Helper()
		var h1, h2, a1, a2, refunded, units int64
		err := c.QueryRow(ctx, `SELECT
			(SELECT honoured_amount FROM refunds WHERE op_id = $1), (SELECT amount FROM refunds WHERE op_id = $1),
			(SELECT honoured_amount FROM refunds WHERE op_id = $2), (SELECT amount FROM refunds WHERE op_id = $2),
			(SELECT sum(refunded_amount) FROM sales_daily), (SELECT sum(refunded_units) FROM sales_daily)`,
			r1.ID(), r2.ID()).Scan(&h1, &a1, &h2, &a2, &refunded, &units)
		if err != nil && want1 >= 0 {
			t.Fatal(err)
		}
		if h1 != want1 || h2 != want2 || a2 != 700 || refunded != want1+want2 || units != (want1+want2)/350 {
			t.Errorf("honoured %d and %d (bodies %d, %d), sales_daily refunded %d (%d units); want %d and %d",
				h1, h2, a1, a2, refunded, units, want1, want2)
		}
	}
	var h2 int64
	if err := c.QueryRow(ctx, `SELECT honoured_amount FROM refunds WHERE op_id = $1`, r2.ID()).Scan(&h2); err != nil || h2 != 700 {
		t.Fatalf("till 2's refund alone: honoured %d %v, want 700", h2, err)
	}
	apply(r1) // the earlier refund arrives: it is honoured, till 2's no longer
	waitDrained(t, r)
	check(700, 0)
	if got := l.Refunds(s.ID()).Amount; got != 700 {
		t.Errorf("ledger honours %d, want 700", got)
	}
}
