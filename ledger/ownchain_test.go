package ledger_test

import (
	"context"
	"errors"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

func TestChainIDs(t *testing.T) {
	for _, c := range []struct {
		id    string
		owner string
		epoch uint64
	}{
		{"12D3KooWabc", "12D3KooWabc", 0},
		{"12D3KooWabc~2", "12D3KooWabc", 2},
		{ledger.ChainID("12D3KooWabc", 7), "12D3KooWabc", 7},
		{ledger.ChainID("12D3KooWabc", 0), "12D3KooWabc", 0},
	} {
		if got := ledger.ChainOwner(c.id); got != c.owner {
			t.Errorf("ChainOwner(%q) = %q, want %q", c.id, got, c.owner)
		}
		if got := ledger.ChainEpoch(c.id); got != c.epoch {
			t.Errorf("ChainEpoch(%q) = %d, want %d", c.id, got, c.epoch)
		}
	}
}

// A device whose own chain is known to reach further than it holds (its
// durable record, or a peer) does not sell until it holds that much.
func TestOwnFloorRefusesLocalWrites(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(1)
	dev := f.Enroll("s1", ledger.RoleTerminal)
	l, err := f.Open(ctx, ledgertest.MemStore(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	l.RaiseOwnFloor("s1", 3, "peer")
	if seq, src := l.OwnFloor("s1"); seq != 3 || src != "peer" {
		t.Fatalf("OwnFloor = %d %q", seq, src)
	}
	if _, err := l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 1}); !errors.Is(err, ledger.ErrOwnHistoryBehind) {
		t.Fatalf("Append below the floor: %v, want ErrOwnHistoryBehind", err)
	}
	l.RaiseOwnFloor("s1", 1, "lower") // the floor only rises
	if seq, _ := l.OwnFloor("s1"); seq != 3 {
		t.Fatalf("floor fell to %d", seq)
	}
}
