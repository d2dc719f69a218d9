package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type saleOut struct {
	SaleID  string `json:"sale_id"`
	Receipt string `json:"receipt_no"`
	Device  string `json:"device"`
	Seq     uint64 `json:"seq"`
	Total   int64  `json:"total"`
}

type salesOut struct {
	Sales []saleOut `json:"sales"`
	Next  string    `json:"next"`
}

type stockOut struct {
	Items []struct {
		Store  string `json:"store"`
		SKU    string `json:"sku"`
		OnHand int64  `json:"on_hand"`
	} `json:"items"`
}

func sale(sku string, qty int, method string) map[string]any {
	return map[string]any{"lines": []map[string]any{{"sku": sku, "qty": qty}}, "payment": map[string]any{"method": method}}
}

func (p *proc) onHand(sku string) int64 {
	var st stockOut
	p.must(200, "GET", "/v1/stock", nil, &st)
	for _, it := range st.Items {
		if it.SKU == sku {
			return it.OnHand
		}
	}
	return 0
}

// sales is every sale the process holds, page by page.
func (p *proc) sales() []saleOut {
	var all []saleOut
	path := "/v1/sales"
	for {
		var s salesOut
		p.must(200, "GET", path, nil, &s)
		all = append(all, s.Sales...)
		if s.Next == "" {
			return all
		}
		path = "/v1/sales?cursor=" + url.QueryEscape(s.Next)
	}
}

func TestCLIUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stdout or stderr
	}{
		{nil, 2, "Commands:"},
		{[]string{"--help"}, 0, "storemesh COMMAND"},
		{[]string{"node", "--help"}, 0, "--device"},
		{[]string{"audit", "verify", "--help"}, 0, "--fleet"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"fleet"}, 2, "needs a subcommand"},
		{[]string{"node", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"node", "--device", "d", "--data", "x", "--http", "0.0.0.0:8080"}, 2, "--token"},
		{[]string{"enroll", "--fleet", "f", "--name", "n", "--out", "o", "--role", "boss"}, 2, "--role"},
		{[]string{"version"}, 0, "storemesh "},
		{[]string{"sim"}, 2, "usage"},
		{[]string{"audit", "export", "--data", "/nonexistent", "--out", "x"}, 1, "no storemesh data"},
	} {
		out, errOut, code := storemesh(t, 30*time.Second, nil, tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("storemesh %v: exit %d (want %d), output lacks %q:\n%s%s", tc.args, code, tc.code, tc.want, out, errOut)
		}
	}
}

// TestCLITwoNodes: fleet init and enroll through the CLI, two nodes as
// separate processes with static peers, sales on both, the same sales and
// stock on both, and an Idempotency-Key retry that does not sell twice.
func TestCLITwoNodes(t *testing.T) {
	_, enroll := newFleet(t)
	devA, devB := enroll("till-a", "stall", "manager"), enroll("till-b", "stall", "terminal")
	a := startProc(t, "node", "--device", devA, "--data", filepath.Join(t.TempDir(), "a"))
	b := startProc(t, "node", "--device", devB, "--data", filepath.Join(t.TempDir(), "b"), "--peer", a.addrs[0])

	a.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)
	a.must(201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 20}, nil)
	eventually(t, 15*time.Second, "b to learn the catalog", func() bool {
		code, _ := b.do("POST", "/v1/sales", sale("TEA", 3, "card"), nil, "Idempotency-Key", "b-1")
		return code == 201
	})
	a.must(201, "POST", "/v1/sales", sale("TEA", 2, "cash"), nil)

	var first, again saleOut
	b.must(201, "POST", "/v1/sales", sale("TEA", 1, "cash"), &first, "Idempotency-Key", "b-2")
	b.must(201, "POST", "/v1/sales", sale("TEA", 1, "cash"), &again, "Idempotency-Key", "b-2")
	if first != again {
		t.Errorf("a retry with the same key got %+v, first %+v", again, first)
	}
	if code, _ := b.do("POST", "/v1/sales", sale("TEA", 5, "cash"), nil, "Idempotency-Key", "b-2"); code != 409 {
		t.Errorf("same key, other body: %d, want 409", code)
	}
	for _, p := range []*proc{a, b} {
		eventually(t, 15*time.Second, "3 sales and 14 TEA on both nodes", func() bool {
			return len(p.sales()) == 3 && p.onHand("TEA") == 14
		})
	}
	var st struct {
		Device string   `json:"device"`
		Addrs  []string `json:"addrs"`
		Peers  []struct {
			ID, Found   string
			Established bool
		} `json:"peers"`
	}
	b.must(200, "GET", "/v1/status", nil, &st)
	if len(st.Peers) != 1 || st.Peers[0].Found != "static" || !st.Peers[0].Established {
		t.Errorf("b's peers: %+v", st.Peers)
	}
	if len(st.Addrs) == 0 || !strings.HasSuffix(st.Addrs[0], "/p2p/"+st.Device) {
		t.Errorf("b's addrs %v do not end in /p2p/%s", st.Addrs, st.Device)
	}
}

// TestCLIKillDuringWrites: SIGKILL a node while clients write sales; on
// restart every sale that got a 201 is there. Then audit export and verify
// its data, and see verify fail on a bundle with one byte changed.
func TestCLIKillDuringWrites(t *testing.T) {
	fleet, enroll := newFleet(t)
	dev := enroll("till", "stall", "manager")
	data := filepath.Join(t.TempDir(), "data")
	n := startProc(t, "node", "--device", dev, "--data", data)
	n.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)

	var mu sync.Mutex
	acked := map[string]bool{}
	var count atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var s saleOut
				code, err := n.do("POST", "/v1/sales", sale("TEA", 1, "cash"), &s)
				if err != nil || code != 201 {
					return // the node is gone
				}
				mu.Lock()
				acked[s.SaleID] = true
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	eventually(t, 20*time.Second, "40 acknowledged sales", func() bool { return count.Load() >= 40 })
	n.stop(true) // SIGKILL mid-write
	wg.Wait()

	n2 := startProc(t, "node", "--device", dev, "--data", data)
	have := map[string]bool{}
	for _, s := range n2.sales() {
		have[s.SaleID] = true
	}
	for id := range acked {
		if !have[id] {
			t.Errorf("sale %s was acknowledged (201) before the kill and is gone after the restart", id)
		}
	}
	t.Logf("%d sales acknowledged before SIGKILL, %d held after restart", len(acked), len(have))
	n2.stop(false)

	bundle := filepath.Join(t.TempDir(), "audit.bundle")
	if out := mustRun(t, "audit", "export", "--data", data, "--out", bundle); !strings.Contains(out, "exported") {
		t.Errorf("audit export printed %q", out)
	}
	if out := mustRun(t, "audit", "verify", bundle, "--fleet", filepath.Join(fleet, "fleet.pub")); !strings.Contains(out, "audit OK") {
		t.Errorf("audit verify printed %q", out)
	}
	b, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	bad := bundle + ".bad"
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := storemesh(t, 30*time.Second, nil, "audit", "verify", bad); code != 1 || !strings.Contains(errOut, "FAILED") {
		t.Errorf("verify of a changed bundle: exit %d\n%s%s", code, out, errOut)
	}
}

func TestCLIDemoExit(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes a few seconds")
	}
	out, errOut, code := storemesh(t, 3*time.Minute, nil, "demo", "--exit")
	if code != 0 || !strings.Contains(out, "every replica converged") {
		t.Fatalf("demo --exit: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"sales", "stock", "converged", "conflicts   1 found", "HQ acknowledged every terminal's sales"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo report lacks %q:\n%s", want, out)
		}
	}
}

// TestEnrollRefusesTakenName: device names are unique in a fleet (they
// are on every receipt): enroll refuses a name already in the fleet
// folder's registry, whatever its case, and writes nothing.
func TestEnrollRefusesTakenName(t *testing.T) {
	fleet, enroll := newFleet(t)
	enroll("till-1", "stall", "terminal")
	out := filepath.Join(t.TempDir(), "again")
	stdout, stderr, code := storemesh(t, 30*time.Second, nil, "enroll", "--fleet", fleet, "--store", "stall", "--name", "TILL-1", "--out", out)
	if code != 1 || !strings.Contains(stderr, "already enrolled") {
		t.Fatalf("second till-1: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("refused enroll wrote %s (%v)", out, err)
	}
	enroll("till-2", "stall", "terminal")
	reg, err := os.ReadFile(filepath.Join(fleet, "devices.tsv"))
	if err != nil || strings.Count(string(reg), "\n") != 2 || !strings.HasPrefix(string(reg), "till-1\t12D3KooW") {
		t.Errorf("registry %q (%v)", reg, err)
	}
}
