package crdt

import (
	"fmt"
	"slices"
	"strings"
)

// VersionVector maps a device id to the highest contiguous sequence number
// held from that device. A device missing from the map has seq 0: nothing
// held. The zero value (nil) is an empty vector that reads fine but cannot be
// written; use make or Clone first.
type VersionVector map[string]uint64

// Ordering is the result of comparing two version vectors.
type Ordering int

const (
	Equal      Ordering = iota // both hold the same ops
	Before                     // the receiver holds a strict subset
	After                      // the receiver holds a strict superset
	Concurrent                 // each holds something the other lacks
)

func (o Ordering) String() string {
	switch o {
	case Equal:
		return "equal"
	case Before:
		return "before"
	case After:
		return "after"
	}
	return "concurrent"
}

// Get returns the seq held for device (0 when none).
func (v VersionVector) Get(device string) uint64 { return v[device] }

// Advance raises device's entry to seq; lower values are ignored, so
// entries only ever grow.
func (v VersionVector) Advance(device string, seq uint64) {
	if seq > v[device] {
		v[device] = seq
	}
}

// Clone returns an independent copy.
func (v VersionVector) Clone() VersionVector {
	out := make(VersionVector, len(v))
	for d, s := range v {
		out[d] = s
	}
	return out
}

// Merge raises every entry of v to at least o's (pointwise maximum).
func (v VersionVector) Merge(o VersionVector) {
	for d, s := range o {
		v.Advance(d, s)
	}
}

// Compare tells how v relates to o.
func (v VersionVector) Compare(o VersionVector) Ordering {
	less, more := false, false
	for d, s := range v {
		if t := o[d]; s > t {
			more = true
		} else if s < t {
			less = true
		}
	}
	for d, t := range o {
		if _, ok := v[d]; !ok && t > 0 {
			less = true
		}
	}
	switch {
	case less && more:
		return Concurrent
	case less:
		return Before
	case more:
		return After
	}
	return Equal
}

// Dominates reports whether v holds everything o holds.
func (v VersionVector) Dominates(o VersionVector) bool {
	c := v.Compare(o)
	return c == Equal || c == After
}

// Range is the half-open interval of seqs (After, Through] of one device.
type Range struct {
	Device  string
	After   uint64
	Through uint64
}

// Missing lists, per device in sorted order, the seqs v holds that o lacks.
// It allocates only when something is missing: sync calls it on every tick.
func (v VersionVector) Missing(o VersionVector) []Range {
	var out []Range
	for d, s := range v {
		if t := o[d]; s > t {
			out = append(out, Range{Device: d, After: t, Through: s})
		}
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b Range) int { return strings.Compare(a.Device, b.Device) })
	}
	return out
}

// Devices returns the device ids with a non-zero entry, sorted.
func (v VersionVector) Devices() []string {
	out := make([]string, 0, len(v))
	for d, s := range v {
		if s > 0 {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Sum returns the total number of ops the vector covers.
func (v VersionVector) Sum() uint64 {
	var n uint64
	for _, s := range v {
		n += s
	}
	return n
}

// Beyond counts the ops v covers that o does not: for each device, how
// far v's seq runs past o's. A replica's vector Beyond what HQ is known to
// hold is its count of ops queued for HQ.
func (v VersionVector) Beyond(o VersionVector) uint64 {
	var n uint64
	for d, s := range v {
		if t := o[d]; s > t {
			n += s - t
		}
	}
	return n
}

// Encode encodes v as a deterministic CBOR map (device → seq), the
// compact form exchanged between peers. Zero entries are left out.
func (v VersionVector) Encode() ([]byte, error) {
	clean := make(map[string]uint64, len(v))
	for d, s := range v {
		if s > 0 {
			clean[d] = s
		}
	}
	return Marshal(clean)
}

// DecodeVersionVector decodes bytes from Encode. It rejects
// duplicate devices, empty device ids and zero entries.
func DecodeVersionVector(b []byte) (VersionVector, error) {
	var m map[string]uint64
	if err := UnmarshalCanonical(b, &m); err != nil {
		return nil, err
	}
	if m == nil { // CBOR null: the empty vector's one form is the empty map
		return nil, fmt.Errorf("%w: version vector is null", ErrDecode)
	}
	if err := ValidateVersionVector(m); err != nil {
		return nil, err
	}
	return m, nil
}

// ValidateVersionVector checks a vector decoded as part of a larger message.
func ValidateVersionVector(v VersionVector) error {
	for d, s := range v {
		if d == "" {
			return fmt.Errorf("%w: version vector has an empty device id", ErrDecode)
		}
		if s == 0 {
			return fmt.Errorf("%w: version vector entry %q is zero", ErrDecode, d)
		}
	}
	return nil
}
