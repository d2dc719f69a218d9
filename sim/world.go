package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
	"storemesh/mesh"
)

// epoch is virtual time 0 on every clock that neither drifts nor jumped.
var epoch = ledgertest.Epoch.UnixNano()

// node is one simulated device: the real ledger over an in-memory
// datastore (which survives crashes: it is the device's disk) and one
// real mesh.Session per connected peer, owned by the links.
type node struct {
	idx     int
	spec    nodeSpec
	dev     *ledgertest.Device
	store   ds.Batching
	l       *ledger.Ledger   // nil while crashed
	pulls   *mesh.Pulls      // shared by the node's sessions, as in mesh/p2p
	anchor  *mesh.AnchorView // shared by the node's sessions, as in mesh/p2p
	near    *mesh.Neighbors  // shared by the node's sessions, as in mesh/p2p
	alive   bool
	links   []int // indices of this node's links, sorted by the peer's index
	clk     nodeClock
	pending []*ledger.Op // push policy "durable": ops made durable during the current call
	ops     []*ackedOp   // the ops this node authored and acknowledged
	ln      *lane        // the lane whose events touch this node
}

// nodeClock is a device's physical clock: virtual time plus an offset
// (jumps) plus drift in parts per million. Integer arithmetic only, so
// every platform computes the same readings.
type nodeClock struct {
	offset, ppm, driftFrom, driftAcc int64
}

func (c *nodeClock) at(t int64) int64 {
	return epoch + t + c.offset + c.driftAcc + (t-c.driftFrom)*c.ppm/1_000_000
}

// set jumps the clock by jump at time t and drifts it at ppm from then on.
func (c *nodeClock) set(t, jump int64, ppm *int64) {
	c.offset += jump
	if ppm != nil {
		c.driftAcc += (t - c.driftFrom) * c.ppm / 1_000_000
		c.driftFrom, c.ppm = t, *ppm
	}
}

// hooks are fault injections for tests of the checker itself.
type hooks struct {
	// frame may rewrite (or, returning nil, lose) a frame on delivery.
	frame func(from, to string, b []byte) []byte
}

// world is one run: every piece of state the seed decides. What a lane's
// nodes do lives in that lane (lanes.go); the world holds what is shared,
// read-only while lanes run, and the global events' state.
type world struct {
	sc      *Scenario
	seed    uint64
	ctx     context.Context
	rng     *rand.Rand // global events' randomness (and the schedule drawn at the start)
	now     int64      // the global events' clock
	g       *lane      // the global event queue
	lanes   []*lane
	window  int64 // lookahead: the least latency of a link between lanes
	workers int   // goroutines running lanes; never changes the result
	fleet   *ledgertest.Fleet
	sigs    *ledger.SigCache
	hooks   hooks

	inWindow bool // lanes are running: cross-lane effects wait for the window's end

	nodes    []*node
	links    []*link
	linkIdx  map[[2]int]int
	stores   []string         // store ids in scenario order
	byStore  map[string][]int // store → its devices
	anchors  []int
	skus     []string
	weights  []int // per sku in skus, for random sales
	price    map[string]int64
	backups  map[string]map[int]*backup // name → node → copy
	acked    []*ackedOp                 // every lane's, gathered when the run ends
	transfer int                        // transfers made, for ids

	quiet, deadline int64
	lastHeal        int64
	healTarget      map[string]map[string]uint64 // highest acknowledged seqs when the last heal happened
	catchingUp      bool                         // an evCatchUp is queued
	caughtUpAt      int64                        // -1 until every replica holds healTarget
	stop            bool
	converged       bool
	convergedAt     int64
	hqBy            int64            // after convergence: wait this long for HQ's acknowledgements to spread
	hqAt            int64            // when the run ended on them
	hqQueued        map[*node]uint64 // store devices still counting ops as queued for HQ then
	randomOps       int              // random workload ops made, as of the last window's end
	sampleEvery     int64

	salesOf map[*node]map[string][]string // checks: anchors' sale ids by store
	revoked map[string][]*simRevocation   // device → the revocations of it the harness made (revoke.go)

	reactors []*ledger.AllotReactor // per node, when the catalog has an allotted SKU (allot.go)

	rep *Report
}

// Run simulates sc with seed and checks its invariants. A fleet of at
// least parallelNodes nodes runs its lanes on as many goroutines as
// GOMAXPROCS allows; a smaller one runs on one (a window's barrier costs
// more than it saves). The report lists every broken invariant; the error
// is for scenarios that cannot run.
func Run(sc *Scenario, seed uint64) (*Report, error) {
	workers := 1
	if sc.NodeCount() >= parallelNodes {
		workers = runtime.GOMAXPROCS(0)
	}
	return run(sc, seed, hooks{}, workers)
}

const parallelNodes = 200

// RunWorkers is Run on the given number of goroutines: the report is the
// same for any number (Explore runs each seed on one).
func RunWorkers(sc *Scenario, seed uint64, workers int) (*Report, error) {
	return run(sc, seed, hooks{}, workers)
}

func run(sc0 *Scenario, seed uint64, h hooks, workers int) (*Report, error) {
	sc := *sc0 // Validate fills defaults; never write the caller's copy (Explore shares it)
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("sim: scenario %s: %w", sc.Name, err)
	}
	if h.frame != nil {
		workers = 1 // fault hooks are not safe for concurrent use
	}
	start := time.Now()
	w := &world{
		sc: &sc, seed: seed, ctx: context.Background(), hooks: h, workers: max(1, workers),
		rng:        rand.New(rand.NewPCG(seed, 0x5ea11e55)),
		g:          newLane(-1, seed),
		fleet:      ledgertest.NewFleet(seed),
		sigs:       ledger.NewSigCache(),
		linkIdx:    map[[2]int]int{},
		byStore:    map[string][]int{},
		caughtUpAt: -1,
		price:      map[string]int64{},
		backups:    map[string]map[int]*backup{},
		rep:        newReport(&sc, seed),
	}
	if err := w.build(); err != nil {
		return nil, err
	}
	w.schedule()
	built := time.Now()
	if err := w.loop(); err != nil {
		return nil, err
	}
	simulated := time.Now()
	w.finish()
	w.rep.Wall = time.Since(start)
	w.rep.WallBuild, w.rep.WallSim, w.rep.WallCheck = built.Sub(start), simulated.Sub(built), time.Since(simulated)
	return w.rep, nil
}

// build enrolls and opens every node and lays the links.
func (w *world) build() error {
	for i, spec := range w.sc.nodes {
		n := &node{idx: i, spec: spec, store: ledgertest.MemStore()}
		n.dev = w.fleet.Enroll(spec.store, spec.role, ledgertest.WithID(spec.name))
		w.nodes = append(w.nodes, n)
		if spec.role == ledger.RoleAnchor {
			w.anchors = append(w.anchors, i)
			continue
		}
		if _, ok := w.byStore[spec.store]; !ok {
			w.stores = append(w.stores, spec.store)
		}
		w.byStore[spec.store] = append(w.byStore[spec.store], i)
	}
	for _, c := range w.sc.Catalog {
		w.price[c.SKU] = c.Price
		wt := 1
		if c.Weight != nil {
			wt = *c.Weight
		}
		w.skus, w.weights = append(w.skus, c.SKU), append(w.weights, wt)
	}
	w.layLinks()
	w.assignLanes()
	for _, n := range w.nodes {
		if err := w.open(n); err != nil {
			return err
		}
	}
	return nil
}

// open opens the node's ledger over its datastore: a start or a restart.
// Only what the ledger committed is in the datastore, so a restart keeps
// exactly what the device had made durable.
func (w *world) open(n *node) error {
	cfg := w.fleet.Config(n.dev, nil)
	cfg.Now = func() int64 { return n.clk.at(n.ln.now) }
	cfg.SigCache = w.sigs
	l, err := ledger.Open(w.ctx, n.store, cfg)
	if err != nil {
		return fmt.Errorf("sim: open %s: %w", n.spec.name, err)
	}
	if w.sc.Push == "durable" {
		l.Subscribe(func(ops []*ledger.Op) { n.pending = append(n.pending, ops...) })
	}
	n.l, n.alive, n.pulls, n.anchor, n.near = l, true, mesh.NewPulls(), mesh.NewAnchorView(), mesh.NewNeighbors()
	return nil
}

// at queues a global event d after now.
func (w *world) at(d int64, e *event) { w.g.at(d, e) }

// do queues a global function d after now.
func (w *world) do(d int64, fn func()) { w.g.do(d, fn) }

// schedule queues everything known at the start: the setup ops, ticks,
// dials, the workload, the scenario's events, samples and checks.
func (w *world) schedule() {
	w.do(0, w.setup)
	tick := int64(w.sc.Tick)
	for i, n := range w.nodes {
		n.ln.at(w.rng.Int64N(tick), &event{kind: evTick, node: i})
	}
	for li := range w.links {
		w.dial(li)
	}
	w.scheduleWorkload()
	w.scheduleEvents()
	w.quiet = int64(w.sc.quietPoint())
	w.deadline = w.quiet + int64(w.sc.Settle)
	w.sampleEvery = max(int64(time.Second), (w.quiet+int64(time.Minute))/240)
	w.at(0, &event{kind: evSample})
	w.at(w.quiet, &event{kind: evCheck})
}

// tick ticks every session of n, in peer order.
func (w *world) tick(n *node) {
	if !n.alive {
		return
	}
	for _, li := range n.links {
		lk := w.links[li]
		side := lk.sideOf(n.idx)
		if s := lk.sess[side]; s != nil {
			if err := s.Tick(w.ctx); err != nil {
				w.flush(li, side)
				w.sessionFailed(li, side, err)
				continue
			}
			w.flush(li, side)
		}
	}
	w.react(n)
}

// check runs every Check interval from the quiet point until every
// replica of every scope agrees (or the deadline), then until every store
// device knows HQ holds its store's ops, for at most two keepalives: the
// run ends there.
func (w *world) check(e *event) {
	if !w.converged {
		if w.convergedNow() {
			w.converged, w.convergedAt = true, w.now
			if w.caughtUpAt < 0 {
				w.caughtUpAt = w.now
			}
			w.hqBy = w.now + 2*int64(w.sc.Tick)*int64(w.keepaliveTicks())
		} else if w.now >= w.deadline {
			w.stop = true
			w.sample()
			return
		}
	}
	if w.converged {
		if q := w.queuedForHQ(); len(q) == 0 || w.now >= w.hqBy {
			w.hqQueued, w.hqAt = q, w.now
			w.stop = true
			w.sample()
			return
		}
	}
	w.at(int64(w.sc.Check), e)
}

// keepaliveTicks is the sessions' keepalive.
func (w *world) keepaliveTicks() int {
	t := w.sc.Session
	return mesh.SessionConfig{SummaryTicks: t.SummaryTicks, KeepaliveTicks: t.KeepaliveTicks}.Keepalive()
}

// queuedForHQ returns, for each running store device that has a way to an
// anchor, the ops of its store it counts as not yet held by HQ (its
// AnchorView against its ledger, as the node's status computes
// queued_for_anchor), when there are any.
func (w *world) queuedForHQ() map[*node]uint64 {
	if len(w.anchors) == 0 {
		return nil
	}
	out := map[*node]uint64{}
	for _, st := range w.stores {
		uplink := false
		for _, i := range w.byStore[st] {
			uplink = uplink || w.nodes[i].spec.uplink
		}
		if !uplink {
			continue
		}
		for _, i := range w.byStore[st] {
			n := w.nodes[i]
			if !n.alive || w.isRevoked(n) {
				continue
			}
			if q := n.l.VersionVector(st).Beyond(n.anchor.Acked(st)); q > 0 {
				out[n] = q
			}
		}
	}
	return out
}

// healed notes a heal (a link back up, a device restarted): from now on
// the run times how long until every replica holds every op that was
// acknowledged before it, even while the workload goes on.
func (w *world) healed() {
	w.lastHeal = w.now
	w.healTarget = w.maxSeqs()
	w.caughtUpAt = -1
	if !w.catchingUp {
		w.catchingUp = true
		w.at(int64(w.sc.Check), &event{kind: evCatchUp})
	}
}

func (w *world) catchUp(e *event) {
	if w.caughtUpNow() {
		w.caughtUpAt, w.catchingUp = w.now, false
		return
	}
	w.at(int64(w.sc.Check), e)
}

func (w *world) caughtUpNow() bool {
	for sc, want := range w.healTarget {
		for _, i := range w.replicas(sc) {
			n := w.nodes[i]
			if !n.alive {
				return false
			}
			vv := n.l.VersionVector(sc)
			for d, s := range want {
				if vv[d] < w.keptSeq(sc, d, s) {
					return false
				}
			}
		}
	}
	return true
}

// scopes lists every scope: the stores in order, then FleetScope.
func (w *world) scopes() []string { return append(slices.Clone(w.stores), ledger.FleetScope) }

// replicas lists the nodes that hold scope. A revoked device is cut off
// by design and left out.
func (w *world) replicas(scope string) []int {
	var out []int
	if scope == ledger.FleetScope {
		out = make([]int, len(w.nodes))
		for i := range out {
			out[i] = i
		}
	} else {
		out = append(slices.Clone(w.byStore[scope]), w.anchors...)
	}
	if len(w.revoked) > 0 {
		out = slices.DeleteFunc(out, func(i int) bool { return w.isRevoked(w.nodes[i]) })
	}
	return out
}

func (w *world) nReplicas(scope string) int {
	if scope == ledger.FleetScope {
		return len(w.nodes)
	}
	return len(w.byStore[scope]) + len(w.anchors)
}

// convergedNow compares version vectors first (cheap) and digests only
// when those agree.
func (w *world) convergedNow() bool {
	for _, n := range w.nodes {
		if !n.alive && !w.isRevoked(n) {
			return false
		}
	}
	for _, sc := range w.scopes() {
		reps := w.replicas(sc)
		vv := w.nodes[reps[0]].l.VersionVector(sc)
		for _, i := range reps[1:] {
			if w.nodes[i].l.VersionVector(sc).Compare(vv) != crdt.Equal {
				return false
			}
		}
	}
	for _, sc := range w.scopes() {
		reps := w.replicas(sc)
		d := w.nodes[reps[0]].l.Digest(sc)
		for _, i := range reps[1:] {
			if w.nodes[i].l.Digest(sc) != d {
				return false
			}
		}
	}
	return true
}

// sample records one point of the graphs: the fraction of replicas
// holding everything the freshest replica of their scope holds, and the
// queue depth (frames in flight plus ops held for a missing predecessor).
func (w *world) sample() {
	total, upToDate, held := 0, 0, 0
	for _, sc := range w.scopes() {
		reps := w.replicas(sc)
		total += len(reps)
		var vvs []map[string]uint64
		best := map[string]uint64{}
		for _, i := range reps {
			if n := w.nodes[i]; n.alive {
				vv := n.l.VersionVector(sc)
				vvs = append(vvs, vv)
				for d, s := range vv {
					best[d] = max(best[d], s)
				}
			}
		}
		for _, vv := range vvs {
			if equalVV(vv, best) {
				upToDate++
			}
		}
	}
	for _, n := range w.nodes {
		if n.alive {
			held += n.l.Stats().Held
		}
	}
	w.rep.Samples = append(w.rep.Samples, Sample{T: secs(w.now), UpToDate: float64(upToDate) / float64(max(total, 1)),
		InFlight: w.inFlight(), Held: held})
}

func equalVV(a, b map[string]uint64) bool {
	n := 0
	for d, s := range b {
		if s == 0 {
			continue
		}
		if a[d] != s {
			return false
		}
		n++
	}
	for _, s := range a {
		if s != 0 {
			n--
		}
	}
	return n == 0
}

func secs(ns int64) float64 { return float64(ns) / 1e9 }

// errStop is a run that cannot go on (a storage failure of the
// in-memory datastore, a restore of a missing backup).
var errStop = errors.New("sim: run stopped")

func (w *world) fatal(format string, args ...any) {
	if w.rep.err == nil {
		w.rep.err = fmt.Errorf("%w: seed %d at %.3fs: %s", errStop, w.seed, secs(w.now), fmt.Sprintf(format, args...))
	}
}
