package node

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// errCase is one bad request and the error it must get.
type errCase struct {
	code    string
	route   string // the route table's path, to check the code is declared
	method  string
	path    string
	body    any
	headers []string
	setup   func(t *testing.T) // runs before the state is snapshotted
	node    func() *Node       // default: the manager node
}

// snapshot is everything a refused request must leave unchanged.
func snapshot(t *testing.T, n *Node) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"/v1/digest", "/v1/digest?store=*", "/v1/sales", "/v1/stock", "/v1/catalog", "/v1/conflicts"} {
		b.Write(must(t, n, 200, "GET", p, nil).body)
	}
	st := n.l.Stats()
	b.WriteString(strings.Repeat("|", int(st.Appended)))
	return b.String()
}

// failingStore fails every batch commit once fail is set: a full disk.
type failingStore struct {
	ds.Batching
	fail atomic.Bool
}

func (f *failingStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := f.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &failingBatch{Batch: b, s: f}, nil
}

type failingBatch struct {
	ds.Batch
	s *failingStore
}

func (b *failingBatch) Commit(ctx context.Context) error {
	if b.s.fail.Load() {
		return errors.New("no space left on device")
	}
	return b.Batch.Commit(ctx)
}

// restoredOps returns raw ops seq 1 and 2 of dev written by another copy
// of the device (a backup restored elsewhere, or a clone).
func restoredOps(t *testing.T, dev *Device, store string) [][]byte {
	t.Helper()
	ctx := context.Background()
	cfg := ledger.DefaultConfig()
	cfg.Fleet, cfg.Self, cfg.Key = dev.Fleet, dev.Cert, dev.Key
	l, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 2; i++ {
		if _, err := l.Append(ctx, store, ledger.KindSale, ledgertest.Sale("TEA", int64(i+5), 999)); err != nil {
			t.Fatal(err)
		}
	}
	var raws [][]byte
	if err := l.History(ctx, store, dev.Cert.Device, 0, 1<<20, func(b []ledger.RawOp) error {
		for _, r := range b {
			raws = append(raws, r.Bytes)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return raws
}

// TestAPIErrorCodes triggers every error code with the bad input that
// causes it and checks that nothing stored changed.
func TestAPIErrorCodes(t *testing.T) {
	f := newTestFleet(t, 1)
	clock := &testClock{}
	mgr := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "mgr"), func(c *Config) { c.Now = clock.Now })
	term := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "term"), func(c *Config) { c.Peers = []string{tcpAddr(t, mgr)} })
	locked := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "locked"), func(c *Config) { c.Token = "s3cret" })
	hq := startNode(t, f.enroll(t, ledger.FleetScope, ledger.RoleAnchor, "hq"))

	store := &failingStore{Batching: ledgertest.MemStore()}
	broken := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "broken"), func(c *Config) { c.Datastore = store })
	behindDev := f.enroll(t, "s1", ledger.RoleManager, "behind")
	behind := startNode(t, behindDev)

	for _, n := range []*Node{mgr, broken, behind} {
		setItem(t, n, "TEA", "Tea", 350)
	}
	must(t, mgr, 201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 1})
	var sold saleResult
	must(t, mgr, 201, "POST", "/v1/sales", sale("TEA", 2, "cash"), "Idempotency-Key", "k1").decode(t, &sold) // oversells by 1
	waitFor(t, 10*time.Second, "the terminal to sync", func() bool {
		return term.l.Digest("s1") == mgr.l.Digest("s1") && term.l.Digest(ledger.FleetScope) == mgr.l.Digest(ledger.FleetScope)
	})
	var conflicts struct{ Conflicts []ledger.Conflict }
	must(t, mgr, 200, "GET", "/v1/conflicts", nil).decode(t, &conflicts)
	if len(conflicts.Conflicts) != 1 {
		t.Fatalf("want one oversell, got %+v", conflicts.Conflicts)
	}
	conflictPath := "/v1/conflicts/" + conflicts.Conflicts[0].ID + "/resolve"
	policy := func(p map[string]any) func(*testing.T) {
		return func(t *testing.T) { must(t, mgr, 200, "PUT", "/v1/policy", p) }
	}

	cases := []errCase{
		{code: CodeBadQuery, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?by=week"},
		{code: CodeBadQuery, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?day=2026-12-01"},
		{code: CodeBadQuery, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?by=day&by=sku"},
		{code: CodeBadQuery, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?format=xml"},
		{code: CodeBadDate, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?from=2026-12-32"},
		{code: CodeBadDate, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?from=2026-12-02&to=2026-12-01"},
		{code: CodeNotFound, route: "/v1/reports/sales", method: "GET", path: "/v1/reports/sales?store=s2"},
		{code: CodeBadQuery, route: "/v1/sales", method: "GET", path: "/v1/sales?limit=0"},
		{code: CodeBadQuery, route: "/v1/sales", method: "GET", path: "/v1/sales?limit=10001"},
		{code: CodeBadQuery, route: "/v1/sales", method: "GET", path: "/v1/sales?cursor=nope"},
		{code: CodeBadQuery, route: "/v1/sales", method: "GET", path: "/v1/sales?order=up"},
		{code: CodeBadQuery, route: "/v1/sales", method: "GET", path: "/v1/sales?page=2"},
		{code: CodeBadQuery, route: "/v1/devices", method: "GET", path: "/v1/devices?role=terminal"},
		{code: CodeBadQuery, route: "/v1/stores", method: "GET", path: "/v1/stores?all=1"},
		{code: CodeBadTimeZone, route: "/v1/stores/{id}", method: "PUT", path: "/v1/stores/s1", body: map[string]any{"name": "Stall", "currency": "EUR", "time_zone": "Europe/Atlantis"}},
		{code: CodeUnknownStore, route: "/v1/sales", method: "POST", path: "/v1/sales", node: func() *Node { return hq },
			body: map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 1, "unit_price": 350}}, "payment": map[string]any{"method": "cash"}, "currency": "EUR", "store": "s9"}},
		{code: CodeUnknownStore, route: "/v1/policy", method: "PUT", path: "/v1/policy", node: func() *Node { return hq }, body: map[string]any{"store": "s9", "offline_methods": []string{"cash"}}},
		{code: CodeBadQuery, route: "/v1/refunds", method: "GET", path: "/v1/refunds?cursor=nope"},
		{code: CodeBadQuery, route: "/v1/reports/price-variance", method: "GET", path: "/v1/reports/price-variance?limit=x"},
		{code: CodeBadDate, route: "/v1/reports/price-variance", method: "GET", path: "/v1/reports/price-variance?to=2026-02-30"},
		{code: CodeBadDate, route: "/v1/refunds", method: "GET", path: "/v1/refunds?from=12/01/2026"},
		{code: CodeBadDate, route: "/v1/sales", method: "GET", path: "/v1/sales?to=yesterday"},
		{code: CodeUnknownSKU, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("NOPE", 1, "cash")},
		{code: CodeUnknownSKU, route: "/v1/stock/received", method: "POST", path: "/v1/stock/received", body: map[string]any{"sku": "NOPE", "qty": 1}},
		{code: CodeBadSKU, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/bad%20sku", body: map[string]any{"name": "x", "unit_price": 1, "currency": "EUR"}},
		{code: CodeBadQuantity, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 0, "cash")},
		{code: CodeBadQuantity, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{"lines":[{"sku":"TEA","qty":1.5}],"payment":{"method":"cash"}}`},
		{code: CodeBadQuantity, route: "/v1/stock/counted", method: "POST", path: "/v1/stock/counted", body: map[string]any{"sku": "TEA", "on_hand": -3}},
		{code: CodeBadPrice, route: "/v1/sales", method: "POST", path: "/v1/sales", body: map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 1, "unit_price": -1}}, "payment": map[string]any{"method": "cash"}}},
		{code: CodeBadPrice, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: map[string]any{"name": "Tea", "unit_price": 3.5, "currency": "EUR"}},
		{code: CodeBadCurrency, route: "/v1/sales", method: "POST", path: "/v1/sales", body: map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 1}}, "payment": map[string]any{"method": "cash"}, "currency": "eur"}},
		{code: CodeBadCurrency, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: map[string]any{"name": "Tea", "unit_price": 1, "currency": "Euro"}},
		{code: CodeBadPaymentMethod, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "Cash!")},
		{code: CodeBadAction, route: "/v1/conflicts/{id}/resolve", method: "POST", path: conflictPath, body: map[string]any{"action": "ignore"}},
		{code: CodeBadIdempotencyKey, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "cash"), headers: []string{"Idempotency-Key", strings.Repeat("k", 129)}},
		{code: CodeFieldTooLong, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: map[string]any{"name": strings.Repeat("n", 201), "unit_price": 1, "currency": "EUR"}},
		{code: CodeFieldTooLong, route: "/v1/conflicts/{id}/resolve", method: "POST", path: conflictPath, body: map[string]any{"action": "other", "note": strings.Repeat("n", 1001)}},
		{code: CodeBodyTooLarge, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{"lines":[],"pad":"` + strings.Repeat("x", 70<<10) + `"}`},
		{code: CodeUnsupportedMedia, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{}`, headers: []string{"Content-Type", "text/plain"}},
		{code: CodeBadJSON, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{"lines":`},
		{code: CodeBadJSON, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{"lines":"TEA"}`},
		{code: CodeBadJSON, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{"lines":[{"sku":"TEA","qty":"2"}],"payment":{"method":"cash"}}`},
		{code: CodeBadJSON, route: "/v1/stock/received", method: "POST", path: "/v1/stock/received", body: `{"sku":"TEA","qty":"2"}`},
		{code: CodeBadJSON, route: "/v1/stock/counted", method: "POST", path: "/v1/stock/counted", body: `{"sku":"TEA","on_hand":"2"}`},
		{code: CodeBadJSON, route: "/v1/refunds", method: "POST", path: "/v1/refunds", body: `{"sale_id":"x","lines":[{"sku":"TEA","qty":"1"}]}`},
		{code: CodeBadJSON, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: `{"name":"Tea","unit_price":"350","currency":"EUR"}`},
		{code: CodeBadJSON, route: "/v1/policy", method: "PUT", path: "/v1/policy", body: `{"max_offline_sale":"100"}`},
		{code: CodeBadJSON, route: "/v1/sales", method: "POST", path: "/v1/sales", body: `{"lines":[{"sku":"TEA","qty":true}],"payment":{"method":"cash"}}`},
		{code: CodeBadStockMode, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR", "stock": "sometimes"}},
		{code: CodeMissingField, route: "/v1/sales", method: "POST", path: "/v1/sales", body: map[string]any{"lines": []map[string]any{{"sku": "TEA", "qty": 1}}}},
		{code: CodeMissingField, route: "/v1/refunds", method: "POST", path: "/v1/refunds", body: map[string]any{}},
		{code: CodeMissingField, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: map[string]any{"unit_price": 1, "currency": "EUR"}},
		{code: CodeRoleNotAllowed, route: "/v1/catalog/{sku}", method: "PUT", path: "/v1/catalog/TEA", body: map[string]any{"name": "Tea", "unit_price": 1, "currency": "EUR"}, node: func() *Node { return term }},
		{code: CodeRoleNotAllowed, route: "/v1/policy", method: "PUT", path: "/v1/policy", body: map[string]any{"offline_methods": []string{"cash"}}, node: func() *Node { return term }},
		{code: CodeRoleNotAllowed, route: "/v1/sales", method: "POST", path: "/v1/sales", body: map[string]any{"store": "s2", "lines": []map[string]any{{"sku": "TEA", "qty": 1}}, "payment": map[string]any{"method": "cash"}}, node: func() *Node { return term }},
		{code: CodeNotFound, route: "other", method: "GET", path: "/v1/nope"},
		{code: CodeNotFound, route: "/v1/conflicts/{id}/resolve", method: "POST", path: "/v1/conflicts/oversell:s1:TEA:nope/resolve", body: map[string]any{"action": "other"}},
		{code: CodeNotFound, route: "/v1/stock", method: "GET", path: "/v1/stock?store=s2"},
		{code: CodeNotFound, route: "/v1/digest", method: "GET", path: "/v1/digest?store=s2"},
		{code: CodeNotFound, route: "/assets/{name}", method: "GET", path: "/assets/nope.js"},
		{code: CodeUnknownSale, route: "/v1/refunds", method: "POST", path: "/v1/refunds", body: map[string]any{"sale_id": "nope"}},
		{code: CodeUnknownSale, route: "/v1/sales/{id}", method: "GET", path: "/v1/sales/nope"},
		{code: CodeRefundExceedsSale, route: "/v1/refunds", method: "POST", path: "/v1/refunds", body: map[string]any{"sale_id": sold.SaleID, "lines": []map[string]any{{"sku": "TEA", "qty": 3}}}},
		{code: CodeIdempotencyConflict, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "cash"), headers: []string{"Idempotency-Key", "k1"}},
		{code: CodeIdempotencyConflict, route: "/v1/stock/received", method: "POST", path: "/v1/stock/received", body: map[string]any{"sku": "TEA", "qty": 1}, headers: []string{"Idempotency-Key", "k1"}},
		{code: CodeUnauthorized, route: "/v1/status", method: "GET", path: "/v1/status", node: func() *Node { return locked }},
		{code: CodeUnauthorized, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "cash"), headers: []string{"Authorization", "Bearer wrong"}, node: func() *Node { return locked }},
		{code: CodeMethodNotAllowed, route: "/v1/sales", method: "DELETE", path: "/v1/sales"},
		{code: CodeMethodNotAllowed, route: "/", method: "POST", path: "/", body: `{}`},
		{code: CodeHistoryBehind, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "cash"), node: func() *Node { return behind },
			setup: func(t *testing.T) {
				raws := restoredOps(t, behindDev, "s1")
				if res, err := behind.l.ApplyBatch(context.Background(), raws[1:]); err != nil || res[0].Outcome != ledger.Held {
					t.Fatalf("apply own seq 2: %v %+v", err, res)
				}
			}},
		{code: CodeStorageFailed, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "cash"), node: func() *Node { return broken },
			setup: func(t *testing.T) { store.fail.Store(true) }},
		{code: CodeAllotmentExhausted, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("SCARF", 1, "cash"),
			setup: func(t *testing.T) {
				setItem(t, mgr, "SCARF", "Scarf", 900)
				must(t, mgr, 200, "PUT", "/v1/allotments/SCARF", map[string]any{"allotted": true})
			}},
		// Offline policy (mgr never reached an anchor: offline). Last, as
		// each sets a policy.
		{code: CodeBadPaymentMethod, route: "/v1/policy", method: "PUT", path: "/v1/policy", body: map[string]any{"offline_methods": []string{"Card"}}},
		{code: CodeBadPrice, route: "/v1/policy", method: "PUT", path: "/v1/policy", body: map[string]any{"max_offline_sale": -1}},
		{code: CodeBadQuantity, route: "/v1/policy", method: "PUT", path: "/v1/policy", body: map[string]any{"max_offline_age_s": -1}},
		{code: CodeOfflineMethod, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "card"),
			setup: policy(map[string]any{"offline_methods": []string{"cash"}})},
		{code: CodeOfflineTooLarge, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "cash"),
			setup: policy(map[string]any{"max_offline_sale": 100})},
		{code: CodeOfflineTooLong, route: "/v1/sales", method: "POST", path: "/v1/sales", body: sale("TEA", 1, "card"),
			setup: func(t *testing.T) {
				policy(map[string]any{"max_offline_age_s": 3600})(t)
				must(t, mgr, 201, "POST", "/v1/sales", sale("TEA", 1, "card")) // within the hour: allowed
				clock.Advance(2 * time.Hour)
			}},
		// Revocation (devices.go). Last: already_revoked revokes the terminal.
		{code: CodeUnknownDevice, route: "/v1/devices/{id}", method: "GET", path: "/v1/devices/dnobody"},
		{code: CodeUnknownDevice, route: "/v1/devices/{id}/revoke", method: "POST", path: "/v1/devices/dnobody/revoke", body: map[string]any{"reason": "lost"}},
		{code: CodeRevokeNotAllowed, route: "/v1/devices/{id}/revoke", method: "POST", path: "/v1/devices/" + mgr.ID() + "/revoke", body: map[string]any{"reason": "a manager revokes a manager"}},
		{code: CodeBadFleetStatement, route: "/v1/devices/{id}/revoke", method: "POST", path: "/v1/devices/" + mgr.ID() + "/revoke", body: map[string]any{"reason": "x", "fleet_statement": "bm90IGEgc2lnbmF0dXJl"}},
		{code: CodeMissingField, route: "/v1/devices/{id}/revoke", method: "POST", path: "/v1/devices/" + term.ID() + "/revoke", body: map[string]any{}},
		{code: CodeRoleNotAllowed, route: "/v1/devices/{id}/revoke", method: "POST", path: "/v1/devices/" + mgr.ID() + "/revoke", body: map[string]any{"reason": "x"}, node: func() *Node { return term }},
		{code: CodeAlreadyRevoked, route: "/v1/devices/{id}/revoke", method: "POST", path: "/v1/devices/" + term.ID() + "/revoke", body: map[string]any{"reason": "again"},
			setup: func(t *testing.T) {
				must(t, mgr, 201, "POST", "/v1/devices/"+term.ID()+"/revoke", map[string]any{"reason": "stolen"})
			}},
	}

	routesByPath := map[string]map[string][]string{}
	for _, r := range Routes() {
		if routesByPath[r.Path] == nil {
			routesByPath[r.Path] = map[string][]string{}
		}
		routesByPath[r.Path][r.Method] = r.Errors
	}
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.code+" "+c.method+" "+c.route, func(t *testing.T) {
			n := mgr
			if c.node != nil {
				n = c.node()
			}
			if c.setup != nil {
				c.setup(t)
			}
			if n == term { // the manager's earlier writes reach it in the background
				waitFor(t, 10*time.Second, "the terminal to sync before the snapshot", func() bool {
					return term.l.Digest("s1") == mgr.l.Digest("s1") && term.l.Digest(ledger.FleetScope) == mgr.l.Digest(ledger.FleetScope)
				})
			}
			var before string
			if n != locked {
				before = snapshot(t, n)
			}
			r := call(t, n, c.method, c.path, c.body, c.headers...)
			if r.code() != c.code || r.status != codeStatus[c.code] {
				t.Fatalf("got %d %s, want %d %s: %s", r.status, r.body, codeStatus[c.code], c.code, r.body)
			}
			if n != locked {
				if after := snapshot(t, n); after != before {
					t.Errorf("state changed by a refused request:\nbefore %s\nafter  %s", before, after)
				}
			}
			if c.route != "other" {
				declared := routesByPath[c.route][c.method]
				if declared == nil { // a method the route does not have
					for _, errs := range routesByPath[c.route] {
						declared = errs
					}
				}
				if !slices.Contains(declared, c.code) {
					t.Errorf("%s %s answered %s, which its route does not declare (%v)", c.method, c.route, c.code, declared)
				}
			}
			seen[c.code] = true
		})
	}
	for code := range codeStatus {
		if !seen[code] && code != CodeChainForked { // retired: a forked till moves to a new chain (TestForkedTillSellsAgain)
			t.Errorf("error code %s has no test case", code)
		}
	}
	// Errors are counted in the metrics.
	m := string(must(t, mgr, 200, "GET", "/metrics", nil).body)
	if !strings.Contains(m, `storemesh_http_errors_total{error="unknown_sku",route="/v1/sales"} 1`) {
		t.Errorf("metrics do not count the unknown_sku error:\n%s", grepLines(m, "storemesh_http_errors_total"))
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A till whose chain forked (another process wrote ops as it: a clone, or
// an older copy of its folder) is never refused for ever: its next sale
// goes to a new epoch of its chain, status and the page say it was
// copied, and every sale of both branches is kept.
func TestForkedTillSellsAgain(t *testing.T) {
	f := newTestFleet(t, 5)
	dev := f.enroll(t, "s1", ledger.RoleManager, "forked")
	n := startNode(t, dev)
	setItem(t, n, "TEA", "Tea", 350)
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"))
	raws := restoredOps(t, dev, "s1") // the copy's two sales, seq 1 and 2
	if res, err := n.l.ApplyBatch(context.Background(), raws); err != nil || res[0].Outcome != ledger.Forked {
		t.Fatalf("apply the copy's ops: %v %+v", err, res)
	}
	var sold saleResult
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash")).decode(t, &sold)
	if ledger.ChainOwner(sold.Device) != dev.Cert.Device || ledger.ChainEpoch(sold.Device) == 0 || sold.Seq != 1 {
		t.Fatalf("sale after the fork on %s seq %d, want seq 1 of a new epoch", sold.Device, sold.Seq)
	}
	var st statusView
	must(t, n, 200, "GET", "/v1/status", nil).decode(t, &st)
	if !st.Copied || st.Forks != 1 || st.OwnChain.Chain != sold.Device || st.OwnChain.Epoch != ledger.ChainEpoch(sold.Device) {
		t.Fatalf("status copied=%v forks=%d own_chain=%+v, want copied, 1 fork, writing %s", st.Copied, st.Forks, st.OwnChain, sold.Device)
	}
	if got := len(n.l.Sales("s1")); got != 4 {
		t.Fatalf("%d sales kept, want 4 (1 here, 2 of the copy, 1 on the new chain)", got)
	}
}
