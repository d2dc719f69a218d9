package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/mesh/p2p"
)

// testClock is the wall clock plus an offset a test can move forward
// (certificates are valid for a day around the real now).
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
func seeded(seed uint64) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256(binary.LittleEndian.AppendUint64(nil, seed)))
}
func testLogger(tb testing.TB) *slog.Logger { return logger(tb, os.Getenv("NODE_TEST_LOG") != "") }
func logger(_ testing.TB, on bool) *slog.Logger {
	if on {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testFleet struct {
	key  *ledger.FleetKey
	rand *rand.ChaCha8
}

func newTestFleet(tb testing.TB, seed uint64) *testFleet {
	r := seeded(seed)
	k, err := ledger.NewFleetKey(r)
	if err != nil {
		tb.Fatal(err)
	}
	return &testFleet{key: k, rand: r}
}

func (f *testFleet) enroll(tb testing.TB, store string, role ledger.Role, name string) *Device {
	tb.Helper()
	d, err := Enroll(f.key, EnrollRequest{Store: store, Role: role, Name: name, Valid: 7 * 24 * time.Hour,
		NotBefore: time.Now().Add(-24 * time.Hour)}, f.rand)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

type nodeOpt func(*Config)

// startNode runs dev on loopback: real badger in a temp dir, HTTP on a
// free port, libp2p TCP on a free port, static peers only (never mDNS).
func startNode(tb testing.TB, dev *Device, opts ...nodeOpt) *Node {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Key, cfg.Cert, cfg.Fleet = dev.Key, dev.Cert, dev.Fleet
	cfg.DataDir = tb.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.StatusEvery = 50 * time.Millisecond
	cfg.Logger = testLogger(tb).With("node", dev.Cert.Name)
	cfg.MeshTuning = func(mc *p2p.Config) {
		mc.TickInterval = 100 * time.Millisecond
		mc.DialBackoffMax = time.Second
	}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("close %s: %v", dev.Cert.Name, err)
		}
	})
	return n
}

func tcpAddr(tb testing.TB, n *Node) string {
	for _, a := range n.Addrs() {
		if strings.Contains(a, "/tcp/") {
			return a
		}
	}
	tb.Fatalf("no tcp address in %v", n.Addrs())
	return ""
}

// resp is a decoded HTTP response.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) code() string {
	var e errorBody
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

func (r resp) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
}

var httpClient = &http.Client{Timeout: 20 * time.Second}

// call sends a request; body is JSON-encoded unless it is a string or
// []byte (sent as is). Headers come in pairs.
func call(tb testing.TB, n *Node, method, path string, body any, headers ...string) resp {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := httpClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must sends a request and fails the test unless the status is want.
func must(tb testing.TB, n *Node, want int, method, path string, body any, headers ...string) resp {
	tb.Helper()
	r := call(tb, n, method, path, body, headers...)
	if r.status != want {
		tb.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

func sale(sku string, qty int, method string) map[string]any {
	return map[string]any{"lines": []map[string]any{{"sku": sku, "qty": qty}}, "payment": map[string]any{"method": method}}
}

func setItem(tb testing.TB, n *Node, sku, name string, price int) {
	tb.Helper()
	must(tb, n, 200, "PUT", "/v1/catalog/"+sku, map[string]any{"name": name, "unit_price": price, "currency": "EUR"})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// salesOf is every sale n holds, page by page.
func salesOf(tb testing.TB, n *Node) []ledger.SaleRecord {
	var all []ledger.SaleRecord
	path := "/v1/sales"
	for {
		var v struct {
			Sales []ledger.SaleRecord
			Next  string
		}
		must(tb, n, 200, "GET", path, nil).decode(tb, &v)
		all = append(all, v.Sales...)
		if v.Next == "" {
			return all
		}
		path = "/v1/sales?cursor=" + url.QueryEscape(v.Next)
	}
}

func onHandOf(tb testing.TB, n *Node, sku string) int64 {
	var v struct{ Items []ledger.StockItem }
	must(tb, n, 200, "GET", "/v1/stock", nil).decode(tb, &v)
	for _, it := range v.Items {
		if it.SKU == sku {
			return it.OnHand
		}
	}
	return 0
}
