package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v %s", from, to, err, out)
	}
}

// stallWithTill starts a manager and a till peered with it, with TEA in
// stock, and returns them once the till has made its first sale.
func stallWithTill(t *testing.T) (m, t1 *proc, devT, dataT string) {
	t.Helper()
	_, enroll := newFleet(t)
	devM := enroll("mgr", "stall", "manager")
	devT = enroll("till-1", "stall", "terminal")
	m = startProc(t, "node", "--device", devM, "--data", filepath.Join(t.TempDir(), "m"))
	dataT = filepath.Join(t.TempDir(), "t1")
	t1 = startProc(t, "node", "--device", devT, "--data", dataT, "--peer", m.addrs[0])
	m.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)
	m.must(201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 500}, nil)
	eventually(t, 15*time.Second, "t1 to learn the catalog", func() bool {
		code, _ := t1.do("POST", "/v1/sales", sale("TEA", 1, "cash"), nil, "Idempotency-Key", "t1-0")
		return code == 201
	})
	return m, t1, devT, dataT
}

// A till whose data folder is put back from a copy taken 50 sales
// earlier, started beside its peer, notices it (its device folder
// remembers more of its chain), waits for the peer to send the 50 back and
// sells its next sale at the next seq of its chain: no fork anywhere.
func TestCLIRestoredTill(t *testing.T) {
	m, t1, devT, dataT := stallWithTill(t)
	t1.stop(false)
	backup := filepath.Join(t.TempDir(), "backup")
	copyDir(t, dataT, backup)

	t1 = startProc(t, "node", "--device", devT, "--data", dataT, "--peer", m.addrs[0])
	for range 50 {
		t1.must(201, "POST", "/v1/sales", sale("TEA", 1, "card"), nil)
	}
	eventually(t, 20*time.Second, "the manager to hold t1's 51 sales", func() bool { return len(m.sales()) == 51 })
	t1.stop(false)

	restored := filepath.Join(t.TempDir(), "restored")
	copyDir(t, backup, restored)
	t1 = startProc(t, "node", "--device", devT, "--data", restored, "--peer", m.addrs[0])
	var out saleOut
	eventually(t, 20*time.Second, "the restored till to sell", func() bool {
		code, _ := t1.do("POST", "/v1/sales", sale("TEA", 1, "cash"), &out, "Idempotency-Key", "after-restore")
		return code == 201
	})
	if out.Device != t1.deviceID() || out.Seq != 52 {
		t.Errorf("restored till sold on chain %s seq %d, want its own chain %s at seq 52 (its peer was there to refill it)", out.Device, out.Seq, t1.deviceID())
	}
	for _, p := range []*proc{m, t1} {
		eventually(t, 20*time.Second, "52 sales and no fork", func() bool {
			return len(p.sales()) == 52 && p.status().Forks == 0
		})
	}
	if m.digest("stall") != t1.digest("stall") {
		t.Error("manager and restored till differ")
	}
	if !strings.Contains(t1.logText(), "older copy") {
		t.Error("the restored till did not log that its data folder is an older copy")
	}
}

// A cloned till (its device and data folders copied to a second
// process) started beside the real one is flagged on its peer within
// 10 s (status, metrics, the page's banner). After the manager's action
// (the copy is switched off) the real till sells; when the copy's sales
// reach the fleet later (it is started once more to hand them over), the
// real till's chain is forked, and it goes on selling on a new chain:
// every sale of both is kept, once, and every replica agrees.
func TestCLIClonedTill(t *testing.T) {
	m, t1, devT, dataT := stallWithTill(t)
	eventually(t, 15*time.Second, "the manager to hold t1's sale", func() bool { return len(m.sales()) == 1 })
	t1.stop(false)
	cloneDev, cloneData := filepath.Join(t.TempDir(), "dev"), filepath.Join(t.TempDir(), "data")
	copyDir(t, devT, cloneDev)
	copyDir(t, dataT, cloneData)

	t1 = startProc(t, "node", "--device", devT, "--data", dataT, "--peer", m.addrs[0])
	clone := startProc(t, "node", "--device", cloneDev, "--data", cloneData, "--peer", m.addrs[0])
	start := time.Now()
	eventually(t, 10*time.Second, "the manager to flag two processes of till-1", func() bool {
		var st struct {
			Clones []struct{ Device, Name string } `json:"clones"`
		}
		m.must(200, "GET", "/v1/status", nil, &st)
		return len(st.Clones) == 1 && st.Clones[0].Device == t1.deviceID() && st.Clones[0].Name == "till-1"
	})
	t.Logf("clone flagged on the manager after %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(m.metrics(), "storemesh_clones 1") {
		t.Error("manager's /metrics does not count the clone")
	}
	t1.must(201, "POST", "/v1/sales", sale("TEA", 1, "cash"), nil)
	clone.must(201, "POST", "/v1/sales", sale("TEA", 2, "cash"), nil) // the copy sells too, at the same seq

	clone.stop(false) // the manager's action: the copy is switched off
	t1.must(201, "POST", "/v1/sales", sale("TEA", 1, "card"), nil)
	eventually(t, 15*time.Second, "the manager to hold the real till's 3 sales", func() bool { return len(m.sales()) == 3 })

	// The copy hands its sale over, once, with the real till away.
	t1.stop(false)
	clone = startProc(t, "node", "--device", cloneDev, "--data", cloneData, "--peer", m.addrs[0])
	eventually(t, 15*time.Second, "the manager to hold the copy's sale and flag the fork", func() bool {
		return len(m.sales()) == 4 && m.status().Forks == 1
	})
	clone.stop(false)

	t1 = startProc(t, "node", "--device", devT, "--data", dataT, "--peer", m.addrs[0])
	eventually(t, 15*time.Second, "the real till to learn it was copied", func() bool { return t1.status().Copied })
	var out saleOut
	t1.must(201, "POST", "/v1/sales", sale("TEA", 1, "card"), &out)
	if !strings.Contains(out.Device, "~") || out.Seq != 1 {
		t.Errorf("real till's sale after the fork on %s seq %d, want seq 1 of a new epoch of its chain", out.Device, out.Seq)
	}
	for _, p := range []*proc{m, t1} {
		eventually(t, 20*time.Second, "every sale of both, once", func() bool { return len(p.sales()) == 5 })
	}
	eventually(t, 20*time.Second, "manager and till to agree", func() bool { return m.digest("stall") == t1.digest("stall") })
}
