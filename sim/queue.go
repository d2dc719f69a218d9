package sim

// evKind says what an event does when its time comes.
type evKind uint8

const (
	evDeliver evKind = iota // a frame arrives at the far end of a link
	evTick                  // a node ticks its sessions
	evAct                   // a device's next workload action
	evConnect               // a link's session pair starts (dial finished)
	evFunc                  // a scenario event (partition, crash, clock, ...)
	evSample                // sample the graphs
	evCheck                 // after the quiet point: converged yet?
	evCatchUp               // after a heal: does every replica hold what was made before it?
)

// event is one entry of the event queue. Events run in (at, seq) order:
// seq is the order they were scheduled in, so ties never depend on heap
// internals.
type event struct {
	at   int64 // virtual ns since the run started
	seq  uint64
	kind evKind
	node int    // evTick, evAct
	link int    // evDeliver, evConnect
	side int    // evDeliver: the receiving side of the link (0: a, 1: b)
	gen  uint64 // evDeliver, evConnect: the link generation it belongs to
	dest int    // evDeliver in a lane's outbox: the lane it is for
	b    []byte // evDeliver: the frame
	fn   func() // evFunc
}

func (e *event) before(o *event) bool {
	if e.at != o.at {
		return e.at < o.at
	}
	return e.seq < o.seq
}

// eventQueue is a binary min-heap of events. It is written out rather
// than built on container/heap to avoid boxing every event in an any.
type eventQueue struct{ h []*event }

func (q *eventQueue) len() int { return len(q.h) }

func (q *eventQueue) push(e *event) {
	q.h = append(q.h, e)
	i := len(q.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.h[i].before(q.h[p]) {
			break
		}
		q.h[i], q.h[p] = q.h[p], q.h[i]
		i = p
	}
}

func (q *eventQueue) pop() *event {
	n := len(q.h) - 1
	top := q.h[0]
	q.h[0] = q.h[n]
	q.h[n] = nil
	q.h = q.h[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q.h[l].before(q.h[m]) {
			m = l
		}
		if r < n && q.h[r].before(q.h[m]) {
			m = r
		}
		if m == i {
			return top
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
}
