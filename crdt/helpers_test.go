package crdt_test

import (
	"encoding/hex"
	oldrand "math/rand" // only as testing/quick's source, always explicitly seeded
	"math/rand/v2"
	"testing"
	"testing/quick"
)

// newRand returns a deterministic source; every random test names its seed
// so a failure replays exactly.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// quickConfig makes testing/quick deterministic: left nil, its Rand would be
// seeded from the wall clock.
func quickConfig(seed int64, count int) *quick.Config {
	return &quick.Config{MaxCount: count, Rand: oldrand.New(oldrand.NewSource(seed))}
}

// deliveryOrder returns the indexes 0..n-1 in a random order with random
// duplicates mixed in: a gossiping network delivers every update at least
// once, in no particular order, sometimes more than once.
func deliveryOrder(r *rand.Rand, n int) []int {
	order := r.Perm(n)
	for dups := r.IntN(n + 1); dups > 0; dups-- {
		i := r.IntN(len(order) + 1)
		order = append(order[:i], append([]int{r.IntN(n)}, order[i:]...)...)
	}
	return order
}

// pick returns a random element of xs.
func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// quickCheck runs testing/quick with a fixed seed.
func quickCheck(f any, seed int64, count int) error { return quick.Check(f, quickConfig(seed, count)) }
