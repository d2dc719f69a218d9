// Ops and wants: pulls of missing ranges, serving the peer's wants,
// fork branches, and applying the ops the peer sends.

package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"maps"
	"slices"

	"storemesh/crdt"
	"storemesh/ledger"
)

// pull asks the peer for ops it advertised that we lack and no other
// session of this node is already fetching.
func (s *Session) pull(scope string, st *scopeState) {
	missing := s.l.Lacks(scope, st.acked)
	if len(missing) == 0 {
		st.behind = false // our vector only grows: nothing to do until acked does
		return
	}
	now := s.cfg.Now()
	for _, r := range missing {
		from, through, ok := s.cfg.Pulls.claim(scope, r.Device, r.After, r.Through, s.cfg.MaxPull, now)
		if ok {
			s.emit(msgWant, &wantMsg{Scope: scope, Device: r.Device, After: from, Through: through})
		}
	}
}

// forkMemo records a fork request or send: the digest or head it was
// about, and when.
type forkMemo struct {
	digest string
	tick   int
}

// remember reports whether a fork exchange about digest should be made
// now, and records it: not when the same one was made within the last
// KeepaliveTicks (the peer keeps reporting the same digest while the
// answer is on its way), again after that (it was lost).
func (s *Session) remember(st *scopeState, key string, digest []byte) bool {
	if m, ok := st.forks[key]; ok && m.digest == string(digest) && s.tick-m.tick < s.cfg.KeepaliveTicks {
		return false
	}
	st.forks[key] = forkMemo{string(digest), s.tick}
	return true
}

// exchangeForks asks for fork branches the peer has and we lack, and sends
// the ones we have that the peer lacks. agree is false when some head of
// the peer is not the op we hold at its seq.
func (s *Session) exchangeForks(ctx context.Context, scope string, st *scopeState, vv crdt.VersionVector, heads, theirs map[string][]byte) (agree bool, err error) {
	agree = true
	// A head we do not hold at its seq is a branch we lack.
	for _, d := range slices.Sorted(maps.Keys(heads)) {
		seq := vv[d]
		if held, match := s.l.HoldsAt(scope, d, seq, heads[d]); !held || match {
			continue
		}
		agree = false
		if !s.remember(st, "head:"+d, heads[d]) {
			continue
		}
		s.emit(msgWant, &wantMsg{Scope: scope, Device: d})
	}
	ours := s.l.ForkDigests(scope)
	for _, d := range slices.Sorted(maps.Keys(theirs)) {
		h := theirs[d]
		if o, ok := ours[d]; ok && bytes.Equal(o[:], h) {
			continue
		}
		if !s.remember(st, "want:"+d, h) {
			continue
		}
		s.emit(msgWant, &wantMsg{Scope: scope, Device: d})
	}
	for _, d := range slices.Sorted(maps.Keys(ours)) {
		h := ours[d]
		if t, ok := theirs[d]; ok && bytes.Equal(t, h[:]) {
			continue
		}
		if !s.remember(st, "sent:"+d, h[:]) {
			continue
		}
		if err := s.queueWant(scope, d, 0, 0, false); err != nil {
			return false, err
		}
	}
	return agree, nil
}

// hashPrefix is the start of an op's hash (SHA-256 of its encoding).
func hashPrefix(raw []byte) []byte {
	h := sha256.Sum256(raw)
	return h[:headLen]
}

// sendOps emits one ops frame. It carries the certificates of authors the
// peer has not acknowledged any op of: until it does, the frame that
// carried them may have been lost.
func (s *Session) sendOps(scope string, batch []ledger.RawOp, fresh bool) {
	m := &opsMsg{Scope: scope, Ops: make([][]byte, len(batch)), Fresh: fresh}
	st := s.scope(scope)
	acked := st.acked
	var seen []string // a frame's ops come in runs of one device
	for i, r := range batch {
		m.Ops[i] = r.Bytes
		if last := i == len(batch)-1 || batch[i+1].Device != r.Device; last && r.Seq > st.sentHead[r.Device].seq {
			st.sentHead[r.Device] = headOf(r.Seq, hashPrefix(r.Bytes))
		}
		if i > 0 && r.Device == batch[i-1].Device || slices.Contains(seen, r.Device) {
			continue
		}
		seen = append(seen, r.Device)
		if acked[r.Device] == 0 && r.Device != s.cfg.RemoteID {
			for _, c := range s.l.Certificate(r.Device) {
				m.Certs = append(m.Certs, c.Encode())
			}
		}
	}
	s.stats.OpsOut += uint64(len(batch))
	s.emit(msgOps, m)
}

func (s *Session) onOps(ctx context.Context, m *opsMsg) error {
	if !s.shared(m.Scope) {
		s.stats.Rejected["scope_not_shared"]++
		return nil
	}
	st := s.scope(m.Scope)
	for _, c := range m.Certs {
		if _, err := s.l.AddCertificate(ctx, c); err != nil {
			if ledger.RejectReason(err) == "" {
				return s.fail(err)
			}
			return s.fail(protoErr(CodeForgedOp, "certificate: %v", err))
		}
	}
	res, err := s.l.ApplyBatch(ctx, m.Ops)
	if err != nil {
		return s.fail(err)
	}
	s.stats.OpsIn += uint64(len(m.Ops))
	wants := map[string]bool{}
	for _, r := range res {
		if r.Err != nil {
			reason := string(ledger.RejectReason(r.Err))
			switch {
			case reason != "":
			case errors.Is(r.Err, ledger.ErrTooManyHeld):
				reason = "held_full" // the author's quota of held ops (ledger/held.go)
			default:
				reason = "busy"
			}
			s.stats.Rejected[reason]++
			switch ledger.Reason(reason) {
			case ledger.ReasonDecode, ledger.ReasonBadSignature, ledger.ReasonFleet:
				return s.fail(protoErr(CodeForgedOp, "%v", r.Err))
			case ledger.ReasonVersion:
				// A newer build's envelope: refused and counted, not a
				// forgery; the peer is not banned for being newer.
				if s.stats.Rejected[reason] == 1 {
					s.log.Warn("peer sent ops in an envelope version this build does not know; upgrade this device", "err", r.Err)
				}
			}
			continue
		}
		// The peer holds what it sends us: never push it back.
		st.sent.Advance(r.Op.Device, r.Op.Seq)
		if h := r.Op.Hash(); r.Op.Seq > st.peerHas[r.Op.Device].seq {
			st.peerHas[r.Op.Device] = headOf(r.Op.Seq, h[:])
		}
		if st.ackDue == nil {
			st.ackDue = map[string]bool{}
		}
		st.ackDue[r.Op.Device] = true
		if r.Outcome == ledger.Applied && m.Fresh && r.Op.Device == s.cfg.RemoteID {
			s.relay = append(s.relay, r.Op)
		}
		if r.Outcome == ledger.Applied && !m.Fresh && !slices.Contains(s.news, m.Scope) {
			s.news = append(s.news, m.Scope)
		}
		if r.NeedHistory && !wants[r.Op.Device] {
			wants[r.Op.Device] = true
			s.emit(msgWant, &wantMsg{Scope: m.Scope, Device: r.Op.Device})
		}
	}
	if len(st.unknown) > 0 && len(m.Certs) > 0 {
		s.certsArrived(st)
	}
	if !m.Fresh {
		// Answers to wants: past a quarter of a window, acknowledge them
		// now, not at the next tick, so a long catch-up moves the sender's
		// window (flow.go) at the round trip rather than once per tick.
		for _, o := range m.Ops {
			st.pulled += len(o)
		}
		if st.pulled >= s.cfg.WindowBytes/4 {
			s.flushAck(m.Scope, st)
		}
	}
	if st.synced && st.behind {
		s.pull(m.Scope, st) // the next step of a long catch-up
	}
	return nil
}

// TakeNews returns the scopes in which this session applied pulled ops
// since the last call (ops pushed fresh travel on by TakeRelay instead).
// The driver passes them to its other sessions' Announce, so a catch-up
// crosses several hops at once rather than one per periodic summary.
func (s *Session) TakeNews() []string {
	n := s.news
	s.news = nil
	return n
}
