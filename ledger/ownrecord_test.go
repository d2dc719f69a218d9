package ledger_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"storemesh/ledger"
)

// TestOwnRecordFile: saves alternate between two slots, so damage to the
// slot last written (a torn write) leaves the one before; damage to both
// is ErrCorrupt; a record bigger than a slot grows the file.
func TestOwnRecordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ownchain")
	r, err := ledger.OpenOwnRecordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k := ledger.OwnChain{Scope: "s1", Chain: "dev"}
	for seq := uint64(1); seq <= 3; seq++ {
		if err := r.Save(map[ledger.OwnChain]uint64{k: seq}); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	load := func() (map[ledger.OwnChain]uint64, error) {
		r, err := ledger.OpenOwnRecordFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		return r.Load()
	}
	if m, err := load(); err != nil || m[k] != 3 {
		t.Fatalf("load: %v %v, want seq 3", m, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	half := len(b) / 2
	// Seq 3 went to slot 0 (saves 1, 3 in slot 0; 2 in slot 1).
	b[20] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := load(); err != nil || m[k] != 2 {
		t.Fatalf("slot 0 damaged: %v %v, want seq 2 from slot 1", m, err)
	}
	b[half+20] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load(); !errors.Is(err, ledger.ErrCorrupt) {
		t.Fatalf("both slots damaged: %v, want ErrCorrupt", err)
	}

	// Many chains (an anchor writing to many stores): the file grows.
	path = filepath.Join(t.TempDir(), "ownchain")
	r, err = ledger.OpenOwnRecordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	big := map[ledger.OwnChain]uint64{}
	for i := range 500 {
		big[ledger.OwnChain{Scope: fmt.Sprintf("store-%03d", i), Chain: "12D3KooWanchor"}] = uint64(i + 1)
	}
	if err := r.Save(big); err != nil {
		t.Fatal(err)
	}
	big[k] = 9
	if err := r.Save(big); err != nil {
		t.Fatal(err)
	}
	r.Close()
	m, err := load()
	if err != nil || len(m) != len(big) || m[k] != 9 {
		t.Fatalf("grown record: %d chains, %v; want %d", len(m), err, len(big))
	}
}
