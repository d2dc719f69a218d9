package ledger_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// DESIGN §6: a revocation names its cut-off in the revoked device's own
// seq, so every replica drops the same ops whatever the order they arrive
// in, whatever time the revoked device writes on them.

type revFleet struct {
	f       *ledgertest.Fleet
	certs   []*ledger.Certificate
	devs    map[string]*ledgertest.Device
	ledgers map[string]*ledger.Ledger
	clocks  map[string]*ledgertest.Clock
}

func newRevFleet(t *testing.T, seed uint64, roles map[string][2]string) *revFleet {
	t.Helper()
	ctx := context.Background()
	rf := &revFleet{f: ledgertest.NewFleet(seed), devs: map[string]*ledgertest.Device{},
		ledgers: map[string]*ledger.Ledger{}, clocks: map[string]*ledgertest.Clock{}}
	names := make([]string, 0, len(roles))
	for n := range roles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		d := rf.f.Enroll(roles[n][0], ledger.Role(roles[n][1]))
		rf.devs[n] = d
		rf.certs = append(rf.certs, d.Cert)
	}
	for _, n := range names {
		clock := ledgertest.NewClock()
		l, err := ledger.Open(ctx, ledgertest.MemStore(), rf.f.Config(rf.devs[n], clock))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		for _, c := range rf.certs {
			if _, err := l.AddCertificate(ctx, c.Encode()); err != nil {
				t.Fatal(err)
			}
		}
		rf.ledgers[n], rf.clocks[n] = l, clock
	}
	return rf
}

// replica opens a fresh replica: read-only over every scope when dev is
// nil.
func (rf *revFleet) replica(t *testing.T, dev *ledgertest.Device) *ledger.Ledger {
	t.Helper()
	l, err := rf.f.Open(context.Background(), ledgertest.MemStore(), dev, rf.certs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func revAppend(t *testing.T, l *ledger.Ledger, store string, kind ledger.Kind, b any) *ledger.Op {
	t.Helper()
	o, err := l.Append(context.Background(), store, kind, b)
	if err != nil {
		t.Fatalf("append %s: %v", kind, err)
	}
	return o
}

func mustApply(t *testing.T, l *ledger.Ledger, ops ...*ledger.Op) []ledger.Result {
	t.Helper()
	raws := make([][]byte, len(ops))
	for i, o := range ops {
		raws[i] = o.Raw()
	}
	rs, err := l.ApplyBatch(context.Background(), raws)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func mustRevoke(t *testing.T, l *ledger.Ledger, req ledger.RevokeRequest) *ledger.Op {
	t.Helper()
	o, err := l.Revoke(context.Background(), req)
	if err != nil {
		t.Fatalf("revoke %s: %v", req.Device, err)
	}
	return o
}

// feed applies ops to l in the order of perm, in batches of random size.
func feed(t *testing.T, l *ledger.Ledger, ops []*ledger.Op, rng *rand.Rand) {
	t.Helper()
	perm := rng.Perm(len(ops))
	for i := 0; i < len(perm); {
		n := 1 + rng.IntN(3)
		var batch []*ledger.Op
		for ; n > 0 && i < len(perm); n-- {
			batch = append(batch, ops[perm[i]])
			i++
		}
		mustApply(t, l, batch...)
	}
}

func digests(l *ledger.Ledger) [2]string {
	return [2]string{l.Digest("s1"), l.Digest(ledger.FleetScope)}
}

// revokedHistory: till t1 sells three times, the manager (holding those
// three) revokes it; t1 goes on selling, the last sale with its clock set
// an hour back (before the revocation); t2 and the manager keep working.
func revokedHistory(t *testing.T) (*revFleet, []*ledger.Op, *ledger.Op) {
	rf := newRevFleet(t, 7, map[string][2]string{
		"mgr": {"s1", "manager"}, "t1": {"s1", "terminal"}, "t2": {"s1", "terminal"},
	})
	mgr, t1, t2 := rf.ledgers["mgr"], rf.ledgers["t1"], rf.ledgers["t2"]
	var ops []*ledger.Op
	ops = append(ops, revAppend(t, mgr, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 10}))
	var early []*ledger.Op
	for range 3 {
		early = append(early, revAppend(t, t1, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)))
	}
	ops = append(ops, early...)
	mustApply(t, mgr, early...)
	rev := mustRevoke(t, mgr, ledger.RevokeRequest{Device: rf.devs["t1"].ID(), Reason: "stolen"})
	ops = append(ops, rev)
	ops = append(ops, revAppend(t, t1, "s1", ledger.KindSale, ledgertest.Sale("TEA", 2, 350)))
	ops = append(ops, revAppend(t, t1, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 50}))
	rf.clocks["t1"].Set(rev.HLC.Time().Add(-time.Hour))
	back := revAppend(t, t1, "s1", ledger.KindSale, ledgertest.Sale("TEA", 3, 350))
	if !back.HLC.Less(rev.HLC) {
		// The HLC never runs backwards on its own device: forge the
		// backdated op by hand, as a thief with the key would.
		back = sealOp(t, rf.f.Key.ID(), rf.devs["t1"], "s1", back.Seq, ops[len(ops)-1], rev.HLC.Time().Add(-time.Hour), ledger.KindSale, ledgertest.Sale("TEA", 3, 350))
	}
	ops = append(ops, back)
	ops = append(ops, revAppend(t, t2, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)))
	ops = append(ops, revAppend(t, mgr, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: "TEA", Name: "tea", UnitPrice: 350, Currency: "EUR"}))
	return rf, ops, rev
}

func TestRevocationConvergesInEveryArrivalOrder(t *testing.T) {
	rf, ops, rev := revokedHistory(t)
	t1 := rf.devs["t1"].ID()
	// The reference replica gets the revocation first, then everything.
	ref := rf.replica(t, nil)
	mustApply(t, ref, rev)
	for _, o := range ops {
		rs := mustApply(t, ref, o)
		if ledger.ChainOwner(o.Device) == t1 && o.Seq > 3 {
			if rs[0].Outcome != ledger.Rejected || ledger.RejectReason(rs[0].Err) != ledger.ReasonRevoked {
				t.Fatalf("op %s past the cut-off: %v %v, want rejected %s", o, rs[0].Outcome, rs[0].Err, ledger.ReasonRevoked)
			}
		}
	}
	if got := ref.Stats().Rejected[ledger.ReasonRevoked]; got != 3 {
		t.Fatalf("device_revoked counted %d times, want 3", got)
	}
	if got := ref.VersionVector("s1")[t1]; got != 3 {
		t.Fatalf("revoked till's vector entry %d, want its cut-off 3", got)
	}
	if got := ref.OnHand("s1", "TEA"); got != 10-3-1 {
		t.Fatalf("TEA on hand %d, want %d (the revoked till's later sales and receipt left out)", got, 10-3-1)
	}
	want := digests(ref)

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		var r *ledger.Ledger
		if i%2 == 0 {
			r = rf.replica(t, nil) // an anchor's view: every store
		} else {
			r = rf.replica(t, rf.f.Enroll("s1", ledger.RoleTerminal)) // another till of s1
		}
		feed(t, r, ops, rng)
		if got := digests(r); got != want {
			t.Fatalf("order %d: digests %v, want %v (vector %v)", i, got, want, r.VersionVector("s1"))
		}
		if len(r.Sales("s1")) != len(ref.Sales("s1")) {
			t.Fatalf("order %d: %d sales, want %d", i, len(r.Sales("s1")), len(ref.Sales("s1")))
		}
		if r.Stats().Held != 0 {
			t.Fatalf("order %d: %d ops still held", i, r.Stats().Held)
		}
	}
}

// An op of the revoked till held for a missing predecessor is refused when
// the gap fills, not placed.
func TestRevocationRefusesReleasedHeldOps(t *testing.T) {
	rf, ops, rev := revokedHistory(t)
	t1 := rf.devs["t1"].ID()
	var chain []*ledger.Op
	for _, o := range ops {
		if o.Device == t1 {
			chain = append(chain, o)
		}
	}
	r := rf.replica(t, nil)
	mustApply(t, r, chain[4], chain[5]) // seqs 5 and 6: held
	if r.Stats().Held != 2 {
		t.Fatalf("held %d, want 2", r.Stats().Held)
	}
	mustApply(t, r, rev)
	mustApply(t, r, chain[:4]...)
	if got := r.VersionVector("s1")[t1]; got != 3 {
		t.Fatalf("vector entry %d, want 3", got)
	}
	if r.Stats().Held != 0 {
		t.Fatalf("held %d after the revocation, want 0", r.Stats().Held)
	}
}

// A replica that applied the revoked till's later ops before it learned of
// the revocation serves, advertises and asks for nothing past the cut-off,
// and keeps that after a restart.
func TestRevocationLimitsSyncAndSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	rf, ops, rev := revokedHistory(t)
	t1 := rf.devs["t1"].ID()
	store := ledgertest.MemStore()
	r, err := rf.f.Open(ctx, store, nil, rf.certs...)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		if o != rev {
			mustApply(t, r, o)
		}
	}
	if got := r.VersionVector("s1")[t1]; got != 6 {
		t.Fatalf("before the revocation: entry %d, want 6", got)
	}
	mustApply(t, r, rev)
	if got := r.VersionVector("s1")[t1]; got != 3 {
		t.Fatalf("after the revocation: entry %d, want 3", got)
	}
	var served []uint64
	collect := func(batch []ledger.RawOp) error {
		for _, o := range batch {
			if o.Device == t1 {
				served = append(served, o.Seq)
			}
		}
		return nil
	}
	if err := r.Ops(ctx, "s1", crdt.VersionVector{}, 1<<20, collect); err != nil {
		t.Fatal(err)
	}
	if err := r.Range(ctx, "s1", t1, 0, 0, 1<<20, collect); err != nil {
		t.Fatal(err)
	}
	if err := r.History(ctx, "s1", t1, 0, 1<<20, collect); err != nil {
		t.Fatal(err)
	}
	if slices.Max(served) != 3 {
		t.Fatalf("served seqs %v of the revoked till, want none past 3", served)
	}
	if h := r.Heads("s1")[t1]; h != ops[3].Hash() {
		t.Fatalf("head of the revoked till is not its op 3")
	}
	r.EachHead("s1", func(d string, seq uint64, _ *ledger.Hash) bool {
		if d == t1 && seq != 3 {
			t.Fatalf("EachHead advertises seq %d", seq)
		}
		return true
	})
	if lacks := r.Lacks("s1", crdt.VersionVector{t1: 6}); len(lacks) != 0 {
		t.Fatalf("asks for %v past the cut-off", lacks)
	}
	want := digests(r)
	r.Close()
	r2, err := ledger.Open(ctx, store, rf.f.Config(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if got := digests(r2); got != want {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
	if !r2.Revoked(t1) {
		t.Fatal("revocation lost on restart")
	}
}

// The revoked device's own ledger refuses to write past its cut-off.
func TestRevokedDeviceRefusesToWrite(t *testing.T) {
	rf, _, rev := revokedHistory(t)
	t1 := rf.ledgers["t1"]
	mustApply(t, t1, rev)
	_, err := t1.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	if ledger.RejectReason(err) != ledger.ReasonRevoked {
		t.Fatalf("append on a revoked till: %v, want %s", err, ledger.ReasonRevoked)
	}
}

// A revocation made by a revoker after its own cut-off is void, in every
// arrival order; one made before it stands.
func TestRevocationByARevokedManagerIsVoid(t *testing.T) {
	rf := newRevFleet(t, 8, map[string][2]string{
		"anchor": {ledger.FleetScope, "anchor"}, "mgr": {"s1", "manager"},
		"t1": {"s1", "terminal"}, "t2": {"s1", "terminal"},
	})
	anchor, mgr := rf.ledgers["anchor"], rf.ledgers["mgr"]
	var ops []*ledger.Op
	for _, n := range []string{"t1", "t2"} {
		ops = append(ops, revAppend(t, rf.ledgers[n], "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)))
	}
	mustApply(t, mgr, ops...)
	before := mustRevoke(t, mgr, ledger.RevokeRequest{Device: rf.devs["t1"].ID(), Reason: "lost"})
	ops = append(ops, before)
	mustApply(t, anchor, before)
	cut := mustRevoke(t, anchor, ledger.RevokeRequest{Device: rf.devs["mgr"].ID(), Reason: "stolen"})
	ops = append(ops, cut)
	// The stolen manager, cut at its revocation of t1, now revokes t2.
	after := mustRevoke(t, mgr, ledger.RevokeRequest{Device: rf.devs["t2"].ID(), Reason: "spite"})
	ops = append(ops, after)
	ops = append(ops, revAppend(t, rf.ledgers["t2"], "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)))

	rng := rand.New(rand.NewPCG(3, 4))
	var want [2]string
	for i := range 30 {
		r := rf.replica(t, nil)
		feed(t, r, ops, rng)
		// An op refused while a revocation that later turned void was in
		// force is not stored: anti-entropy sends it again.
		feed(t, r, ops, rng)
		if !r.Revoked(rf.devs["t1"].ID()) || !r.Revoked(rf.devs["mgr"].ID()) {
			t.Fatalf("order %d: t1 or the manager not revoked", i)
		}
		if r.Revoked(rf.devs["t2"].ID()) {
			t.Fatalf("order %d: the revoked manager's later revocation took effect", i)
		}
		if got := r.VersionVector("s1")[rf.devs["t2"].ID()]; got != 2 {
			t.Fatalf("order %d: t2's entry %d, want 2", i, got)
		}
		if i == 0 {
			want = digests(r)
		} else if got := digests(r); got != want {
			t.Fatalf("order %d: digests %v, want %v", i, got, want)
		}
	}
}

// Least privilege: each row of the table in revoke.go, as the revoker's own
// ledger refuses it and as every replica refuses it when it arrives.
func TestRevocationAuthority(t *testing.T) {
	ctx := context.Background()
	rf := newRevFleet(t, 9, map[string][2]string{
		"anchor": {ledger.FleetScope, "anchor"}, "anchor2": {ledger.FleetScope, "anchor"},
		"mgr1": {"s1", "manager"}, "mgr1b": {"s1", "manager"}, "mgr2": {"s2", "manager"},
		"t1": {"s1", "terminal"}, "t2": {"s2", "terminal"},
	})
	fid := rf.f.Key.ID()
	cases := []struct {
		by, target string
		fleet      bool
		want       ledger.Reason // "" allowed
	}{
		{"mgr1", "t1", false, ""},
		{"mgr1", "t2", false, ledger.ReasonRevokeAuthority},    // another store's terminal
		{"mgr1", "mgr1b", false, ledger.ReasonRevokeAuthority}, // a manager
		{"mgr1", "mgr2", false, ledger.ReasonRevokeAuthority},
		{"mgr1", "anchor", false, ledger.ReasonRevokeAuthority},
		{"anchor", "t2", false, ""},
		{"anchor", "mgr2", false, ""},
		{"anchor", "anchor2", false, ledger.ReasonRevokeAuthority},
		{"mgr2", "anchor", true, ""}, // the fleet's statement, carried by anyone
		{"mgr2", "t1", true, ""},
	}
	for _, c := range cases {
		name := c.by + "→" + c.target
		if c.fleet {
			name += "+fleet"
		}
		t.Run(name, func(t *testing.T) {
			target := rf.devs[c.target]
			cuts := []ledger.Cutoff{{Store: target.Cert.Store, Chain: target.ID(), Seq: 0}}
			req := ledger.RevokeRequest{Device: target.ID(), Reason: "test", Cutoffs: cuts}
			if c.fleet {
				sig, err := ledger.SignRevocation(rf.f.Key, target.ID(), cuts)
				if err != nil {
					t.Fatal(err)
				}
				req.FleetSig = sig
			}
			// A fresh author ledger per row, so rows do not see each other.
			by := rf.devs[c.by]
			l := rf.replica(t, by)
			o, err := l.Revoke(ctx, req)
			if got := ledger.RejectReason(err); got != c.want {
				t.Fatalf("revoke: %v, want reason %q", err, c.want)
			}
			if c.want != "" {
				// As a forger would send it: signed, well formed, not allowed.
				b := &ledger.DeviceRevoked{Device: target.ID(), Reason: "test", Cert: target.Cert.Encode(), Cutoffs: cuts}
				o = sealRevocation(t, fid, by, 1, b)
				store := ledgertest.MemStore()
				r := replicaUnderTest{rf.replicaOn(t, store), store}
				r.expectReject(t, o.Raw(), c.want)
				return
			}
			r := rf.replica(t, nil)
			if rs := mustApply(t, r, o); rs[0].Outcome != ledger.Applied {
				t.Fatalf("allowed revocation: %v %v", rs[0].Outcome, rs[0].Err)
			}
			if !r.Revoked(target.ID()) {
				t.Fatal("not revoked")
			}
		})
	}
	t.Run("forged fleet statement", func(t *testing.T) {
		target := rf.devs["anchor"]
		cuts := []ledger.Cutoff{{Store: ledger.FleetScope, Chain: target.ID(), Seq: 0}}
		other := ledgertest.NewFleet(99)
		sig, _ := ledger.SignRevocation(other.Key, target.ID(), cuts)
		l := rf.replica(t, rf.devs["mgr2"])
		if _, err := l.Revoke(ctx, ledger.RevokeRequest{Device: target.ID(), Cutoffs: cuts, FleetSig: sig}); ledger.RejectReason(err) != ledger.ReasonRevokeAuthority {
			t.Fatalf("another fleet's statement: %v", err)
		}
		// A real statement for other cut-offs than the op's.
		sig, _ = ledger.SignRevocation(rf.f.Key, target.ID(), []ledger.Cutoff{{Store: ledger.FleetScope, Chain: target.ID(), Seq: 5}})
		if _, err := l.Revoke(ctx, ledger.RevokeRequest{Device: target.ID(), Cutoffs: cuts, FleetSig: sig}); ledger.RejectReason(err) != ledger.ReasonRevokeAuthority {
			t.Fatalf("a statement for other cut-offs: %v", err)
		}
	})
	t.Run("terminal", func(t *testing.T) {
		l := rf.replica(t, rf.devs["t1"])
		if _, err := l.Revoke(ctx, ledger.RevokeRequest{Device: rf.devs["t2"].ID()}); ledger.RejectReason(err) != ledger.ReasonRole {
			t.Fatalf("terminal revokes: %v, want %s", err, ledger.ReasonRole)
		}
	})
	t.Run("unknown and already revoked", func(t *testing.T) {
		l := rf.replica(t, rf.devs["anchor"])
		if _, err := l.Revoke(ctx, ledger.RevokeRequest{Device: "dnobody"}); ledger.RejectReason(err) != ledger.ReasonUnknownDevice {
			t.Fatalf("unknown device: %v", err)
		}
		mustRevoke(t, l, ledger.RevokeRequest{Device: rf.devs["t1"].ID()})
		if _, err := l.Revoke(ctx, ledger.RevokeRequest{Device: rf.devs["t1"].ID()}); err != ledger.ErrAlreadyRevoked {
			t.Fatalf("second revocation: %v", err)
		}
	})
}

func (rf *revFleet) replicaOn(t *testing.T, store ds.Batching) *ledger.Ledger {
	t.Helper()
	l, err := rf.f.Open(context.Background(), store, nil, rf.certs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func sealRevocation(t *testing.T, fleetID string, by *ledgertest.Device, seq uint64, b *ledger.DeviceRevoked) *ledger.Op {
	t.Helper()
	enc, err := crdt.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	o := ledger.Op{V: 1, Fleet: fleetID, Store: ledger.FleetScope, Device: by.ID(), Seq: seq,
		HLC: crdt.Timestamp{Wall: ledgertest.Epoch.Add(time.Minute).UnixNano()}, Kind: ledger.KindDeviceRevoked, BodyV: 2, Body: enc}
	if err := o.Seal(by.Key); err != nil {
		t.Fatal(err)
	}
	return &o
}

// A version-1 revocation (no certificate, no cut-off) still decodes and is
// stored and relayed, but revokes nothing.
func TestRevocationVersion1IsKeptAndVoid(t *testing.T) {
	rf := newRevFleet(t, 10, map[string][2]string{"anchor": {ledger.FleetScope, "anchor"}, "t1": {"s1", "terminal"}})
	enc, _ := crdt.Marshal(&ledger.DeviceRevoked{Device: rf.devs["t1"].ID(), Reason: "old"})
	o := ledger.Op{V: 1, Fleet: rf.f.Key.ID(), Store: ledger.FleetScope, Device: rf.devs["anchor"].ID(), Seq: 1,
		HLC: crdt.Timestamp{Wall: ledgertest.Epoch.UnixNano()}, Kind: ledger.KindDeviceRevoked, BodyV: 1, Body: enc}
	if err := o.Seal(rf.devs["anchor"].Key); err != nil {
		t.Fatal(err)
	}
	r := rf.replica(t, nil)
	if rs := mustApply(t, r, &o); rs[0].Outcome != ledger.Applied {
		t.Fatalf("version-1 revocation: %v %v", rs[0].Outcome, rs[0].Err)
	}
	if r.Revoked(rf.devs["t1"].ID()) {
		t.Fatal("a version-1 revocation took effect")
	}
}

// FuzzRevocationBody feeds arbitrary bytes as the body of a version-2
// revocation signed by an anchor: never a panic, and a body that is
// applied either revokes its named device or nothing.
func FuzzRevocationBody(f *testing.F) {
	fl := ledgertest.NewFleet(12)
	anchor := fl.Enroll(ledger.FleetScope, ledger.RoleAnchor)
	t1 := fl.Enroll("s1", ledger.RoleTerminal)
	good, _ := crdt.Marshal(&ledger.DeviceRevoked{Device: t1.ID(), Reason: "x", Cert: t1.Cert.Encode(),
		Cutoffs: []ledger.Cutoff{{Store: "s1", Chain: t1.ID(), Seq: 3}}})
	f.Add(good)
	v1, _ := crdt.Marshal(&ledger.DeviceRevoked{Device: t1.ID()})
	f.Add(v1)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx := context.Background()
		l, err := fl.Open(ctx, ledgertest.MemStore(), nil, anchor.Cert, t1.Cert)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		o := ledger.Op{V: 1, Fleet: fl.Key.ID(), Store: ledger.FleetScope, Device: anchor.ID(), Seq: 1,
			HLC: crdt.Timestamp{Wall: ledgertest.Epoch.UnixNano()}, Kind: ledger.KindDeviceRevoked, BodyV: 2, Body: body}
		if err := o.Seal(anchor.Key); err != nil {
			return // not encodable as an op at all
		}
		res, err := l.Apply(ctx, o.Raw())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.Revocations() {
			if res.Outcome != ledger.Applied || r.Device != t1.ID() {
				t.Fatalf("outcome %v, revoked %s", res.Outcome, r.Device)
			}
		}
	})
}

// BenchmarkRevocationRebuild: a revocation arrives at a replica holding n
// sales of the revoked till and n of another, and cuts the till at n/2:
// the replica rebuilds its vectors and state from the log once.
func BenchmarkRevocationRebuild(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("ops=%d", 2*n), func(b *testing.B) {
			ctx := context.Background()
			f := ledgertest.NewFleet(13)
			mgr := f.Enroll("s1", ledger.RoleManager)
			t1, t2 := f.Enroll("s1", ledger.RoleTerminal), f.Enroll("s1", ledger.RoleTerminal)
			certs := []*ledger.Certificate{mgr.Cert, t1.Cert, t2.Cert}
			var raws [][]byte
			for _, d := range []*ledgertest.Device{t1, t2} {
				l, err := f.Open(ctx, ledgertest.MemStore(), d, certs...)
				if err != nil {
					b.Fatal(err)
				}
				for range n {
					o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
					if err != nil {
						b.Fatal(err)
					}
					raws = append(raws, o.Raw())
				}
				l.Close()
			}
			lm, err := f.Open(ctx, ledgertest.MemStore(), mgr, certs...)
			if err != nil {
				b.Fatal(err)
			}
			rev, err := lm.Revoke(ctx, ledger.RevokeRequest{Device: t1.ID(), Reason: "bench",
				Cutoffs: []ledger.Cutoff{{Store: "s1", Chain: t1.ID(), Seq: uint64(n / 2)}}})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				b.StopTimer()
				r, err := f.Open(ctx, ledgertest.MemStore(), nil, certs...)
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < len(raws); i += 500 {
					if _, err := r.ApplyBatch(ctx, raws[i:min(i+500, len(raws))]); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if _, err := r.Apply(ctx, rev.Raw()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if r.VersionVector("s1")[t1.ID()] != uint64(n/2) {
					b.Fatal("not cut")
				}
				r.Close()
				b.StartTimer()
			}
		})
	}
}

// TestAuditVerifyHonoursRevocation: a replica holding a revoked till's
// sales past its cut-off (they arrived before the revocation) keeps them
// as evidence; audit verify of its bundle counts them in no total, as
// every replica does, and says how many it left out.
func TestAuditVerifyHonoursRevocation(t *testing.T) {
	rf, ops, rev := revokedHistory(t)
	l := rf.replica(t, nil)
	var rest []*ledger.Op
	for _, o := range ops {
		if o != rev {
			rest = append(rest, o)
		}
	}
	mustApply(t, l, rest...)
	mustApply(t, l, rev)
	var want int64
	n := 0
	for _, s := range l.Sales("s1") {
		want += s.Total
		n++
	}
	b, _ := export(t, l)
	rep, err := verify(b, rf.f.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sales) != 1 || rep.Sales[0].Sales != n || rep.Sales[0].Total != want {
		t.Fatalf("audit totals %+v; the replica serves %d sales, %d", rep.Sales, n, want)
	}
	if rep.Excluded != 2 || n != 4 {
		t.Fatalf("%d excluded by revocation, want 2 (%d sales served, want 4)", rep.Excluded, n)
	}
}
