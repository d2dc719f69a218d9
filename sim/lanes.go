package sim

import (
	"cmp"
	"crypto/sha256"
	"hash"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"storemesh/ledger"
)

// A run is split into lanes so that it can use more than one core and
// still be decided by the seed alone (conservative parallel discrete-event
// simulation with a fixed lookahead).
//
// Every node belongs to one lane: the anchors share lane 0, each store has
// its own. A lane has its own event queue, random source, clock reading,
// trace and counters, and only its own events touch its nodes. A frame
// crossing lanes (a store's uplink to an anchor) takes at least the link's
// latency to arrive, so with window = the smallest such latency, what any
// lane does in [t, t+window) cannot affect another lane before t+window:
// the lanes run a window each on their own, in parallel, and exchange the
// frames that cross between windows. Scenario events, samples and checks
// are global: they run alone, between windows, with every lane's clock at
// their time.
//
// Which lane does what, and in which order, depends only on the scenario
// (never on timing or on how many workers run the lanes), so a report is
// byte-identical whatever the worker count; TestLanesWorkerCountInvisible
// holds that.

// maxWindow bounds a window, so deferred work of a window (a cross-lane
// link's redial 5 s after its session failed) always lands after it.
const maxWindow = int64(time.Second)

// lane is one partition of the nodes and everything only its events touch.
type lane struct {
	idx     int
	q       eventQueue
	seq     uint64
	now     int64
	rng     *rand.Rand
	trace   hash.Hash
	scratch [32]byte

	// Made during a window and handed over at its end.
	outbox  []*event   // frames for other lanes' queues
	closing []closeReq // cross-lane links whose session failed here

	acked      []*ackedOp            // ops acknowledged by this lane's nodes, in order
	storeSales map[string][]*ackedOp // store → its sales (a store lives in one lane)
	maxSeq     map[string]map[string]uint64
	inflight   int // frames sent minus frames delivered, here (the sum over lanes is the total)
	budget     int // random ops this lane may still make in the current window
	randomOps  int // random ops made in the current window
	ops        OpStats
	wire       WireStats
	failures   []Failure
	notes      []note
}

// note is a report note with the virtual time it was taken at.
type note struct {
	at   int64
	text string
}

// closeReq is a cross-lane link to close at the end of the window.
type closeReq struct {
	link     int
	gen      uint64
	redialAt int64
}

func newLane(idx int, seed uint64) *lane {
	return &lane{
		idx: idx, rng: rand.New(rand.NewPCG(seed, 0x1a9e0000+uint64(idx))), trace: sha256.New(),
		storeSales: map[string][]*ackedOp{}, maxSeq: map[string]map[string]uint64{},
	}
}

// at queues e on the lane d after its now.
func (ln *lane) at(d int64, e *event) { ln.atAbs(ln.now+max(d, 0), e) }

// atAbs queues e on the lane at virtual time t.
func (ln *lane) atAbs(t int64, e *event) {
	e.at = t
	e.seq = ln.seq
	ln.seq++
	ln.q.push(e)
}

func (ln *lane) do(d int64, fn func()) { ln.at(d, &event{kind: evFunc, fn: fn}) }

// next is the time of the lane's next event (MaxInt64: none).
func (ln *lane) next() int64 {
	if ln.q.len() == 0 {
		return math.MaxInt64
	}
	return ln.q.h[0].at
}

func (ln *lane) note(text string) {
	if len(ln.notes) < maxNotes {
		ln.notes = append(ln.notes, note{ln.now, text})
	}
}

const maxNotes = 20

// assignLanes puts every node in a lane and sets the window: the anchors
// in lane 0, each store in a lane of its own, the window the smallest
// latency of a link between lanes. When that is below a millisecond (or
// there is a single store and no anchor) everything runs in one lane.
func (w *world) assignLanes() {
	laneOf := make([]int, len(w.nodes))
	for i, n := range w.nodes {
		if n.spec.role != ledger.RoleAnchor {
			laneOf[i] = 1 + slices.Index(w.stores, n.spec.store)
		}
	}
	w.window = maxWindow
	for _, lk := range w.links {
		if laneOf[lk.a] != laneOf[lk.b] {
			w.window = min(w.window, int64(lk.spec.Latency))
		}
	}
	if w.window < int64(time.Millisecond) {
		clear(laneOf)
		w.window = maxWindow
	}
	n := slices.Max(laneOf) + 1
	for i := range n {
		w.lanes = append(w.lanes, newLane(i, w.seed))
	}
	for i, nd := range w.nodes {
		nd.ln = w.lanes[laneOf[i]]
	}
	w.rep.Lanes, w.rep.WindowMS = n, float64(w.window)/1e6
}

// linkLane is the queue a link's dials and connects go to: its lane when
// both ends share one, else the global queue.
func (w *world) linkLane(li int) *lane {
	lk := w.links[li]
	if a, b := w.nodes[lk.a].ln, w.nodes[lk.b].ln; a == b {
		return a
	}
	return w.g
}

func (w *world) crossLane(li int) bool { return w.linkLane(li) == w.g }

// post queues a frame sent by lane from on lane to at time t: directly
// when the lanes are paused or it stays in its lane, through from's outbox
// during a window.
func (w *world) post(from, to *lane, t int64, e *event) {
	if from == to || !w.inWindow {
		to.atAbs(t, e)
		return
	}
	e.at, e.dest = t, to.idx
	from.outbox = append(from.outbox, e)
}

// loop runs global events and lane windows until a check stops the run.
func (w *world) loop() error {
	var work chan *lane
	var wg sync.WaitGroup
	var end int64
	if w.workers > 1 && len(w.lanes) > 1 {
		work = make(chan *lane)
		defer close(work)
		for range w.workers {
			go func() {
				for ln := range work {
					w.runLane(ln, end)
					wg.Done()
				}
			}()
		}
	}
	for !w.stop {
		g := w.g.next()
		t0 := int64(math.MaxInt64)
		for _, ln := range w.lanes {
			t0 = min(t0, ln.next())
		}
		if g == math.MaxInt64 && t0 == math.MaxInt64 {
			break
		}
		if g <= t0 {
			w.global()
		} else {
			end = min(g, t0+w.window)
			w.runWindow(end, work, &wg)
		}
		if w.rep.err != nil {
			return w.rep.err
		}
	}
	return nil
}

// global runs the next global event with every lane's clock at its time.
func (w *world) global() {
	e := w.g.q.pop()
	w.now, w.g.now = e.at, e.at
	for _, ln := range w.lanes {
		ln.now = e.at
	}
	switch e.kind {
	case evFunc:
		e.fn()
	case evConnect:
		w.connect(e)
	case evAct:
		w.act(w.g, e)
	case evSample:
		w.sample()
		w.g.at(w.sampleEvery, e)
	case evCheck:
		w.check(e)
	case evCatchUp:
		w.catchUp(e)
	}
}

// runWindow runs every lane's events before end, in parallel when work is
// set, then hands over what crossed between lanes, in lane order.
func (w *world) runWindow(end int64, work chan *lane, wg *sync.WaitGroup) {
	var active []*lane
	for _, ln := range w.lanes {
		if ln.next() < end {
			active = append(active, ln)
		}
	}
	if limit := w.sc.Workload.MaxOps; limit > 0 {
		left := max(0, limit-w.randomOps)
		for i, ln := range active {
			ln.budget = left / len(active)
			if i < left%len(active) {
				ln.budget++
			}
		}
	}
	w.inWindow = true
	if work == nil || len(active) == 1 {
		for _, ln := range active {
			w.runLane(ln, end)
		}
	} else {
		wg.Add(len(active))
		for _, ln := range active {
			work <- ln
		}
		wg.Wait()
	}
	w.inWindow = false
	for _, ln := range active {
		w.randomOps += ln.randomOps
		ln.randomOps = 0
		for _, e := range ln.outbox {
			w.lanes[e.dest].atAbs(e.at, e)
		}
		clear(ln.outbox)
		ln.outbox = ln.outbox[:0]
		for _, c := range ln.closing {
			if lk := w.links[c.link]; lk.gen == c.gen && lk.sess[0] != nil {
				w.closeLink(c.link)
				w.g.atAbs(c.redialAt, &event{kind: evFunc, fn: func() { w.dial(c.link) }})
			}
		}
		ln.closing = ln.closing[:0]
	}
}

// runLane runs ln's events before end.
func (w *world) runLane(ln *lane, end int64) {
	for ln.next() < end {
		e := ln.q.pop()
		ln.now = e.at
		switch e.kind {
		case evDeliver:
			w.deliver(ln, e)
		case evTick:
			w.tick(w.nodes[e.node])
			ln.at(int64(w.sc.Tick), e)
		case evAct:
			w.act(ln, e)
		case evConnect:
			w.connect(e)
		case evFunc:
			e.fn()
		}
	}
}

// traceSum is the run's trace hash: the lanes' traces, in lane order.
func (w *world) traceSum() []byte {
	h := sha256.New()
	for _, ln := range w.lanes {
		h.Write(ln.trace.Sum(nil))
	}
	return h.Sum(nil)
}

// merged gathers the lanes' records into the report: counters summed,
// acknowledged ops in lane order, notes in time order.
func (w *world) merged() {
	r := w.rep
	var notes []note
	for _, ln := range append([]*lane{w.g}, w.lanes...) {
		o, x := &ln.ops, &ln.wire
		r.Ops.Total += o.Total
		for k, v := range o.ByKind {
			r.Ops.ByKind = add(r.Ops.ByKind, k, v)
		}
		for k, v := range o.Refused {
			r.Ops.Refused = add(r.Ops.Refused, k, v)
		}
		r.Wire.Sessions += x.Sessions
		r.Wire.FramesSent += x.FramesSent
		r.Wire.FramesDelivered += x.FramesDelivered
		r.Wire.FramesLost += x.FramesLost
		r.Wire.FramesDropped += x.FramesDropped
		r.Wire.FramesDuplicated += x.FramesDuplicated
		r.Wire.BytesSent += x.BytesSent
		r.Wire.BytesDelivered += x.BytesDelivered
		r.Wire.OpBytes += x.OpBytes
		r.Wire.IdealBytes += x.IdealBytes
		for k, v := range x.SessionErrors {
			r.Wire.SessionErrors = add(r.Wire.SessionErrors, k, v)
		}
		r.Failures = append(r.Failures, ln.failures...)
		notes = append(notes, ln.notes...)
		w.acked = append(w.acked, ln.acked...)
	}
	slices.SortStableFunc(notes, func(a, b note) int { return cmp.Compare(a.at, b.at) })
	for _, n := range notes[:min(len(notes), maxNotes)] {
		r.Notes = append(r.Notes, n.text)
	}
}

func add(m map[string]int, k string, v int) map[string]int {
	if m == nil {
		m = map[string]int{}
	}
	m[k] += v
	return m
}

// inFlight is the number of frames on the wire.
func (w *world) inFlight() int {
	n := w.g.inflight
	for _, ln := range w.lanes {
		n += ln.inflight
	}
	return n
}

// maxSeqs is the union of the lanes' highest acknowledged seqs (each
// device's entries live in its own lane).
func (w *world) maxSeqs() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for _, ln := range w.lanes {
		for sc, m := range ln.maxSeq {
			if out[sc] == nil {
				out[sc] = map[string]uint64{}
			}
			for d, s := range m {
				out[sc][d] = max(out[sc][d], s)
			}
		}
	}
	return out
}
