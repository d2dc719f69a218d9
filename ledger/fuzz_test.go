package ledger_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// Everything a peer sends is hostile until checked. These fuzz targets
// feed arbitrary bytes to the decoders and to ApplyBatch.
//
//	go test -run='^$' -fuzz=FuzzDecodeOp -fuzztime=10s ./ledger
//	go test -run='^$' -fuzz=FuzzDecodeCertificate -fuzztime=10s ./ledger
//	go test -run='^$' -fuzz=FuzzApplyBatch -fuzztime=10s ./ledger

// fuzzFixture is a small store history: the base ops every fuzzed ledger
// starts from, and genuine ops that are not in it yet (seeds that apply).
type fuzzFixture struct {
	fleet   *ledgertest.Fleet
	self    *ledgertest.Device // the fuzzed replica: a terminal of s1
	certs   []*ledger.Certificate
	keys    map[string]ed25519.PublicKey
	baseKV  map[ds.Key][]byte // the replica's store after the base ops
	base    [][]byte
	fresh   [][]byte          // genuine ops the base lacks
	genuine map[[32]byte]bool // hashes of every op a real key made
}

func newFuzzFixture(tb testing.TB) *fuzzFixture {
	tb.Helper()
	ctx := context.Background()
	fx := &fuzzFixture{fleet: ledgertest.NewFleet(23), keys: map[string]ed25519.PublicKey{}, genuine: map[[32]byte]bool{}}
	f := fx.fleet
	t1 := f.Enroll("s1", ledger.RoleTerminal)
	t2 := f.Enroll("s1", ledger.RoleTerminal)
	mgr := f.Enroll("s1", ledger.RoleManager)
	s2 := f.Enroll("s2", ledger.RoleTerminal)
	fx.self = f.Enroll("s1", ledger.RoleTerminal)
	for _, d := range []*ledgertest.Device{t1, t2, mgr, s2} {
		fx.certs = append(fx.certs, d.Cert)
		fx.keys[d.ID()] = d.Cert.PubKey
	}
	open := func(d *ledgertest.Device) *ledger.Ledger {
		l, err := f.Open(ctx, ledgertest.MemStore(), d, fx.certs...)
		if err != nil {
			tb.Fatal(err)
		}
		return l
	}
	lt1, lt2, lm, ls2 := open(t1), open(t2), open(mgr), open(s2)
	add := func(l *ledger.Ledger, store string, kind ledger.Kind, b any) []byte {
		o, err := l.Append(ctx, store, kind, b)
		if err != nil {
			tb.Fatal(err)
		}
		fx.genuine[o.Hash()] = true
		return bytes.Clone(o.Raw())
	}
	fx.base = [][]byte{
		add(lm, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: "TEA", Name: "tea", UnitPrice: 350, Currency: "EUR"}),
		add(lt1, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 5}),
		add(lt1, "s1", ledger.KindSale, ledgertest.Sale("TEA", 2, 350)),
		add(lt2, "s1", ledger.KindSale, ledgertest.Sale("TEA", 4, 350)), // oversold: a conflict in the base
		add(lm, "s1", ledger.KindPolicySet, &ledger.Policy{OfflineMethods: []string{"cash"}}),
	}
	fx.fresh = [][]byte{
		add(lt1, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)),
		add(lt1, "s1", ledger.KindRefund, &ledger.Refund{Sale: opID(tb, fx.base[2]), Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 1}}, Amount: 350}),
		add(lm, ledger.FleetScope, ledger.KindPriceSet, &ledger.PriceSet{SKU: "TEA", UnitPrice: 300, Currency: "EUR"}),
		add(lt1, "s1", ledger.KindStockCounted, &ledger.StockCounted{SKU: "TEA", OnHand: 3, Seen: 2}),
		add(ls2, "s2", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)),                                       // scope not held
		add(lt1, "s1", ledger.KindConflictResolved, &ledger.ConflictResolved{Conflict: "c", Action: "other"}), // a gap: held
	}
	// A fork: t1's seq 3 written again by a restored copy.
	st := ledgertest.MemStore()
	restored, err := ledger.Open(ctx, st, f.Config(t1, nil))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := restored.ApplyBatch(ctx, fx.base[1:3]); err != nil {
		tb.Fatal(err)
	}
	fx.fresh = append(fx.fresh, add(restored, "s1", ledger.KindSale, ledgertest.Sale("TEA", 5, 1)))

	store := ledgertest.MemStore()
	l, err := f.Open(ctx, store, fx.self, fx.certs...)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := l.ApplyBatch(ctx, fx.base); err != nil {
		tb.Fatal(err)
	}
	fx.baseKV = map[ds.Key][]byte{}
	for k, v := range stateOf(tb, l, store).kv {
		fx.baseKV[ds.NewKey(k)] = []byte(v)
	}
	return fx
}

// replica opens a fresh ledger over a copy of the base store.
func (fx *fuzzFixture) replica(tb testing.TB) (*ledger.Ledger, ds.Batching) {
	tb.Helper()
	ctx := context.Background()
	st := ledgertest.MemStore()
	for k, v := range fx.baseKV {
		if err := st.Put(ctx, k, v); err != nil {
			tb.Fatal(err)
		}
	}
	l, err := ledger.Open(ctx, st, fx.fleet.Config(fx.self, nil))
	if err != nil {
		tb.Fatal(err)
	}
	return l, st
}

func FuzzDecodeOp(f *testing.F) {
	fx := newFuzzFixture(f)
	for _, raw := range append(fx.base, fx.fresh...) {
		f.Add(raw)
	}
	f.Add(fx.certs[0].Encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ledger.DecodeOp(b)
		if err != nil {
			if o != nil || ledger.RejectReason(err) == "" {
				t.Fatalf("decode error without a reason: %v", err)
			}
			return
		}
		// One accepted byte form: decoding then encoding gives the input.
		again, err := crdt.Marshal(o)
		if err != nil {
			t.Fatalf("decoded op does not encode: %v", err)
		}
		if !bytes.Equal(again, b) || !bytes.Equal(o.Raw(), b) || o.Hash() != sha256.Sum256(b) {
			t.Fatal("decode/encode round trip changed the bytes or the hash")
		}
		_ = o.ID() + o.String()
	})
}

func FuzzDecodeCertificate(f *testing.F) {
	fx := newFuzzFixture(f)
	genuine := map[string]bool{}
	for _, c := range append(fx.certs, fx.self.Cert) {
		f.Add(c.Encode())
		genuine[string(c.Encode())] = true
	}
	f.Add(fx.base[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ledger.DecodeCertificate(b)
		if err != nil {
			if c != nil || ledger.RejectReason(err) == "" {
				t.Fatalf("decode error without a reason: %v", err)
			}
			return
		}
		if !bytes.Equal(c.Encode(), b) {
			t.Fatal("decode/encode round trip changed the bytes")
		}
		err = c.Verify(fx.fleet.Key.Public(), time.Time{})
		if err == nil && !genuine[string(b)] {
			t.Fatalf("a certificate the fleet never issued verifies: %+v", c)
		}
		if err != nil && ledger.RejectReason(err) == "" {
			t.Fatalf("verify error without a reason: %v", err)
		}
	})
}

// FuzzApplyBatch: arbitrary bytes (once, or twice in one batch) into a
// replica with some state. It never panics; nothing but a genuine op is
// ever applied; unless something applied, the digests and the stored
// bytes are unchanged; and the store always reopens to the live state.
func FuzzApplyBatch(f *testing.F) {
	fx := newFuzzFixture(f)
	for _, raw := range append(fx.fresh, fx.base...) {
		f.Add(raw, false)
		f.Add(raw, true)
	}
	f.Add([]byte("garbage"), false)
	f.Fuzz(func(t *testing.T, b []byte, twice bool) {
		ctx := context.Background()
		l, st := fx.replica(t)
		defer l.Close()
		before := stateOf(t, l, st)
		batch := [][]byte{b}
		if twice {
			batch = append(batch, b)
		}
		rs, err := l.ApplyBatch(ctx, batch)
		if err != nil {
			t.Fatalf("ledger error on a memory store: %v", err)
		}
		if len(rs) != len(batch) {
			t.Fatalf("%d results for %d ops", len(rs), len(batch))
		}
		changed := false
		for _, r := range rs {
			switch r.Outcome {
			case ledger.Rejected:
				if ledger.RejectReason(r.Err) == "" && !errors.Is(r.Err, ledger.ErrTooManyHeld) {
					t.Fatalf("rejected without a reason: %v", r.Err)
				}
			case ledger.Applied, ledger.Forked:
				changed = true
				if !fx.genuine[r.Op.Hash()] {
					t.Fatalf("applied an op no device made: %v", r.Op)
				}
				if !verifyOpSig(r.Op, fx.keys[r.Op.Device]) {
					t.Fatalf("applied an op whose signature does not verify: %v", r.Op)
				}
				fallthrough
			default:
				if r.Err != nil || r.Op == nil {
					t.Fatalf("outcome %v with error %v, op %v", r.Outcome, r.Err, r.Op)
				}
			}
		}
		after := stateOf(t, l, st)
		if !changed && !after.equal(before) {
			t.Fatal("nothing applied, yet the state changed")
		}
		l.Close()
		re, err := ledger.Open(ctx, st, fx.fleet.Config(fx.self, nil))
		if err != nil {
			t.Fatalf("reopen after fuzzed input: %v", err)
		}
		defer re.Close()
		if !stateOf(t, re, st).equal(after) {
			t.Fatal("the reopened store differs from the live state")
		}
	})
}

func opID(tb testing.TB, raw []byte) string {
	o, err := ledger.DecodeOp(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return o.ID()
}
