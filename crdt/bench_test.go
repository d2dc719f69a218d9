package crdt_test

import (
	"fmt"
	"testing"

	"storemesh/crdt"
)

// benchVV returns a 1,000-device vector, the size of a large store's fleet,
// and a concurrent sibling that differs in every tenth entry.
func benchVV() (crdt.VersionVector, crdt.VersionVector) {
	r := newRand(60)
	a, b := crdt.VersionVector{}, crdt.VersionVector{}
	for i := range 1000 {
		d := fmt.Sprintf("12D3KooWdevice%04d", i)
		s := 1 + r.Uint64N(100_000)
		a[d], b[d] = s, s
		if i%10 == 0 {
			b[d] += 1 + uint64(i%3)
			a[d] += uint64(i % 2)
		}
	}
	return a, b
}

func BenchmarkVersionVectorCompare1000(b *testing.B) {
	x, y := benchVV()
	for b.Loop() {
		if x.Compare(y) == crdt.Equal {
			b.Fatal("vectors unexpectedly equal")
		}
	}
}

func BenchmarkVersionVectorMerge1000(b *testing.B) {
	x, y := benchVV()
	for b.Loop() {
		m := x.Clone()
		m.Merge(y)
	}
}

func BenchmarkVersionVectorMarshal1000(b *testing.B) {
	x, _ := benchVV()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPNCounterMerge(b *testing.B) {
	r := newRand(61)
	var x, y crdt.PNCounter
	for i := range 20 { // twenty terminals selling one SKU
		d := fmt.Sprintf("12D3KooWterm%02d", i)
		x.Inc(d, r.Uint64N(1000))
		x.Dec(d, r.Uint64N(1000))
		y.Inc(d, r.Uint64N(1000))
		y.Dec(d, r.Uint64N(1000))
	}
	for b.Loop() {
		m := x.Clone()
		m.Merge(y)
	}
}
