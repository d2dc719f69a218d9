package crdt

import "maps"

// PNCounter is a counter any replica may increment or decrement: one
// grow-only increment total and one grow-only decrement total per device.
// Its value is the sum of increments minus the sum of decrements.
//
// Each device's totals only grow, so merging is a pointwise maximum.
// Callers bound the amounts they add (the ledger caps quantities) so that
// totals stay far below 2^63.
type PNCounter struct {
	_ struct{}          `cbor:",toarray"`
	P map[string]uint64 // increments per device
	N map[string]uint64 // decrements per device
}

// Inc adds n to device's increment total.
func (c *PNCounter) Inc(device string, n uint64) {
	if c.P == nil {
		c.P = map[string]uint64{}
	}
	c.P[device] += n
}

// Dec adds n to device's decrement total.
func (c *PNCounter) Dec(device string, n uint64) {
	if c.N == nil {
		c.N = map[string]uint64{}
	}
	c.N[device] += n
}

// Value is the sum of increments minus the sum of decrements.
func (c *PNCounter) Value() int64 {
	var v int64
	for _, n := range c.P {
		v += int64(n)
	}
	for _, n := range c.N {
		v -= int64(n)
	}
	return v
}

// Merge folds o into c (pointwise maximum of both totals).
func (c *PNCounter) Merge(o PNCounter) {
	c.P = mergeMax(c.P, o.P)
	c.N = mergeMax(c.N, o.N)
}

// Equal reports whether c and o hold the same totals.
func (c *PNCounter) Equal(o PNCounter) bool {
	return maps.Equal(nonZero(c.P), nonZero(o.P)) && maps.Equal(nonZero(c.N), nonZero(o.N))
}

// Clone returns an independent copy.
func (c *PNCounter) Clone() PNCounter {
	return PNCounter{P: maps.Clone(c.P), N: maps.Clone(c.N)}
}

func mergeMax(dst, src map[string]uint64) map[string]uint64 {
	if len(src) > 0 && dst == nil {
		dst = make(map[string]uint64, len(src))
	}
	for d, n := range src {
		if n > dst[d] {
			dst[d] = n
		}
	}
	return dst
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
