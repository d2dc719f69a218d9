package crdt_test

import (
	"math/rand/v2"
	"testing"

	"storemesh/crdt"
)

var counterDevices = []string{"12D3KooA", "12D3KooB", "12D3KooC", "12D3KooD"}

// randomCounter builds a counter state from a random operation sequence
// (any device, including zero amounts that leave explicit zero entries) and
// returns it with the reference value: the plain sum of what was applied.
func randomCounter(r *rand.Rand) (crdt.PNCounter, int64) {
	var c crdt.PNCounter
	var sum int64
	for range r.IntN(12) {
		d, n := pick(r, counterDevices), r.Uint64N(100)
		if r.IntN(2) == 0 {
			c.Inc(d, n)
			sum += int64(n)
		} else {
			c.Dec(d, n)
			sum -= int64(n)
		}
	}
	return c, sum
}

func mergedCounter(cs ...crdt.PNCounter) crdt.PNCounter {
	var out crdt.PNCounter
	for _, c := range cs {
		out.Merge(c)
	}
	return out
}

func TestPNCounterValueMatchesReference(t *testing.T) {
	r := newRand(20)
	for i := range 2000 {
		c, want := randomCounter(r)
		if got := c.Value(); got != want {
			t.Fatalf("case %d: Value() = %d, want %d (%+v)", i, got, want, c)
		}
	}
}

func TestPNCounterMergeLaws(t *testing.T) {
	r := newRand(21)
	for i := range 2000 {
		a, _ := randomCounter(r)
		b, _ := randomCounter(r)
		c, _ := randomCounter(r)
		ab, ba := a.Clone(), b.Clone()
		ab.Merge(b)
		ba.Merge(a)
		if !ab.Equal(ba) {
			t.Fatalf("case %d: merge not commutative: %+v vs %+v", i, ab, ba)
		}
		left := mergedCounter(mergedCounter(a, b), c)
		right := a.Clone()
		right.Merge(mergedCounter(b, c))
		if !left.Equal(right) {
			t.Fatalf("case %d: merge not associative: %+v vs %+v", i, left, right)
		}
		aa := a.Clone()
		aa.Merge(a)
		if !aa.Equal(a) {
			t.Fatalf("case %d: merge not idempotent: %+v vs %+v", i, aa, a)
		}
	}
}

// TestPNCounterAnyDeliveryOrder models a store: each terminal only adds to
// its own increment and decrement totals, and gossips its whole state now
// and then, also after merging what it heard. Whatever order (with
// duplicates) the states reach an observer in, it ends equal to every other
// observer and its value is the sum of all sales and receipts.
func TestPNCounterAnyDeliveryOrder(t *testing.T) {
	r := newRand(22)
	for trial := range 200 {
		n := 1 + r.IntN(5)
		replicas := make([]crdt.PNCounter, n)
		var sent []crdt.PNCounter
		var want int64
		for range r.IntN(40) {
			i := r.IntN(n)
			dev := counterDevices[i%len(counterDevices)] + string(rune('0'+i))
			switch r.IntN(4) {
			case 0: // stock received
				q := r.Uint64N(50)
				replicas[i].Inc(dev, q)
				want += int64(q)
			case 1: // sale
				q := r.Uint64N(5)
				replicas[i].Dec(dev, q)
				want -= int64(q)
			case 2: // hears a peer's latest state
				replicas[i].Merge(replicas[r.IntN(n)].Clone())
			case 3: // gossips its state
				sent = append(sent, replicas[i].Clone())
			}
		}
		for i := range replicas {
			sent = append(sent, replicas[i].Clone()) // final anti-entropy round
		}
		var first crdt.PNCounter
		for obs := range 5 {
			var got crdt.PNCounter
			for _, k := range deliveryOrder(r, len(sent)) {
				got.Merge(sent[k])
			}
			if got.Value() != want {
				t.Fatalf("trial %d observer %d: Value() = %d, want %d", trial, obs, got.Value(), want)
			}
			if obs == 0 {
				first = got
			} else if !got.Equal(first) {
				t.Fatalf("trial %d observer %d: %+v differs from %+v", trial, obs, got, first)
			}
		}
	}
}

func TestPNCounterZeroValueAndEqual(t *testing.T) {
	var zero crdt.PNCounter
	if zero.Value() != 0 || !zero.Equal(crdt.PNCounter{P: map[string]uint64{"a": 0}}) {
		t.Fatal("zero counter must equal one holding only zero totals")
	}
	var c crdt.PNCounter
	c.Merge(zero)
	c.Inc("a", 5)
	c.Dec("b", 2)
	c.Dec("a", 1)
	if c.Value() != 2 {
		t.Fatalf("Value() = %d, want 2", c.Value())
	}
	cl := c.Clone()
	cl.Inc("a", 10)
	if c.Value() != 2 || c.Equal(cl) {
		t.Fatal("Clone shares storage with the original")
	}
	if c.Equal(crdt.PNCounter{P: map[string]uint64{"a": 5}, N: map[string]uint64{"a": 1}}) {
		t.Fatal("Equal ignores a decrement total")
	}
}

func TestPNCounterCBORRoundTrip(t *testing.T) {
	r := newRand(23)
	for i := range 500 {
		c, _ := randomCounter(r)
		b, err := crdt.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var out crdt.PNCounter
		if err := crdt.Unmarshal(b, &out); err != nil {
			t.Fatalf("case %d: Unmarshal(%x): %v", i, b, err)
		}
		if !out.Equal(c) || out.Value() != c.Value() {
			t.Fatalf("case %d: round trip of %+v gave %+v", i, c, out)
		}
	}
}
