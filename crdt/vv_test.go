package crdt_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"storemesh/crdt"
)

// A deliberately dumb reference: every question is answered by walking the
// union of device ids and comparing entries one by one.

func refUnion(a, b crdt.VersionVector) []string {
	seen := map[string]bool{}
	for d := range a {
		seen[d] = true
	}
	for d := range b {
		seen[d] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

func refCompare(a, b crdt.VersionVector) crdt.Ordering {
	aHasMore, bHasMore := false, false
	for _, d := range refUnion(a, b) {
		if a[d] > b[d] {
			aHasMore = true
		}
		if b[d] > a[d] {
			bHasMore = true
		}
	}
	switch {
	case aHasMore && bHasMore:
		return crdt.Concurrent
	case aHasMore:
		return crdt.After
	case bHasMore:
		return crdt.Before
	}
	return crdt.Equal
}

func refDominates(a, b crdt.VersionVector) bool {
	for _, d := range refUnion(a, b) {
		if a[d] < b[d] {
			return false
		}
	}
	return true
}

func refMerge(a, b crdt.VersionVector) map[string]uint64 {
	out := map[string]uint64{}
	for _, d := range refUnion(a, b) {
		out[d] = max(a[d], b[d])
	}
	return nonZeroVV(out)
}

func refMissing(a, b crdt.VersionVector) []crdt.Range {
	var out []crdt.Range
	for _, d := range refUnion(a, b) {
		if a[d] > b[d] {
			out = append(out, crdt.Range{Device: d, After: b[d], Through: a[d]})
		}
	}
	return out
}

func nonZeroVV(v map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for d, s := range v {
		if s != 0 {
			out[d] = s
		}
	}
	return out
}

// sameVV compares vectors the way replicas do: a zero entry is no entry.
func sameVV(a, b crdt.VersionVector) bool { return maps.Equal(nonZeroVV(a), nonZeroVV(b)) }

var vvDevices = []string{"12D3KooA", "12D3KooB", "12D3KooC", "12D3KooD", "12D3KooE", "x"}

// randomVV draws small vectors over few devices so that equal, before,
// after and concurrent pairs all turn up often. It sometimes returns nil
// and sometimes holds explicit zero entries.
func randomVV(r *rand.Rand) crdt.VersionVector {
	if r.IntN(10) == 0 {
		return nil
	}
	v := crdt.VersionVector{}
	for _, d := range vvDevices {
		if r.IntN(3) != 0 {
			v[d] = uint64(r.IntN(4))
		}
	}
	return v
}

func TestVersionVectorAgainstReference(t *testing.T) {
	r := newRand(10)
	seen := map[crdt.Ordering]int{}
	for i := range 5000 {
		a, b := randomVV(r), randomVV(r)
		if r.IntN(8) == 0 { // equal content, perhaps spelled with a zero entry
			b = a.Clone()
			if r.IntN(2) == 0 {
				b[pick(r, vvDevices)+"-none"] = 0
			}
		}
		got := a.Compare(b)
		seen[got]++
		if want := refCompare(a, b); got != want {
			t.Fatalf("case %d: %v.Compare(%v) = %v, want %v", i, a, b, got, want)
		}
		if got, want := a.Dominates(b), refDominates(a, b); got != want {
			t.Fatalf("case %d: %v.Dominates(%v) = %v, want %v", i, a, b, got, want)
		}
		if got, want := a.Missing(b), refMissing(a, b); !slices.Equal(got, want) {
			t.Fatalf("case %d: %v.Missing(%v) = %v, want %v", i, a, b, got, want)
		}
		m := a.Clone()
		m.Merge(b)
		if want := refMerge(a, b); !maps.Equal(nonZeroVV(m), want) {
			t.Fatalf("case %d: %v.Merge(%v) = %v, want %v", i, a, b, m, want)
		}
		// Compare is antisymmetric.
		back := b.Compare(a)
		if (got == crdt.Before) != (back == crdt.After) || (got == crdt.Equal) != (back == crdt.Equal) {
			t.Fatalf("case %d: Compare not antisymmetric: %v then %v", i, got, back)
		}
		// Sending what Missing lists makes the receiver dominate.
		recv := b.Clone()
		for _, rg := range a.Missing(b) {
			if rg.After >= rg.Through || recv.Get(rg.Device) != rg.After {
				t.Fatalf("case %d: bad range %+v for receiver %v", i, rg, b)
			}
			recv.Advance(rg.Device, rg.Through)
		}
		if !recv.Dominates(a) {
			t.Fatalf("case %d: receiver %v does not dominate %v after Missing", i, recv, a)
		}
		// Advance only ever raises.
		d, s := pick(r, vvDevices), uint64(r.IntN(5))
		adv := a.Clone()
		adv.Advance(d, s)
		if want := max(a[d], s); adv.Get(d) != want {
			t.Fatalf("case %d: Advance(%s, %d) on %v gives %d, want %d", i, d, s, a, adv.Get(d), want)
		}
		if !adv.Dominates(a) {
			t.Fatalf("case %d: Advance lowered %v to %v", i, a, adv)
		}
	}
	for _, o := range []crdt.Ordering{crdt.Equal, crdt.Before, crdt.After, crdt.Concurrent} {
		if seen[o] < 100 {
			t.Errorf("generator too narrow: only %d %v pairs", seen[o], o)
		}
	}
}

func TestVersionVectorQuickAgainstReference(t *testing.T) {
	// testing/quick draws maps with arbitrary keys and full-range values.
	f := func(a, b map[string]uint64) bool {
		va, vb := crdt.VersionVector(a), crdt.VersionVector(b)
		m := va.Clone()
		m.Merge(vb)
		return va.Compare(vb) == refCompare(va, vb) && va.Dominates(vb) == refDominates(va, vb) &&
			slices.Equal(va.Missing(vb), refMissing(va, vb)) && maps.Equal(nonZeroVV(m), refMerge(va, vb))
	}
	if err := quickCheck(f, 11, 1000); err != nil {
		t.Fatal(err)
	}
}

func TestVersionVectorMergeLaws(t *testing.T) {
	r := newRand(12)
	merged := func(vs ...crdt.VersionVector) crdt.VersionVector {
		out := crdt.VersionVector{}
		for _, v := range vs {
			out.Merge(v)
		}
		return out
	}
	for i := range 2000 {
		a, b, c := randomVV(r), randomVV(r), randomVV(r)
		if !sameVV(merged(a, b), merged(b, a)) {
			t.Fatalf("case %d: merge not commutative for %v, %v", i, a, b)
		}
		ab := merged(a, b)
		bc := merged(b, c)
		if !sameVV(merged(ab, c), merged(a, bc)) {
			t.Fatalf("case %d: merge not associative for %v, %v, %v", i, a, b, c)
		}
		aa := a.Clone()
		aa.Merge(a)
		if !sameVV(aa, a) {
			t.Fatalf("case %d: merge not idempotent for %v", i, a)
		}
		if !ab.Dominates(a) || !ab.Dominates(b) {
			t.Fatalf("case %d: merge %v does not dominate its inputs", i, ab)
		}
	}
}

func TestVersionVectorBasics(t *testing.T) {
	var nilVV crdt.VersionVector
	if nilVV.Get("a") != 0 || nilVV.Compare(crdt.VersionVector{"a": 0}) != crdt.Equal || len(nilVV.Devices()) != 0 {
		t.Fatal("nil vector must read as empty, equal to one holding only zeros")
	}
	v := crdt.VersionVector{"b": 2, "a": 3, "z": 0}
	if got := v.Devices(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Devices() = %v, want sorted non-zero ids", got)
	}
	if v.Sum() != 5 {
		t.Fatalf("Sum() = %d, want 5", v.Sum())
	}
	// a runs 1 past, z 4 past an absent entry; b is behind and counts 0.
	if got := v.Beyond(crdt.VersionVector{"a": 2, "b": 7, "z": 0, "y": 3}); got != 1 {
		t.Fatalf("Beyond = %d, want 1", got)
	}
	if got := (crdt.VersionVector{"z": 4}).Beyond(nil); got != 4 {
		t.Fatalf("Beyond(nil) = %d, want 4", got)
	}
	v.Advance("a", 1)
	if v.Get("a") != 3 {
		t.Fatal("Advance lowered an entry")
	}
	c := v.Clone()
	c.Advance("a", 9)
	if v.Get("a") != 3 {
		t.Fatal("Clone shares storage with the original")
	}
	for o, s := range map[crdt.Ordering]string{crdt.Equal: "equal", crdt.Before: "before", crdt.After: "after", crdt.Concurrent: "concurrent"} {
		if o.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(o), o.String(), s)
		}
	}
}

func TestVersionVectorBinaryRoundTrip(t *testing.T) {
	r := newRand(13)
	for i := range 2000 {
		v := randomVV(r)
		b, err := v.Encode()
		if err != nil {
			t.Fatalf("case %d: Encode(%v): %v", i, v, err)
		}
		got, err := crdt.DecodeVersionVector(b)
		if err != nil {
			t.Fatalf("case %d: DecodeVersionVector(%x) of %v: %v", i, b, v, err)
		}
		if got == nil || !maps.Equal(got, crdt.VersionVector(nonZeroVV(v))) {
			t.Fatalf("case %d: round trip of %v gave %v", i, v, got)
		}
		again, err := got.Encode()
		if err != nil || string(again) != string(b) {
			t.Fatalf("case %d: re-encoding differs: %x vs %x", i, again, b)
		}
	}
	b, err := crdt.VersionVector(nil).Encode()
	if err != nil || fmt.Sprintf("%x", b) != "a0" {
		t.Fatalf("empty vector encodes as %x, %v; want a0", b, err)
	}
}

func TestDecodeVersionVectorRejects(t *testing.T) {
	for name, h := range map[string]string{
		"zero entry":            "a1616100",
		"empty device id":       "a16001",
		"duplicate device":      "a2616101616102",
		"unsorted keys":         "a2616201616101",
		"non-minimal seq":       "a161611801",
		"non-minimal key len":   "a178016101",
		"indefinite-length map": "bf616101ff",
		"null":                  "f6",
		"trailing bytes":        "a161610100",
		"truncated":             "a26161",
		"array":                 "8101",
		"negative seq":          "a1616120",
		"byte-string key":       "a1416101",
		"invalid utf-8 key":     "a161ff01",
		"tagged":                "c0a0",
		"empty input":           "",
	} {
		if v, err := crdt.DecodeVersionVector(mustHex(t, h)); !errors.Is(err, crdt.ErrDecode) {
			t.Errorf("%s (%s): got %v, %v; want ErrDecode", name, h, v, err)
		}
	}
}

func TestValidateVersionVector(t *testing.T) {
	if err := crdt.ValidateVersionVector(crdt.VersionVector{"a": 1}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []crdt.VersionVector{{"": 1}, {"a": 0}} {
		if err := crdt.ValidateVersionVector(bad); !errors.Is(err, crdt.ErrDecode) {
			t.Errorf("ValidateVersionVector(%v) = %v, want ErrDecode", bad, err)
		}
	}
}
