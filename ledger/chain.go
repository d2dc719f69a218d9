package ledger

import (
	"crypto/sha256"
	"slices"
)

// chain indexes one device's ops in one scope. main[s-1] is the first op
// placed at seq s; extra holds any other op at the same seq (equivocation:
// a restored or forged device). An op is placed only when its prev is some
// op placed at seq-1, so every placed op links back to seq 1. The chain's
// contiguous length, len(main), is the version vector entry.
type chain struct {
	main  []Hash
	extra map[uint64][]Hash
	// firstWall and lastWall are the oldest and newest HLC wall times of
	// the placed ops (a device's chains used one after another do not
	// overlap in time; a clone's do).
	firstWall, lastWall int64
}

func (c *chain) length() uint64 { return uint64(len(c.main)) }

func (c *chain) forked() bool { return len(c.extra) > 0 }

// forkedWithin reports whether some seq up to n holds more than one op:
// a revoked device's chain may be forked only past its cut-off, which
// must not change its digest.
func (c *chain) forkedWithin(n uint64) bool {
	for s := range c.extra {
		if s <= n {
			return true
		}
	}
	return false
}

// at returns every op hash placed at seq s.
func (c *chain) at(s uint64) []Hash {
	if s == 0 || s > c.length() {
		return nil
	}
	out := []Hash{c.main[s-1]}
	return append(out, c.extra[s]...)
}

func (c *chain) has(s uint64, h Hash) bool {
	if s == 0 || s > c.length() {
		return false
	}
	return c.main[s-1] == h || slices.Contains(c.extra[s], h)
}

// placement is where an op goes in its chain.
type placement int

const (
	placeDuplicate placement = iota // already placed
	placeNext                       // extends the chain
	placeFork                       // a second op at a placed seq whose prev links: equivocation
	placeGap                        // predecessor seq not placed yet: hold
	placeOrphan                     // seq-1 is placed but prev matches none of its ops: hold, need history
)

func (c *chain) classify(o *Op) placement {
	s := o.Seq
	if s <= c.length() && c.has(s, o.hash) {
		return placeDuplicate
	}
	if s > c.length()+1 {
		return placeGap
	}
	if s > 1 && !c.has(s-1, o.prevHash()) {
		return placeOrphan
	}
	if s == c.length()+1 {
		return placeNext
	}
	return placeFork
}

func (c *chain) place(o *Op, p placement) {
	if p == placeNext || p == placeFork {
		w := o.HLC.Wall
		if c.firstWall == 0 || w < c.firstWall {
			c.firstWall = w
		}
		c.lastWall = max(c.lastWall, w)
	}
	switch p {
	case placeNext:
		c.main = append(c.main, o.hash)
	case placeFork:
		if c.extra == nil {
			c.extra = map[uint64][]Hash{}
		}
		c.extra[o.Seq] = append(c.extra[o.Seq], o.hash)
	}
}

// digest summarises the chain up to seq n: the head hash when unforked (it
// commits to the whole chain), or a hash over every placed op's hash when
// forked (so replicas that saw the branches in different orders agree).
func (c *chain) digest(n uint64) Hash {
	if n == 0 {
		return Hash{}
	}
	if !c.forkedWithin(n) {
		return c.main[n-1]
	}
	var all []Hash
	for s := uint64(1); s <= n; s++ {
		all = append(all, c.at(s)...)
	}
	slices.SortFunc(all, func(a, b Hash) int { return slices.Compare(a[:], b[:]) })
	h := sha256.New()
	for _, x := range all {
		h.Write(x[:])
	}
	var out Hash
	copy(out[:], h.Sum(nil))
	return out
}
