package crdt

import (
	"cmp"
	"slices"
)

// GSet is a grow-only set: elements are added, never removed, and merging
// is union. The sale log is a GSet of sale ids.
type GSet[T cmp.Ordered] struct {
	m map[T]struct{}
}

// NewGSet returns a set holding elems.
func NewGSet[T cmp.Ordered](elems ...T) *GSet[T] {
	s := &GSet[T]{m: make(map[T]struct{}, len(elems))}
	for _, e := range elems {
		s.m[e] = struct{}{}
	}
	return s
}

// Add inserts e and reports whether it was new.
func (s *GSet[T]) Add(e T) bool {
	if s.m == nil {
		s.m = map[T]struct{}{}
	}
	if _, ok := s.m[e]; ok {
		return false
	}
	s.m[e] = struct{}{}
	return true
}

// Has reports whether e is in the set.
func (s *GSet[T]) Has(e T) bool { _, ok := s.m[e]; return ok }

// Len is the number of elements.
func (s *GSet[T]) Len() int { return len(s.m) }

// Merge adds every element of o.
func (s *GSet[T]) Merge(o *GSet[T]) {
	for e := range o.m {
		s.Add(e)
	}
}

// Elements returns the elements in ascending order.
func (s *GSet[T]) Elements() []T {
	out := make([]T, 0, len(s.m))
	for e := range s.m {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// Equal reports whether both sets hold the same elements.
func (s *GSet[T]) Equal(o *GSet[T]) bool {
	if s.Len() != o.Len() {
		return false
	}
	for e := range s.m {
		if !o.Has(e) {
			return false
		}
	}
	return true
}

// MarshalCBOR encodes the set as a sorted array, so equal sets have equal
// bytes.
func (s *GSet[T]) MarshalCBOR() ([]byte, error) { return Marshal(s.Elements()) }

// UnmarshalCBOR decodes a sorted, duplicate-free array.
func (s *GSet[T]) UnmarshalCBOR(b []byte) error {
	var elems []T
	if err := Unmarshal(b, &elems); err != nil {
		return err
	}
	for i := 1; i < len(elems); i++ {
		if elems[i-1] >= elems[i] {
			return errNotSortedSet
		}
	}
	*s = *NewGSet(elems...)
	return nil
}
