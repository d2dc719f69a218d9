package mesh

import (
	"maps"
	"slices"
	"sync"

	"storemesh/crdt"
	"storemesh/ledger"
)

// AnchorView is what one node knows of the anchors (HQ): per scope, the
// newest verified AnchorStatement of each anchor, which says what that
// anchor durably holds and when it said so. Sessions fill it from the
// statements in summaries, from an anchor or relayed unchanged by any
// peer, and pass them on, so a terminal whose uplink is another terminal
// still learns which of its sales HQ holds (docs/design.md §4, "queued, not yet
// at HQ"). Nothing unsigned enters it. On an anchor it also keeps the
// anchor's own newest statement per scope. Safe for concurrent use;
// shared by a node's sessions.
type AnchorView struct {
	mu    sync.Mutex
	stmts map[string]map[string]heldStatement // scope → anchor → newest
	from  map[string]string                   // scope → the peer whose statement last added to Acked
	seen  int64                               // newest statement clock, capped at arrival (Unix ns)

	own    map[string]heldStatement // an anchor's own, per scope
	ownSeq uint64
}

type heldStatement struct {
	st  *AnchorStatement
	raw []byte
}

// NewAnchorView returns an empty view.
func NewAnchorView() *AnchorView {
	return &AnchorView{stmts: map[string]map[string]heldStatement{}, from: map[string]string{}, own: map[string]heldStatement{}}
}

// Acked returns what anchors are known to hold in scope: the merge of
// their newest statements.
func (v *AnchorView) Acked(scope string) crdt.VersionVector {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ackedLocked(scope)
}

func (v *AnchorView) ackedLocked(scope string) crdt.VersionVector {
	out := crdt.VersionVector{}
	for _, h := range v.stmts[scope] {
		out.Merge(h.st.VV)
	}
	return out
}

// AckedSum is a number that changes whenever the statements held for
// scope do (the sum of their seqs), and the peer whose statement last
// changed them.
func (v *AnchorView) AckedSum(scope string) (sum uint64, from string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, h := range v.stmts[scope] {
		sum += h.st.Seq
	}
	return sum, v.from[scope]
}

// Seen returns when an anchor was last heard from by its statements
// (Unix ns; 0: never).
func (v *AnchorView) Seen() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seen
}

// Statements returns the wire form of the newest statement of each anchor
// for scope, ordered by anchor: what a summary relays.
func (v *AnchorView) Statements(scope string) [][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.stmts[scope]
	out := make([][]byte, 0, len(m))
	for _, a := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[a].raw)
	}
	return out
}

// newer reports whether a statement of anchor for scope with seq would
// replace the one held: the check before a signature is verified.
func (v *AnchorView) newer(scope, anchor string, seq uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	h, ok := v.stmts[scope][anchor]
	return !ok || seq > h.st.Seq
}

// offer holds a verified statement relayed by peer from, when newer than
// the one held of its anchor and scope; its clock counts as contact no
// later than now (a fast clock cannot make HQ look reached in future).
func (v *AnchorView) offer(from string, raw []byte, st *AnchorStatement, now int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.stmts[st.Scope]
	if m == nil {
		m = map[string]heldStatement{}
		v.stmts[st.Scope] = m
	}
	if h, ok := m[st.Anchor]; ok && st.Seq <= h.st.Seq {
		return false
	}
	m[st.Anchor] = heldStatement{st, raw}
	v.from[st.Scope] = from
	v.seen = max(v.seen, min(st.Clock, now))
	return true
}

// ownStatement returns an anchor's statement of what it holds of scope,
// signing a new one when the vector grew or the last is older than
// seenRefresh, so idle peers are not sent a new one every tick.
func (v *AnchorView) ownStatement(l *ledger.Ledger, scope string) (raw []byte, seq uint64, err error) {
	now := l.Now()
	sum := l.VersionSum(scope)
	v.mu.Lock()
	defer v.mu.Unlock()
	if h, ok := v.own[scope]; ok && h.st.VV.Sum() == sum && now-h.st.Clock < int64(seenRefresh) {
		return h.raw, h.st.Seq, nil
	}
	// Seqs start at the anchor's clock, so a restarted anchor's
	// statements still replace those it made before.
	v.ownSeq = max(v.ownSeq+1, uint64(max(now, 0)))
	st := &AnchorStatement{Anchor: l.Self().Device, Scope: scope, VV: l.VersionVector(scope), Clock: now, Seq: v.ownSeq}
	raw, err = SignStatement(l, st)
	if err != nil {
		return nil, 0, err
	}
	v.own[scope] = heldStatement{st, raw}
	return raw, st.Seq, nil
}
