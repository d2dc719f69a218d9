package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// simNode is one replica in the in-memory harness: a ledger and one
// session per peer.
type simNode struct {
	dev     *ledgertest.Device
	l       *ledger.Ledger
	pulls   *Pulls
	anchors *AnchorView
	near    *Neighbors
	sess    map[int]*Session
}

// frameMsg is a frame in flight.
type frameMsg struct {
	from, to int
	b        []byte
}

// harness wires sessions through an in-memory network with seeded loss,
// duplication and reordering, and a virtual clock.
type harness struct {
	t      *testing.T
	ctx    context.Context
	fleet  *ledgertest.Fleet
	nodes  []*simNode
	queue  []frameMsg
	rng    *rand.Rand
	now    int64
	drop   float64 // probability a frame is lost
	dup    float64 // probability a frame is delivered twice
	frames int
	cut    map[[2]int]bool // frames from→to that are lost
	sent   func(from, to int, b []byte)
	lose   func(from, to int, b []byte) bool // frames it reports are lost
}

func newHarness(t *testing.T, seed uint64) *harness {
	return &harness{t: t, ctx: context.Background(), fleet: ledgertest.NewFleet(seed),
		rng: rand.New(rand.NewPCG(seed, 7)), now: ledgertest.Epoch.UnixNano()}
}

func (h *harness) clock() int64 { return h.now }

func (h *harness) addNode(store string, role ledger.Role) *simNode {
	return h.open(h.fleet.Enroll(store, role))
}

// addRestored adds a node that is a restored copy of n's device: the same
// key and certificate over storage of its own, so it makes the same seqs
// differently (a fork).
func (h *harness) addRestored(n *simNode) *simNode { return h.open(n.dev) }

// open adds a node for device d over a new in-memory ledger.
func (h *harness) open(d *ledgertest.Device) *simNode {
	cfg := h.fleet.Config(d, nil)
	cfg.Now = h.clock
	l, err := ledger.Open(h.ctx, ledgertest.MemStore(), cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	n := &simNode{dev: d, l: l, pulls: NewPulls(), anchors: NewAnchorView(), near: NewNeighbors(), sess: map[int]*Session{}}
	h.nodes = append(h.nodes, n)
	return n
}

// shop adds n terminals of store s1 and connects each pair i < j that
// link allows.
func (h *harness) shop(n int, link func(i, j int) bool) {
	for range n {
		h.addNode("s1", ledger.RoleTerminal)
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			if link(i, j) {
				h.connect(i, j)
			}
		}
	}
}

// connect opens a session pair between nodes i and j.
func (h *harness) connect(i, j int) {
	for _, p := range [][2]int{{i, j}, {j, i}} {
		a, b := h.nodes[p[0]], h.nodes[p[1]]
		s := NewSession(a.l, SessionConfig{RemoteID: b.dev.ID(), RemotePub: b.dev.Cert.PubKey, Now: h.clock, Found: "sim",
			Pulls: a.pulls, Anchor: a.anchors, Neighbors: a.near})
		a.sess[p[1]] = s
		s.Start(h.ctx)
		h.flush(p[0], p[1])
	}
}

func (h *harness) flush(from, to int) {
	s := h.nodes[from].sess[to]
	if s == nil {
		return
	}
	for _, b := range s.Ready() {
		if h.sent != nil {
			h.sent(from, to, b)
		}
		h.queue = append(h.queue, frameMsg{from, to, b})
	}
}

// push hands ops to every session of node i except the one to skip.
func (h *harness) push(i int, ops []*ledger.Op, skip int) {
	for j, s := range h.nodes[i].sess {
		if j == skip {
			continue
		}
		if err := s.Push(h.ctx, ops); err != nil {
			h.t.Fatalf("push %d→%d: %v", i, j, err)
		}
		h.flush(i, j)
	}
}

func (h *harness) sell(i int, sku string, qty int64) {
	n := h.nodes[i]
	o, err := n.l.Append(h.ctx, n.dev.Cert.Store, ledger.KindSale, ledgertest.Sale(sku, qty, 100))
	if err != nil {
		h.t.Fatal(err)
	}
	h.push(i, []*ledger.Op{o}, -1)
}

func (h *harness) receive(i int, sku string, qty int64) {
	n := h.nodes[i]
	o, err := n.l.Append(h.ctx, n.dev.Cert.Store, ledger.KindStockReceived, &ledger.StockReceived{SKU: sku, Qty: qty})
	if err != nil {
		h.t.Fatal(err)
	}
	h.push(i, []*ledger.Op{o}, -1)
}

// deliver delivers one random frame from the queue, subject to loss and
// duplication. It returns false when the queue is empty.
func (h *harness) deliver() bool {
	if len(h.queue) == 0 {
		return false
	}
	k := h.rng.IntN(len(h.queue))
	f := h.queue[k]
	h.queue = slices.Delete(h.queue, k, k+1)
	if h.rng.Float64() < h.drop || h.cut[[2]int{f.from, f.to}] || (h.lose != nil && h.lose(f.from, f.to, f.b)) {
		return true
	}
	if h.rng.Float64() < h.dup {
		h.queue = append(h.queue, f)
	}
	s := h.nodes[f.to].sess[f.from]
	if s == nil {
		return true
	}
	h.frames++
	if err := s.Step(h.ctx, f.b); err != nil {
		h.t.Fatalf("step %d→%d: %v", f.from, f.to, err)
	}
	h.flush(f.to, f.from)
	if relay := s.TakeRelay(); len(relay) > 0 {
		h.push(f.to, relay, f.from)
	}
	if news := s.TakeNews(); len(news) > 0 {
		for j, o := range h.nodes[f.to].sess {
			if j != f.from {
				o.Announce(news)
				h.flush(f.to, j)
			}
		}
	}
	return true
}

// tick advances virtual time by one second and ticks every session.
func (h *harness) tick() {
	h.now += int64(time.Second)
	for i, n := range h.nodes {
		for j, s := range n.sess {
			if err := s.Tick(h.ctx); err != nil {
				h.t.Fatalf("tick %d→%d: %v", i, j, err)
			}
			h.flush(i, j)
		}
	}
}

// run delivers frames, ticking every `every` deliveries, until every node
// agrees on the digest of each scope or maxTicks pass.
func (h *harness) run(scopes []string, maxTicks int) int {
	for ticks := 0; ticks < maxTicks; ticks++ {
		for n := 0; n < 200 && h.deliver(); n++ {
		}
		if len(h.queue) == 0 && h.converged(scopes) {
			return ticks
		}
		h.tick()
	}
	h.t.Fatalf("no convergence after %d ticks: %s", maxTicks, h.describe(scopes))
	return 0
}

// settle delivers and ticks for n ticks without expecting convergence.
func (h *harness) settle(n int) {
	for ; n > 0; n-- {
		for k := 0; k < 200 && h.deliver(); k++ {
		}
		h.tick()
	}
}

func (h *harness) converged(scopes []string) bool {
	for _, sc := range scopes {
		var want string
		for i, n := range h.nodes {
			if !n.l.HoldsScope(sc) {
				continue
			}
			if d := n.l.Digest(sc); i == 0 || want == "" {
				want = d
			} else if d != want {
				return false
			}
		}
	}
	return true
}

func (h *harness) describe(scopes []string) string {
	s := ""
	for _, sc := range scopes {
		for i, n := range h.nodes {
			s += fmt.Sprintf("\n%s node%d vv=%v held=%d", sc, i, n.l.VersionVector(sc), n.l.Stats().Held)
		}
	}
	return s
}

func TestTwoSessionsConvergeFromArbitraryLogs(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		h := newHarness(t, seed)
		h.addNode("s1", ledger.RoleTerminal)
		h.addNode("s1", ledger.RoleTerminal)
		for k := 0; k < 30; k++ { // each sells alone first: arbitrary, disjoint logs
			i := h.rng.IntN(2)
			if h.rng.IntN(4) == 0 {
				h.receive(i, "TEA", int64(1+h.rng.IntN(5)))
			} else {
				h.sell(i, "TEA", int64(1+h.rng.IntN(3)))
			}
		}
		h.connect(0, 1)
		h.run([]string{"s1", ledger.FleetScope}, 50)
		if a, b := h.nodes[0].l.OnHand("s1", "TEA"), h.nodes[1].l.OnHand("s1", "TEA"); a != b {
			t.Fatalf("seed %d: stock %d vs %d", seed, a, b)
		}
		if n := len(h.nodes[1].l.Sales("s1")); n != len(h.nodes[0].l.Sales("s1")) {
			t.Fatalf("seed %d: sales differ", seed)
		}
	}
}

func TestThreeSessionsConvergeOverLossyNetwork(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		h := newHarness(t, seed)
		for i := 0; i < 3; i++ {
			h.addNode("s1", ledger.RoleTerminal)
		}
		h.connect(0, 1)
		h.connect(1, 2) // a line: node 0 reaches node 2 only through node 1
		h.drop, h.dup = 0.2, 0.1
		total := int64(0)
		for k := 0; k < 120; k++ {
			qty := int64(1 + h.rng.IntN(3))
			h.sell(h.rng.IntN(3), "TEA", qty)
			total += qty
			if k%10 == 0 {
				h.deliver()
			}
		}
		h.run([]string{"s1"}, 200)
		h.drop, h.dup = 0, 0
		for i, n := range h.nodes {
			if got := n.l.OnHand("s1", "TEA"); got != -total {
				t.Fatalf("seed %d node %d: on hand %d, want %d", seed, i, got, -total)
			}
			if got := len(n.l.Sales("s1")); got != 120 {
				t.Fatalf("seed %d node %d: %d sales, want 120", seed, i, got)
			}
		}
	}
}

func TestGapFilledFromPeerThatHasIt(t *testing.T) {
	h := newHarness(t, 3)
	for i := 0; i < 3; i++ {
		h.addNode("s1", ledger.RoleTerminal)
	}
	author, gappy := h.nodes[0], h.nodes[1]
	var raws [][]byte
	for k := 0; k < 10; k++ {
		o, err := author.l.Append(h.ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100))
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, o.Raw())
	}
	if _, err := gappy.l.AddCertificate(h.ctx, author.dev.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	// gappy holds 1..3 and 7..10: seqs 4..6 are missing.
	res, err := gappy.l.ApplyBatch(h.ctx, append(slices.Clone(raws[:3]), raws[6:]...))
	if err != nil {
		t.Fatal(err)
	}
	if res[3].Outcome != ledger.Held {
		t.Fatalf("seq 7 outcome %v, want held", res[3].Outcome)
	}
	h.connect(1, 2) // node 2 knows nothing yet
	h.connect(0, 2) // node 2 learns everything from the author
	h.run([]string{"s1"}, 30)
	if vv := gappy.l.VersionVector("s1"); vv[author.dev.ID()] != 10 {
		t.Fatalf("gap not filled: %v", vv)
	}
}

func TestForkedDeviceBranchesReachEveryReplica(t *testing.T) {
	h := newHarness(t, 4)
	a := h.addNode("s1", ledger.RoleTerminal)
	h.addNode("s1", ledger.RoleTerminal)
	h.addNode("s1", ledger.RoleTerminal)
	// A restored copy of node 0's device: same key and certificate, its own
	// (old) storage, selling the same seqs differently.
	h.addRestored(a)
	for k := 0; k < 5; k++ {
		h.sell(0, "TEA", 1)
		h.sell(3, "COFFEE", 1)
	}
	h.connect(0, 1)
	h.connect(3, 2)
	h.settle(10) // two islands, each consistent on its own branch
	if h.nodes[1].l.Digest("s1") == h.nodes[2].l.Digest("s1") {
		t.Fatal("islands agree before they meet")
	}
	h.connect(1, 2)
	h.run([]string{"s1"}, 50)
	for i := 1; i <= 2; i++ {
		f := h.nodes[i].l.Forks()
		if len(f) != 1 || f[0].Device != a.dev.ID() {
			t.Fatalf("node %d forks %+v", i, f)
		}
		if got := len(h.nodes[i].l.Sales("s1")); got != 10 {
			t.Fatalf("node %d holds %d sales, want both branches' 10", i, got)
		}
	}
}

func TestAnchorRelayThroughOneTerminal(t *testing.T) {
	h := newHarness(t, 5)
	h.addNode("s1", ledger.RoleTerminal)
	h.addNode("s1", ledger.RoleTerminal)
	anchor := h.addNode(ledger.FleetScope, ledger.RoleAnchor)
	h.addNode("s2", ledger.RoleTerminal)
	h.connect(0, 1)
	h.connect(1, 2) // only node 1 has an uplink
	h.connect(3, 2)
	for k := 0; k < 20; k++ {
		h.sell(0, "TEA", 1) // node 0's sales reach the anchor only through node 1
		h.sell(3, "BUN", 1)
	}
	h.run([]string{"s1", "s2"}, 40)
	if got := len(anchor.l.Sales("s1")); got != 20 {
		t.Fatalf("anchor holds %d s1 sales, want 20", got)
	}
	if got := len(h.nodes[0].l.Sales("s2")); got != 0 {
		t.Fatalf("a terminal of s1 holds %d sales of s2", got)
	}
	h.settle(2) // acknowledgements go out on the receiver's next tick
	acked := h.nodes[1].sess[2].Acked("s1")
	if acked[h.nodes[0].dev.ID()] != 20 {
		t.Fatalf("anchor acknowledgement at node 1: %v", acked)
	}
	// Node 0 has no uplink: it learns from node 1 what HQ holds.
	h.settle(6) // the next periodic summary carries it
	if got := h.nodes[0].anchors.Acked("s1")[h.nodes[0].dev.ID()]; got != 20 {
		t.Fatalf("relayed anchor acknowledgement at node 0: %d, want 20", got)
	}
	if h.nodes[0].anchors.Seen() == 0 {
		t.Fatal("node 0 never heard of the anchor")
	}
}

// TestCatchUpCrossesHopsWithoutTicks: ops pulled by one node are announced
// to its other peers at once, so a catch-up down a line of four nodes
// finishes before any periodic summary (no tick runs at all).
//
// The harness reorders frames at random: with most seeds a summary
// overtakes the hello it follows, is dropped (before_hello), and only a
// tick repairs it, so the seed is one whose order keeps hellos first.
func TestCatchUpCrossesHopsWithoutTicks(t *testing.T) {
	h := newHarness(t, 10)
	for range 4 {
		h.addNode("s1", ledger.RoleTerminal)
	}
	for k := 0; k < 1500; k++ { // several batches and several pulls
		h.sell(0, "TEA", 1)
	}
	for i := 0; i < 3; i++ {
		h.connect(i, i+1)
	}
	for h.deliver() {
	}
	if !h.converged([]string{"s1"}) {
		t.Fatalf("catch-up stopped short without ticks: %s", h.describe([]string{"s1"}))
	}
	if got := len(h.nodes[3].l.Sales("s1")); got != 1500 {
		t.Fatalf("node 3 holds %d sales, want 1500", got)
	}
}

// summaryCounter counts the full summaries each node sends, and the
// anchors' heartbeats (empty partial summaries).
type summaryCounter struct{ full, heartbeats map[int]int }

func countSummaries(h *harness) *summaryCounter {
	c := &summaryCounter{full: map[int]int{}, heartbeats: map[int]int{}}
	h.sent = func(from, _ int, b []byte) {
		t, msg, err := decodeFrame(b)
		if err != nil || t != msgSummary {
			return
		}
		switch m := msg.(*summaryMsg); {
		case !m.Partial:
			c.full[from]++
		case len(m.VV) == 0:
			c.heartbeats[from]++
		}
	}
	return c
}

func (c *summaryCounter) total() int {
	n := 0
	for _, v := range c.full {
		n += v
	}
	return n
}

// TestQuietSummaries: idle peers that hold the same ops send full
// summaries once per keepalive, not once per summary period; a change, or
// a frame lost before the peer acknowledged it, brings them back at once.
func TestQuietSummaries(t *testing.T) {
	h := newHarness(t, 21)
	for range 3 {
		h.addNode("s1", ledger.RoleTerminal)
	}
	h.connect(0, 1)
	h.connect(1, 2)
	for k := 0; k < 10; k++ {
		h.sell(k%3, "TEA", 1)
	}
	scopes := []string{"s1", ledger.FleetScope}
	h.run(scopes, 30)
	h.settle(10) // acknowledgements settle: everyone knows everyone holds everything

	c := countSummaries(h)
	h.settle(60)
	// 4 session ends × 2 scopes; a keepalive every 60 ticks, so 1 or 2
	// each in 60 ticks (12 each if every period sent one).
	if got := c.total(); got == 0 || got > 4*2*2 {
		t.Fatalf("%d full summaries in 60 idle ticks, want 1..16", got)
	}

	// A push lost on the wire: node 0's next periodic summary (its vector
	// changed) tells node 1, which pulls; node 1 passes it on to node 2.
	h.cut = map[[2]int]bool{{0, 1}: true}
	h.sell(0, "TEA", 1)
	for h.deliver() {
	}
	h.cut = nil
	if ticks := h.run(scopes, 30); ticks > 2*5 {
		t.Fatalf("a lost push took %d ticks to repair, want at most two summary periods", ticks)
	}
}

// TestLostFirstSummaryIsOwed: node 0's first full summary of the
// fleet-wide scope never reaches node 1, and node 0 has nothing new to say
// after it. Node 1 says in its summaries that it has none of node 0's, so
// node 0 sends one within a period or two, not at the next keepalive.
func TestLostFirstSummaryIsOwed(t *testing.T) {
	h := newHarness(t, 25)
	h.addNode("s1", ledger.RoleTerminal)
	h.addNode("s1", ledger.RoleTerminal)
	losing := true
	h.lose = func(from, to int, b []byte) bool {
		_, m, _ := decodeFrame(b)
		sm, ok := m.(*summaryMsg)
		return losing && from == 0 && ok && !sm.Partial && sm.Scope == ledger.FleetScope
	}
	h.connect(0, 1)
	h.settle(3)
	st := h.nodes[1].sess[0].sc[ledger.FleetScope]
	if st == nil || st.synced {
		t.Fatal("the summary was not lost: the test proves nothing")
	}
	losing = false
	h.settle(12)
	if !st.synced {
		t.Fatal("node 1 still has no full summary of node 0's after two summary periods")
	}
}

// TestQuietSummariesStillFindForks: two replicas, quiet with each other,
// each learn a different branch of a restored device at the same seq, and
// neither branch reaches the other directly: node 1 gets one pushed while
// its frames to node 2 are lost, node 2 pulls the other from the restored
// device. Node 1 has heard node 2's summary (so node 2 covers its vector),
// but the head in it differs from node 1's: that alone must keep node 1
// summarising, so the fork crosses within a few periods of the heal, not
// at the next keepalive.
func TestQuietSummariesStillFindForks(t *testing.T) {
	h := newHarness(t, 22)
	a := h.addNode("s1", ledger.RoleTerminal)
	h.addNode("s1", ledger.RoleTerminal)
	h.addNode("s1", ledger.RoleTerminal)
	h.addRestored(a)
	h.connect(0, 1)
	h.connect(1, 2)
	h.settle(40) // quiet: nothing sold yet, everyone acknowledged

	h.cut = map[[2]int]bool{{1, 2}: true}
	for k := 0; k < 5; k++ {
		h.sell(0, "TEA", 1)    // reaches node 1 only
		h.sell(3, "COFFEE", 1) // the same seqs, offline
	}
	h.connect(3, 2) // node 2 pulls the restored branch: not relayed
	h.settle(8)
	if got := h.nodes[1].sess[2].Acked("s1")[a.dev.ID()]; got != 5 {
		t.Fatalf("node 1 knows node 2 holds %d of the device's ops, want 5 (the other branch)", got)
	}
	if len(h.nodes[1].l.Forks()) != 0 || len(h.nodes[2].l.Forks()) != 0 {
		t.Fatal("a branch crossed during the cut")
	}
	h.cut = nil
	if ticks := h.run([]string{"s1"}, 40); ticks > 15 {
		t.Fatalf("the fork took %d ticks to cross after the heal, want well before the keepalive (60)", ticks)
	}
	for i := 1; i <= 2; i++ {
		if f := h.nodes[i].l.Forks(); len(f) != 1 || f[0].Device != a.dev.ID() {
			t.Fatalf("node %d forks %+v", i, f)
		}
		if got := len(h.nodes[i].l.Sales("s1")); got != 10 {
			t.Fatalf("node %d holds %d sales, want both branches' 10", i, got)
		}
	}
}

// TestForkRequestRepeatedAfterKeepalive: a request for a fork branch is
// not repeated while the peer keeps reporting the same fork digest (the
// answer may be on its way), and is repeated once a keepalive period has
// passed without it (it was lost).
func TestForkRequestRepeatedAfterKeepalive(t *testing.T) {
	h := newHarness(t, 24)
	a := h.addNode("s1", ledger.RoleTerminal)
	x := h.addNode("s1", ledger.RoleTerminal) // will hold both branches
	y := h.addNode("s1", ledger.RoleTerminal) // holds one
	restored := h.addRestored(a).l
	var branchA, branchB [][]byte
	for k := 0; k < 3; k++ {
		o, err := a.l.Append(h.ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100))
		if err != nil {
			t.Fatal(err)
		}
		branchA = append(branchA, o.Raw())
		if o, err = restored.Append(h.ctx, "s1", ledger.KindSale, ledgertest.Sale("BUN", 1, 100)); err != nil {
			t.Fatal(err)
		}
		branchB = append(branchB, o.Raw())
	}
	for _, n := range []*simNode{x, y} {
		if _, err := n.l.AddCertificate(h.ctx, a.dev.Cert.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.l.ApplyBatch(h.ctx, append(slices.Clone(branchA), branchB...)); err != nil {
		t.Fatal(err)
	}
	if _, err := y.l.ApplyBatch(h.ctx, branchA); err != nil {
		t.Fatal(err)
	}
	if len(x.l.Forks()) != 1 {
		t.Fatal("x did not flag the fork")
	}
	newSession := func(self, peer *simNode) *Session {
		return NewSession(self.l, SessionConfig{RemoteID: peer.dev.ID(), RemotePub: peer.dev.Cert.PubKey, Now: h.clock})
	}
	sx, sy := newSession(x, y), newSession(y, x)
	sx.Start(h.ctx)
	sy.Start(h.ctx)
	hx, hy := sx.Ready(), sy.Ready()
	if err := sx.Step(h.ctx, hy[0]); err != nil {
		t.Fatal(err)
	}
	var summary []byte // x's summary of s1, with its fork digest
	for _, b := range sx.Ready() {
		if _, m, _ := decodeFrame(b); m.(*summaryMsg).Scope == "s1" {
			summary = b
		}
	}
	if err := sy.Step(h.ctx, hx[0]); err != nil {
		t.Fatal(err)
	}
	sy.Ready()
	wants := func() int {
		if err := sy.Step(h.ctx, summary); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, b := range sy.Ready() {
			if t, m, _ := decodeFrame(b); t == msgWant && m.(*wantMsg).Device == a.dev.ID() {
				n++
			}
		}
		return n
	}
	if n := wants(); n != 1 {
		t.Fatalf("%d requests for the branch on the first summary, want 1", n)
	}
	if n := wants(); n != 0 {
		t.Fatalf("%d requests on the same digest again, want 0 (the answer may be on its way)", n)
	}
	for range sy.cfg.KeepaliveTicks {
		if err := sy.Tick(h.ctx); err != nil {
			t.Fatal(err)
		}
		sy.Ready()
	}
	if n := wants(); n != 1 {
		t.Fatalf("%d requests a keepalive period later, want 1 (the answer was lost)", n)
	}
}

// TestAnchorHeartbeat: an anchor quiet with a store's uplink still sends
// it an empty acknowledgement every summary period and a fresh signed
// statement every seenRefresh, and the uplink relays it to a terminal
// behind it at least every seenRefresh,
// so "last HQ contact" stays fresh everywhere while nothing is sold.
func TestAnchorHeartbeat(t *testing.T) {
	h := newHarness(t, 23)
	m := h.addNode("s1", ledger.RoleManager)
	h.addNode(ledger.FleetScope, ledger.RoleAnchor)
	term := h.addNode("s1", ledger.RoleTerminal)
	h.connect(0, 1)
	h.connect(0, 2) // the terminal reaches HQ only through the manager
	h.sell(0, "TEA", 1)
	h.run([]string{"s1", ledger.FleetScope}, 20)
	h.settle(40)
	c := countSummaries(h)
	// The anchor signs a fresh statement every seenRefresh (10 ticks), not
	// every period: contact news arrives within that plus a period.
	for range 6 {
		seen, relayed := m.anchors.Seen(), term.anchors.Seen()
		h.settle(15)
		if m.anchors.Seen() <= seen {
			t.Fatal("15 ticks passed without a signed statement of the anchor at the manager")
		}
		if term.anchors.Seen() <= relayed {
			t.Fatal("15 ticks passed without news of the anchor at the terminal")
		}
	}
	if c.heartbeats[1] == 0 || c.heartbeats[0] == 0 {
		t.Fatalf("heartbeats sent: %v", c.heartbeats)
	}
	if c.full[1] > 2*2 { // two scopes, a keepalive each per 60 ticks
		t.Fatalf("the quiet anchor sent %d full summaries in 90 ticks", c.full[1])
	}
	if c.full[0] > 2*2*4 {
		t.Fatalf("the quiet manager sent %d full summaries in 90 ticks", c.full[0])
	}
}

// opsSent totals the ops every session has sent.
func (h *harness) opsSent() uint64 {
	var n uint64
	for _, nd := range h.nodes {
		for _, s := range nd.sess {
			n += s.Stats().OpsOut
		}
	}
	return n
}

// TestFullMeshSendsEachOpOnce: in a shop where every terminal sees every
// other, a sale crosses to each terminal once, from its author: nobody
// relays what the others have first hand. In a star (the spokes see only
// the hub) the hub relays it to the other spokes, and they still get it.
func TestFullMeshSendsEachOpOnce(t *testing.T) {
	for _, star := range []bool{false, true} {
		h := newHarness(t, 26)
		h.shop(5, func(i, j int) bool { return !star || i == 0 })
		h.settle(8) // hellos, then a summary period: everyone knows who sees whom
		before := h.opsSent()
		author := 1 // a spoke in the star
		for k := 0; k < 20; k++ {
			h.sell(author, "TEA", 1)
			h.deliver()
		}
		h.run([]string{"s1"}, 20)
		sent := h.opsSent() - before
		// Every other node gets the 20 ops once: 4 × 20, whether from the
		// author (full mesh) or from it and then the hub (star: 20 to the
		// hub, 3 × 20 relayed).
		if want := uint64(4 * 20); sent != want {
			t.Errorf("star %v: %d ops sent for 20 sales to 4 peers, want %d", star, sent, want)
		}
	}
}

// queued is what node i counts as queued for HQ: its store's ops that no
// anchor is known to hold (its own AnchorView, or its own session with an
// anchor, whose acknowledgements feed the same view).
func (h *harness) queued(i int) uint64 {
	n := h.nodes[i]
	store := n.dev.Cert.Store
	return n.l.VersionVector(store).Beyond(n.anchors.Acked(store))
}

// TestQueuedForHQDrains: once HQ holds a store's sales, every device of
// the store learns it within a couple of summary periods, whether each
// device has its own session with the anchor (the demo) or only the hub
// has (a star behind one uplink), and whatever the other devices sold.
func TestQueuedForHQDrains(t *testing.T) {
	for _, direct := range []bool{true, false} {
		h := newHarness(t, 27)
		h.shop(4, func(i, j int) bool { return true })
		anchor := 4
		h.addNode(ledger.FleetScope, ledger.RoleAnchor)
		for i := range 4 {
			if direct || i == 0 {
				h.connect(i, anchor)
			}
		}
		h.settle(8)
		// Two rounds: the second in the steady state, where only the
		// acknowledgements can carry the news (nothing else is owed).
		var ticks int
		for round := range 2 {
			for k := 0; k < 12; k++ {
				h.sell(k%4, "TEA", 1)
			}
			h.run([]string{"s1"}, 20)
			for ticks = 0; ticks < 12; ticks++ {
				if h.queued(0)+h.queued(1)+h.queued(2)+h.queued(3) == 0 {
					break
				}
				h.settle(1)
			}
			if round == 0 {
				h.settle(40)
			}
		}
		if ticks == 12 {
			t.Errorf("direct %v: still queued for HQ 12 ticks after convergence: %d %d %d %d", direct,
				h.queued(0), h.queued(1), h.queued(2), h.queued(3))
		}
	}
}
