package crdt_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"testing/quick"
	"time"

	"storemesh/crdt"
)

// fakePhys is an injected physical clock the test moves by hand.
type fakePhys struct{ now int64 }

func (f *fakePhys) read() int64 { return f.now }

const testMaxOffset = 500 * time.Millisecond

func TestClockNowNeverGoesBackwards(t *testing.T) {
	r := newRand(1)
	phys := &fakePhys{now: 1_700_000_000_000_000_000}
	c := crdt.NewClock(phys.read, testMaxOffset)
	prev := c.Now()
	for i := range 20_000 {
		switch r.IntN(5) {
		case 0: // physical clock jumps back (NTP step, RTC reset)
			phys.now -= r.Int64N(int64(time.Hour))
		case 1: // stands still
		case 2: // small step forward
			phys.now += r.Int64N(1_000)
		case 3: // large step forward
			phys.now += r.Int64N(int64(time.Second))
		case 4: // a peer's timestamp, within the offset, folded in
			remote := crdt.Timestamp{Wall: phys.now + r.Int64N(int64(testMaxOffset)), Logical: r.Uint32N(10)}
			if err := c.Update(remote); err != nil {
				t.Fatalf("step %d: Update(%v) within offset: %v", i, remote, err)
			}
			if c.Last().Less(remote) {
				t.Fatalf("step %d: Last %v before accepted remote %v", i, c.Last(), remote)
			}
		}
		now := c.Now()
		if !prev.Less(now) {
			t.Fatalf("step %d: Now() = %v, not after previous reading %v (phys %d)", i, now, prev, phys.now)
		}
		if now != c.Last() {
			t.Fatalf("step %d: Last() = %v, want the reading just taken %v", i, c.Last(), now)
		}
		prev = now
	}
}

func TestClockNowFollowsPhysicalClock(t *testing.T) {
	phys := &fakePhys{now: 1000}
	c := crdt.NewClock(phys.read, testMaxOffset)
	if got, want := c.Now(), (crdt.Timestamp{Wall: 1000}); got != want {
		t.Fatalf("Now() = %v, want %v", got, want)
	}
	if got, want := c.Now(), (crdt.Timestamp{Wall: 1000, Logical: 1}); got != want {
		t.Fatalf("Now() with a still clock = %v, want %v", got, want)
	}
	phys.now = 2000
	if got, want := c.Now(), (crdt.Timestamp{Wall: 2000}); got != want {
		t.Fatalf("Now() after the clock moved = %v, want %v (logical resets)", got, want)
	}
}

func TestClockUpdateWithinOffset(t *testing.T) {
	for _, ahead := range []int64{-int64(time.Hour), 0, 1, int64(testMaxOffset) - 1, int64(testMaxOffset)} {
		t.Run(fmt.Sprint(ahead), func(t *testing.T) {
			phys := &fakePhys{now: 1_000_000_000}
			c := crdt.NewClock(phys.read, testMaxOffset)
			c.Now()
			remote := crdt.Timestamp{Wall: phys.now + ahead, Logical: 7}
			if err := c.Update(remote); err != nil {
				t.Fatalf("Update(%v) %dns ahead: %v", remote, ahead, err)
			}
			for range 3 {
				if now := c.Now(); !remote.Less(now) {
					t.Fatalf("Now() = %v, not after accepted remote %v", now, remote)
				}
			}
			phys.now -= int64(time.Minute) // even after the physical clock steps back
			if now := c.Now(); !remote.Less(now) {
				t.Fatalf("Now() = %v after a clock step back, not after remote %v", now, remote)
			}
		})
	}
}

func TestClockUpdateBeyondOffset(t *testing.T) {
	phys := &fakePhys{now: 1_000_000_000}
	c := crdt.NewClock(phys.read, testMaxOffset)
	before := c.Now()
	remote := crdt.Timestamp{Wall: phys.now + int64(testMaxOffset) + 1}
	err := c.Update(remote)
	if err == nil {
		t.Fatalf("Update(%v) beyond max offset: no error", remote)
	}
	if !crdt.IsClockOffset(err) || !errors.Is(err, crdt.ErrClockOffset) {
		t.Fatalf("Update error %v does not satisfy IsClockOffset", err)
	}
	if got := c.Last(); got != before {
		t.Fatalf("rejected remote moved the clock: Last() = %v, want %v", got, before)
	}
	if now := c.Now(); !now.Less(remote) {
		t.Fatalf("Now() = %v followed a rejected remote %v", now, remote)
	}
	if !crdt.IsClockOffset(fmt.Errorf("sync: %w", err)) {
		t.Fatal("IsClockOffset does not see through wrapping")
	}
	if crdt.IsClockOffset(nil) || crdt.IsClockOffset(crdt.ErrDecode) {
		t.Fatal("IsClockOffset true for an unrelated error")
	}
}

func TestClockWithoutBoundFollowsAnyRemote(t *testing.T) {
	phys := &fakePhys{now: 10}
	c := crdt.NewClock(phys.read, 0)
	remote := crdt.Timestamp{Wall: math.MaxInt64 / 2}
	if err := c.Update(remote); err != nil {
		t.Fatalf("Update with no max offset: %v", err)
	}
	if now := c.Now(); !remote.Less(now) {
		t.Fatalf("Now() = %v, not after %v", now, remote)
	}
}

func TestClockLogicalOverflowBorrowsNanosecond(t *testing.T) {
	phys := &fakePhys{now: 50}
	c := crdt.NewClock(phys.read, testMaxOffset)
	full := crdt.Timestamp{Wall: 100, Logical: math.MaxUint32}
	c.Restore(full)
	if got, want := c.Now(), (crdt.Timestamp{Wall: 101}); got != want {
		t.Fatalf("Now() after a full logical counter = %v, want %v", got, want)
	}
	if got, want := c.Now(), (crdt.Timestamp{Wall: 101, Logical: 1}); got != want {
		t.Fatalf("next Now() = %v, want %v", got, want)
	}

	// The same through Update: a remote with a full counter.
	phys.now = 1000
	c = crdt.NewClock(phys.read, testMaxOffset)
	remote := crdt.Timestamp{Wall: 1000, Logical: math.MaxUint32}
	if err := c.Update(remote); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Now(), (crdt.Timestamp{Wall: 1001}); got != want {
		t.Fatalf("Now() after remote %v = %v, want %v", remote, got, want)
	}
}

func TestClockRestoreNeverLowers(t *testing.T) {
	phys := &fakePhys{now: 5000}
	c := crdt.NewClock(phys.read, testMaxOffset)
	first := c.Now()
	c.Restore(crdt.Timestamp{Wall: 10})
	if c.Last() != first {
		t.Fatalf("Restore to an older timestamp moved the clock to %v", c.Last())
	}
	own := crdt.Timestamp{Wall: 5000 + int64(time.Hour)} // beyond MaxOffset: Restore ignores the bound
	c.Restore(own)
	if now := c.Now(); !own.Less(now) {
		t.Fatalf("Now() = %v, not after restored %v", now, own)
	}
}

// smallTimestamp draws from a tiny range so ties are common.
func smallTimestamp(r interface{ IntN(int) int }) crdt.Timestamp {
	return crdt.Timestamp{Wall: int64(r.IntN(3) - 1), Logical: uint32(r.IntN(3))}
}

func TestTimestampCompareTotalOrder(t *testing.T) {
	ref := func(a, b crdt.Timestamp) int { // lexicographic on (Wall, Logical)
		if a.Wall != b.Wall {
			if a.Wall < b.Wall {
				return -1
			}
			return 1
		}
		if a.Logical != b.Logical {
			if a.Logical < b.Logical {
				return -1
			}
			return 1
		}
		return 0
	}
	laws := func(a, b, c crdt.Timestamp) bool {
		ab, ba := a.Compare(b), b.Compare(a)
		switch {
		case ab != ref(a, b), ab != -ba: // matches reference; antisymmetric
			return false
		case (ab == 0) != (a == b): // only equal values compare equal
			return false
		case a.Compare(a) != 0:
			return false
		case ab <= 0 && b.Compare(c) <= 0 && a.Compare(c) > 0: // transitive
			return false
		case a.Less(b) != (ab < 0):
			return false
		}
		return true
	}
	if err := quick.Check(func(aw, bw, cw int64, al, bl, cl uint32) bool {
		return laws(crdt.Timestamp{Wall: aw, Logical: al}, crdt.Timestamp{Wall: bw, Logical: bl},
			crdt.Timestamp{Wall: cw, Logical: cl})
	}, quickConfig(2, 2000)); err != nil {
		t.Fatal(err)
	}
	r := newRand(3)
	for range 5000 {
		a, b, c := smallTimestamp(r), smallTimestamp(r), smallTimestamp(r)
		if !laws(a, b, c) {
			t.Fatalf("order laws fail for %v %v %v", a, b, c)
		}
	}
	// Sorting with Compare agrees with sorting by the reference.
	ts := make([]crdt.Timestamp, 200)
	for i := range ts {
		ts[i] = smallTimestamp(r)
	}
	got := slices.SortedFunc(slices.Values(ts), crdt.Timestamp.Compare)
	want := slices.SortedFunc(slices.Values(ts), ref)
	if !slices.Equal(got, want) {
		t.Fatal("sorting by Compare differs from the reference order")
	}
	if !(crdt.Timestamp{}).IsZero() || (crdt.Timestamp{Logical: 1}).IsZero() {
		t.Fatal("IsZero wrong")
	}
}

func TestTimestampCBORRoundTrip(t *testing.T) {
	roundTrip := func(wall int64, logical uint32) bool {
		in := crdt.Timestamp{Wall: wall, Logical: logical}
		b, err := crdt.Marshal(in)
		if err != nil {
			return false
		}
		var out crdt.Timestamp
		if err := crdt.Unmarshal(b, &out); err != nil || out != in {
			return false
		}
		again, err := crdt.Marshal(out)
		return err == nil && string(again) == string(b)
	}
	if err := quick.Check(roundTrip, quickConfig(4, 2000)); err != nil {
		t.Fatal(err)
	}
	for _, w := range []int64{0, -1, math.MinInt64, math.MaxInt64} {
		if !roundTrip(w, math.MaxUint32) || !roundTrip(w, 0) {
			t.Fatalf("round trip fails for wall %d", w)
		}
	}
	// Wire form: a two-element array [wall, logical].
	b, err := crdt.Marshal(crdt.Timestamp{Wall: 5, Logical: 1})
	if err != nil || fmt.Sprintf("%x", b) != "820501" {
		t.Fatalf("Marshal = %x, %v; want 820501", b, err)
	}
	var ts crdt.Timestamp
	for _, bad := range []string{"8205", "83050100", "820501ff", "a0", "82052001"} {
		if err := crdt.Unmarshal(mustHex(t, bad), &ts); !errors.Is(err, crdt.ErrDecode) {
			t.Errorf("Unmarshal(%s) = %v, want ErrDecode", bad, err)
		}
	}
}
