package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
	l.RaiseOwnFloor("s1", dev.ID(), 3, "peer")
	if seq, src := l.OwnFloor("s1", dev.ID()); seq != 3 || src != "peer" {
		t.Fatalf("OwnFloor = %d %q", seq, src)
	}
	if _, err := l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 1}); !errors.Is(err, ledger.ErrOwnHistoryBehind) {
		t.Fatalf("Append below the floor: %v, want ErrOwnHistoryBehind", err)
	}
	l.RaiseOwnFloor("s1", dev.ID(), 1, "lower") // the floor only rises
	if seq, _ := l.OwnFloor("s1", dev.ID()); seq != 3 {
		t.Fatalf("floor fell to %d", seq)
	}
}

// With nobody to refill it, an own chain short of what is known of it is
// not extended: after OwnWait the device writes a new epoch, from seq 1,
// which no lost op can collide with. While it waits, the error says how
// long at most.
func TestOwnShortfallMovesToNewEpoch(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(2)
	dev := f.Enroll("s1", ledger.RoleTerminal)
	clock := ledgertest.NewClock()
	cfg := f.Config(dev, clock)
	cfg.OwnWait = 5 * time.Second
	cfg.Instance = 7
	l, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 300)); err != nil {
			t.Fatal(err)
		}
	}
	l.RaiseOwnFloor("s1", dev.ID(), 9, "durable record")
	_, err = l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 300))
	var be *ledger.BehindError
	if !errors.As(err, &be) || be.Wait <= 0 || be.Wait > 5*time.Second || be.Held != 2 || be.Known != 9 {
		t.Fatalf("Append while short: %v (%+v), want a BehindError of at most 5 s", err, be)
	}
	clock.Set(ledgertest.Epoch.Add(6 * time.Second))
	o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 300))
	if err != nil {
		t.Fatalf("Append after OwnWait: %v", err)
	}
	if ledger.ChainOwner(o.Device) != dev.ID() || ledger.ChainEpoch(o.Device) != 8 || o.Seq != 1 {
		t.Fatalf("op after OwnWait on %s seq %d, want epoch 8 (1 + Instance) seq 1", o.Device, o.Seq)
	}
	if sales := l.Sales("s1"); len(sales) != 3 {
		t.Fatalf("%d sales, want 3", len(sales))
	}
	var cur []string
	for _, c := range l.OwnChains() {
		if c.Current {
			cur = append(cur, c.Chain)
		}
	}
	if len(cur) != 1 || cur[0] != o.Device {
		t.Fatalf("current own chains %v, want [%s]", cur, o.Device)
	}
}

// A clone: two processes with one device key extend one chain. Each, once
// it holds the other's op at its seq, writes a new epoch of its own and
// sells again; a third replica keeps every sale, once, and flags the fork.
func TestForkedOwnChainMovesToNewEpoch(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(3)
	dev := f.Enroll("s1", ledger.RoleTerminal)
	peer := f.Enroll("s1", ledger.RoleTerminal)
	open := func(inst uint64, d *ledgertest.Device) *ledger.Ledger {
		cfg := f.Config(d, nil)
		cfg.Instance = inst
		l, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*ledger.Certificate{dev.Cert, peer.Cert} {
			if _, err := l.AddCertificate(ctx, c.Encode()); err != nil {
				t.Fatal(err)
			}
		}
		return l
	}
	real, clone, other := open(1, dev), open(2, dev), open(3, peer)
	sell := func(l *ledger.Ledger) *ledger.Op {
		t.Helper()
		o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 300))
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	apply := func(l *ledger.Ledger, ops ...*ledger.Op) {
		t.Helper()
		for _, o := range ops {
			if _, err := l.ApplyBatch(ctx, [][]byte{o.Raw()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	a1 := sell(real)
	apply(clone, a1)
	a2, b2 := sell(real), sell(clone)
	apply(real, b2)
	apply(clone, a2)
	if _, err := real.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 300)); err != nil {
		t.Fatalf("real till after the fork: %v", err)
	}
	a3 := sell(real)
	b3 := sell(clone)
	if a3.Device == dev.ID() || b3.Device == dev.ID() || a3.Device == b3.Device {
		t.Fatalf("after the fork the real till writes %s and the clone %s: want two distinct new epochs", a3.Device, b3.Device)
	}
	apply(other, a1, a2, b2, b3)
	for _, l := range []*ledger.Ledger{real, clone} {
		if err := l.Ops(ctx, "s1", other.VersionVector("s1"), 1<<20, func(b []ledger.RawOp) error {
			for _, r := range b {
				if _, err := other.ApplyBatch(ctx, [][]byte{r.Bytes}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(other.Sales("s1")); n != 6 {
		t.Fatalf("other replica holds %d sales, want 6 (a1 a2 b2, two of the real till's epoch, one of the clone's)", n)
	}
	if fs := other.Forks(); len(fs) != 1 || fs[0].Device != dev.ID() {
		t.Fatalf("forks %+v, want the device's first chain", fs)
	}
}
