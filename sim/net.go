package sim

import (
	"cmp"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"storemesh/ledger"
	"storemesh/mesh"
)

// link is a connection between two nodes a < b. While it is up and both
// ends are alive it carries one session pair; every (re)connect starts a
// new pair and a new generation, and frames of an older generation are
// dropped on arrival, like bytes of a reset stream.
type link struct {
	a, b    int
	spec    LinkSpec
	down    int // cuts in force
	gen     uint64
	sess    [2]*mesh.Session // [0] at a (peer b), [1] at b (peer a)
	dialing bool
	upAt    int64    // when the current session pair started
	busy    [2]int64 // per direction (0: a→b): transmitter busy until
	last    [2]int64 // per direction: latest arrival scheduled (FIFO)
}

func (lk *link) node(side int) int {
	if side == 0 {
		return lk.a
	}
	return lk.b
}

func (lk *link) sideOf(n int) int {
	if n == lk.a {
		return 0
	}
	return 1
}

// layLinks builds the LAN of each store, the uplinks, the anchors'
// backbone and the extra links; a later definition of a pair wins.
func (w *world) layLinks() {
	add := func(i, j int, spec LinkSpec) {
		if i == j {
			return
		}
		k := [2]int{min(i, j), max(i, j)}
		if li, ok := w.linkIdx[k]; ok {
			w.links[li].spec = spec
			return
		}
		w.linkIdx[k] = len(w.links)
		w.links = append(w.links, &link{a: k[0], b: k[1], spec: spec})
	}
	for _, st := range w.stores {
		devs := w.byStore[st]
		for x, i := range devs {
			for _, j := range devs[x+1:] {
				n, m := w.nodes[i].spec, w.nodes[j].spec
				if topo := n.topo; topo == "mesh" || (topo == "star" && (n.hub || m.hub)) {
					add(i, j, w.sc.LAN)
				}
			}
			if w.nodes[i].spec.uplink {
				for _, a := range w.anchors {
					add(i, a, w.sc.Uplink)
				}
			}
		}
	}
	for x, a := range w.anchors {
		for _, b := range w.anchors[x+1:] {
			add(a, b, w.sc.Backbone)
		}
	}
	for _, l := range w.sc.Links {
		for _, i := range w.sc.match(l.A) {
			for _, j := range w.sc.match(l.B) {
				add(i, j, l.LinkSpec)
			}
		}
	}
	for li, lk := range w.links {
		w.nodes[lk.a].links = append(w.nodes[lk.a].links, li)
		w.nodes[lk.b].links = append(w.nodes[lk.b].links, li)
	}
	for _, n := range w.nodes {
		peer := func(li int) int { return w.links[li].a + w.links[li].b - n.idx }
		slices.SortFunc(n.links, func(x, y int) int { return cmp.Compare(peer(x), peer(y)) })
	}
	w.rep.Links = len(w.links)
}

func (w *world) usable(lk *link) bool {
	return lk.down == 0 && w.nodes[lk.a].alive && w.nodes[lk.b].alive
}

// dial schedules a connect when the link is usable and idle: a dial and
// handshake cost a quarter to one second plus a round trip (mesh's
// DialBackoffMin is 250 ms). A link between lanes is dialled by global
// events only.
func (w *world) dial(li int) {
	lk := w.links[li]
	if lk.dialing || lk.sess[0] != nil || !w.usable(lk) {
		return
	}
	q := w.linkLane(li)
	if q == w.g && w.inWindow {
		panic("sim: a link between lanes dialled inside a window")
	}
	lk.dialing = true
	d := 2*int64(lk.spec.Latency) + int64(250*time.Millisecond) + q.rng.Int64N(int64(750*time.Millisecond))
	q.at(d, &event{kind: evConnect, link: li})
}

// connect starts a session pair on the link, as the mesh does when a
// connection is up: each side sends its hello.
func (w *world) connect(e *event) {
	lk := w.links[e.link]
	lk.dialing = false
	if lk.sess[0] != nil || !w.usable(lk) {
		return
	}
	lk.gen++
	lk.upAt = w.nodes[lk.a].ln.now
	t := w.sc.Session
	for side := range 2 {
		n, p := w.nodes[lk.node(side)], w.nodes[lk.node(1-side)]
		lk.sess[side] = mesh.NewSession(n.l, mesh.SessionConfig{
			RemoteID: p.dev.ID(), RemotePub: p.dev.Cert.PubKey, Found: "sim", Pulls: n.pulls, Anchor: n.anchor, Neighbors: n.near,
			Now:        func() int64 { return n.clk.at(n.ln.now) },
			BatchBytes: t.BatchBytes, MaxPull: t.MaxPull, RetryTicks: t.RetryTicks, SummaryTicks: t.SummaryTicks,
			KeepaliveTicks: t.KeepaliveTicks,
		})
	}
	w.nodes[lk.a].ln.wire.Sessions++
	for side := range 2 {
		if s := lk.sess[side]; s != nil {
			s.Start(w.ctx)
			w.flush(e.link, side)
		}
	}
}

// closeLink drops both sessions; frames in flight die with them.
func (w *world) closeLink(li int) {
	lk := w.links[li]
	if lk.sess[0] == nil {
		return
	}
	if w.inWindow && w.crossLane(li) {
		panic("sim: a link between lanes closed inside a window")
	}
	for _, s := range lk.sess {
		s.Close() // the peers leave each other's neighbors
	}
	lk.sess = [2]*mesh.Session{}
	lk.gen++
}

// sessionFailed closes the link after the session at side failed, and
// redials 5 s later. A link between lanes is closed at the window's end
// (its other end may be running): until then the failed session refuses
// everything, and the frames its peer sends meanwhile die with it.
func (w *world) sessionFailed(li, side int, err error) {
	lk := w.links[li]
	ln := w.nodes[lk.node(side)].ln
	code := "error"
	var pe *mesh.ProtocolError
	if errors.As(err, &pe) {
		code = pe.Code
	}
	ln.wire.SessionErrors = incr(ln.wire.SessionErrors, code)
	ln.note(notef("%.3fs session %s–%s closed: %v", secs(ln.now),
		w.nodes[lk.a].spec.name, w.nodes[lk.b].spec.name, err))
	redial := ln.now + int64(5*time.Second)
	if w.inWindow && w.crossLane(li) {
		for _, c := range ln.closing {
			if c.link == li && c.gen == lk.gen {
				return
			}
		}
		ln.closing = append(ln.closing, closeReq{link: li, gen: lk.gen, redialAt: redial})
		return
	}
	w.closeLink(li)
	w.linkLane(li).atAbs(redial, &event{kind: evFunc, fn: func() { w.dial(li) }})
}

// flush sends what the session at side of link li has ready.
func (w *world) flush(li, side int) {
	lk := w.links[li]
	s := lk.sess[side]
	if s == nil {
		return
	}
	for _, b := range s.Ready() {
		w.send(li, side, b)
	}
}

// send puts one frame on the wire from side: serialisation at the link's
// bandwidth, then latency and jitter; FIFO per direction unless the link
// may reorder; lost or duplicated as the link says. The sending node's
// lane draws the randomness and counts the frame.
func (w *world) send(li, side int, b []byte) {
	lk := w.links[li]
	sp := lk.spec
	from, to := w.nodes[lk.node(side)].ln, w.nodes[lk.node(1-side)].ln
	from.wire.FramesSent++
	from.wire.BytesSent += uint64(len(b))
	start := max(from.now, lk.busy[side])
	if sp.Bandwidth > 0 {
		start += int64(len(b)) * 8 * int64(time.Second) / int64(sp.Bandwidth)
	}
	lk.busy[side] = start
	if sp.Loss > 0 && from.rng.Float64() < sp.Loss {
		from.wire.FramesLost++
		w.traceFrame(from, 'L', lk, side, b)
		return
	}
	copies := 1
	if sp.Dup > 0 && from.rng.Float64() < sp.Dup {
		copies = 2
		from.wire.FramesDuplicated++
	}
	for range copies {
		arr := start + int64(sp.Latency)
		if sp.Jitter > 0 {
			arr += from.rng.Int64N(int64(sp.Jitter))
		}
		if !sp.Reorder {
			arr = max(arr, lk.last[side])
			lk.last[side] = arr
		}
		from.inflight++
		w.post(from, to, arr, &event{kind: evDeliver, link: li, side: 1 - side, gen: lk.gen, b: b})
	}
}

// deliver hands a frame to the receiving session and acts on what it did.
func (w *world) deliver(ln *lane, e *event) {
	ln.inflight--
	lk := w.links[e.link]
	s := lk.sess[e.side]
	if e.gen != lk.gen || s == nil {
		ln.wire.FramesDropped++
		w.traceFrame(ln, 'X', lk, 1-e.side, e.b)
		return
	}
	b := e.b
	if w.hooks.frame != nil {
		if b = w.hooks.frame(w.nodes[lk.node(1-e.side)].spec.name, w.nodes[lk.node(e.side)].spec.name, b); b == nil {
			ln.wire.FramesLost++
			w.traceFrame(ln, 'L', lk, 1-e.side, e.b)
			return
		}
	}
	ln.wire.FramesDelivered++
	ln.wire.BytesDelivered += uint64(len(b))
	w.traceFrame(ln, 'D', lk, 1-e.side, b)
	n := w.nodes[lk.node(e.side)]
	err := s.Step(w.ctx, b)
	w.flush(e.link, e.side)
	if err != nil {
		w.sessionFailed(e.link, e.side, err)
		w.drain(n)
		return
	}
	if w.sc.Push == "relay" {
		if relay := s.TakeRelay(); len(relay) > 0 {
			w.pushTo(n, relay, e.link)
		}
		if news := s.TakeNews(); len(news) > 0 {
			w.announce(n, news, e.link)
		}
	} else {
		w.drain(n)
	}
	w.react(n)
}

// pushTo hands ops to every session of n but the one on link except.
func (w *world) pushTo(n *node, ops []*ledger.Op, except int) {
	for _, li := range n.links {
		lk := w.links[li]
		side := lk.sideOf(n.idx)
		s := lk.sess[side]
		if li == except || s == nil || !s.Established() {
			continue
		}
		if err := s.Push(w.ctx, ops); err != nil {
			w.flush(li, side)
			w.sessionFailed(li, side, err)
			continue
		}
		w.flush(li, side)
	}
}

// announce hands scopes with pulled news to every session of n but the
// one on link except, as mesh's driver does with TakeNews.
func (w *world) announce(n *node, scopes []string, except int) {
	for _, li := range n.links {
		lk := w.links[li]
		side := lk.sideOf(n.idx)
		if s := lk.sess[side]; li != except && s != nil && s.Established() {
			s.Announce(scopes)
			w.flush(li, side)
		}
	}
}

// drain pushes the ops that became durable at n during the last call to
// every session, as mesh's driver does with Ledger.Subscribe.
func (w *world) drain(n *node) {
	if len(n.pending) == 0 {
		return
	}
	ops := n.pending
	n.pending = nil
	w.pushTo(n, ops, -1)
}

// cut takes the links down for d; each heals when its last cut ends.
func (w *world) cut(lis []int, d int64, what string) {
	for _, li := range lis {
		lk := w.links[li]
		lk.down++
		if lk.down == 1 {
			w.closeLink(li)
		}
	}
	w.rep.Marks = append(w.rep.Marks, Mark{From: secs(w.now), To: secs(w.now + d), What: what})
	w.do(d, func() {
		up := false
		for _, li := range lis {
			if lk := w.links[li]; lk.down > 0 {
				lk.down--
				up = up || lk.down == 0
				w.dial(li)
			}
		}
		if up {
			w.healed()
		}
	})
}

// traceFrame adds a frame event to ln's trace: tag, time, the sending
// and receiving nodes, the frame.
func (w *world) traceFrame(ln *lane, tag byte, lk *link, fromSide int, b []byte) {
	h := ln.scratch[:0]
	h = append(h, tag)
	h = binary.BigEndian.AppendUint64(h, uint64(ln.now))
	h = binary.BigEndian.AppendUint32(h, uint32(lk.node(fromSide)))
	h = binary.BigEndian.AppendUint32(h, uint32(lk.node(1-fromSide)))
	h = binary.BigEndian.AppendUint32(h, uint32(len(b)))
	ln.trace.Write(h)
	ln.trace.Write(b)
}

// traceOp adds an op event (tag A: acknowledged, R: refused) to the trace
// of n's lane.
func (w *world) traceOp(tag byte, n *node, o *ledger.Op, why string) {
	ln := n.ln
	h := ln.scratch[:0]
	h = append(h, tag)
	h = binary.BigEndian.AppendUint64(h, uint64(ln.now))
	h = binary.BigEndian.AppendUint32(h, uint32(n.idx))
	ln.trace.Write(h)
	if o != nil {
		oh := o.Hash()
		ln.trace.Write(oh[:])
	}
	ln.trace.Write([]byte(why))
}

func incr(m map[string]int, k string) map[string]int {
	if m == nil {
		m = map[string]int{}
	}
	m[k]++
	return m
}
