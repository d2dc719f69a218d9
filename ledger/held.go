package ledger

import (
	"cmp"
	"slices"
)

// Held ops are remote ops that arrived before their predecessor (a gap in
// a device's chain, or an orphan branch whose history is still on its
// way). They wait in memory, never on disk, until the gap fills; a peer
// sends them again after a restart.
//
// What a peer can make a replica hold is bounded where the op is taken,
// not after the fact (docs/design.md §4, bounded work):
//   - in bytes, not ops (Config.MaxHeldBytes): 65,536 ops of 16 KiB would
//     be a gigabyte;
//   - per author (Config.MaxHeldPerAuthor, by ChainOwner): one device that
//     sends gap ops, honest or hostile, fills its own quota and no one
//     else's, and when the whole set is full the author holding the most
//     bytes gives way (its furthest op first) to an author under its share;
//   - in time (Config.HeldTTL, by the ledger's clock): an op whose gap has
//     not filled within the TTL is dropped, so a set filled by ops that
//     will never link empties by itself rather than at a restart.
//
// An op refused or dropped here is not lost: its sender still holds it,
// and anti-entropy sends it again once its predecessors are in place.
// HAZARD: dropping this device's own ops would let local writes reuse
// their seqs; expiry and eviction of own ops raise the own-chain floor
// first (RaiseOwnFloor), so ErrOwnHistoryBehind still holds the till.
//
// The local-sale path asks only "is an op of mine held at or past seq n"
// (heldFor), answered from a per-chain index without a scan.
type heldSet struct {
	maxBytes, perAuthor int
	ttl                 int64 // ns
	maxOps              int

	ops      map[heldKey][]heldOp
	chains   map[chainKey]*heldChain
	authors  map[string]int // ChainOwner → bytes held
	fifo     []heldRef      // arrival order, for expiry; entries may be stale
	bytes    int
	count    int
	next     uint64 // arrival counter
	expired  uint64
	evicted  uint64
	refused  uint64
	ownDrops func(scope, chain string, seq uint64) // raises the own-chain floor before an own op is dropped
	self     string
}

type heldOp struct {
	p    pendingOp
	at   int64 // ledger clock, Unix ns
	size int
	n    uint64 // arrival number
}

type heldRef struct {
	k heldKey
	n uint64
}

// heldChain indexes one chain's held ops by seq.
type heldChain struct {
	seqs map[uint64]int // seq → ops held at it
	max  uint64
}

func newHeldSet(cfg Config, self string, ownDrops func(string, string, uint64)) *heldSet {
	return &heldSet{
		maxBytes: cfg.MaxHeldBytes, perAuthor: cfg.MaxHeldPerAuthor, ttl: int64(cfg.HeldTTL), maxOps: cfg.MaxHeld,
		ops: map[heldKey][]heldOp{}, chains: map[chainKey]*heldChain{}, authors: map[string]int{},
		ownDrops: ownDrops, self: self,
	}
}

// has reports whether o itself is held.
func (h *heldSet) has(o *Op) bool {
	for _, x := range h.ops[heldKey{chainKey{o.Store, o.Device}, o.Seq}] {
		if x.p.op.hash == o.hash {
			return true
		}
	}
	return false
}

// from reports whether an op of chain (scope, device) is held at seq min
// or later: the chain is known to reach further than this replica holds.
func (h *heldSet) from(scope, device string, min uint64) bool {
	c := h.chains[chainKey{scope, device}]
	return c != nil && c.max >= min
}

// add holds p, arrived at now, making room by expiry and by the fairness
// rule. It returns false (ErrTooManyHeld) when p's author is over its
// quota or no room can be made without taking it from a smaller author.
func (h *heldSet) add(p pendingOp, now int64) bool {
	h.expire(now)
	o := p.op
	size := len(o.raw) + heldOverhead
	author := ChainOwner(o.Device)
	if h.authors[author]+size > h.perAuthor || size > h.maxBytes {
		h.refused++
		return false
	}
	for h.bytes+size > h.maxBytes || h.count >= h.maxOps {
		big, bigBytes := "", 0
		for a, b := range h.authors {
			if b > bigBytes || b == bigBytes && a < big {
				big, bigBytes = a, b
			}
		}
		if big == "" || bigBytes <= h.authors[author]+size {
			h.refused++
			return false // the biggest author is no bigger than this one would be
		}
		h.evictNewest(big)
	}
	k := heldKey{chainKey{o.Store, o.Device}, o.Seq}
	h.next++
	h.ops[k] = append(h.ops[k], heldOp{p: p, at: now, size: size, n: h.next})
	h.fifo = append(h.fifo, heldRef{k, h.next})
	c := h.chains[k.chainKey]
	if c == nil {
		c = &heldChain{seqs: map[uint64]int{}}
		h.chains[k.chainKey] = c
	}
	c.seqs[o.Seq]++
	c.max = max(c.max, o.Seq)
	h.authors[author] += size
	h.bytes += size
	h.count++
	return true
}

// heldOverhead is what one held op costs beyond its encoding (the decoded
// op, its body, map entries), so tiny ops cannot be held by the million.
const heldOverhead = 256

// take removes and returns the ops held at (chain, seq).
func (h *heldSet) take(ck chainKey, seq uint64) []heldOp {
	k := heldKey{ck, seq}
	xs := h.ops[k]
	for _, x := range xs {
		h.forget(k, x)
	}
	delete(h.ops, k)
	return xs
}

// putBack holds again ops take returned that still do not link, with
// their arrival time and place in the expiry order (they were just held,
// so they fit).
func (h *heldSet) putBack(ck chainKey, seq uint64, xs []heldOp) {
	if len(xs) == 0 {
		return
	}
	k := heldKey{ck, seq}
	h.ops[k] = append(h.ops[k], xs...)
	c := h.chains[ck]
	if c == nil {
		c = &heldChain{seqs: map[uint64]int{}}
		h.chains[ck] = c
	}
	for _, x := range xs {
		c.seqs[seq]++
		c.max = max(c.max, seq)
		h.authors[ChainOwner(ck.device)] += x.size
		h.bytes += x.size
		h.count++
	}
}

// forget updates the counters and index for one op leaving the set (the
// caller removes it from h.ops).
func (h *heldSet) forget(k heldKey, x heldOp) {
	h.bytes -= x.size
	h.count--
	a := ChainOwner(k.device)
	if h.authors[a] -= x.size; h.authors[a] <= 0 {
		delete(h.authors, a)
	}
	c := h.chains[k.chainKey]
	if c == nil {
		return
	}
	if c.seqs[k.seq]--; c.seqs[k.seq] <= 0 {
		delete(c.seqs, k.seq)
		if len(c.seqs) == 0 {
			delete(h.chains, k.chainKey)
			return
		}
		if k.seq == c.max {
			c.max = 0
			for s := range c.seqs { // only this chain's held seqs
				c.max = max(c.max, s)
			}
		}
	}
}

// drop removes one held op for expiry or eviction; own ops raise the
// own-chain floor first.
func (h *heldSet) drop(k heldKey, i int) {
	xs := h.ops[k]
	x := xs[i]
	if h.self != "" && ChainOwner(k.device) == h.self && h.ownDrops != nil {
		h.ownDrops(k.scope, k.device, k.seq)
	}
	h.forget(k, x)
	xs = slices.Delete(xs, i, i+1)
	if len(xs) == 0 {
		delete(h.ops, k)
	} else {
		h.ops[k] = xs
	}
}

// evictNewest drops author's held op of the highest seq: the furthest
// from linking.
func (h *heldSet) evictNewest(author string) {
	var best heldKey
	found := false
	for ck, c := range h.chains {
		if ChainOwner(ck.device) != author {
			continue
		}
		k := heldKey{ck, c.max}
		if !found || cmp.Compare(k.seq, best.seq) > 0 {
			best, found = k, true
		}
	}
	if !found {
		delete(h.authors, author) // unreachable: counters without ops
		return
	}
	h.drop(best, len(h.ops[best])-1)
	h.evicted++
}

// expire drops ops held longer than the TTL, oldest first.
func (h *heldSet) expire(now int64) {
	i := 0
	for ; i < len(h.fifo); i++ {
		r := h.fifo[i]
		xs := h.ops[r.k]
		j := slices.IndexFunc(xs, func(x heldOp) bool { return x.n == r.n })
		if j < 0 {
			continue // placed, evicted or taken since
		}
		if now-xs[j].at < h.ttl {
			break
		}
		h.drop(r.k, j)
		h.expired++
	}
	if i > 0 {
		h.fifo = slices.Delete(h.fifo, 0, i)
	}
	if len(h.fifo) > 4*h.count+64 { // mostly stale: compact
		h.fifo = slices.DeleteFunc(h.fifo, func(r heldRef) bool {
			return !slices.ContainsFunc(h.ops[r.k], func(x heldOp) bool { return x.n == r.n })
		})
	}
}
