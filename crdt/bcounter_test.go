package crdt_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"storemesh/crdt"
)

// bEvent is one entry change of the reference model: a plain list of what
// happened, from which rights and value are summed the long way.
type bEvent struct {
	kind byte // 'm' mint, 't' transfer, 'u' use, 'x' reclaim
	i, j string
	n    uint64
}

func refRights(evs []bEvent, d string) int64 {
	var r int64
	for _, e := range evs {
		n := int64(e.n)
		switch e.kind {
		case 'm':
			if e.i == d {
				r += n
			}
		case 't':
			if e.j == d {
				r += n
			}
			if e.i == d {
				r -= n
			}
		case 'u':
			if e.i == d {
				r -= n
			}
		case 'x':
			if e.i == d {
				r += n
			}
			if e.j == d {
				r -= n
			}
		}
	}
	return r
}

func refValue(evs []bEvent) int64 {
	var v int64
	for _, e := range evs {
		switch e.kind {
		case 'm':
			v += int64(e.n)
		case 'u':
			v -= int64(e.n)
		}
	}
	return v
}

func applyUnchecked(c *crdt.BCounter, e bEvent) {
	switch e.kind {
	case 'm':
		c.Mint(e.i, e.n)
	case 't':
		c.AddTransfer(e.i, e.j, e.n)
	case 'u':
		c.AddUse(e.i, e.n)
	case 'x':
		c.AddReclaim(e.i, e.j, e.n)
	}
}

func randomBEvent(r *rand.Rand) bEvent {
	i := pick(r, counterDevices)
	j := pick(r, counterDevices)
	for j == i {
		j = pick(r, counterDevices)
	}
	return bEvent{kind: "mtux"[r.IntN(4)], i: i, j: j, n: r.Uint64N(20)}
}

func randomBCounter(r *rand.Rand) (crdt.BCounter, []bEvent) {
	var c crdt.BCounter
	var evs []bEvent
	for range r.IntN(15) {
		e := randomBEvent(r)
		applyUnchecked(&c, e)
		evs = append(evs, e)
	}
	return c, evs
}

func TestBCounterMatchesReference(t *testing.T) {
	r := newRand(40)
	for i := range 2000 {
		c, evs := randomBCounter(r)
		var sum int64
		for _, d := range counterDevices {
			if got, want := c.Rights(d), refRights(evs, d); got != want {
				t.Fatalf("case %d: Rights(%s) = %d, want %d (%+v)", i, d, got, want, evs)
			}
			sum += c.Rights(d)
		}
		if got, want := c.Value(), refValue(evs); got != want || sum != want {
			t.Fatalf("case %d: Value() = %d, Σ Rights = %d, want %d", i, got, sum, want)
		}
	}
}

func TestBCounterMergeLaws(t *testing.T) {
	r := newRand(41)
	merged := func(cs ...crdt.BCounter) crdt.BCounter {
		var out crdt.BCounter
		for _, c := range cs {
			out.Merge(c)
		}
		return out
	}
	for i := range 2000 {
		a, _ := randomBCounter(r)
		b, _ := randomBCounter(r)
		c, _ := randomBCounter(r)
		ab, ba := a.Clone(), b.Clone()
		ab.Merge(b)
		ba.Merge(a)
		if !ab.Equal(ba) {
			t.Fatalf("case %d: merge not commutative: %+v vs %+v", i, ab, ba)
		}
		left := merged(merged(a, b), c)
		right := a.Clone()
		right.Merge(merged(b, c))
		if !left.Equal(right) {
			t.Fatalf("case %d: merge not associative: %+v vs %+v", i, left, right)
		}
		aa := a.Clone()
		aa.Merge(a)
		if !aa.Equal(a) {
			t.Fatalf("case %d: merge not idempotent", i)
		}
		// Merging a later state of the same history changes nothing more
		// than taking the later state.
		later := a.Clone()
		e := randomBEvent(r)
		applyUnchecked(&later, e)
		al := a.Clone()
		al.Merge(later)
		if !al.Equal(later) {
			t.Fatalf("case %d: merging an older state into a newer one changed it", i)
		}
	}
}

// TestBCounterNeverNegative is the escrow property: devices act only
// through the checked operations on their own replica, and replicas merge
// each other's whole states in any order, with duplicates. Whatever
// happens, no replica's view and not the union of all of them shows a
// device with negative rights or a negative value. A device whose units
// are reclaimed is gone: it never acts again, and the reclaimer has heard
// its last state (the one case the checks cannot cover, see BCounter's
// doc).
func TestBCounterNeverNegative(t *testing.T) {
	r := newRand(42)
	for trial := range 500 {
		n := 2 + r.IntN(4)
		devs := make([]string, n)
		for i := range devs {
			devs[i] = counterDevices[i%len(counterDevices)] + string(rune('0'+i))
		}
		reps := make([]crdt.BCounter, n)
		gone := make([]bool, n)
		var refused, done int
		for step := range 80 {
			i := r.IntN(n)
			if gone[i] {
				continue
			}
			me, other := devs[i], r.IntN(n)
			var err error
			switch r.IntN(6) {
			case 0:
				reps[i].Mint(me, r.Uint64N(4))
			case 1:
				if other != i {
					err = reps[i].Transfer(me, devs[other], r.Uint64N(4))
				}
			case 2, 3:
				err = reps[i].Use(me, r.Uint64N(3))
			case 4:
				reps[i].Merge(reps[other].Clone())
			case 5:
				// other leaves for good (lost, revoked); i has heard
				// its last state (the ledger's write-off names the
				// device's seq it cuts at for this reason).
				if other != i && r.IntN(4) == 0 && !gone[other] {
					gone[other] = true
					reps[i].Merge(reps[other].Clone())
					if held := reps[i].Rights(devs[other]); held > 0 {
						err = reps[i].Reclaim(me, devs[other], uint64(held))
					}
				}
			}
			if errors.Is(err, crdt.ErrInsufficientRights) {
				refused++
			} else if err == nil {
				done++
			}
			all := mergeAll(reps)
			for k := range reps {
				checkNonNegative(t, trial, step, "replica "+devs[k], &reps[k], devs)
			}
			checkNonNegative(t, trial, step, "union", &all, devs)
		}
		_ = refused
		_ = done
	}
}

func mergeAll(reps []crdt.BCounter) crdt.BCounter {
	var out crdt.BCounter
	for _, c := range reps {
		out.Merge(c)
	}
	return out
}

func checkNonNegative(t *testing.T, trial, step int, who string, c *crdt.BCounter, devs []string) {
	t.Helper()
	if c.Value() < 0 {
		t.Fatalf("trial %d step %d: %s: value %d < 0 (%+v)", trial, step, who, c.Value(), *c)
	}
	for _, d := range devs {
		if c.Rights(d) < 0 {
			t.Fatalf("trial %d step %d: %s: Rights(%s) = %d < 0 (%+v)", trial, step, who, d, c.Rights(d), *c)
		}
	}
}

func TestBCounterChecksRefuse(t *testing.T) {
	var c crdt.BCounter
	c.Mint("a", 3)
	if err := c.Use("a", 4); !errors.Is(err, crdt.ErrInsufficientRights) {
		t.Fatalf("Use beyond rights: %v", err)
	}
	if err := c.Transfer("a", "b", 4); !errors.Is(err, crdt.ErrInsufficientRights) {
		t.Fatalf("Transfer beyond rights: %v", err)
	}
	if err := c.Transfer("a", "a", 1); err == nil {
		t.Fatal("transfer to oneself accepted")
	}
	if err := c.Transfer("a", "b", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Use("b", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Use("b", 1); !errors.Is(err, crdt.ErrInsufficientRights) {
		t.Fatalf("b spent twice: %v", err)
	}
	if err := c.Reclaim("hq", "a", 2); !errors.Is(err, crdt.ErrInsufficientRights) {
		t.Fatalf("reclaim beyond rights: %v", err)
	}
	if err := c.Reclaim("hq", "a", 1); err != nil {
		t.Fatal(err)
	}
	if c.Rights("a") != 0 || c.Rights("hq") != 1 || c.Value() != 1 || c.Received("hq") != 1 || c.Received("b") != 2 {
		t.Fatalf("after reclaim: a=%d hq=%d value=%d", c.Rights("a"), c.Rights("hq"), c.Value())
	}
	// The gone device acts anyway: its overspend shows, it is not hidden.
	c.AddUse("a", 1)
	if c.Rights("a") != -1 || c.Value() != 0 {
		t.Fatalf("overspend hidden: a=%d value=%d", c.Rights("a"), c.Value())
	}
}

// TestBCounterQuickSumOfRights: for any entries, the value is the sum of
// every device's rights (testing/quick over raw entry amounts).
func TestBCounterQuickSumOfRights(t *testing.T) {
	f := func(mints, hands, uses [4]uint16, reclaim uint16) bool {
		var c crdt.BCounter
		for k, d := range counterDevices {
			c.Mint(d, uint64(mints[k]))
			c.AddTransfer(d, counterDevices[(k+1)%4], uint64(hands[k]))
			c.AddUse(d, uint64(uses[k]))
		}
		c.AddReclaim(counterDevices[0], counterDevices[2], uint64(reclaim))
		var sum int64
		for _, d := range c.Devices() {
			sum += c.Rights(d)
		}
		cl := c.Clone()
		return sum == c.Value() && cl.Equal(c)
	}
	if err := quickCheck(f, 43, 500); err != nil {
		t.Fatal(err)
	}
}
