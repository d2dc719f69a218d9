package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"storemesh/api"
	"storemesh/ledger"
)

// TestOpenAPIMatchesRoutes: every route the server registers is in
// api/openapi.json with its method and exactly its error codes, each with
// a response of the code's HTTP status; and the document has nothing else.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]json.RawMessage `json:"responses"`
			Codes     []string                   `json:"x-error-codes"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("api/openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
			for _, c := range op.Codes {
				st, ok := codeStatus[c]
				if !ok {
					t.Errorf("%s %s documents unknown error code %s", method, path, c)
				} else if _, ok := op.Responses[strconv.Itoa(st)]; !ok {
					t.Errorf("%s %s documents %s but no %d response", method, path, c, st)
				}
			}
		}
	}
	for _, r := range Routes() {
		key := r.Method + " " + r.Path
		if !documented[key] {
			t.Errorf("route %s is not in api/openapi.json", key)
			continue
		}
		delete(documented, key)
		op := doc.Paths[r.Path][strings.ToLower(r.Method)]
		got := slices.Sorted(slices.Values(op.Codes))
		if !slices.Equal(got, r.Errors) {
			t.Errorf("%s: openapi x-error-codes %v, server %v", key, got, r.Errors)
		}
	}
	for key := range documented {
		t.Errorf("api/openapi.json documents %s, which the server does not serve", key)
	}

	n := startNode(t, newTestFleet(t, 2).enroll(t, "s1", ledger.RoleTerminal, "t"))
	if got := must(t, n, 200, "GET", "/v1/openapi", nil).body; string(got) != string(api.OpenAPI) {
		t.Error("GET /v1/openapi differs from api/openapi.json")
	}
}

func TestKeysRoundTrip(t *testing.T) {
	dir := t.TempDir()
	fk, err := InitFleet(filepath.Join(dir, "fleet"), seeded(3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitFleet(filepath.Join(dir, "fleet"), seeded(4)); err == nil {
		t.Error("InitFleet overwrote a fleet key")
	}
	loaded, err := LoadFleetKey(filepath.Join(dir, "fleet"))
	if err != nil || loaded.ID() != fk.ID() {
		t.Fatalf("LoadFleetKey: %v", err)
	}
	d, err := Enroll(fk, EnrollRequest{Store: "ignored", Role: ledger.RoleAnchor, Name: "hq", Valid: time.Hour}, seeded(5))
	if err != nil {
		t.Fatal(err)
	}
	if d.Cert.Store != ledger.FleetScope {
		t.Errorf("anchor enrolled for store %q, want %q", d.Cert.Store, ledger.FleetScope)
	}
	if err := WriteDevice(filepath.Join(dir, "dev"), d); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "dev", DeviceKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("device.key mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	back, err := LoadDevice(filepath.Join(dir, "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Cert.Device != d.Cert.Device || !back.Key.Equal(d.Key) {
		t.Error("device did not round-trip")
	}
	other, _ := InitFleet(filepath.Join(dir, "other"), seeded(6))
	os.WriteFile(filepath.Join(dir, "dev", FleetPubFile), nil, 0o644)
	WriteFleetPub(filepath.Join(dir, "dev", FleetPubFile), other.Public())
	if _, err := LoadDevice(filepath.Join(dir, "dev")); err == nil {
		t.Error("LoadDevice accepted a certificate of another fleet")
	}
}

func TestNonLoopbackHTTPNeedsToken(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:0", "", true}, {"localhost:80", "", true}, {"[::1]:80", "", true},
		{"0.0.0.0:8080", "", false}, {":8080", "", false}, {"192.168.1.5:80", "", false},
		{"0.0.0.0:8080", "t", true},
	} {
		if err := CheckHTTPAddr(tc.addr, tc.token); (err == nil) != tc.ok {
			t.Errorf("CheckHTTPAddr(%q, %q) = %v", tc.addr, tc.token, err)
		}
	}
}

// events reads server-sent event names from n into a channel.
func events(t *testing.T, n *Node) <-chan string {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+n.HTTPAddr()+"/v1/events", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	go func() {
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				select {
				case ch <- name:
				default:
				}
			}
		}
	}()
	return ch
}

func waitEvent(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-ch:
			if e == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %q event", want)
		}
	}
}

// TestTwoTerminalsShareSalesAndStock: a sale on one terminal shows in the
// other's sales and stock, and the other's page is told at once.
func TestTwoTerminalsShareSalesAndStock(t *testing.T) {
	f := newTestFleet(t, 7)
	a := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "a"))
	b := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "b"), func(c *Config) { c.Peers = []string{tcpAddr(t, a)} })
	evB := events(t, b)
	waitEvent(t, evB, "hello")
	setItem(t, a, "TEA", "Tea", 350)
	must(t, a, 201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 10})
	waitEvent(t, evB, "catalog")
	waitFor(t, 10*time.Second, "b to learn the catalog", func() bool { return len(b.l.Catalog()) == 1 })
	must(t, a, 201, "POST", "/v1/sales", sale("TEA", 2, "cash"))
	must(t, b, 201, "POST", "/v1/sales", sale("TEA", 3, "card"))
	waitEvent(t, evB, "sales")
	for _, n := range []*Node{a, b} {
		waitFor(t, 10*time.Second, "both sales and stock 5 on "+n.self.Name, func() bool {
			return len(salesOf(t, n)) == 2 && onHandOf(t, n, "TEA") == 5
		})
	}
	var st statusView
	must(t, b, 200, "GET", "/v1/status", nil).decode(t, &st)
	if len(st.Peers) != 1 || st.Peers[0].ID != a.ID() || st.Peers[0].Found != "static" || !st.Peers[0].Established {
		t.Errorf("b's peers: %+v", st.Peers)
	}
	if len(st.Addrs) == 0 || !strings.HasSuffix(st.Addrs[0], "/p2p/"+b.ID()) {
		t.Errorf("b's addrs %v do not end in /p2p/ID", st.Addrs)
	}
}

// TestIdempotencyKey: concurrent retries with one key make one sale; the
// key survives a restart; the same key with another body is refused.
func TestIdempotencyKey(t *testing.T) {
	f := newTestFleet(t, 8)
	dev := f.enroll(t, "s1", ledger.RoleManager, "m")
	dir := t.TempDir()
	n := startNode(t, dev, func(c *Config) { c.DataDir = dir })
	setItem(t, n, "TEA", "Tea", 350)
	var wg sync.WaitGroup
	bodies := make([]string, 8)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := call(t, n, "POST", "/v1/sales", sale("TEA", 2, "cash"), "Idempotency-Key", "retry-1")
			if r.status != 201 {
				t.Errorf("retry %d: %d %s", i, r.status, r.body)
			}
			var res saleResult
			json.Unmarshal(r.body, &res)
			bodies[i] = fmt.Sprint(res)
		}()
	}
	wg.Wait()
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Errorf("retries got different answers: %s vs %s", b, bodies[0])
		}
	}
	must(t, n, 201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 4}, "Idempotency-Key", "delivery-1")
	if got := len(salesOf(t, n)); got != 1 {
		t.Fatalf("%d sales after 8 retries, want 1", got)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := startNode(t, dev, func(c *Config) { c.DataDir = dir })
	r := must(t, n2, 201, "POST", "/v1/sales", sale("TEA", 2, "cash"), "Idempotency-Key", "retry-1")
	var res saleResult
	r.decode(t, &res)
	if fmt.Sprint(res) != bodies[0] || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("after restart the retry got %s (replayed %q), want %s", r.body, r.header.Get("Idempotent-Replayed"), bodies[0])
	}
	must(t, n2, 201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 4}, "Idempotency-Key", "delivery-1")
	if got := onHandOf(t, n2, "TEA"); got != 2 {
		t.Errorf("on hand %d after a replayed delivery, want 2", got)
	}
	if r := call(t, n2, "POST", "/v1/sales", sale("TEA", 3, "cash"), "Idempotency-Key", "retry-1"); r.code() != CodeIdempotencyConflict {
		t.Errorf("same key, other body: %d %s", r.status, r.body)
	}
}

func TestRefunds(t *testing.T) {
	n := startNode(t, newTestFleet(t, 9).enroll(t, "s1", ledger.RoleManager, "m"))
	setItem(t, n, "TEA", "Tea", 350)
	setItem(t, n, "CAKE", "Cake", 500)
	body := map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 2}, {"sku": "CAKE", "qty": 1, "unit_price": 450}},
		"payment": map[string]any{"method": "cash"}}
	var s saleResult
	must(t, n, 201, "POST", "/v1/sales", body).decode(t, &s)
	if s.Total != 2*350+450 {
		t.Fatalf("total %d", s.Total)
	}
	var r refundResult
	must(t, n, 201, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "CAKE", "qty": 1}}}, "Idempotency-Key", "r1").decode(t, &r)
	if r.Amount != 450 {
		t.Errorf("refund amount %d, want 450 (what the sale charged)", r.Amount)
	}
	must(t, n, 201, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "CAKE", "qty": 1}}}, "Idempotency-Key", "r1")
	if c := call(t, n, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "CAKE", "qty": 1}}}).code(); c != CodeRefundExceedsSale {
		t.Errorf("second cake refund: %s", c)
	}
	if c := call(t, n, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID}).code(); c != CodeRefundExceedsSale {
		t.Errorf("whole refund of a partly refunded sale: %s", c)
	}
	rec, _ := n.l.Sale(s.SaleID)
	if rec.Refunded != 450 || onHandOf(t, n, "CAKE") != 0 || onHandOf(t, n, "TEA") != -2 {
		t.Errorf("refunded %d, cake %d, tea %d", rec.Refunded, onHandOf(t, n, "CAKE"), onHandOf(t, n, "TEA"))
	}
}

// TestOnlineWithAnchor: with an anchor reachable the terminal is online
// (the offline policy does not apply), HQ acknowledges its sales and the
// status says how the anchor was found.
func TestOnlineWithAnchor(t *testing.T) {
	f := newTestFleet(t, 10)
	hq := startNode(t, f.enroll(t, "", ledger.RoleAnchor, "hq"))
	term := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "t1"), func(c *Config) { c.Anchors = []string{tcpAddr(t, hq)} })
	setItem(t, hq, "TEA", "Tea", 350)
	must(t, hq, 200, "PUT", "/v1/policy", map[string]any{"store": "s1", "offline_methods": []string{"cash"}})
	must(t, hq, 201, "POST", "/v1/stock/received", map[string]any{"store": "s1", "sku": "TEA", "qty": 5})
	waitFor(t, 10*time.Second, "the terminal to be online with the catalog and policy", func() bool {
		var st statusView
		must(t, term, 200, "GET", "/v1/status", nil).decode(t, &st)
		_, ok := term.l.Policy("s1")
		return !st.Offline && ok && len(term.l.Catalog()) == 1
	})
	must(t, term, 201, "POST", "/v1/sales", sale("TEA", 1, "card"))
	waitFor(t, 10*time.Second, "HQ to acknowledge the sale", func() bool {
		var st statusView
		must(t, term, 200, "GET", "/v1/status", nil).decode(t, &st)
		return st.QueuedForAnchor == 0 && len(hq.l.Sales("s1")) == 1
	})
	var st statusView
	must(t, term, 200, "GET", "/v1/status", nil).decode(t, &st)
	if st.LastAnchorContact == nil || len(st.Peers) != 1 || st.Peers[0].Found != "anchor" || !slices.Contains(st.Paths, "anchor") {
		t.Errorf("status: %+v", st)
	}
	if got := onHandOf(t, hq, "TEA"); got != 4 {
		t.Errorf("HQ sees %d TEA in s1, want 4", got)
	}
	if r := call(t, hq, "POST", "/v1/sales", sale("TEA", 1, "cash")); r.code() != CodeMissingField {
		t.Errorf("anchor sale without a store: %s", r.body)
	}
}

func TestPageAndMetrics(t *testing.T) {
	n := startNode(t, newTestFleet(t, 11).enroll(t, "s1", ledger.RoleManager, "m"), func(c *Config) { c.Token = "tok" })
	page := string(must(t, n, 200, "GET", "/", nil).body)
	for _, id := range []string{`data-testid="charge"`, `data-testid="stock"`, `data-testid="peers"`, `data-testid="catalog"`, `src="/assets/app.js"`} {
		if !strings.Contains(page, id) {
			t.Errorf("page lacks %s", id)
		}
	}
	if r := must(t, n, 200, "GET", "/assets/app.js", nil); !strings.Contains(r.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js served as %q", r.header.Get("Content-Type"))
	}
	auth := []string{"Authorization", "Bearer tok"}
	// Tracked by the catalog, so the sale oversells with no stock op.
	must(t, n, 200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR", "stock": "tracked"}, auth...)
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"), auth...)
	must(t, n, 200, "GET", "/v1/status?access_token=tok", nil)
	m := string(must(t, n, 200, "GET", "/metrics", nil, auth...).body)
	for _, want := range []string{
		`storemesh_http_requests_total{code="201",method="POST",route="/v1/sales"} 1`,
		`storemesh_ops_appended_total 2`, `storemesh_queued_for_anchor`, `storemesh_offline 1`,
		`storemesh_conflicts{state="open"} 1`, `storemesh_peers{state="connected"} 0`, `storemesh_http_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestResolveConflict: an oversell is listed, resolved through the URL the
// page builds (encodeURIComponent escapes ':'), and shown resolved.
func TestResolveConflict(t *testing.T) {
	n := startNode(t, newTestFleet(t, 12).enroll(t, "s1", ledger.RoleManager, "m"))
	setItem(t, n, "TEA", "Tea", 350)
	must(t, n, 201, "POST", "/v1/stock/counted", map[string]any{"sku": "TEA", "on_hand": 0}) // stock is tracked here
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"))
	var cs struct{ Conflicts []ledger.Conflict }
	must(t, n, 200, "GET", "/v1/conflicts", nil).decode(t, &cs)
	if len(cs.Conflicts) != 1 || cs.Conflicts[0].Oversold != 1 {
		t.Fatalf("conflicts %+v", cs.Conflicts)
	}
	id := cs.Conflicts[0].ID
	var res struct{ Conflict ledger.Conflict }
	must(t, n, 200, "POST", "/v1/conflicts/"+strings.ReplaceAll(id, ":", "%3A")+"/resolve",
		map[string]any{"action": "backorder", "note": "more tea on Monday"}).decode(t, &res)
	if res.Conflict.ID != id || res.Conflict.Resolution == nil || res.Conflict.Resolution.Action != "backorder" {
		t.Errorf("resolve answered %+v", res.Conflict)
	}
	var st statusView
	must(t, n, 200, "GET", "/v1/status", nil).decode(t, &st)
	if st.Conflicts != 0 {
		t.Errorf("status shows %d open conflicts after the resolution", st.Conflicts)
	}
}
