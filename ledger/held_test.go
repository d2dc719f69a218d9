package ledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// chainOf makes n sales by d on its own ledger and returns their encodings.
func chainOf(t *testing.T, f *ledgertest.Fleet, d *ledgertest.Device, n int) [][]byte {
	t.Helper()
	ctx := context.Background()
	l, err := f.Open(ctx, ledgertest.MemStore(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out := make([][]byte, n)
	for i := range out {
		o, err := l.Append(ctx, d.Cert.Store, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = o.Raw()
	}
	return out
}

func openHeld(t *testing.T, f *ledgertest.Fleet, d *ledgertest.Device, clock *ledgertest.Clock, mod func(*ledger.Config), certs ...*ledger.Certificate) *ledger.Ledger {
	t.Helper()
	ctx := context.Background()
	cfg := f.Config(d, clock)
	mod(&cfg)
	l, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, c := range certs {
		if _, err := l.AddCertificate(ctx, c.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// TestHeldOpsFairBetweenAuthors: before held.go, 50 gap ops of one
// terminal (MaxHeld 50) made every honest out-of-order op refused until a
// restart. Now one author fills only its own quota.
func TestHeldOpsFairBetweenAuthors(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(41)
	victim := f.Enroll("s1", ledger.RoleTerminal)
	bad := f.Enroll("s1", ledger.RoleTerminal)
	good := f.Enroll("s1", ledger.RoleTerminal)
	l := openHeld(t, f, victim, ledgertest.NewClock(), func(c *ledger.Config) {
		c.MaxHeldBytes, c.MaxHeldPerAuthor = 64<<10, 16<<10
	}, bad.Cert, good.Cert)

	flood := chainOf(t, f, bad, 300)
	res, err := l.ApplyBatch(ctx, flood[1:]) // seq 1 never comes
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, r := range res {
		if errors.Is(r.Err, ledger.ErrTooManyHeld) {
			refused++
		}
	}
	st := l.Stats()
	if refused == 0 || st.HeldBytes > 16<<10 || st.HeldRefused == 0 {
		t.Fatalf("flood: %d refused, %d bytes held (%+v): one author must stop at its quota", refused, st.HeldBytes, st)
	}
	honest := chainOf(t, f, good, 20)
	res, err = l.ApplyBatch(ctx, honest[1:])
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Outcome != ledger.Held {
			t.Fatalf("honest op %d: %v %v, want held", i+2, r.Outcome, r.Err)
		}
	}
	if _, err := l.Apply(ctx, honest[0]); err != nil {
		t.Fatal(err)
	}
	if got := l.Seq("s1", good.ID()); got != 20 {
		t.Fatalf("honest chain at %d after its gap filled, want 20", got)
	}
}

// TestHeldOpsBoundedInBytes: the bound is bytes, whatever the op count,
// and a full set makes the biggest author give way to a smaller one.
func TestHeldOpsBoundedInBytes(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(42)
	victim := f.Enroll("s1", ledger.RoleTerminal)
	var devs []*ledgertest.Device
	var certs []*ledger.Certificate
	for range 5 {
		d := f.Enroll("s1", ledger.RoleTerminal)
		devs = append(devs, d)
		certs = append(certs, d.Cert)
	}
	const total = 32 << 10
	l := openHeld(t, f, victim, ledgertest.NewClock(), func(c *ledger.Config) {
		c.MaxHeldBytes, c.MaxHeldPerAuthor = total, total/2
	}, certs...)
	for _, d := range devs[:4] {
		ops := chainOf(t, f, d, 200)
		if _, err := l.ApplyBatch(ctx, ops[1:]); err != nil {
			t.Fatal(err)
		}
		if st := l.Stats(); st.HeldBytes > total {
			t.Fatalf("%d bytes held, bound %d", st.HeldBytes, total)
		}
	}
	last := chainOf(t, f, devs[4], 5)
	res, err := l.ApplyBatch(ctx, last[1:])
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Outcome != ledger.Held {
			t.Fatalf("op %d of a newcomer under its share: %v %v, want held", i+2, r.Outcome, r.Err)
		}
	}
	if st := l.Stats(); st.HeldEvicted == 0 || st.HeldBytes > total {
		t.Fatalf("stats %+v: want evictions and at most %d bytes", st, total)
	}
}

// TestHeldOpsExpire: ops whose gap never fills leave by the ledger's clock.
func TestHeldOpsExpire(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(43)
	victim := f.Enroll("s1", ledger.RoleTerminal)
	bad := f.Enroll("s1", ledger.RoleTerminal)
	good := f.Enroll("s1", ledger.RoleTerminal)
	clock := ledgertest.NewClock()
	l := openHeld(t, f, victim, clock, func(c *ledger.Config) { c.HeldTTL = time.Minute }, bad.Cert, good.Cert)
	flood := chainOf(t, f, bad, 50)
	if _, err := l.ApplyBatch(ctx, flood[1:]); err != nil {
		t.Fatal(err)
	}
	if h := l.Stats().Held; h != 49 {
		t.Fatalf("%d held, want 49", h)
	}
	clock.Set(ledgertest.Epoch.Add(2 * time.Minute))
	honest := chainOf(t, f, good, 3)
	if _, err := l.Apply(ctx, honest[2]); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Held != 1 || st.HeldExpired != 49 {
		t.Fatalf("after the TTL: %d held, %d expired; want 1 and 49", st.Held, st.HeldExpired)
	}
}

// TestHeldOwnOpsStillHoldTheTill: own ops held mean the chain reaches
// further than this replica holds; the till waits for the gap to fill,
// and their expiry must not let it reuse their seqs.
func TestHeldOwnOpsStillHoldTheTill(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(44)
	d := f.Enroll("s1", ledger.RoleTerminal)
	own := chainOf(t, f, d, 5) // what the device wrote before a restore
	clock := ledgertest.NewClock()
	l := openHeld(t, f, d, clock, func(c *ledger.Config) { c.HeldTTL = time.Minute })
	if _, err := l.Apply(ctx, own[3]); err != nil { // seq 4 arrives alone
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)); !errors.Is(err, ledger.ErrOwnHistoryBehind) {
		t.Fatalf("sale with an own op held: %v, want ErrOwnHistoryBehind", err)
	}
	clock.Set(ledgertest.Epoch.Add(5 * time.Minute))
	other := f.Enroll("s1", ledger.RoleTerminal)
	if _, err := l.AddCertificate(ctx, other.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Apply(ctx, chainOf(t, f, other, 2)[1]); err != nil { // runs expiry
		t.Fatal(err)
	}
	if st := l.Stats(); st.HeldExpired == 0 {
		t.Fatalf("own op not expired: %+v", st)
	}
	// Past OwnWait the seqs the expired op proved used are still never
	// reused: the sale goes to a new epoch of the device, from seq 1.
	o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	if err != nil || ledger.ChainEpoch(o.Device) == 0 || o.Seq != 1 {
		t.Fatalf("sale after an own held op expired: %v %v, want seq 1 of a new epoch", o, err)
	}
	if seq, _ := l.OwnFloor("s1", d.ID()); seq < 4 {
		t.Fatalf("own floor %d after the expiry, want at least 4", seq)
	}
}
