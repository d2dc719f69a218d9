package mesh

import (
	"maps"
	"slices"
	"sync"
)

// Neighbors is the set of peers a node has an established session with,
// shared by the node's sessions like Pulls and AnchorView. Each session
// tells its peer this set in its fleet-wide summaries, and a session does
// not relay to its peer an op whose author the peer is itself connected to:
// the peer has it first hand. In a shop whose terminals all see each other
// (mDNS on one Wi-Fi) a sale then crosses the LAN once to each terminal,
// not once from every terminal to every other; a hub whose spokes cannot
// see each other, or an uplink to an anchor, still relays. Safe for
// concurrent use.
type Neighbors struct {
	mu  sync.Mutex
	n   map[string]int // device → established sessions with it
	ver uint64         // bumped whenever the set changes
}

// NewNeighbors returns an empty set.
func NewNeighbors() *Neighbors { return &Neighbors{n: map[string]int{}} }

func (nb *Neighbors) add(id string) {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	if nb.n[id]++; nb.n[id] == 1 {
		nb.ver++
	}
}

func (nb *Neighbors) remove(id string) {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	if nb.n[id]--; nb.n[id] <= 0 {
		delete(nb.n, id)
		nb.ver++
	}
}

// snapshot returns the sorted set and its version.
func (nb *Neighbors) snapshot() ([]string, uint64) {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	return slices.Sorted(maps.Keys(nb.n)), nb.ver
}

func (nb *Neighbors) version() uint64 {
	nb.mu.Lock()
	defer nb.mu.Unlock()
	return nb.ver
}
