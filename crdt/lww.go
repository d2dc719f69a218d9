package crdt

import (
	"bytes"
	"errors"
	"fmt"
)

var errNotSortedSet = fmt.Errorf("%w: set elements not strictly ascending", ErrDecode)

// LWW is a last-writer-wins register. A write carries the HLC timestamp and
// device of its op; the write with the greatest (timestamp, device) wins on
// every replica. Two writes with the same timestamp and device (which only a
// forked device can make) are ordered by their encoded value, so the winner
// is still the same everywhere.
type LWW[T any] struct {
	_      struct{} `cbor:",toarray"`
	Value  T
	TS     Timestamp
	Device string
}

// IsSet reports whether the register has seen any write.
func (r *LWW[T]) IsSet() bool { return r.Device != "" || !r.TS.IsZero() }

// Set applies a write and reports whether it became the current value.
//
// The unset register takes part in the order as the write (zero timestamp,
// empty device, zero value), so even writes carrying a zero timestamp and
// no device (which decoded peer bytes can hold) pick the same winner in any
// order.
func (r *LWW[T]) Set(v T, ts Timestamp, device string) bool {
	cand := LWW[T]{Value: v, TS: ts, Device: device}
	if !cand.beats(r) {
		return false
	}
	*r = cand
	return true
}

// Merge keeps whichever of r and o wins.
func (r *LWW[T]) Merge(o LWW[T]) { r.Set(o.Value, o.TS, o.Device) }

func (r *LWW[T]) beats(o *LWW[T]) bool {
	if c := r.TS.Compare(o.TS); c != 0 {
		return c > 0
	}
	if r.Device != o.Device {
		return r.Device > o.Device
	}
	a, errA := Marshal(r.Value)
	b, errB := Marshal(o.Value)
	if err := errors.Join(errA, errB); err != nil {
		return false // unencodable values cannot come from decoded ops
	}
	return bytes.Compare(a, b) > 0
}
