// Summaries and quiet: anti-entropy (version vectors, heads and fork
// digests per scope), the rule that skips summaries that would tell the
// peer nothing, acknowledgements and what HQ holds.

package mesh

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
)

// summarise sends a summary of every shared scope we hold; periodic
// summaries skip quiet scopes. When every scope is quiet, a heartbeat
// keeps the peer's "last HQ contact" fresh: an anchor sends an empty
// acknowledgement every period, and a node that has heard of an anchor
// since it last told this peer (seenRefresh) passes the contact time on.
func (s *Session) summarise(periodic bool) {
	sent := false
	for _, sc := range s.scopes() {
		st := s.scope(sc)
		if periodic {
			switch s.newsOf(sc, st) {
			case newsNone:
				if s.ackAsAnchor(sc, st) {
					sent = true
				}
				continue
			case newsAnchor:
				s.sendAnchorNews(sc, st)
				sent = true
				continue
			}
		}
		s.sendSummary(sc)
		sent = true
	}
	if sent || s.all || s.peer == nil {
		return
	}
	hb := &summaryMsg{Scope: s.peer.Store, VV: crdt.VersionVector{}, Partial: true}
	if s.l.Self().Role != ledger.RoleAnchor {
		seen := s.cfg.Anchor.Seen()
		if seen-s.toldSeen < int64(seenRefresh) {
			return
		}
		if _, from := s.cfg.Anchor.AckedSum(s.peer.Store); from == s.cfg.RemoteID || s.peerNear[from] {
			return // the peer hears HQ's word from the same source
		}
		hb.Statements, s.toldSeen = s.cfg.Anchor.Statements(s.peer.Store), seen
		hb.AnchorCerts = s.anchorCerts(hb.Statements)
	} else {
		hb.Statements = s.ownStatement(s.peer.Store, false)
	}
	s.emit(msgSummary, hb)
}

// scopes lists the scopes both sides replicate and we hold, sorted.
func (s *Session) scopes() []string {
	if s.all {
		return slices.DeleteFunc(s.l.Scopes(), func(sc string) bool { return !s.shared(sc) })
	}
	var out []string
	for _, sc := range []string{ledger.FleetScope, s.peerS} { // "*" sorts first
		if (len(out) == 0 || out[0] != sc) && s.shared(sc) && s.l.HasScope(sc) {
			out = append(out, sc)
		}
	}
	return out
}

// seenRefresh is how much newer news of HQ must be before a quiet session
// passes it on: a terminal behind a hub knows within this (plus a summary
// period) that HQ is reachable, well inside the node's OfflineAfter.
const seenRefresh = 10 * time.Second

// What a periodic summary of a scope would tell the peer.
type news int

const (
	newsNone   news = iota // nothing: skip it
	newsAnchor             // only what HQ holds: a small partial summary
	newsAll                // a full summary
)

// newsOf decides a periodic summary. It is news to the peer unless the peer
// is known to hold our newest op of every device (then it holds all we
// hold, branch for branch), neither side reported a fork in the scope or
// a head the other holds differently, and the last full summary is
// younger than KeepaliveTicks. What we know of HQ's holdings, when that
// alone changed, goes in a partial summary of its own. Idle or
// well-synced peers then exchange a full summary per keepalive, not per
// period: most of the idle traffic on a metered uplink.
func (s *Session) newsOf(scope string, st *scopeState) news {
	if st.owed || !st.synced || !st.peerQuiet || s.tick-st.toldTick >= s.cfg.KeepaliveTicks {
		return newsAll
	}
	if scope == ledger.FleetScope && s.cfg.Neighbors.version() != st.toldNeighbors {
		return newsAll // our neighbors changed: the peer relays by them
	}
	self := s.l.Self().Device
	held, forked := s.l.EachHead(scope, func(d string, seq uint64, h *ledger.Hash) bool {
		if d != self && (d == s.cfg.RemoteID || s.peerNear[d]) {
			// The peer has these first hand, from their author, whose
			// own anti-entropy with it repairs what is lost; a fork of
			// theirs (two devices with one id) shows at the keepalive.
			return true
		}
		a := st.peerHas[d]
		return a.seq == seq && [headLen]byte(h[:headLen]) == a.prefix
	})
	if !held || forked {
		return newsAll
	}
	if s.all {
		return newsNone
	}
	// News of HQ travels from whoever heard it to each peer that does not
	// hear it from the same source directly.
	if sum, from := s.cfg.Anchor.AckedSum(scope); sum != st.toldAnchor && from != s.cfg.RemoteID && !s.peerNear[from] {
		return newsAnchor
	}
	return newsNone
}

// ackAsAnchor is an anchor telling a device of a store what it holds of
// the store, when that grew since it last said: the device counts its
// store's ops HQ does not hold yet ("queued for HQ"), its own and every
// other device's, and an anchor otherwise acknowledges only what came
// from that session. A partial summary: the vector alone.
func (s *Session) ackAsAnchor(scope string, st *scopeState) bool {
	if s.all || scope != s.peerS || s.l.Self().Role != ledger.RoleAnchor {
		return false
	}
	if s.l.VersionSum(scope) == st.toldAck {
		return false // asked every tick: no copy of the vector until it grew
	}
	vv := s.l.VersionVector(scope)
	st.toldAck = vv.Sum()
	clear(st.ackDue)
	s.emit(msgSummary, &summaryMsg{Scope: scope, VV: vv, Partial: true, Statements: s.ownStatement(scope, false)})
	return true
}

// sendAnchorNews sends what HQ holds of scope, and when it was last heard
// of, as a partial summary without a version vector.
func (s *Session) sendAnchorNews(scope string, st *scopeState) {
	m := &summaryMsg{Scope: scope, VV: crdt.VersionVector{}, Partial: true, Statements: s.cfg.Anchor.Statements(scope)}
	m.AnchorCerts = s.anchorCerts(m.Statements)
	st.toldAnchor, _ = s.cfg.Anchor.AckedSum(scope)
	s.toldSeen = max(s.toldSeen, s.cfg.Anchor.Seen())
	s.emit(msgSummary, m)
}

func (s *Session) sendSummary(scope string) {
	m := &summaryMsg{Scope: scope, VV: s.l.VersionVector(scope)}
	var toldAnchor uint64
	switch {
	case s.all: // an anchor knows better than we do what it holds
	case s.l.Self().Role == ledger.RoleAnchor:
		m.Statements = s.ownStatement(scope, true)
	default:
		m.Statements = s.cfg.Anchor.Statements(scope)
		m.AnchorCerts = s.anchorCerts(m.Statements)
		toldAnchor, _ = s.cfg.Anchor.AckedSum(scope)
		s.toldSeen = max(s.toldSeen, s.cfg.Anchor.Seen())
	}
	if scope == ledger.FleetScope {
		var ver uint64
		m.Neighbors, ver = s.cfg.Neighbors.snapshot()
		if st := s.sc[scope]; st != nil {
			st.toldNeighbors = ver
		}
	}
	if st := s.sc[scope]; st != nil {
		m.Unsynced = !st.synced
		st.owed = false
		clear(st.ackDue) // the full vector acknowledges them
		st.told = m.VV.Sum()
		st.toldAck = st.told
		st.toldTick = s.tick
		st.toldAnchor = toldAnchor
	}
	if heads := s.l.Heads(scope); len(heads) > 0 {
		m.Heads = make(map[string][]byte, len(heads))
		for d, h := range heads {
			m.Heads[d] = bytes.Clone(h[:headLen])
		}
	}
	if fd := s.l.ForkDigests(scope); len(fd) > 0 {
		m.Forks = map[string][]byte{}
		for d, h := range fd {
			m.Forks[d] = bytes.Clone(h[:])
		}
	}
	s.emit(msgSummary, m)
}

func (s *Session) onSummary(ctx context.Context, m *summaryMsg) error {
	if !s.shared(m.Scope) {
		s.stats.Rejected["scope_not_shared"]++
		return nil
	}
	st := s.scope(m.Scope)
	s.uncertified(m, st)
	s.ackInflight(m.Scope, m.VV)
	for d, seq := range m.VV {
		if seq > st.acked[d] {
			st.acked[d] = seq
			st.behind = true
		}
		if a, ok := st.sentHead[d]; ok && seq >= a.seq {
			st.learn(st.peerHas, d, a) // it acknowledged what we sent it
			delete(st.sentHead, d)
		}
	}
	for d, h := range m.Heads {
		st.learn(st.peerHas, d, headOf(m.VV[d], h))
	}
	st.sent.Merge(m.VV)
	s.ownFloors(m.Scope, m.VV)
	if len(m.Anchor) > 0 || m.AnchorSeen != 0 {
		s.stats.Rejected["unsigned_hq_claim"]++
	}
	if s.l.Self().Store != ledger.FleetScope {
		s.takeStatements(m.Statements, m.AnchorCerts)
	}
	if m.Partial {
		return nil
	}
	st.synced = true
	st.owed = st.owed || m.Unsynced
	if m.Scope == ledger.FleetScope && m.Neighbors != nil {
		s.peerNear = make(map[string]bool, len(m.Neighbors))
		for _, d := range m.Neighbors {
			s.peerNear[d] = true
		}
	}
	agree, err := s.exchangeForks(ctx, m.Scope, st, m.VV, m.Heads, m.Forks)
	if err != nil {
		return s.fail(err)
	}
	st.peerQuiet = agree && len(m.Forks) == 0
	s.pull(m.Scope, st)
	return nil
}

// Announce sends a summary of each scope in scopes that the peer shares,
// has synced and may lack ops of, unless our vector has not grown since
// the last summary we sent it. Call it with other sessions' TakeNews,
// never from inside a Step of this session.
func (s *Session) Announce(scopes []string) {
	if !s.Established() {
		return
	}
	for _, sc := range scopes {
		st := s.sc[sc]
		if st == nil || !st.synced || !s.shared(sc) {
			continue
		}
		if vv := s.l.VersionVector(sc); vv.Sum() != st.told && len(vv.Missing(st.acked)) > 0 {
			s.sendSummary(sc)
		}
	}
}

// flushAck acknowledges the ops that arrived in scope since the last
// flush: a partial summary with our seq of each device they came from.
// Acks go out once per tick, not once per ops frame: a busy hub receives
// several frames a tick from each peer.
func (s *Session) flushAck(scope string, st *scopeState) {
	if len(st.ackDue) == 0 {
		return
	}
	ack := make(crdt.VersionVector, len(st.ackDue))
	for d := range st.ackDue {
		if seq := s.l.Seq(scope, d); seq > 0 {
			ack[d] = seq
		}
	}
	clear(st.ackDue)
	st.pulled = 0
	if len(ack) > 0 {
		m := &summaryMsg{Scope: scope, VV: ack, Partial: true}
		if !s.all && scope == s.peerS && s.l.Self().Role == ledger.RoleAnchor {
			// HQ's signed word rides on its acks: what it now holds.
			m.Statements = s.ownStatement(scope, false)
		}
		s.emit(msgSummary, m)
	}
}

// uncertified drops from a summary every device no certificate backs, so
// only certified devices enter the session's maps (acked, peerHas), the
// node's Pulls and what is relayed on; each is counted (unknown_device).
// A peer cannot grow our memory with invented names. A device we have no
// certificate for yet (a new terminal) is asked for once, directly: the
// answer carries its certificate, and then it enters acked (certsArrived).
// At most maxUnknown such devices wait per scope.
func (s *Session) uncertified(m *summaryMsg, st *scopeState) {
	drop := func(d string) bool {
		if s.certified(d) {
			return false
		}
		s.stats.Rejected["unknown_device"]++
		return true
	}
	for _, d := range slices.Sorted(maps.Keys(m.VV)) {
		seq := m.VV[d]
		if seq == 0 || !drop(d) {
			continue
		}
		delete(m.VV, d)
		u, ok := st.unknown[d]
		if !ok && len(st.unknown) >= maxUnknown {
			continue
		}
		if ok && seq <= u.seq && s.tick-u.tick < s.cfg.SummaryTicks {
			continue
		}
		if st.unknown == nil {
			st.unknown = map[string]unknownDev{}
		}
		st.unknown[d] = unknownDev{seq: max(seq, u.seq), tick: s.tick}
		s.emit(msgWant, &wantMsg{Scope: m.Scope, Device: d, Through: min(seq, s.cfg.MaxPull)})
	}
	maps.DeleteFunc(m.Heads, func(d string, _ []byte) bool { return m.VV[d] == 0 })
	maps.DeleteFunc(m.Forks, func(d string, _ []byte) bool { return drop(d) })
	m.Neighbors = slices.DeleteFunc(m.Neighbors, drop)
}

// maxUnknown bounds, per scope and session, the devices advertised by the
// peer that wait for their certificate.
const maxUnknown = 64

// unknownDev is a device the peer advertised before we held its
// certificate: the seq it advertised, and when we asked for it.
type unknownDev struct {
	seq  uint64
	tick int
}

// certsArrived moves devices whose certificate has arrived from unknown
// into acked, to be pulled like any other.
func (s *Session) certsArrived(st *scopeState) {
	for d, u := range st.unknown {
		if s.certified(d) {
			delete(st.unknown, d)
			if u.seq > st.acked[d] {
				st.acked[d] = u.seq
				st.behind = true
			}
		}
	}
}

// takeStatements verifies the anchors' statements a summary carries and
// holds the newer ones; malformed, unsigned or forged ones are ignored and
// counted (bad_statement, unsigned_statement). A statement no newer than
// the one held is dropped before its signature is checked.
func (s *Session) takeStatements(raws, certs [][]byte) {
	if len(raws) > maxStatements || len(certs) > maxStatements {
		s.stats.Rejected["too_many_statements"]++
		raws, certs = raws[:min(len(raws), maxStatements)], certs[:min(len(certs), maxStatements)]
	}
	if len(raws) == 0 {
		return
	}
	for _, c := range certs {
		if _, err := s.l.AddCertificate(context.Background(), c); err != nil {
			s.stats.Rejected["bad_anchor_cert"]++
		}
	}
	now := s.cfg.Now()
	for _, raw := range raws {
		st, body, sig, err := DecodeStatement(raw)
		if err != nil {
			s.stats.Rejected["bad_statement"]++
			continue
		}
		if !s.l.HoldsScope(st.Scope) || !s.cfg.Anchor.newer(st.Scope, st.Anchor, st.Seq) {
			continue
		}
		if err := VerifyStatement(s.l, st, body, sig); err != nil {
			s.stats.Rejected["unsigned_statement"]++
			s.log.Info("ignoring an anchor statement", "err", err, "anchor", st.Anchor, "scope", st.Scope)
			continue
		}
		s.cfg.Anchor.offer(s.cfg.RemoteID, raw, st, now)
	}
}

// ownStatement is, on an anchor, its signed statement of scope for the
// peer: nil when it is the one this session last sent, unless always.
func (s *Session) ownStatement(scope string, always bool) [][]byte {
	raw, seq, err := s.cfg.Anchor.ownStatement(s.l, scope)
	if err != nil {
		s.log.Warn("cannot sign an anchor statement", "err", err)
		return nil
	}
	if !always && s.toldOwn[scope] == seq {
		return nil
	}
	if s.toldOwn == nil {
		s.toldOwn = map[string]uint64{}
	}
	s.toldOwn[scope] = seq
	return [][]byte{raw}
}

// anchorCerts returns the certificates of the anchors of the statements
// relayed, each once per keepalive per session.
func (s *Session) anchorCerts(raws [][]byte) [][]byte {
	var out [][]byte
	for _, raw := range raws {
		st, _, _, err := DecodeStatement(raw)
		if err != nil {
			continue
		}
		if t, ok := s.certTold[st.Anchor]; ok && s.tick-t < s.cfg.KeepaliveTicks {
			continue
		}
		if s.certTold == nil {
			s.certTold = map[string]int{}
		}
		s.certTold[st.Anchor] = s.tick
		for _, c := range s.l.Certificate(st.Anchor) {
			if c.Role == ledger.RoleAnchor {
				out = append(out, c.Encode())
			}
		}
	}
	return out
}

// ownFloors tells the ledger what the peer holds of this device's own
// chains: a peer that holds more of one than we do means our data is an
// older copy (a restore) or a copy of this device writes it (a clone), so
// the ledger waits for the refill and then moves to a new epoch
// (ledger.RaiseOwnFloor) rather than reuse those seqs. Only certified
// devices reach this (uncertified ran first); a lying peer can make this
// device wait at most ledger.Config.OwnWait and start a new chain.
func (s *Session) ownFloors(scope string, vv crdt.VersionVector) {
	self := s.l.Self().Device
	for d, seq := range vv {
		if ledger.ChainOwner(d) == self && seq > s.l.Seq(scope, d) {
			s.stats.OwnAhead++
			s.l.RaiseOwnFloor(scope, d, seq, "peer "+s.peer.Name)
		}
	}
}
