package ledger_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// ApplyBatch authenticates a device's run of ops with one signature check
// (of the newest op; prev hashes cover the rest). These tests pin down that
// the outcome of every op is still the one a check of each signature would
// give, and that the saving is real.

// chainFixture is an author with n ops in s1 and a fresh replica to apply
// them to.
type chainFixture struct {
	f       *ledgertest.Fleet
	authors []*ledgertest.Device
	ops     [][]*ledger.Op // per author, seq order
	certs   []*ledger.Certificate
}

func newChainFixture(t *testing.T, authors, n int) *chainFixture {
	t.Helper()
	ctx := context.Background()
	fx := &chainFixture{f: ledgertest.NewFleet(41)}
	for range authors {
		d := fx.f.Enroll("s1", ledger.RoleTerminal)
		fx.authors = append(fx.authors, d)
		fx.certs = append(fx.certs, d.Cert)
	}
	for _, d := range fx.authors {
		l, err := fx.f.Open(ctx, ledgertest.MemStore(), d)
		if err != nil {
			t.Fatal(err)
		}
		var ops []*ledger.Op
		for i := range n {
			var o *ledger.Op
			if i == 0 {
				o, err = l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 1000})
			} else {
				o, err = l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
			}
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, o)
		}
		l.Close()
		fx.ops = append(fx.ops, ops)
	}
	return fx
}

func (fx *chainFixture) replica(t *testing.T) replicaUnderTest {
	t.Helper()
	st := ledgertest.MemStore()
	l, err := fx.f.Open(context.Background(), st, fx.f.Enroll("s1", ledger.RoleTerminal), fx.certs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return replicaUnderTest{l, st}
}

func raws(ops []*ledger.Op) [][]byte {
	out := make([][]byte, len(ops))
	for i, o := range ops {
		out[i] = o.Raw()
	}
	return out
}

// reseal re-encodes o after change, keeping its signature: what a peer
// that tampers with an op in transit sends.
func reseal(t *testing.T, o *ledger.Op, change func(*ledger.Op)) *ledger.Op {
	t.Helper()
	c, err := ledger.DecodeOp(o.Raw())
	if err != nil {
		t.Fatal(err)
	}
	change(c)
	raw, err := crdt.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ledger.DecodeOp(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func outcomes(res []ledger.Result) []ledger.Outcome {
	out := make([]ledger.Outcome, len(res))
	for i, r := range res {
		out[i] = r.Outcome
	}
	return out
}

func TestChainAuthOneCheckPerRun(t *testing.T) {
	const n = 300
	fx := newChainFixture(t, 3, n)
	r := fx.replica(t)
	// Three devices' runs, interleaved and shuffled: ops arrive before
	// their predecessors and are held, then released in the same commit.
	var batch []*ledger.Op
	for _, ops := range fx.ops {
		batch = append(batch, ops...)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
	res, err := r.l.ApplyBatch(context.Background(), raws(batch))
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		if x.Err != nil || (x.Outcome != ledger.Applied && x.Outcome != ledger.Held) {
			t.Fatalf("op %d: %v %v", i, x.Outcome, x.Err)
		}
	}
	for _, d := range fx.authors {
		if got := r.l.Seq("s1", d.ID()); got != n {
			t.Fatalf("replica holds %d ops of %s, want %d", got, d.ID(), n)
		}
	}
	if got := r.l.Stats().SigChecks; got != 3 {
		t.Fatalf("%d signature checks for 3 runs of %d ops, want 3", got, n)
	}
	// Ops already held cost nothing to see again.
	if _, err := r.l.ApplyBatch(context.Background(), raws(batch)); err != nil {
		t.Fatal(err)
	}
	if got := r.l.Stats().SigChecks; got != 3 {
		t.Fatalf("%d signature checks after a duplicate batch, want still 3", got)
	}
	if err := r.l.VerifyStored(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestChainAuthTamperedOpInRun(t *testing.T) {
	ctx := context.Background()
	fx := newChainFixture(t, 1, 10)
	ops := fx.ops[0]
	r := fx.replica(t)
	before := stateOf(t, r.l, r.store)

	// Op 5's body changed under its signature: op 6's prev no longer
	// links to it, so it is checked alone and refused. 1–4 apply, 6–10
	// wait for the genuine 5.
	batch := slices.Clone(ops)
	batch[4] = reseal(t, ops[4], func(o *ledger.Op) {
		o.Body, _ = crdt.Marshal(ledgertest.Sale("TEA", 1, 1))
	})
	res, err := r.l.ApplyBatch(ctx, raws(batch))
	if err != nil {
		t.Fatal(err)
	}
	want := []ledger.Outcome{ledger.Applied, ledger.Applied, ledger.Applied, ledger.Applied, ledger.Rejected,
		ledger.Held, ledger.Held, ledger.Held, ledger.Held, ledger.Held}
	if got := outcomes(res); !slices.Equal(got, want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	if ledger.RejectReason(res[4].Err) != ledger.ReasonBadSignature {
		t.Fatalf("tampered op: %v, want bad_signature", res[4].Err)
	}
	if r.l.Stats().Rejected[ledger.ReasonBadSignature] != 1 {
		t.Fatal("the rejection was not counted")
	}
	if r.l.Seq("s1", fx.authors[0].ID()) != 4 {
		t.Fatalf("seq %d after the tampered batch, want 4", r.l.Seq("s1", fx.authors[0].ID()))
	}
	if stateOf(t, r.l, r.store).equal(before) {
		t.Fatal("the genuine ops 1–4 were not stored")
	}
	// The genuine op fills the gap and releases the rest.
	if res, err := r.l.Apply(ctx, ops[4].Raw()); err != nil || res.Outcome != ledger.Applied {
		t.Fatalf("genuine op 5: %v %v", res.Outcome, err)
	}
	if r.l.Seq("s1", fx.authors[0].ID()) != 10 {
		t.Fatal("held ops 6–10 were not released")
	}
	if err := r.l.VerifyStored(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestChainAuthForgedNewestOp(t *testing.T) {
	ctx := context.Background()
	fx := newChainFixture(t, 1, 10)
	ops := fx.ops[0]
	r := fx.replica(t)
	// An 11th op that links to op 10 but is signed by another key: it is
	// refused, and ops 1–10 are still authenticated (op 10 by its own
	// signature, which then vouches for 1–9).
	impostor := fx.f.Enroll("s1", ledger.RoleTerminal)
	forged := sealOp(t, fx.f.Key.ID(), &ledgertest.Device{Key: impostor.Key, Cert: fx.authors[0].Cert},
		"s1", 11, ops[9], ledgertest.Epoch.Add(time.Hour), ledger.KindSale, ledgertest.Sale("TEA", 500, 1))
	res, err := r.l.ApplyBatch(ctx, raws(append(slices.Clone(ops), forged)))
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res[:10] {
		if x.Outcome != ledger.Applied {
			t.Fatalf("genuine op %d: %v %v", i+1, x.Outcome, x.Err)
		}
	}
	if res[10].Outcome != ledger.Rejected || ledger.RejectReason(res[10].Err) != ledger.ReasonBadSignature {
		t.Fatalf("forged op: %v %v, want rejected with bad_signature", res[10].Outcome, res[10].Err)
	}
	if got := r.l.Stats().SigChecks; got != 2 {
		t.Fatalf("%d signature checks, want 2 (the forged op, then op 10)", got)
	}
}

// A device that signs a later op over an earlier one with a broken
// signature has vouched for it with its own key: the replica keeps it (as
// it keeps any op the device authored), and the audit names the broken
// signature as evidence against the device.
func TestChainAuthDeviceVouchesForItsOwnBadSignature(t *testing.T) {
	ctx := context.Background()
	fx := newChainFixture(t, 1, 3)
	ops := fx.ops[0]
	d := fx.authors[0]
	bad := reseal(t, ops[2], func(o *ledger.Op) { o.Sig = slices.Clone(o.Sig); o.Sig[3] ^= 1 })
	next := sealOp(t, fx.f.Key.ID(), d, "s1", 4, bad, ledgertest.Epoch.Add(time.Hour), ledger.KindSale, ledgertest.Sale("TEA", 1, 350))

	r := fx.replica(t)
	res, err := r.l.ApplyBatch(ctx, raws([]*ledger.Op{ops[0], ops[1], bad, next}))
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		if x.Outcome != ledger.Applied {
			t.Fatalf("op %d: %v %v", i+1, x.Outcome, x.Err)
		}
	}
	err = r.l.VerifyStored(ctx)
	var ae *ledger.AuditError
	if !errors.As(err, &ae) || !ae.Has(ledger.ProblemSignature) {
		t.Fatalf("VerifyStored: %v, want a signature problem", err)
	}
	// Alone, the same op is refused: nothing vouches for it.
	r2 := fx.replica(t)
	r2.expect(t, ops[0].Raw(), ledger.Applied)
	r2.expect(t, ops[1].Raw(), ledger.Applied)
	r2.expectReject(t, bad.Raw(), ledger.ReasonBadSignature)
}
