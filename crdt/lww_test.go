package crdt_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"storemesh/crdt"
)

type lwwWrite struct {
	V   string
	TS  crdt.Timestamp
	Dev string
}

var (
	lwwValues  = []string{"", "tea", "coffee", "cake", "thé"}
	lwwDevices = []string{"", "12D3KooA", "12D3KooB", "12D3KooC"}
)

// randomWrite draws from tiny ranges so equal timestamps, equal devices and
// equal (timestamp, device) pairs with different values (a forked device)
// all occur. The zero timestamp and empty device are included on purpose.
func randomWrite(r *rand.Rand) lwwWrite {
	return lwwWrite{
		V:   pick(r, lwwValues),
		TS:  crdt.Timestamp{Wall: int64(r.IntN(4)), Logical: uint32(r.IntN(3))},
		Dev: pick(r, lwwDevices),
	}
}

// refBeats is the reference order: (TS, Device, encoded value).
func refBeats(t testing.TB, a, b lwwWrite) bool {
	if c := a.TS.Compare(b.TS); c != 0 {
		return c > 0
	}
	if c := strings.Compare(a.Dev, b.Dev); c != 0 {
		return c > 0
	}
	ea, err := crdt.Marshal(a.V)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := crdt.Marshal(b.V)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Compare(ea, eb) > 0
}

// refWinner is the maximum write; with no writes, the unset register.
func refWinner(t testing.TB, ws []lwwWrite) crdt.LWW[string] {
	var best lwwWrite // the unset register, below every write in the order
	for _, w := range ws {
		if refBeats(t, w, best) {
			best = w
		}
	}
	return crdt.LWW[string]{Value: best.V, TS: best.TS, Device: best.Dev}
}

func randomLWW(r *rand.Rand) (crdt.LWW[string], []lwwWrite) {
	var reg crdt.LWW[string]
	var ws []lwwWrite
	for range r.IntN(6) {
		w := randomWrite(r)
		reg.Set(w.V, w.TS, w.Dev)
		ws = append(ws, w)
	}
	return reg, ws
}

func mergedLWW(rs ...crdt.LWW[string]) crdt.LWW[string] {
	var out crdt.LWW[string]
	for _, r := range rs {
		out.Merge(r)
	}
	return out
}

func TestLWWMatchesReference(t *testing.T) {
	r := newRand(40)
	for i := range 3000 {
		var reg crdt.LWW[string]
		var ws []lwwWrite
		for range 1 + r.IntN(6) {
			w := randomWrite(r)
			before := refWinner(t, ws)
			ws = append(ws, w)
			want := refWinner(t, ws)
			if got := reg.Set(w.V, w.TS, w.Dev); got != (want != before) {
				t.Fatalf("case %d: Set(%+v) = %v, but the winner went from %+v to %+v", i, w, got, before, want)
			}
			if reg != want {
				t.Fatalf("case %d: after %+v register is %+v, reference %+v", i, ws, reg, want)
			}
		}
	}
}

func TestLWWMergeLaws(t *testing.T) {
	r := newRand(41)
	for i := range 3000 {
		a, wa := randomLWW(r)
		b, wb := randomLWW(r)
		c, _ := randomLWW(r)
		if mergedLWW(a, b) != mergedLWW(b, a) {
			t.Fatalf("case %d: merge not commutative: %+v, %+v", i, a, b)
		}
		if mergedLWW(mergedLWW(a, b), c) != mergedLWW(a, mergedLWW(b, c)) {
			t.Fatalf("case %d: merge not associative: %+v, %+v, %+v", i, a, b, c)
		}
		aa := a
		aa.Merge(a)
		if aa != a {
			t.Fatalf("case %d: merge not idempotent: %+v", i, a)
		}
		if got, want := mergedLWW(a, b), refWinner(t, append(wa, wb...)); got != want {
			t.Fatalf("case %d: merge %+v, reference winner %+v", i, got, want)
		}
	}
}

// TestLWWAnyDeliveryOrder: several devices (some sharing an id, as a
// restored terminal would) write a price with clashing HLC readings and
// gossip their registers. Every observer, whatever order and duplicates it
// receives states or single writes in, picks the reference winner.
func TestLWWAnyDeliveryOrder(t *testing.T) {
	r := newRand(42)
	for trial := range 300 {
		n := 1 + r.IntN(5)
		replicas := make([]crdt.LWW[string], n)
		var sent []crdt.LWW[string]
		var writes []lwwWrite
		for range r.IntN(30) {
			i := r.IntN(n)
			switch r.IntN(3) {
			case 0:
				w := randomWrite(r)
				replicas[i].Set(w.V, w.TS, w.Dev)
				writes = append(writes, w)
			case 1:
				replicas[i].Merge(replicas[r.IntN(n)])
			case 2:
				sent = append(sent, replicas[i])
			}
		}
		sent = append(sent, replicas...)
		want := refWinner(t, writes)
		for obs := range 4 {
			var got crdt.LWW[string]
			for _, k := range deliveryOrder(r, len(sent)) {
				got.Merge(sent[k])
			}
			if got != want {
				t.Fatalf("trial %d observer %d: state delivery gives %+v, want %+v", trial, obs, got, want)
			}
			var byOp crdt.LWW[string]
			for _, k := range deliveryOrder(r, len(writes)) {
				byOp.Set(writes[k].V, writes[k].TS, writes[k].Dev)
			}
			if byOp != want {
				t.Fatalf("trial %d observer %d: op delivery gives %+v, want %+v", trial, obs, byOp, want)
			}
		}
	}
}

func TestLWWOrder(t *testing.T) {
	ts := func(w int64, l uint32) crdt.Timestamp { return crdt.Timestamp{Wall: w, Logical: l} }
	var reg crdt.LWW[string]
	if reg.IsSet() {
		t.Fatal("zero register reports set")
	}
	if !reg.Set("350", ts(10, 0), "B") || !reg.IsSet() {
		t.Fatal("first write not applied")
	}
	if reg.Set("300", ts(9, 5), "Z") {
		t.Fatal("an older timestamp won over a newer one")
	}
	if !reg.Set("360", ts(10, 1), "A") {
		t.Fatal("a newer logical reading lost")
	}
	if !reg.Set("370", ts(10, 1), "C") || reg.Set("380", ts(10, 1), "B") {
		t.Fatal("equal timestamps not ordered by device")
	}
	if reg.Value != "370" {
		t.Fatalf("Value = %q, want 370", reg.Value)
	}

	// Regression: writes without timestamp and device (only decoded peer
	// bytes can hold them) used to let the last arrival win, so merge was
	// not commutative. They are now ordered by encoded value like any tie.
	var a, b crdt.LWW[string]
	a.Set("a", crdt.Timestamp{}, "")
	b.Set("b", crdt.Timestamp{}, "")
	if ab, ba := mergedLWW(a, b), mergedLWW(b, a); ab != ba || ab.Value != "b" {
		t.Fatalf("zero-timestamp writes: %+v vs %+v, want value b both ways", ab, ba)
	}
}

func TestLWWCBORRoundTrip(t *testing.T) {
	r := newRand(43)
	for i := range 500 {
		reg, _ := randomLWW(r)
		b, err := crdt.Marshal(reg)
		if err != nil {
			t.Fatal(err)
		}
		var out crdt.LWW[string]
		if err := crdt.UnmarshalCanonical(b, &out); err != nil {
			t.Fatalf("case %d: UnmarshalCanonical(%x): %v", i, b, err)
		}
		if out != reg {
			t.Fatalf("case %d: round trip %+v gave %+v", i, reg, out)
		}
	}
}
