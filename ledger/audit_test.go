package ledger_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

const auditMagic = "storemesh-audit-v2\n"

// shop is a small fleet: terminals A and B and manager M of store s1.
// A's ledger holds everyone's ops.
type shop struct {
	f       *ledgertest.Fleet
	a, b, m *ledgertest.Device
	la      *ledger.Ledger
	lb, lm  *ledger.Ledger
	store   ds.Batching
}

// newShop writes: M a catalog upsert (fleet-wide) and a stock receipt;
// A two sales and a refund; B three sales. Sales total 2450 EUR cents,
// refunds 350. A's ledger then holds 8 ops in 4 chains and 3 certificates.
func newShop(tb testing.TB, seed uint64, store ds.Batching) *shop {
	tb.Helper()
	ctx := context.Background()
	s := &shop{f: ledgertest.NewFleet(seed), store: store}
	s.a = s.f.Enroll("s1", ledger.RoleTerminal)
	s.b = s.f.Enroll("s1", ledger.RoleTerminal)
	s.m = s.f.Enroll("s1", ledger.RoleManager)
	s.la = ok(s.f.Open(ctx, store, s.a, s.b.Cert, s.m.Cert))(tb)
	s.lb = ok(s.f.Open(ctx, ledgertest.MemStore(), s.b, s.a.Cert, s.m.Cert))(tb)
	s.lm = ok(s.f.Open(ctx, ledgertest.MemStore(), s.m, s.a.Cert, s.b.Cert))(tb)
	appendOp(tb, s.lm, ledger.FleetScope, ledger.KindCatalogUpsert, &ledger.CatalogItem{SKU: "TEA", Name: "Tea", UnitPrice: 350, Currency: "EUR"})
	appendOp(tb, s.lm, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 20})
	first := appendOp(tb, s.la, "s1", ledger.KindSale, ledgertest.Sale("TEA", 2, 350))
	appendOp(tb, s.la, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	appendOp(tb, s.la, "s1", ledger.KindRefund, &ledger.Refund{Sale: first.ID(), Lines: []ledger.RefundLine{{SKU: "TEA", Qty: 1}}, Amount: 350})
	for _, q := range []int64{1, 2, 1} {
		appendOp(tb, s.lb, "s1", ledger.KindSale, ledgertest.Sale("TEA", q, 350))
	}
	syncInto(tb, s.lm, s.la, ledger.FleetScope, "s1")
	syncInto(tb, s.lb, s.la, "s1")
	return s
}

// ok returns v, failing the test given to the returned func on err.
func ok[T any](v T, err error) func(testing.TB) T {
	return func(tb testing.TB) T {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return v
	}
}

func appendOp(tb testing.TB, l *ledger.Ledger, store string, kind ledger.Kind, b any) *ledger.Op {
	tb.Helper()
	o, err := l.Append(context.Background(), store, kind, b)
	if err != nil {
		tb.Fatalf("append %s: %v", kind, err)
	}
	return o
}

// syncInto applies every op of scopes that from holds and to lacks.
func syncInto(tb testing.TB, from, to *ledger.Ledger, scopes ...string) {
	tb.Helper()
	ctx := context.Background()
	for _, sc := range scopes {
		err := from.Ops(ctx, sc, to.VersionVector(sc), 1<<16, func(batch []ledger.RawOp) error {
			raws := make([][]byte, len(batch))
			for i, r := range batch {
				raws[i] = r.Bytes
			}
			rs, err := to.ApplyBatch(ctx, raws)
			for _, r := range rs {
				if r.Outcome != ledger.Applied {
					tb.Errorf("apply: %v %v", r.Outcome, r.Err)
				}
			}
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func export(tb testing.TB, l *ledger.Ledger) ([]byte, ledger.Manifest) {
	tb.Helper()
	var buf bytes.Buffer
	m, err := l.Export(context.Background(), &buf)
	if err != nil {
		tb.Fatalf("export: %v", err)
	}
	return buf.Bytes(), m
}

// bundleParts are the bundle's CBOR items, decoded the way the format
// comment says, without the package's reader.
type bundleParts struct {
	Manifest []byte
	Certs    [][]byte
	Ops      [][]byte
}

func split(tb testing.TB, b []byte) bundleParts {
	tb.Helper()
	if !bytes.HasPrefix(b, []byte(auditMagic)) {
		tb.Fatal("no magic line")
	}
	body := b[len(auditMagic) : len(b)-sha256.Size]
	if sum := sha256.Sum256(b[:len(b)-sha256.Size]); !bytes.Equal(sum[:], b[len(b)-sha256.Size:]) {
		tb.Fatal("trailer is not the SHA-256 of the content")
	}
	var items [][]byte
	var again []byte
	dec := crdt.NewDecoder(bytes.NewReader(body))
	for {
		var item []byte
		if err := dec.Decode(&item); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			tb.Fatalf("bundle body is not a CBOR sequence of byte strings: %v", err)
		}
		items = append(items, item)
		again = append(again, ok(crdt.Marshal(item))(tb)...)
	}
	if !bytes.Equal(again, body) {
		tb.Fatal("bundle body is not canonical CBOR")
	}
	if len(items) == 0 {
		tb.Fatal("no manifest")
	}
	p := bundleParts{Manifest: items[0]}
	m := manifestOf(tb, p)
	if m.Certs > uint64(len(items)-1) {
		tb.Fatalf("manifest says %d certificates, bundle holds %d items after it", m.Certs, len(items)-1)
	}
	p.Certs, p.Ops = items[1:1+m.Certs], items[1+m.Certs:]
	return p
}

// join encodes parts as a bundle with a correct trailer: what a forger
// who knows the format would write.
func join(tb testing.TB, p bundleParts) []byte {
	tb.Helper()
	out := []byte(auditMagic)
	for _, item := range slices.Concat([][]byte{p.Manifest}, p.Certs, p.Ops) {
		out = append(out, ok(crdt.Marshal(item))(tb)...)
	}
	sum := sha256.Sum256(out)
	return append(out, sum[:]...)
}

func manifestOf(tb testing.TB, p bundleParts) ledger.Manifest {
	tb.Helper()
	var m ledger.Manifest
	if err := crdt.UnmarshalCanonical(p.Manifest, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

func withManifest(tb testing.TB, p bundleParts, m ledger.Manifest) bundleParts {
	tb.Helper()
	b, err := crdt.Marshal(&m)
	if err != nil {
		tb.Fatal(err)
	}
	p.Manifest = b
	return p
}

func verify(b []byte, fleet ed25519.PublicKey) (*ledger.Report, error) {
	return ledger.VerifyBundle(bytes.NewReader(b), ledger.VerifyOptions{Fleet: fleet})
}

// wantProblems fails unless err is an audit failure listing every code.
func wantProblems(tb testing.TB, err error, codes ...ledger.ProblemCode) *ledger.AuditError {
	tb.Helper()
	var ae *ledger.AuditError
	if !errors.As(err, &ae) || !errors.Is(err, ledger.ErrAuditFailed) {
		tb.Fatalf("want an audit failure with %v, got %v", codes, err)
	}
	for _, c := range codes {
		if !ae.Has(c) {
			tb.Errorf("want a %q problem, got %v", c, ae.Problems)
		}
	}
	return ae
}

func TestAuditExportVerifyBundle(t *testing.T) {
	ctx := context.Background()
	s := newShop(t, 1, ledgertest.MemStore())
	b, m := export(t, s.la)
	rep, err := verify(b, s.f.Key.Public())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Ops != 8 || rep.Certs != 3 || len(rep.Chains) != 4 || len(rep.Forks) != 0 {
		t.Errorf("ops %d certs %d chains %d forks %d; want 8, 3, 4, 0", rep.Ops, rep.Certs, len(rep.Chains), len(rep.Forks))
	}
	if want := []ledger.SalesTotal{{Store: "s1", Currency: "EUR", Sales: 5, Total: 2450}}; !reflect.DeepEqual(rep.Sales, want) {
		t.Errorf("sales %+v, want %+v", rep.Sales, want)
	}
	if want := []ledger.RefundTotal{{Store: "s1", Refunds: 1, Amount: 350}}; !reflect.DeepEqual(rep.Refunds, want) {
		t.Errorf("refunds %+v, want %+v", rep.Refunds, want)
	}
	if !reflect.DeepEqual(rep.Manifest, m) || !reflect.DeepEqual(rep.Chains, m.Chains) {
		t.Errorf("report manifest %+v\nexport returned %+v", rep.Manifest, m)
	}
	if m.Fleet != s.f.Key.ID() || m.Device != s.a.ID() || m.Ops != 8 || m.Certs != 3 || m.Exported.IsZero() {
		t.Errorf("manifest %+v", m)
	}
	if rep.First.IsZero() || !rep.First.Less(rep.Last) {
		t.Errorf("first %v last %v", rep.First, rep.Last)
	}
	for _, c := range m.Chains {
		want := s.la.VersionVector(c.Store)[c.Device]
		if c.MaxSeq != want || c.Ops != want || len(c.Heads) != 1 || c.Forked {
			t.Errorf("chain %+v; version vector says %d", c, want)
		}
	}
	// The stream writer's bytes are exactly crdt.Marshal of each part.
	if again := join(t, split(t, b)); !bytes.Equal(again[:len(again)-32], b[:len(b)-32]) {
		t.Error("bundle body is not the deterministic encoding of its parts")
	}
	if err := s.la.VerifyStored(ctx); err != nil {
		t.Errorf("VerifyStored: %v", err)
	}
	// Without an expected key the bundle's own key is used.
	if _, err := verify(b, nil); err != nil {
		t.Errorf("verify without a fleet key: %v", err)
	}
}

// flipped reports whether VerifyBundle refuses b with byte i changed.
func flipped(b []byte, i int, x byte) error {
	c := bytes.Clone(b)
	c[i] ^= x
	_, err := ledger.VerifyBundle(bytes.NewReader(c), ledger.VerifyOptions{})
	if !errors.Is(err, ledger.ErrAuditFailed) {
		return errors.New("accepted or not an audit failure")
	}
	return nil
}

func TestAuditBundleEveryByteFlipFails(t *testing.T) {
	f := ledgertest.NewFleet(2)
	d := f.Enroll("s1", ledger.RoleTerminal)
	l := ok(f.Open(context.Background(), ledgertest.MemStore(), d))(t)
	appendOp(t, l, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 5})
	appendOp(t, l, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	b, _ := export(t, l)
	for i := range b {
		if err := flipped(b, i, 1<<(i%8)); err != nil {
			t.Fatalf("byte %d of %d: %v", i, len(b), err)
		}
	}
	for n := range len(b) {
		if _, err := verify(b[:n], nil); !errors.Is(err, ledger.ErrAuditFailed) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(b), err)
		}
	}
	wantProblems(t, errOf(verify(append(bytes.Clone(b), 0), nil)), ledger.ProblemDecode)
}

// errOf drops the report.
func errOf(_ *ledger.Report, err error) error { return err }

func TestAuditBundleSampledByteFlipsFail(t *testing.T) {
	s := newShop(t, 3, ledgertest.MemStore())
	b, _ := export(t, s.la)
	r := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		i, x := r.IntN(len(b)), byte(1+r.IntN(255))
		if err := flipped(b, i, x); err != nil {
			t.Fatalf("byte %d of %d ^ %#x: %v", i, len(b), x, err)
		}
	}
}

func TestAuditBundleOpRemovedFails(t *testing.T) {
	s := newShop(t, 4, ledgertest.MemStore())
	b, _ := export(t, s.la)
	p := split(t, b)
	// Remove the middle op of the longest chain so the rest still decodes.
	mid := -1
	for i, raw := range p.Ops {
		o := ok(ledger.DecodeOp(raw))(t)
		if o.Device == s.a.ID() && o.Seq == 2 {
			mid = i
		}
	}
	p.Ops = slices.Delete(p.Ops, mid, mid+1)
	ae := wantProblems(t, errOf(verify(join(t, p), s.f.Key.Public())), ledger.ProblemChain, ledger.ProblemManifest)
	if ae.Has(ledger.ProblemChecksum) {
		t.Errorf("checksum was recomputed: %v", ae)
	}
	// With the manifest rewritten to match, the chain gap still fails.
	m := manifestOf(t, p)
	m.Ops--
	wantProblems(t, errOf(verify(join(t, withManifest(t, p, m)), s.f.Key.Public())), ledger.ProblemChain)
}

func TestAuditBundleResignedOpFails(t *testing.T) {
	s := newShop(t, 5, ledgertest.MemStore())
	b, _ := export(t, s.la)
	p := split(t, b)
	_, other, _ := ed25519.GenerateKey(rand.NewChaCha8([32]byte{5}))
	// B's last sale, made cheaper and signed by a key the fleet never certified.
	i := slices.IndexFunc(p.Ops, func(raw []byte) bool {
		o := ok(ledger.DecodeOp(raw))(t)
		return o.Device == s.b.ID() && o.Seq == 3
	})
	o := ok(ledger.DecodeOp(p.Ops[i]))(t)
	o.Body = ok(crdt.Marshal(ledgertest.Sale("TEA", 1, 1)))(t)
	if err := o.Seal(other); err != nil {
		t.Fatal(err)
	}
	p.Ops[i] = o.Raw()
	wantProblems(t, errOf(verify(join(t, p), s.f.Key.Public())), ledger.ProblemSignature)
}

func TestAuditBundleManifestTamperFails(t *testing.T) {
	s := newShop(t, 6, ledgertest.MemStore())
	b, _ := export(t, s.la)
	p := split(t, b)
	m := manifestOf(t, p)
	m.Chains[1].Ops++
	ae := wantProblems(t, errOf(verify(join(t, withManifest(t, p, m)), s.f.Key.Public())), ledger.ProblemManifest)
	for _, pr := range ae.Problems {
		if pr.Code != ledger.ProblemManifest {
			t.Errorf("unexpected problem %v", pr)
		}
	}
	// A certificate issued by another fleet key for the same device.
	p = split(t, b)
	c := ok(ledger.DecodeCertificate(p.Certs[0]))(t)
	forged := ok(ledgertest.NewFleet(99).Key.Issue(*c))(t)
	p.Certs[0] = forged.Encode()
	wantProblems(t, errOf(verify(join(t, p), s.f.Key.Public())), ledger.ProblemCertificate)
}

func TestAuditBundleForkReported(t *testing.T) {
	ctx := context.Background()
	s := newShop(t, 7, ledgertest.MemStore())
	// B equivocates: a second op at seq 2 linking to its seq 1.
	var orig *ledger.Op
	err := s.lb.History(ctx, "s1", s.b.ID(), 1, 1<<16, func(batch []ledger.RawOp) error {
		orig = ok(ledger.DecodeOp(batch[0].Bytes))(t)
		return nil
	})
	if err != nil || orig.Seq != 2 {
		t.Fatalf("history: %v %v", orig, err)
	}
	fork := *orig
	fork.Body = ok(crdt.Marshal(ledgertest.Sale("TEA", 5, 350)))(t)
	if err := fork.Seal(s.b.Key); err != nil {
		t.Fatal(err)
	}
	if r := ok(s.la.Apply(ctx, fork.Raw()))(t); r.Outcome != ledger.Forked {
		t.Fatalf("fork outcome %v %v", r.Outcome, r.Err)
	}
	b, m := export(t, s.la)
	rep, err := verify(b, s.f.Key.Public())
	if err != nil {
		t.Fatalf("a fork is evidence, not a failure: %v", err)
	}
	if want := s.la.Forks(); !reflect.DeepEqual(rep.Forks, want) || len(want) != 1 || !slices.Equal(want[0].Seqs, []uint64{2}) {
		t.Errorf("forks %+v, ledger says %+v", rep.Forks, want)
	}
	for _, c := range m.Chains {
		if c.Device == s.b.ID() && (!c.Forked || c.Ops != 4 || c.MaxSeq != 3 || len(c.Heads) != 2 || !slices.Contains(c.Heads, fork.Hash())) {
			t.Errorf("forked chain %+v", c)
		}
	}
	if rep.Sales[0].Sales != 6 {
		t.Errorf("sales %+v: both branches are evidence and counted", rep.Sales)
	}
	if err := s.la.VerifyStored(ctx); err != nil {
		t.Errorf("VerifyStored with a fork: %v", err)
	}
}

func TestAuditBundleOtherFleetFails(t *testing.T) {
	s := newShop(t, 8, ledgertest.MemStore())
	b, _ := export(t, s.la)
	other := ledgertest.NewFleet(80)
	wantProblems(t, errOf(verify(b, other.Key.Public())), ledger.ProblemFleet, ledger.ProblemCertificate)
	if _, err := verify(b, s.f.Key.Public()); err != nil {
		t.Errorf("own fleet: %v", err)
	}
}

func TestAuditBundleSizeLimit(t *testing.T) {
	s := newShop(t, 9, ledgertest.MemStore())
	b, _ := export(t, s.la)
	_, err := ledger.VerifyBundle(bytes.NewReader(b), ledger.VerifyOptions{MaxBytes: int64(len(b) - 1)})
	wantProblems(t, err, ledger.ProblemSize)
	if _, err := ledger.VerifyBundle(bytes.NewReader(b), ledger.VerifyOptions{MaxBytes: int64(len(b))}); err != nil {
		t.Errorf("exactly at the limit: %v", err)
	}
	// An item claiming 2^40 bytes where a certificate is due is refused
	// once it passes the certificate bound, not buffered up to the claim;
	// cut short, it is simply truncated.
	p := split(t, b)
	claim := []byte{0x5b, 0, 0, 1, 0, 0, 0, 0, 0}
	forged := slices.Concat([]byte(auditMagic), ok(crdt.Marshal(p.Manifest))(t), claim)
	wantProblems(t, errOf(verify(slices.Concat(forged, make([]byte, 64<<10)), nil)), ledger.ProblemSize)
	wantProblems(t, errOf(verify(forged, nil)), ledger.ProblemDecode)
}

func TestAuditVerifyStoredDetectsTamper(t *testing.T) {
	ctx := context.Background()
	store := ledgertest.MemStore()
	s := newShop(t, 10, store)
	res := ok(store.Query(ctx, dsq.Query{Prefix: "/o"}))(t)
	all := ok(res.Rest())(t)
	e := all[len(all)/2]
	v := bytes.Clone(e.Value)
	v[len(v)-1] ^= 1 // the signature's last byte
	if err := store.Put(ctx, ds.NewKey(e.Key), v); err != nil {
		t.Fatal(err)
	}
	wantProblems(t, s.la.VerifyStored(ctx), ledger.ProblemSignature, ledger.ProblemOrder)
}

func TestAuditExportVerifyBadger(t *testing.T) {
	ctx := context.Background()
	store, err := ledger.OpenBadger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := newShop(t, 11, store)
	b, _ := export(t, s.la)
	rep, err := verify(b, s.f.Key.Public())
	if err != nil || rep.Ops != 8 || rep.Sales[0].Total != 2450 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if err := s.la.VerifyStored(ctx); err != nil {
		t.Errorf("VerifyStored: %v", err)
	}
}

func TestAuditExportWhileSelling(t *testing.T) {
	s := newShop(t, 12, ledgertest.MemStore())
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 40 {
			if _, err := s.la.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 3 {
		b, m := export(t, s.la)
		if rep, err := verify(b, s.f.Key.Public()); err != nil || uint64(rep.Ops) != m.Ops {
			t.Fatalf("bundle taken while selling: %v", err)
		}
	}
	wg.Wait()
	if err := s.la.VerifyStored(context.Background()); err != nil {
		t.Error(err)
	}
}

func FuzzVerifyBundle(f *testing.F) {
	fl := ledgertest.NewFleet(13)
	d := fl.Enroll("s1", ledger.RoleTerminal)
	l := ok(fl.Open(context.Background(), ledgertest.MemStore(), d))(f)
	appendOp(f, l, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 5})
	appendOp(f, l, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
	b, _ := export(f, l)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte(auditMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(b []byte) {
			rep, err := ledger.VerifyBundle(bytes.NewReader(b), ledger.VerifyOptions{MaxBytes: 1 << 20})
			if err != nil && !errors.Is(err, ledger.ErrAuditFailed) {
				t.Fatalf("not an audit failure: %v", err)
			}
			if rep == nil {
				t.Fatal("nil report")
			}
			if err == nil {
				// Whatever is accepted is a well-formed bundle that says what it holds.
				p := split(t, b)
				if m := manifestOf(t, p); m.Ops != uint64(len(p.Ops)) || rep.Ops != len(p.Ops) || rep.Certs != len(p.Certs) {
					t.Fatalf("accepted an inconsistent bundle: %+v", rep)
				}
			}
		}
		check(b)
		// The same bytes with a correct trailer reach the semantic checks.
		if n := len(b) - sha256.Size; n >= 0 {
			fixed := bytes.Clone(b)
			sum := sha256.Sum256(fixed[:n])
			copy(fixed[n:], sum[:])
			check(fixed)
		}
	})
}
