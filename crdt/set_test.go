package crdt_test

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"storemesh/crdt"
)

var saleIDs = []string{"", "sale-1", "sale-2", "sale-3", "sale-10", "säle-ü", "b", "a"}

// randomGSet builds a set from a random sequence of adds (repeats included)
// and returns the reference: a plain map of what was added.
func randomGSet(t testing.TB, r *rand.Rand) (*crdt.GSet[string], map[string]bool) {
	s := crdt.NewGSet[string]()
	ref := map[string]bool{}
	for range r.IntN(10) {
		e := pick(r, saleIDs)
		if s.Add(e) == ref[e] {
			t.Fatalf("Add(%q) misreports whether the element is new", e)
		}
		ref[e] = true
	}
	return s, ref
}

func mergedGSet(ss ...*crdt.GSet[string]) *crdt.GSet[string] {
	out := &crdt.GSet[string]{} // the zero value must be usable
	for _, s := range ss {
		out.Merge(s)
	}
	return out
}

func TestGSetMatchesReference(t *testing.T) {
	r := newRand(30)
	for i := range 1000 {
		s, ref := randomGSet(t, r)
		if got, want := s.Elements(), slices.Sorted(maps.Keys(ref)); !slices.Equal(got, want) {
			t.Fatalf("case %d: Elements() = %q, want %q", i, got, want)
		}
		if s.Len() != len(ref) {
			t.Fatalf("case %d: Len() = %d, want %d", i, s.Len(), len(ref))
		}
		for _, e := range saleIDs {
			if s.Has(e) != ref[e] {
				t.Fatalf("case %d: Has(%q) = %v", i, e, s.Has(e))
			}
		}
	}
}

func TestGSetMergeLaws(t *testing.T) {
	r := newRand(31)
	for i := range 2000 {
		a, _ := randomGSet(t, r)
		b, _ := randomGSet(t, r)
		c, _ := randomGSet(t, r)
		if !mergedGSet(a, b).Equal(mergedGSet(b, a)) {
			t.Fatalf("case %d: merge not commutative", i)
		}
		if !mergedGSet(mergedGSet(a, b), c).Equal(mergedGSet(a, mergedGSet(b, c))) {
			t.Fatalf("case %d: merge not associative", i)
		}
		aa := mergedGSet(a)
		aa.Merge(a)
		if !aa.Equal(a) {
			t.Fatalf("case %d: merge not idempotent", i)
		}
	}
}

// TestGSetAnyDeliveryOrder: terminals add sales and gossip their sets;
// observers receiving the gossip in any order, with duplicates, all end
// with exactly the union of every sale.
func TestGSetAnyDeliveryOrder(t *testing.T) {
	r := newRand(32)
	for trial := range 200 {
		n := 1 + r.IntN(5)
		replicas := make([]*crdt.GSet[string], n)
		for i := range replicas {
			replicas[i] = crdt.NewGSet[string]()
		}
		var sent []*crdt.GSet[string]
		var adds []string
		want := map[string]bool{}
		for range r.IntN(40) {
			i := r.IntN(n)
			switch r.IntN(3) {
			case 0:
				e := pick(r, saleIDs) + "@" + string(rune('0'+i))
				replicas[i].Add(e)
				adds = append(adds, e)
				want[e] = true
			case 1:
				replicas[i].Merge(replicas[r.IntN(n)])
			case 2:
				sent = append(sent, mergedGSet(replicas[i]))
			}
		}
		sent = append(sent, replicas...)
		wantElems := slices.Sorted(maps.Keys(want))
		for obs := range 4 {
			got := mergedGSet()
			for _, k := range deliveryOrder(r, len(sent)) {
				got.Merge(sent[k])
			}
			if !slices.Equal(got.Elements(), wantElems) {
				t.Fatalf("trial %d observer %d: %q, want %q", trial, obs, got.Elements(), wantElems)
			}
			// Op-based delivery of the single adds converges to the same set.
			byOp := crdt.NewGSet[string]()
			for _, k := range deliveryOrder(r, len(adds)) {
				byOp.Add(adds[k])
			}
			if !byOp.Equal(got) {
				t.Fatalf("trial %d: op delivery %q differs from state delivery %q", trial, byOp.Elements(), got.Elements())
			}
		}
	}
}

func TestGSetCBOR(t *testing.T) {
	r := newRand(33)
	for i := range 500 {
		s, _ := randomGSet(t, r)
		b, err := crdt.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		// Equal sets have equal bytes, however they were built.
		elems := s.Elements()
		slices.Reverse(elems)
		rebuilt := crdt.NewGSet(elems...)
		if b2, _ := crdt.Marshal(rebuilt); string(b2) != string(b) {
			t.Fatalf("case %d: equal sets encode differently: %x vs %x", i, b, b2)
		}
		var out crdt.GSet[string]
		if err := crdt.Unmarshal(b, &out); err != nil {
			t.Fatalf("case %d: Unmarshal(%x): %v", i, b, err)
		}
		if !out.Equal(s) {
			t.Fatalf("case %d: round trip %q gave %q", i, s.Elements(), out.Elements())
		}
	}
	// Embedded by value in a larger message, the set still uses its own form.
	type msg struct{ Sales crdt.GSet[string] }
	b, err := crdt.Marshal(msg{Sales: *crdt.NewGSet("b", "a")})
	if err != nil {
		t.Fatal(err)
	}
	var m msg
	if err := crdt.Unmarshal(b, &m); err != nil || !slices.Equal(m.Sales.Elements(), []string{"a", "b"}) {
		t.Fatalf("embedded set round trip: %q, %v", m.Sales.Elements(), err)
	}
	for name, h := range map[string]string{
		"unsorted":        "8261626161",
		"duplicate":       "8261616161",
		"not an array":    "a0",
		"integers":        "820102",
		"trailing bytes":  "816161ff",
		"invalid utf-8":   "8161ff",
		"indefinite list": "9f6161ff",
	} {
		var s crdt.GSet[string]
		if err := crdt.Unmarshal(mustHex(t, h), &s); !errors.Is(err, crdt.ErrDecode) {
			t.Errorf("%s (%s): %v, want ErrDecode", name, h, err)
		}
	}
}
