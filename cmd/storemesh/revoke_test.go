package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func (p *proc) digest(store string) string {
	var d struct{ Digest string }
	p.must(200, "GET", "/v1/digest?store="+store, nil, &d)
	return d.Digest
}

func (p *proc) deviceID() string {
	var st struct{ Device string }
	p.must(200, "GET", "/v1/status", nil, &st)
	return st.Device
}

func (p *proc) metrics() string {
	res, err := client.Get("http://" + p.http + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// TestCLIRevokeATill: real processes. Till t1 sells twice while every node
// is connected; the manager stops; t1 sells twice more, which reach t2 and
// the anchor. The manager, restarted cut off from everyone, holds t1's
// first two sales and revokes it with storemesh revoke (cut-off 2). Once it
// is back in the mesh, the anchor and t2 drop t1's two later sales and
// refuse its connections (counted at the gate), and every digest is equal.
func TestCLIRevokeATill(t *testing.T) {
	fleet, enroll := newFleet(t)
	devM, devA := enroll("mgr", "stall", "manager"), enroll("hq", "", "anchor")
	devT1, devT2 := enroll("till-1", "stall", "terminal"), enroll("till-2", "stall", "terminal")
	dataM := filepath.Join(t.TempDir(), "m")
	m := startProc(t, "node", "--device", devM, "--data", dataM)
	a := startProc(t, "anchor", "--device", devA, "--data", filepath.Join(t.TempDir(), "a"), "--peer", m.addrs[0])
	t2 := startProc(t, "node", "--device", devT2, "--data", filepath.Join(t.TempDir(), "t2"), "--peer", m.addrs[0], "--peer", a.addrs[0])
	t1 := startProc(t, "node", "--device", devT1, "--data", filepath.Join(t.TempDir(), "t1"), "--peer", m.addrs[0], "--peer", t2.addrs[0])
	m.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)
	m.must(201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 20}, nil)
	eventually(t, 15*time.Second, "t1 to learn the catalog", func() bool {
		code, _ := t1.do("POST", "/v1/sales", sale("TEA", 1, "cash"), nil, "Idempotency-Key", "t1-1")
		return code == 201
	})
	t1.must(201, "POST", "/v1/sales", sale("TEA", 1, "cash"), nil)
	for _, p := range []*proc{m, a, t2} {
		eventually(t, 15*time.Second, "t1's first two sales everywhere", func() bool { return len(p.sales()) == 2 })
	}

	m.stop(false)
	t1.must(201, "POST", "/v1/sales", sale("TEA", 3, "cash"), nil)
	t1.must(201, "POST", "/v1/sales", sale("TEA", 4, "cash"), nil)
	for _, p := range []*proc{a, t2} {
		eventually(t, 15*time.Second, "t1's later sales at the anchor and t2", func() bool { return len(p.sales()) == 4 })
	}

	// The manager back, alone: it holds t1's seqs 1 and 2 (and the catalog
	// and stock ops of its own).
	m = startProc(t, "node", "--device", devM, "--data", dataM)
	t1ID := t1.deviceID()
	out := mustRun(t, "revoke", "--node", "http://"+m.http, "--device", t1ID, "--reason", "stolen")
	if !strings.Contains(out, "revoked "+t1ID) || !strings.Contains(out, "stall #2") {
		t.Fatalf("storemesh revoke printed:\n%s", out)
	}
	if _, errOut, code := storemesh(t, 30*time.Second, nil, "revoke", "--node", "http://"+m.http, "--device", t1ID, "--reason", "again"); code != 1 || !strings.Contains(errOut, "already_revoked") {
		t.Fatalf("a second revoke: exit %d, %s", code, errOut)
	}
	// Revoking the anchor needs the fleet's statement; with it, a manager
	// may carry it.
	aID := a.deviceID()
	if _, errOut, code := storemesh(t, 30*time.Second, nil, "revoke", "--node", "http://"+a.http, "--device", aID, "--reason", "x"); code != 1 || !strings.Contains(errOut, "revocation_not_allowed") {
		t.Fatalf("an anchor revoking itself: exit %d, %s", code, errOut)
	}

	// Back into the mesh: the anchor learns the revocation from the manager.
	m.stop(false)
	m = startProc(t, "node", "--device", devM, "--data", dataM, "--peer", a.addrs[0])
	for _, p := range []*proc{a, t2} {
		eventually(t, 20*time.Second, "t1's sales past its cut-off dropped", func() bool { return len(p.sales()) == 2 })
	}
	eventually(t, 20*time.Second, "equal digests on the manager, the anchor and t2", func() bool {
		d := m.digest("stall")
		return a.digest("stall") == d && t2.digest("stall") == d && a.digest("*") == m.digest("*") && t2.digest("*") == m.digest("*")
	})
	var st struct {
		Revoked []struct{ Device, By string } `json:"revoked"`
	}
	t2.must(200, "GET", "/v1/status", nil, &st)
	if len(st.Revoked) != 1 || st.Revoked[0].Device != t1ID {
		t.Fatalf("t2's status lists revoked %+v", st.Revoked)
	}
	// t1 keeps redialling t2 (its static peer): the gate refuses it.
	eventually(t, 30*time.Second, "t2's gate to refuse the revoked till", func() bool {
		return strings.Contains(t2.metrics(), `storemesh_gate_refused_total{reason="revoked"}`)
	})
	// With the fleet key's statement, the manager may carry the anchor's
	// revocation.
	out = mustRun(t, "revoke", "--node", "http://"+m.http, "--device", aID, "--reason", "decommissioned", "--fleet", fleet)
	if !strings.Contains(out, "revoked "+aID) {
		t.Fatalf("storemesh revoke --fleet printed:\n%s", out)
	}
}
