package ledger_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// docs/design.md §4, §6: ops that break the trust rules are rejected with a
// stable, counted reason, and bad input never changes stored state.

// sealOp builds and signs an op by hand, as a forger or a buggy peer
// would.
func sealOp(t *testing.T, fleetID string, d *ledgertest.Device, store string, seq uint64, prev *ledger.Op, at time.Time, kind ledger.Kind, body any) *ledger.Op {
	t.Helper()
	enc, err := crdt.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	o := ledger.Op{V: 1, Fleet: fleetID, Store: store, Device: d.ID(), Seq: seq,
		HLC: crdt.Timestamp{Wall: at.UnixNano()}, Kind: kind, BodyV: 1, Body: enc}
	if prev != nil {
		h := prev.Hash()
		o.Prev = h[:]
	}
	if err := o.Seal(d.Key); err != nil {
		t.Fatal(err)
	}
	return &o
}

// storedState is a replica's whole visible and stored state: digests of
// the scopes, and every stored key and value.
type storedState struct {
	digests []string
	kv      map[string]string
}

func stateOf(t testing.TB, l *ledger.Ledger, store ds.Datastore) storedState {
	t.Helper()
	s := storedState{kv: map[string]string{}}
	for _, scope := range []string{"s1", "s2", ledger.FleetScope} {
		s.digests = append(s.digests, l.Digest(scope))
	}
	res, err := store.Query(context.Background(), dsq.Query{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		s.kv[e.Key] = string(e.Value)
	}
	return s
}

func (s storedState) equal(o storedState) bool {
	if !slices.Equal(s.digests, o.digests) || len(s.kv) != len(o.kv) {
		return false
	}
	for k, v := range s.kv {
		if o.kv[k] != v {
			return false
		}
	}
	return true
}

// replicaUnderTest is a ledger with its store, so tests can check that a
// rejection changed nothing stored.
type replicaUnderTest struct {
	l     *ledger.Ledger
	store ds.Batching
}

func (r replicaUnderTest) expectReject(t *testing.T, raw []byte, want ledger.Reason) {
	t.Helper()
	before := stateOf(t, r.l, r.store)
	counted := r.l.Stats().Rejected[want]
	res, err := r.l.Apply(context.Background(), raw)
	if err != nil {
		t.Fatalf("apply: ledger error %v", err)
	}
	if res.Outcome != ledger.Rejected || ledger.RejectReason(res.Err) != want {
		t.Fatalf("outcome %v, reason %q (%v); want rejected with %q", res.Outcome, ledger.RejectReason(res.Err), res.Err, want)
	}
	if !stateOf(t, r.l, r.store).equal(before) {
		t.Fatalf("rejected op (%s) changed the stored state", want)
	}
	if got := r.l.Stats().Rejected[want]; got != counted+1 {
		t.Fatalf("rejections counted for %s: %d, want %d", want, got, counted+1)
	}
}

func (r replicaUnderTest) expect(t *testing.T, raw []byte, want ledger.Outcome) {
	t.Helper()
	res, err := r.l.Apply(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != want {
		t.Fatalf("outcome %v (%v), want %v", res.Outcome, res.Err, want)
	}
}

func TestRejections(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(11)
	fid := f.Key.ID()
	t1 := f.Enroll("s1", ledger.RoleTerminal)
	t2 := f.Enroll("s1", ledger.RoleTerminal)
	mgr := f.Enroll("s1", ledger.RoleManager)
	s2t := f.Enroll("s2", ledger.RoleTerminal)
	exp := f.Enroll("s1", ledger.RoleTerminal, ledgertest.Expiring(ledgertest.Epoch.Add(time.Hour)))
	stranger := f.Enroll("s1", ledger.RoleTerminal) // certificate never shown
	other := ledgertest.NewFleet(12)
	foreign := other.Enroll("s1", ledger.RoleTerminal)
	certs := []*ledger.Certificate{t1.Cert, t2.Cert, mgr.Cert, s2t.Cert, exp.Cert}

	open := func(d *ledgertest.Device) replicaUnderTest {
		st := ledgertest.MemStore()
		l, err := f.Open(ctx, st, d, certs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return replicaUnderTest{l, st}
	}
	anchor := open(f.Enroll(ledger.FleetScope, ledger.RoleAnchor)) // holds every store
	term := open(f.Enroll("s1", ledger.RoleTerminal))              // holds s1 and *

	// Some state first, so "unchanged" means something.
	lt1, err := f.Open(ctx, ledgertest.MemStore(), t1, certs...)
	if err != nil {
		t.Fatal(err)
	}
	defer lt1.Close()
	for _, b := range []any{&ledger.StockReceived{SKU: "TEA", Qty: 10}, ledgertest.Sale("TEA", 2, 350)} {
		kind := ledger.KindStockReceived
		if _, ok := b.(*ledger.Sale); ok {
			kind = ledger.KindSale
		}
		o, err := lt1.Append(ctx, "s1", kind, b)
		if err != nil {
			t.Fatal(err)
		}
		anchor.expect(t, o.Raw(), ledger.Applied)
		term.expect(t, o.Raw(), ledger.Applied)
	}
	next, err := lt1.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	if err != nil {
		t.Fatal(err)
	}
	at := ledgertest.Epoch.Add(time.Minute)
	both := []replicaUnderTest{anchor, term}

	t.Run("bad signature", func(t *testing.T) {
		o, err := ledger.DecodeOp(next.Raw())
		if err != nil {
			t.Fatal(err)
		}
		o.Sig = slices.Clone(o.Sig)
		o.Sig[17] ^= 0x04
		raw, err := crdt.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		// A changed body under the original signature fails the same way.
		forged := *next
		forged.Body, err = crdt.Marshal(ledgertest.Sale("TEA", 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		forgedRaw, err := crdt.Marshal(&forged)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range both {
			r.expectReject(t, raw, ledger.ReasonBadSignature)
			r.expectReject(t, forgedRaw, ledger.ReasonBadSignature)
			r.expect(t, next.Raw(), ledger.Applied) // the genuine op still applies
		}
	})
	t.Run("wrong store", func(t *testing.T) {
		o := sealOp(t, fid, t1, "s2", 1, nil, at, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		anchor.expectReject(t, o.Raw(), ledger.ReasonStore)
		// Fleet-wide data must be fleet-wide, store data in a store.
		o = sealOp(t, fid, mgr, "s1", 1, nil, at, ledger.KindPriceSet, &ledger.PriceSet{SKU: "TEA", UnitPrice: 1, Currency: "EUR"})
		anchor.expectReject(t, o.Raw(), ledger.ReasonStore)
	})
	t.Run("role", func(t *testing.T) {
		o := sealOp(t, fid, t1, ledger.FleetScope, 1, nil, at, ledger.KindPriceSet, &ledger.PriceSet{SKU: "TEA", UnitPrice: 1, Currency: "EUR"})
		for _, r := range both {
			r.expectReject(t, o.Raw(), ledger.ReasonRole)
		}
		o = sealOp(t, fid, t1, "s1", 4, next, at, ledger.KindPolicySet, &ledger.Policy{OfflineMethods: []string{"card"}})
		for _, r := range both {
			r.expectReject(t, o.Raw(), ledger.ReasonRole)
		}
		// The terminal's own ledger refuses to write it in the first place.
		for _, c := range []struct {
			store string
			kind  ledger.Kind
			body  any
		}{
			{ledger.FleetScope, ledger.KindPriceSet, &ledger.PriceSet{SKU: "TEA", UnitPrice: 1, Currency: "EUR"}},
			{ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: "TEA", Name: "tea", UnitPrice: 1, Currency: "EUR"}},
			{ledger.FleetScope, ledger.KindDeviceRevoked, &ledger.DeviceRevoked{Device: t2.ID(), Cert: t2.Cert.Encode()}},
		} {
			if _, err := lt1.Append(ctx, c.store, c.kind, c.body); ledger.RejectReason(err) != ledger.ReasonRole {
				t.Errorf("terminal appends %s: %v, want %s", c.kind, err, ledger.ReasonRole)
			}
		}
		if _, err := lt1.Append(ctx, "s2", ledger.KindSale, ledgertest.Sale("TEA", 1, 1)); ledger.RejectReason(err) != ledger.ReasonStore {
			t.Errorf("terminal of s1 sells in s2: %v, want %s", err, ledger.ReasonStore)
		}
	})
	t.Run("expired certificate", func(t *testing.T) {
		before := sealOp(t, fid, exp, "s1", 1, nil, ledgertest.Epoch.Add(30*time.Minute), ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		after := sealOp(t, fid, exp, "s1", 2, before, ledgertest.Epoch.Add(2*time.Hour), ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		for _, r := range both {
			r.expect(t, before.Raw(), ledger.Applied) // made while the certificate was valid
			r.expectReject(t, after.Raw(), ledger.ReasonCertExpired)
		}
	})
	t.Run("unknown device", func(t *testing.T) {
		o := sealOp(t, fid, stranger, "s1", 1, nil, at, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		for _, r := range both {
			r.expectReject(t, o.Raw(), ledger.ReasonUnknownDevice)
		}
	})
	t.Run("wrong fleet", func(t *testing.T) {
		o := sealOp(t, other.Key.ID(), foreign, "s1", 1, nil, at, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		for _, r := range both {
			r.expectReject(t, o.Raw(), ledger.ReasonFleet)
			before := stateOf(t, r.l, r.store)
			if _, err := r.l.AddCertificate(ctx, foreign.Cert.Encode()); ledger.RejectReason(err) != ledger.ReasonFleet {
				t.Fatalf("another fleet's certificate: %v, want %s", err, ledger.ReasonFleet)
			}
			if !stateOf(t, r.l, r.store).equal(before) {
				t.Fatal("a refused certificate changed the stored state")
			}
		}
		// Our fleet id on an op signed by another fleet's device: its
		// certificate is unknown here, and would not verify if shown.
		o = sealOp(t, fid, foreign, "s1", 1, nil, at, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		anchor.expectReject(t, o.Raw(), ledger.ReasonUnknownDevice)
	})
	t.Run("revoked device", func(t *testing.T) {
		lm, err := f.Open(ctx, ledgertest.MemStore(), mgr, certs...)
		if err != nil {
			t.Fatal(err)
		}
		defer lm.Close()
		// Cut off after its seq 1, whatever times its ops carry.
		rev, err := lm.Revoke(ctx, ledger.RevokeRequest{Device: t2.ID(), Reason: "stolen", Cutoffs: []ledger.Cutoff{{Store: "s1", Chain: t2.ID(), Seq: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		early := sealOp(t, fid, t2, "s1", 1, nil, rev.HLC.Time().Add(-time.Hour), ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		late := sealOp(t, fid, t2, "s1", 2, early, rev.HLC.Time().Add(-time.Minute), ledger.KindSale, ledgertest.Sale("TEA", 1, 350)) // backdated
		for _, r := range both {
			r.expect(t, rev.Raw(), ledger.Applied)
			if !r.l.Revoked(t2.ID()) {
				t.Fatal("revocation not recorded")
			}
			r.expect(t, early.Raw(), ledger.Applied) // within the cut-off
			r.expectReject(t, late.Raw(), ledger.ReasonRevoked)
		}
	})
	t.Run("scope not held", func(t *testing.T) {
		o := sealOp(t, fid, s2t, "s2", 1, nil, at, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		term.expectReject(t, o.Raw(), ledger.ReasonScope)
		anchor.expect(t, o.Raw(), ledger.Applied) // the anchor holds every store
	})
	t.Run("bad body", func(t *testing.T) {
		// Well signed by a valid author, but the body breaks the rules.
		o := sealOp(t, fid, t1, "s1", 4, next, at, ledger.KindSale, ledgertest.Sale("TEA", 0, 350))
		for _, r := range both {
			r.expectReject(t, o.Raw(), ledger.ReasonBody)
		}
		o = sealOp(t, fid, t1, "s1", 4, next, at, ledger.KindStockReceived, &ledger.StockReceived{SKU: "T E A", Qty: 1})
		for _, r := range both {
			r.expectReject(t, o.Raw(), ledger.ReasonBody)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		for _, raw := range [][]byte{nil, {0x80}, []byte("not an op"), next.Raw()[:len(next.Raw())-1]} {
			for _, r := range both {
				r.expectReject(t, raw, ledger.ReasonDecode)
			}
		}
	})
}

// TestAppendRejectsBadBodies: a bad body never gets a seq.
func TestAppendRejectsBadBodies(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(13)
	d := f.Enroll("s1", ledger.RoleTerminal)
	st := ledgertest.MemStore()
	l, err := f.Open(ctx, st, d)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 5}); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, l, st)
	for _, c := range []struct {
		name string
		kind ledger.Kind
		body any
	}{
		{"qty 0", ledger.KindSale, ledgertest.Sale("TEA", 0, 350)},
		{"negative qty", ledger.KindSale, ledgertest.Sale("TEA", -1, 350)},
		{"bad sku", ledger.KindSale, ledgertest.Sale("no spaces", 1, 350)},
		{"empty sku", ledger.KindStockReceived, &ledger.StockReceived{SKU: "", Qty: 1}},
		{"bad currency", ledger.KindSale, &ledger.Sale{Lines: []ledger.SaleLine{{SKU: "TEA", Qty: 1, UnitPrice: 1}}, Currency: "eur", Payment: "cash"}},
		{"no lines", ledger.KindSale, &ledger.Sale{Currency: "EUR", Payment: "cash"}},
		{"negative price", ledger.KindSale, ledgertest.Sale("TEA", 1, -5)},
		{"refund of nothing", ledger.KindRefund, &ledger.Refund{Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 1}}}},
		{"unknown resolution", ledger.KindConflictResolved, &ledger.ConflictResolved{Conflict: "x", Action: "shrug"}},
	} {
		_, err := l.Append(ctx, "s1", c.kind, c.body)
		if ledger.RejectReason(err) != ledger.ReasonBody {
			t.Errorf("%s: %v, want %s", c.name, err, ledger.ReasonBody)
		}
		if !stateOf(t, l, st).equal(before) {
			t.Fatalf("%s: a refused body changed the stored state", c.name)
		}
	}
	// A body of the wrong type for the kind is bad input, not a rejection.
	if _, err := l.Append(ctx, "s1", ledger.KindSale, &ledger.StockReceived{SKU: "TEA", Qty: 1}); !errors.Is(err, ledger.ErrBadInput) {
		t.Errorf("sale with a stock body: %v, want ErrBadInput", err)
	}
	// The chain has no gap: the next good op takes seq 2.
	o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	if err != nil {
		t.Fatal(err)
	}
	if o.Seq != 2 {
		t.Fatalf("next op has seq %d, want 2", o.Seq)
	}
}

// TestForkKeptAsEvidence: one device key used on two stores (a terminal
// restored from an old backup) writes two different sales at the same
// seq. docs/design.md §4: keep both as evidence, flag the device, never silently
// pick one; replicas that see the branches in either order agree.
func TestForkKeptAsEvidence(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(17)
	d := f.Enroll("s1", ledger.RoleTerminal)
	la, err := f.Open(ctx, ledgertest.MemStore(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	lb, err := f.Open(ctx, ledgertest.MemStore(), d) // the restored copy
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	appendOK := func(l *ledger.Ledger, kind ledger.Kind, b any) *ledger.Op {
		t.Helper()
		o, err := l.Append(ctx, "s1", kind, b)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	first := appendOK(la, ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 10})
	if _, err := lb.Apply(ctx, first.Raw()); err != nil {
		t.Fatal(err)
	}
	a2 := appendOK(la, ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	b2 := appendOK(lb, ledger.KindSale, ledgertest.Sale("TEA", 2, 350))
	if a2.Seq != 2 || b2.Seq != 2 || a2.Hash() == b2.Hash() {
		t.Fatalf("want two different ops at seq 2, got %v and %v", a2, b2)
	}

	// A third replica applies both: the second is Forked, both are stored.
	rStore := ledgertest.MemStore()
	r, err := f.Open(ctx, rStore, nil, d.Cert)
	if err != nil {
		t.Fatal(err)
	}
	rt := replicaUnderTest{r, rStore}
	rt.expect(t, first.Raw(), ledger.Applied)
	rt.expect(t, a2.Raw(), ledger.Applied)
	rt.expect(t, b2.Raw(), ledger.Forked)
	rt.expect(t, b2.Raw(), ledger.Duplicate)
	wantForks := []ledger.Fork{{Store: "s1", Device: d.ID(), Seqs: []uint64{2}}}
	checkForked := func(name string, l *ledger.Ledger) {
		t.Helper()
		if got := l.Forks(); !equalForks(got, wantForks) {
			t.Fatalf("%s: forks %+v, want %+v", name, got, wantForks)
		}
		if got := l.OnHand("s1", "TEA"); got != 10-1-2 {
			t.Fatalf("%s: on hand %d, want 7 (both branches' sales count)", name, got)
		}
	}
	checkForked("third replica", r)
	stored := stateOf(t, r, rStore)
	for _, o := range []*ledger.Op{a2, b2} {
		if !slices.ContainsFunc(mapValues(stored.kv), func(v string) bool { return v == string(o.Raw()) }) {
			t.Fatalf("branch op %v is not stored", o)
		}
	}
	digest := r.Digest("s1")
	r.Close()
	r2, err := ledger.Open(ctx, rStore, f.Config(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	checkForked("reopened replica", r2)
	if r2.Digest("s1") != digest {
		t.Fatal("reopened forked replica has another digest")
	}

	// Two replicas get the branches in opposite orders, the way sync
	// delivers them: p from a then b, q from b then a.
	la3 := appendOK(la, ledger.KindSale, ledgertest.Sale("TEA", 3, 350)) // a's branch grows
	p, err := f.Open(ctx, ledgertest.MemStore(), nil, d.Cert)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	q, err := f.Open(ctx, ledgertest.MemStore(), nil, d.Cert)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// pull ships what from has and to lacks, answering NeedHistory with the
	// device's whole history; it returns whether history was asked for.
	pull := func(from, to *ledger.Ledger) (askedHistory bool) {
		t.Helper()
		var need []string
		err := from.Ops(ctx, "s1", to.VersionVector("s1"), 64<<10, func(batch []ledger.RawOp) error {
			rs, err := to.ApplyBatch(ctx, rawBytes(batch))
			for _, x := range rs {
				if x.NeedHistory {
					need = append(need, x.Op.Device)
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, dev := range need {
			askedHistory = true
			err := from.History(ctx, "s1", dev, 0, 64<<10, func(batch []ledger.RawOp) error {
				_, err := to.ApplyBatch(ctx, rawBytes(batch))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return askedHistory
	}
	pull(la, p) // p: 1, a2, a3
	pull(lb, q) // q: 1, b2
	if pull(la, q) != true {
		t.Fatal("q got a3, whose prev it lacks, without NeedHistory")
	}
	// p holds more ops by version vector than lb: only history reveals b2.
	if err := lb.History(ctx, "s1", d.ID(), 0, 64<<10, func(batch []ledger.RawOp) error {
		_, err := p.ApplyBatch(ctx, rawBytes(batch))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]*ledger.Ledger{"p": p, "q": q} {
		if got := l.Forks(); !equalForks(got, wantForks) {
			t.Fatalf("%s: forks %+v, want %+v", name, got, wantForks)
		}
		if got := l.VersionVector("s1")[d.ID()]; got != la3.Seq {
			t.Fatalf("%s: version vector %d, want %d", name, got, la3.Seq)
		}
	}
	if p.Digest("s1") != q.Digest("s1") {
		t.Fatal("replicas that saw the branches in opposite orders differ")
	}
	if p.Stats().Held != 0 || q.Stats().Held != 0 {
		t.Fatal("ops left held")
	}

	// The device's own ledger, once it learns the other branch, never
	// extends the forked chain again: it sells on a new epoch, and both
	// branches stay as evidence.
	if _, err := la.Apply(ctx, b2.Raw()); err != nil {
		t.Fatal(err)
	}
	o, err := la.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	if err != nil || ledger.ChainOwner(o.Device) != d.ID() || ledger.ChainEpoch(o.Device) == 0 || o.Seq != 1 {
		t.Fatalf("append on a forked own chain: %v %v, want seq 1 of a new epoch", o, err)
	}
	if st := la.Stats(); st.Epochs != 1 {
		t.Fatalf("%d epochs started, want 1", st.Epochs)
	}
}

func equalForks(a, b []ledger.Fork) bool {
	return slices.EqualFunc(a, b, func(x, y ledger.Fork) bool {
		return x.Store == y.Store && x.Device == y.Device && slices.Equal(x.Seqs, y.Seqs)
	})
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestAppendRefusedWithExpiredOwnCertificate(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(77)
	d := f.Enroll("s1", ledger.RoleTerminal, ledgertest.Expiring(ledgertest.Epoch.Add(time.Hour)))
	clock := ledgertest.NewClock()
	l, err := ledger.Open(ctx, ledgertest.MemStore(), f.Config(d, clock))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100)); err != nil {
		t.Fatal(err)
	}
	clock.Set(ledgertest.Epoch.Add(2 * time.Hour))
	before := l.Digest("s1")
	_, err = l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100))
	if ledger.RejectReason(err) != ledger.ReasonCertExpired {
		t.Fatalf("got %v, want %s", err, ledger.ReasonCertExpired)
	}
	if l.Digest("s1") != before || l.VersionVector("s1")[d.ID()] != 1 {
		t.Fatal("refused append changed the ledger")
	}
}
