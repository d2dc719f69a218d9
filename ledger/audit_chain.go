package ledger

import (
	"bytes"
	"fmt"
	"slices"
)

// chainWalker follows ops in storage-key order, where a chain's ops are
// adjacent and in seq order (several at one seq when forked), and checks
// each chain: it starts at seq 1, has no gap, and every op's prev is an op
// at seq-1. It keeps only the current and previous seq of the current
// chain, so memory does not grow with the log.
type chainWalker struct {
	problem func(code ProblemCode, where, detail string) // nil: problems ignored (export)
	cur     *walkState
	chains  []ChainSummary
	forks   []Fork
}

type walkState struct {
	sum      ChainSummary
	seq      uint64 // seq of the ops in at
	at       []Hash
	prev     []Hash // ops at seq-1; nil after a gap (links unchecked)
	linked   []bool // linked[i]: some op at seq links to prev[i]
	forkSeqs []uint64
}

func (w *chainWalker) report(code ProblemCode, c *walkState, detail string) {
	if w.problem != nil {
		w.problem(code, "chain "+c.sum.Store+"/"+c.sum.Device, detail)
	}
}

func (w *chainWalker) add(o *Op) {
	c := w.cur
	if c == nil || c.sum.Store != o.Store || c.sum.Device != o.Device {
		w.end()
		c = &walkState{sum: ChainSummary{Store: o.Store, Device: o.Device}}
		w.cur = c
	}
	c.sum.Ops++
	c.sum.MaxSeq = max(c.sum.MaxSeq, o.Seq)
	switch {
	case o.Seq == c.seq && c.seq > 0: // another op at this seq: a fork
		if len(c.at) == 1 {
			c.forkSeqs = append(c.forkSeqs, o.Seq)
		}
		c.at = append(c.at, o.hash)
	case o.Seq == c.seq+1:
		c.shift()
		c.seq, c.at = o.Seq, []Hash{o.hash}
	default:
		if c.seq == 0 {
			w.report(ProblemChain, c, fmt.Sprintf("starts at seq %d: seqs 1..%d missing", o.Seq, o.Seq-1))
		} else if o.Seq > c.seq {
			w.report(ProblemChain, c, fmt.Sprintf("seq %d follows seq %d: seqs %d..%d missing", o.Seq, c.seq, c.seq+1, o.Seq-1))
		} else {
			w.report(ProblemChain, c, fmt.Sprintf("seq %d after seq %d: out of order", o.Seq, c.seq))
		}
		c.shift()
		c.shift() // nothing links the ops at seq: they are heads
		c.prev, c.linked = nil, nil
		c.seq, c.at = o.Seq, []Hash{o.hash}
		return
	}
	if o.Seq == 1 || c.prev == nil { // seq 1 links to nothing; after a gap the links are unknown
		return
	}
	if i := slices.Index(c.prev, o.prevHash()); i >= 0 {
		c.linked[i] = true
	} else {
		w.report(ProblemChain, c, fmt.Sprintf("op %s at seq %d links to %s, no op at seq %d", o.hash.Short(), o.Seq, o.prevHash().Short(), o.Seq-1))
	}
}

// shift moves on one seq: ops at seq-1 that nothing linked to are heads.
func (c *walkState) shift() {
	for i, h := range c.prev {
		if !c.linked[i] {
			c.sum.Heads = append(c.sum.Heads, h)
		}
	}
	c.prev, c.linked = c.at, make([]bool, len(c.at))
	c.at = nil
}

func (w *chainWalker) end() {
	c := w.cur
	if c == nil {
		return
	}
	c.shift()
	c.shift()
	slices.SortFunc(c.sum.Heads, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
	c.sum.Forked = len(c.forkSeqs) > 0
	w.chains = append(w.chains, c.sum)
	if c.sum.Forked {
		w.forks = append(w.forks, Fork{Store: c.sum.Store, Device: c.sum.Device, Seqs: c.forkSeqs})
	}
	w.cur = nil
}

func (w *chainWalker) finish() ([]ChainSummary, []Fork) {
	w.end()
	return w.chains, w.forks
}
