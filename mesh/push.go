// Push and relay: new durable ops sent at once to peers that hold
// everything before them, and ops fresh from their author passed on.

package mesh

import (
	"context"

	"storemesh/ledger"
)

// Push sends new durable ops to the peer at once when it shares their scope
// and is known to hold everything before them; otherwise the peer pulls
// them after the next summary. Call it with local ops and with other
// sessions' TakeRelay, never from inside a Step of this session.
func (s *Session) Push(ctx context.Context, ops []*ledger.Op) error {
	if !s.Established() {
		return s.err
	}
	byScope := map[string][]ledger.RawOp{}
	var order []string
	self := s.l.Self().Device
	for _, o := range ops {
		if !s.shared(o.Store) || o.Device == s.cfg.RemoteID {
			continue
		}
		if o.Device != self && s.peerNear[o.Device] {
			continue // a relay the peer has first hand from the author
		}
		st := s.scope(o.Store)
		if !st.synced || o.Seq != st.sent.Get(o.Device)+1 {
			continue
		}
		st.sent.Advance(o.Device, o.Seq)
		if _, ok := byScope[o.Store]; !ok {
			order = append(order, o.Store)
		}
		byScope[o.Store] = append(byScope[o.Store], ledger.RawOp{Device: o.Device, Seq: o.Seq, Bytes: o.Raw()})
	}
	for _, sc := range order {
		batch := byScope[sc]
		for len(batch) > 0 {
			n, size := 0, 0
			for n < len(batch) && (n == 0 || size+len(batch[n].Bytes) <= s.cfg.BatchBytes) {
				size += len(batch[n].Bytes)
				n++
			}
			s.sendOps(sc, batch[:n], true)
			batch = batch[n:]
		}
	}
	return nil
}

// TakeRelay returns the ops this session received fresh from their author
// since the last call. The driver pushes them to its other sessions, so a
// peer that cannot reach the author (an anchor behind one terminal) gets
// them at once; summaries carry news further. Push leaves out the peers
// that have a session with the author themselves (they said so in their
// fleet-wide summaries, Neighbors), so in a LAN where every device sees
// every other an op crosses once to each device.
func (s *Session) TakeRelay() []*ledger.Op {
	r := s.relay
	s.relay = nil
	return r
}
