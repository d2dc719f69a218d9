package crdt_test

import (
	"testing"

	"storemesh/crdt"
)

// Every decoder here reads bytes a peer sent. The property for each: it
// never panics, and whatever it accepts survives a re-encode — byte for byte
// where the decoder is canonical, as an equal value otherwise.

func FuzzDecodeVersionVector(f *testing.F) {
	r := newRand(50)
	for range 8 {
		b, err := randomVV(r).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, h := range []string{"a0", "f6", "a1616100", "a2616101616102", "a2616201616101", "a161611801"} {
		f.Add(mustHex(f, h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := crdt.DecodeVersionVector(b)
		if err != nil {
			return
		}
		if err := crdt.ValidateVersionVector(v); err != nil {
			t.Fatalf("decoded vector %v fails validation: %v", v, err)
		}
		again, err := v.Encode()
		if err != nil {
			t.Fatalf("re-encode %v: %v", v, err)
		}
		if string(again) != string(b) {
			t.Fatalf("canonical decoder accepted %x but re-encodes as %x", b, again)
		}
	})
}

func FuzzUnmarshalTimestamp(f *testing.F) {
	for _, ts := range []crdt.Timestamp{{}, {Wall: 1_700_000_000_000_000_000, Logical: 3}, {Wall: -1, Logical: 1 << 31}} {
		b, err := crdt.Marshal(ts)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(mustHex(f, "82180501"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ts crdt.Timestamp
		if err := crdt.Unmarshal(b, &ts); err != nil {
			return
		}
		reencodeEqual(t, ts, func(a, b crdt.Timestamp) bool { return a == b })
	})
}

func FuzzUnmarshalPNCounter(f *testing.F) {
	r := newRand(51)
	for range 6 {
		c, _ := randomCounter(r)
		b, err := crdt.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(mustHex(f, "82f6f6"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c crdt.PNCounter
		if err := crdt.Unmarshal(b, &c); err != nil {
			return
		}
		_ = c.Value() // totals from a peer may be huge; Value must still not panic
		reencodeEqual(t, c, func(a, b crdt.PNCounter) bool { return a.Equal(b) })
	})
}

func FuzzUnmarshalGSet(f *testing.F) {
	r := newRand(52)
	for range 6 {
		s, _ := randomGSet(f, r)
		b, err := crdt.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(mustHex(f, "8261626161"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s crdt.GSet[string]
		if err := crdt.Unmarshal(b, &s); err != nil {
			return
		}
		reencodeEqual(t, &s, func(a, b *crdt.GSet[string]) bool { return a.Equal(b) })
	})
}

func FuzzUnmarshalLWW(f *testing.F) {
	r := newRand(53)
	for range 6 {
		reg, _ := randomLWW(r)
		b, err := crdt.Marshal(reg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var reg crdt.LWW[string]
		if err := crdt.Unmarshal(b, &reg); err != nil {
			return
		}
		reencodeEqual(t, reg, func(a, b crdt.LWW[string]) bool { return a == b })
		// A decoded register merges like any other: both orders agree.
		var other crdt.LWW[string]
		other.Set("tea", crdt.Timestamp{Wall: 1}, "12D3KooA")
		if mergedLWW(reg, other) != mergedLWW(other, reg) {
			t.Fatalf("merge with decoded %+v not commutative", reg)
		}
	})
}

// reencodeEqual encodes v, decodes the bytes into a fresh value, checks it
// equals v, and checks the second encoding matches the first.
func reencodeEqual[T any](t *testing.T, v T, equal func(a, b T) bool) {
	t.Helper()
	b, err := crdt.Marshal(v)
	if err != nil {
		t.Fatalf("re-encode %+v: %v", v, err)
	}
	out := new(T) // for pointer types the decoder allocates the pointee
	if err := crdt.Unmarshal(b, out); err != nil {
		t.Fatalf("re-decode %x of %+v: %v", b, v, err)
	}
	if !equal(v, *out) {
		t.Fatalf("re-decoded %+v, want %+v", *out, v)
	}
	again, err := crdt.Marshal(*out)
	if err != nil || string(again) != string(b) {
		t.Fatalf("encoding not stable: %x then %x (%v)", b, again, err)
	}
}
