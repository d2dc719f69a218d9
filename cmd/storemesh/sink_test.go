package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"storemesh/sink/sinktest"
)

type statusOut struct {
	QueuedForAnchor uint64 `json:"queued_for_anchor"`
	Forks           int    `json:"forks"`
	Copied          bool   `json:"copied"`
	OwnChain        struct {
		Chain string `json:"chain"`
		Epoch uint64 `json:"epoch"`
	} `json:"own_chain"`
	Sinks []struct {
		Name      string `json:"name"`
		Backlog   uint64 `json:"backlog"`
		LastError string `json:"last_error"`
	} `json:"sinks"`
}

func (p *proc) status() statusOut {
	var st statusOut
	p.must(200, "GET", "/v1/status", nil, &st)
	return st
}

// sellLoop sells, refunds every third sale and receives stock every
// fifth, until stop is closed or the terminal fails; it records the op
// ids it was given.
type sellLoop struct {
	mu   sync.Mutex
	ids  map[string]string // op id → kind
	sold int
}

func (s *sellLoop) add(id, kind string) {
	s.mu.Lock()
	s.ids[id] = kind
	if kind == "sale" {
		s.sold++
	}
	s.mu.Unlock()
}

func (s *sellLoop) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *sellLoop) run(p *proc, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		time.Sleep(2 * time.Millisecond) // pace the load: a till, not a benchmark
		sku := []string{"TEA", "CAKE"}[i%2]
		var so saleOut
		if code, err := p.do("POST", "/v1/sales", sale(sku, 1+i%3, "cash"), &so); err != nil || code != 201 {
			p.t.Errorf("sale on a terminal: %d %v", code, err)
			return
		}
		s.add(so.SaleID, "sale")
		if i%3 == 0 {
			var ro struct {
				RefundID string `json:"refund_id"`
			}
			if code, err := p.do("POST", "/v1/refunds", map[string]any{"sale_id": so.SaleID}, &ro); err != nil || code != 201 {
				p.t.Errorf("refund: %d %v", code, err)
				return
			}
			s.add(ro.RefundID, "refund")
		}
		if i%5 == 0 {
			var st struct {
				OpID string `json:"op_id"`
			}
			if code, err := p.do("POST", "/v1/stock/received", map[string]any{"sku": sku, "qty": 7}, &st); err != nil || code != 201 {
				p.t.Errorf("stock: %d %v", code, err)
				return
			}
			s.add(st.OpID, "stock.received")
		}
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAnchorSinks: a fleet of two stores sells, refunds and receives stock
// through an anchor that feeds PostgreSQL and MQTT. The anchor is killed
// with SIGKILL while its sinks have a backlog and restarted; later its
// PostgreSQL connections are killed mid-run. In the end every op is in
// PostgreSQL exactly once, every event reached the broker at least once,
// and sales_daily equals a recomputation from the anchor's GET /v1/sales.
func TestAnchorSinks(t *testing.T) {
	dbURL := sinktest.Database(t)
	// A broker of the test's own, which queues without limit for the
	// subscriber: the machine's Mosquitto (default max_queued_messages
	// 1,000) drops what a slow subscriber has not taken when the sink
	// catches up thousands of ops at once, which says nothing of the sink.
	broker := sinktest.OwnBroker(t).URL()
	prefix := sinktest.Unique("e2e")
	sub := sinktest.Subscribe(t, broker, prefix+"/#")

	_, enroll := newFleet(t)
	devHQ := enroll("hq", "*", "anchor")
	devA, devB := enroll("till-a", "s1", "manager"), enroll("till-b", "s2", "manager")
	port := freePort(t)
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	data := filepath.Join(t.TempDir(), "hq")
	anchorArgs := []string{"--device", devHQ, "--data", data, "--listen", listen,
		"--postgres", dbURL, "--mqtt", broker, "--mqtt-prefix", prefix}
	hq := startProc(t, "anchor", anchorArgs...)
	var hqAddr string
	for _, a := range hq.addrs {
		if strings.Contains(a, fmt.Sprintf("/tcp/%d/", port)) {
			hqAddr = a
		}
	}
	if hqAddr == "" {
		t.Fatalf("anchor addrs %v lack port %d", hq.addrs, port)
	}
	a := startProc(t, "node", "--device", devA, "--data", filepath.Join(t.TempDir(), "a"), "--anchor", hqAddr)
	b := startProc(t, "node", "--device", devB, "--data", filepath.Join(t.TempDir(), "b"), "--anchor", hqAddr)
	a.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)
	a.must(200, "PUT", "/v1/catalog/CAKE", map[string]any{"name": "Cake", "unit_price": 420, "currency": "EUR"}, nil)
	eventually(t, 20*time.Second, "b to learn the catalog", func() bool {
		var c struct{ Items []any }
		b.must(200, "GET", "/v1/catalog", nil, &c)
		return len(c.Items) == 2
	})

	loops := []*sellLoop{{ids: map[string]string{}}, {ids: map[string]string{}}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go loops[0].run(a, stop, &wg)
	go loops[1].run(b, stop, &wg)
	total := func() int { return loops[0].count() + loops[1].count() }

	// (a) SIGKILL the anchor while its sinks are behind.
	eventually(t, 60*time.Second, "ops flowing and a sink backlog on the anchor", func() bool {
		if total() < 100 {
			return false
		}
		for _, s := range hq.status().Sinks {
			if s.Backlog > 0 {
				return true
			}
		}
		return false
	})
	hq.stop(true)
	n := total()
	eventually(t, 60*time.Second, "terminals selling while HQ is down", func() bool { return total() >= n+60 })
	hq = startProc(t, "anchor", anchorArgs...)

	// (b) kill the anchor's PostgreSQL connections, again and again.
	killed := 0
	for range 10 {
		n := total()
		eventually(t, 60*time.Second, "more ops", func() bool { return total() >= n+20 })
		killed += sinktest.KillConnections(t, sinktest.DBName(dbURL), "storemesh-sink")
	}
	if killed == 0 {
		t.Error("no connection of the anchor's sink was killed: (b) proves nothing")
	}
	close(stop)
	wg.Wait()

	want := map[string]string{}
	sales := 0
	for _, l := range loops {
		for id, k := range l.ids {
			want[id] = k
		}
		sales += l.sold
	}
	eventually(t, 90*time.Second, "HQ to hold every sale and its sinks to drain", func() bool {
		if len(hq.sales()) != sales || a.status().QueuedForAnchor != 0 || b.status().QueuedForAnchor != 0 {
			return false
		}
		st := hq.status()
		if len(st.Sinks) != 2 {
			t.Fatalf("anchor status sinks: %+v", st.Sinks)
		}
		for _, s := range st.Sinks {
			if s.Backlog != 0 || s.LastError != "" {
				return false
			}
		}
		return true
	})

	ctx := context.Background()
	db := sinktest.Connect(t, dbURL)
	rows, err := db.Query(ctx, `SELECT op_id, kind, count(*) OVER (PARTITION BY op_id) FROM ops`)
	if err != nil {
		t.Fatal(err)
	}
	inDB := map[string]string{}
	for rows.Next() {
		var id, kind string
		var dup int
		if err := rows.Scan(&id, &kind, &dup); err != nil {
			t.Fatal(err)
		}
		if dup != 1 {
			t.Errorf("op %s is in PostgreSQL %d times", id, dup)
		}
		inDB[id] = kind
	}
	for id, k := range want {
		if inDB[id] != k {
			t.Errorf("op %s (%s) is in PostgreSQL as %q", id, k, inDB[id])
		}
	}
	t.Logf("%d ops written by the terminals (%d sales), %d rows in ops, %d sink connections killed", len(want), sales, len(inDB), killed)

	// sales_daily against GET /v1/sales (refunds here are whole sales, on
	// the sale's day unless the test straddles a UTC midnight).
	type key struct{ store, day, sku string }
	type agg struct{ sold, gross, ru, ra int64 }
	wantAgg := map[key]agg{}
	var full struct {
		Sales []struct {
			Store    string `json:"store"`
			At       int64  `json:"at_ms"`
			Refunded int64  `json:"refunded"`
			Total    int64  `json:"total"`
			Lines    []struct {
				SKU       string `json:"sku"`
				Qty       int64  `json:"qty"`
				UnitPrice int64  `json:"unit_price"`
			} `json:"lines"`
		} `json:"sales"`
	}
	hq.must(200, "GET", "/v1/sales", nil, &full)
	for _, s := range full.Sales {
		day := time.UnixMilli(s.At).UTC().Format(time.DateOnly)
		for _, l := range s.Lines {
			k := key{s.Store, day, l.SKU}
			g := wantAgg[k]
			g.sold += l.Qty
			g.gross += l.Qty * l.UnitPrice
			if s.Refunded == s.Total && s.Refunded > 0 {
				g.ru += l.Qty
				g.ra += l.Qty * l.UnitPrice
			}
			wantAgg[k] = g
		}
	}
	got := map[key]agg{}
	rows, err = db.Query(ctx, `SELECT store, day::text, sku, units_sold, gross, refunded_units, refunded_amount, net FROM sales_daily`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k key
		var g agg
		var net int64
		if err := rows.Scan(&k.store, &k.day, &k.sku, &g.sold, &g.gross, &g.ru, &g.ra, &net); err != nil {
			t.Fatal(err)
		}
		if net != g.gross-g.ra {
			t.Errorf("%v: net %d != gross %d - refunded %d", k, net, g.gross, g.ra)
		}
		got[k] = g
	}
	if fmt.Sprint(got) != fmt.Sprint(wantAgg) {
		t.Errorf("sales_daily\n got %v\nwant %v", got, wantAgg)
	}

	// MQTT: every op of the terminals published at least once.
	// Many ops arrive in the last seconds of the load and go out over
	// one connection, after the PostgreSQL sink's catch-up: give it time,
	// and say how far it got.
	deadline := time.Now().Add(90 * time.Second)
	for {
		var missing []string
		for id := range want {
			if sub.Deliveries(id) == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var st struct {
				Sinks any `json:"sinks"`
			}
			hq.must(200, "GET", "/v1/status", nil, &st)
			t.Fatalf("%d of %d ops never reached the broker (first %s); the anchor's sinks: %+v", len(missing), len(want), missing[0], st.Sinks)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAnchorSinkStartErrors: a malformed --postgres URL or --mqtt URL
// stops the anchor with a clear error; an unreachable database does not
// (the sink retries, and the status says why it is behind).
func TestAnchorSinkStartErrors(t *testing.T) {
	_, enroll := newFleet(t)
	dev := enroll("hq", "*", "anchor")
	for _, tc := range []struct{ flag, val, want string }{
		{"--postgres", "postgres://%zz", "--postgres URL"},
		{"--mqtt", "http://x", "--mqtt URL"},
	} {
		_, errOut, code := storemesh(t, 30*time.Second, nil, "anchor", "--device", dev, "--data", t.TempDir(),
			"--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", tc.flag, tc.val)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s %s: exit %d, stderr lacks %q:\n%s", tc.flag, tc.val, code, tc.want, errOut)
		}
	}
	hq := startProc(t, "anchor", "--device", dev, "--data", t.TempDir(),
		"--postgres", "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	eventually(t, 30*time.Second, "the postgres sink to report its error", func() bool {
		st := hq.status()
		return len(st.Sinks) == 1 && st.Sinks[0].Name == "postgres" && st.Sinks[0].LastError != ""
	})
	var metrics string
	eventually(t, 10*time.Second, "the backlog gauge", func() bool {
		res, err := client.Get("http://" + hq.http + "/metrics")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var sb strings.Builder
		buf := make([]byte, 32<<10)
		for {
			k, err := res.Body.Read(buf)
			sb.Write(buf[:k])
			if err != nil {
				break
			}
		}
		metrics = sb.String()
		return strings.Contains(metrics, `storemesh_sink_backlog_ops{sink="postgres"}`)
	})
}
