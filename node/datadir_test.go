package node

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	ds "github.com/ipfs/go-datastore"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// spaceStore is a datastore with a free-space guard a test turns on and
// off (the real one, badger on a full tmpfs, is ledger.TestFullTmpfs).
type spaceStore struct {
	ds.Batching
	full atomic.Bool
}

func (s *spaceStore) CheckSpace(int) error {
	if s.full.Load() {
		return fmt.Errorf("%w: test disk has 0 MiB free", ledger.ErrNoSpace)
	}
	return nil
}

// TestDiskFullHTTP: a sale while the disk is full gets storage_failed,
// status and /metrics say so, nothing is written, and sales resume by
// themselves once space is freed.
func TestDiskFullHTTP(t *testing.T) {
	f := newTestFleet(t, 3)
	store := &spaceStore{Batching: ledgertest.MemStore()}
	n := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "till"), func(c *Config) { c.Datastore = store })
	setItem(t, n, "TEA", "Tea", 350)
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"))
	store.full.Store(true)
	r := call(t, n, "POST", "/v1/sales", sale("TEA", 1, "cash"), "Idempotency-Key", "full-1")
	if r.status != 500 || r.code() != CodeStorageFailed || !strings.Contains(string(r.body), "disk full") {
		t.Fatalf("sale on a full disk: %d %s, want 500 storage_failed", r.status, r.body)
	}
	var st struct {
		DiskFull bool `json:"disk_full"`
	}
	must(t, n, 200, "GET", "/v1/status", nil).decode(t, &st)
	if !st.DiskFull {
		t.Error("status does not say the disk is full")
	}
	if m := string(must(t, n, 200, "GET", "/metrics", nil).body); !strings.Contains(m, "storemesh_storage_no_space_total 1") {
		t.Error("/metrics does not count the refused write")
	}
	if got := len(salesOf(t, n)); got != 1 {
		t.Fatalf("%d sales after the refusal, want 1", got)
	}
	store.full.Store(false)
	must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"), "Idempotency-Key", "full-1")
	if got := len(salesOf(t, n)); got != 2 {
		t.Fatalf("%d sales after space returned, want 2", got)
	}
}

// TestOwnChainBehindRecord: a node whose store holds less of its own
// chain than its durable record says (ops lost from storage) reports it on
// status and /metrics and refuses to sell on the lost seqs
// (history_behind).
func TestOwnChainBehindRecord(t *testing.T) {
	f := newTestFleet(t, 4)
	dev := f.enroll(t, "s1", ledger.RoleManager, "till")
	dir := t.TempDir()
	n := startNode(t, dev, func(c *Config) { c.DataDir = dir })
	setItem(t, n, "TEA", "Tea", 350)
	for range 3 {
		must(t, n, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"))
	}
	held := n.l.VersionVector("s1")[dev.Cert.Device]
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	rec, err := ledger.OpenOwnRecordFile(filepath.Join(dir, ownChainFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rec.Load()
	if err != nil {
		t.Fatal(err)
	}
	k := ledger.OwnChain{Scope: "s1", Chain: dev.Cert.Device}
	if m[k] != held {
		t.Fatalf("the record says %d after a clean close, the ledger held %d", m[k], held)
	}
	// The store lost the last 5 ops it had written (as badger does when
	// it truncates a damaged WAL): the record says so.
	m[k] = held + 5
	if err := rec.Save(m); err != nil {
		t.Fatal(err)
	}
	rec.Close()

	n = startNode(t, dev, func(c *Config) { c.DataDir = dir })
	var st struct {
		OwnChain ownChainView `json:"own_chain"`
	}
	must(t, n, 200, "GET", "/v1/status", nil).decode(t, &st)
	got := st.OwnChain
	if got.WaitSeconds <= 0 || got.WaitSeconds > 10 {
		t.Errorf("status own_chain wait_seconds %v, want (0, 10]", got.WaitSeconds)
	}
	got.WaitSeconds = 0
	if want := (ownChainView{Scope: "s1", Chain: dev.Cert.Device, Held: held, Recorded: held + 5, Missing: 5, Source: "durable record"}); got != want {
		t.Fatalf("status own_chain %+v, want %+v", st.OwnChain, want)
	}
	if m := string(must(t, n, 200, "GET", "/metrics", nil).body); !strings.Contains(m, `storemesh_own_chain_missing{scope="s1"} 5`) {
		t.Error("/metrics does not report the missing ops")
	}
	r := call(t, n, "POST", "/v1/sales", sale("TEA", 1, "cash"))
	if r.code() != CodeHistoryBehind {
		t.Fatalf("sale with 5 own ops missing: %d %s, want history_behind", r.status, r.body)
	}
}
