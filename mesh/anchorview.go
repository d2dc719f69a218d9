package mesh

import (
	"sync"

	"storemesh/crdt"
)

// AnchorView is what one node knows of the anchors (HQ): per scope, the
// ops some anchor durably holds, and when an anchor was last heard from,
// directly or through a peer. Sessions fill it from anchors' summaries and
// pass it on in their own summaries, so a terminal whose uplink is another
// terminal still learns which of its sales HQ holds (docs/design.md §4, "queued,
// not yet at HQ"). Safe for concurrent use; shared by a node's sessions.
type AnchorView struct {
	mu    sync.Mutex
	acked map[string]crdt.VersionVector
	from  map[string]string // scope → the peer whose report last added to acked
	seen  int64             // Unix ns, by the reporting anchor's or peer's clock
}

// NewAnchorView returns an empty view.
func NewAnchorView() *AnchorView {
	return &AnchorView{acked: map[string]crdt.VersionVector{}, from: map[string]string{}}
}

// Acked returns what anchors are known to hold in scope.
func (v *AnchorView) Acked(scope string) crdt.VersionVector {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.acked[scope].Clone()
}

// AckedSum is the sum of Acked(scope), without copying it (it changes
// whenever the vector does), and the peer whose report last added to it.
func (v *AnchorView) AckedSum(scope string) (sum uint64, from string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.acked[scope].Sum(), v.from[scope]
}

// Seen returns when an anchor was last heard from (Unix ns; 0: never).
func (v *AnchorView) Seen() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seen
}

// merge folds in an acknowledgement and a contact time reported by peer
// from; seen is capped at now so a peer with a fast clock cannot make HQ
// look reached in future.
func (v *AnchorView) merge(from, scope string, acked crdt.VersionVector, seen, now int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(acked) > 0 {
		have := v.acked[scope]
		if have == nil {
			have = crdt.VersionVector{}
			v.acked[scope] = have
		}
		if !have.Dominates(acked) {
			have.Merge(acked)
			v.from[scope] = from
		}
	}
	seen = min(seen, now)
	if seen > v.seen {
		v.seen = seen
	}
}
