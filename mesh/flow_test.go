package mesh

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// established opens a session of v towards attacker a and completes the
// handshake, discarding what v says.
func established(t *testing.T, h *harness, v *simNode, a *ledgertest.Device, cfg func(*SessionConfig)) *Session {
	t.Helper()
	sc := SessionConfig{RemoteID: a.ID(), RemotePub: a.Cert.PubKey, Now: h.clock}
	if cfg != nil {
		cfg(&sc)
	}
	s := NewSession(v.l, sc)
	s.Start(h.ctx)
	if err := s.Step(h.ctx, helloFrom(nil, a.Cert)); err != nil {
		t.Fatal(err)
	}
	s.Ready()
	return s
}

func readyBytes(fs [][]byte) int {
	n := 0
	for _, f := range fs {
		n += len(f)
	}
	return n
}

// TestWantStormBounded: before flow.go one 29-byte want with Through 0
// made the victim read and queue a device's whole history (20,000 ops:
// 58 frames, 3.8 MB) in one Step, and it could be repeated. Now one want
// makes at most a window, a peer that does not acknowledge gets nothing
// more until AckTicks pass, and repeating the want is banned.
func TestWantStormBounded(t *testing.T) {
	h := newHarness(t, 31)
	v := h.addNode("s1", ledger.RoleTerminal)
	for k := 0; k < 20000; k++ {
		h.sell(0, "TEA", 1)
	}
	a := h.fleet.Enroll("s1", ledger.RoleTerminal)
	s := established(t, h, v, a, nil)
	want := encodeFrame(msgWant, &wantMsg{Scope: "s1", Device: v.dev.ID()})
	if err := s.Step(h.ctx, want); err != nil {
		t.Fatal(err)
	}
	// The window, the frame that crosses it, and the summary and acks of the same Step.
	window := s.cfg.WindowBytes + s.cfg.BatchBytes + 16<<10
	if got := readyBytes(s.Ready()); got > window {
		t.Fatalf("one want queued %d bytes, bound %d", got, window)
	}
	// Ticks without acks: nothing until the window's frames time out.
	for range s.cfg.AckTicks - 1 {
		if err := s.Tick(h.ctx); err != nil {
			t.Fatal(err)
		}
		for _, f := range s.Ready() {
			if f[2] == byte(msgOps) {
				t.Fatal("ops sent with the window full and nothing acknowledged")
			}
		}
	}
	// The storm: the same want again and again, nothing consumed.
	var err error
	for k := 0; k < 1000 && err == nil; k++ {
		err = s.Step(h.ctx, want)
	}
	wantCode(t, err, CodeAbusive)
	if !IsBannable(err) {
		t.Fatal("an abusive peer must be banned")
	}
	if st := s.Stats(); st.Rejected["want_repeated"] == 0 {
		t.Fatalf("repeats not counted: %+v", st.Rejected)
	}
}

// TestWantUnknownDeviceBanned: wants naming devices no certificate backs
// are counted, and a peer that keeps making them is banned.
func TestWantUnknownDeviceBanned(t *testing.T) {
	h := newHarness(t, 32)
	v := h.addNode("s1", ledger.RoleTerminal)
	h.sell(0, "TEA", 1)
	a := h.fleet.Enroll("s1", ledger.RoleTerminal)
	s := established(t, h, v, a, nil)
	var err error
	for k := 0; k < 100 && err == nil; k++ {
		err = s.Step(h.ctx, encodeFrame(msgWant, &wantMsg{Scope: "s1", Device: fmt.Sprintf("dJUNK%d", k)}))
	}
	wantCode(t, err, CodeAbusive)
	if s.Stats().Rejected["want_unknown_device"] == 0 {
		t.Fatal("not counted")
	}
	if _, wants := s.Window(); wants != 0 {
		t.Fatalf("%d jobs queued for unknown devices", wants)
	}
}

// pumpPair delivers frames between two sessions in order (a stream each
// way) until both are quiet, ticking when nothing is in flight, and
// returns the largest output of one call of either side.
func pumpPair(t *testing.T, h *harness, x, y *Session, done func() bool, maxTicks int) (maxReady int) {
	t.Helper()
	var toY, toX [][]byte
	take := func(s *Session) [][]byte {
		out := s.Ready()
		maxReady = max(maxReady, readyBytes(out))
		return out
	}
	toY = append(toY, take(x)...)
	toX = append(toX, take(y)...)
	for ticks := 0; !done(); {
		if len(toX) == 0 && len(toY) == 0 {
			if ticks++; ticks > maxTicks {
				bx, jx := x.Window()
				by, jy := y.Window()
				t.Fatalf("not done after %d ticks: x %+v window %d/%d; y %+v window %d/%d", maxTicks, x.Stats(), bx, jx, y.Stats(), by, jy)
			}
			h.now += 1e9
			for _, s := range []*Session{x, y} {
				if err := s.Tick(h.ctx); err != nil {
					t.Fatal(err)
				}
			}
			toY = append(toY, take(x)...)
			toX = append(toX, take(y)...)
			continue
		}
		if len(toY) > 0 {
			f := toY[0]
			toY = toY[1:]
			if err := y.Step(h.ctx, f); err != nil {
				t.Fatal(err)
			}
			toX = append(toX, take(y)...)
		}
		if len(toX) > 0 {
			f := toX[0]
			toX = toX[1:]
			if err := x.Step(h.ctx, f); err != nil {
				t.Fatal(err)
			}
			toY = append(toY, take(x)...)
		}
	}
	return maxReady
}

// longChain is the length of the chain the long-exchange tests move:
// 1,000,000 with STOREMESH_LONG=1 (the figure in docs/benchmarks.md),
// 20,000 otherwise, to spare CI's two cores.
func longChain(t *testing.T) int {
	if n, err := strconv.Atoi(os.Getenv("STOREMESH_LONG")); err == nil && n > 0 {
		return 1_000_000
	}
	if testing.Short() {
		t.Skip("long exchange")
	}
	return 20_000
}

// fastAppend writes n sales to l without sessions.
func fastAppend(t *testing.T, l *ledger.Ledger, store string, n int) {
	t.Helper()
	ctx := context.Background()
	for k := 0; k < n; k++ {
		if _, err := l.Append(ctx, store, ledger.KindSale, ledgertest.Sale("TEA", 1, 100)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLongCatchUpBounded: a new terminal catches up a long chain through
// the window; no call's output exceeds the window plus a frame (before,
// the 32 MiB queue cap of the libp2p driver cut such an exchange off
// above about 175,000 ops).
func TestLongCatchUpBounded(t *testing.T) {
	n := longChain(t)
	h := newHarness(t, 33)
	old := h.addNode("s1", ledger.RoleTerminal)
	fresh := h.addNode("s1", ledger.RoleTerminal)
	fastAppend(t, old.l, "s1", n)
	h.connect(0, 1)
	h.queue = nil
	x, y := old.sess[1], fresh.sess[0]
	maxReady := pumpPair(t, h, x, y, func() bool { return fresh.l.Seq("s1", old.dev.ID()) == uint64(n) }, 10*n/2048+100)
	bound := x.cfg.WindowBytes + 2*x.cfg.BatchBytes
	t.Logf("catch-up of %d ops: largest Ready %d bytes (bound %d), served %d bytes", n, maxReady, bound, x.Stats().ServedBytes)
	if maxReady > bound {
		t.Fatalf("a Ready of %d bytes, bound %d", maxReady, bound)
	}
}

// TestLongForkRepairBounded: two copies of one device that forked at the
// end of a long chain repair through the window: each side learns the
// other's branch, and nothing queues more than a window.
func TestLongForkRepairBounded(t *testing.T) {
	n := longChain(t)
	h := newHarness(t, 34)
	a := h.addNode("s1", ledger.RoleTerminal)
	fastAppend(t, a.l, "s1", n-1)
	b := h.addRestored(a)
	if err := a.l.Range(h.ctx, "s1", a.dev.ID(), 0, 0, 1<<20, func(batch []ledger.RawOp) error {
		raws := make([][]byte, len(batch))
		for i, r := range batch {
			raws[i] = r.Bytes
		}
		_, err := b.l.ApplyBatch(h.ctx, raws)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fastAppend(t, a.l, "s1", 1) // two different ops at seq n
	if _, err := b.l.Append(h.ctx, "s1", ledger.KindSale, ledgertest.Sale("BUN", 2, 100)); err != nil {
		t.Fatal(err)
	}
	c := h.addNode("s1", ledger.RoleTerminal) // a third terminal meets both
	h.connect(0, 2)
	h.queue = nil
	x, y := a.sess[2], c.sess[0]
	pumpPair(t, h, x, y, func() bool { return c.l.Seq("s1", a.dev.ID()) == uint64(n) }, 10*n/2048+100)
	h.connect(1, 2)
	h.queue = nil
	x, y = b.sess[2], c.sess[1]
	forked := func() bool { return len(c.l.Forks()) > 0 && len(b.l.Forks()) > 0 }
	maxReady := pumpPair(t, h, x, y, forked, 10*n/2048+200)
	bound := x.cfg.WindowBytes + 2*x.cfg.BatchBytes
	t.Logf("fork repair over %d ops: largest Ready %d bytes (bound %d), served %d + %d bytes", n, maxReady, bound, x.Stats().ServedBytes, y.Stats().ServedBytes)
	if maxReady > bound {
		t.Fatalf("a Ready of %d bytes, bound %d", maxReady, bound)
	}
}

// TestSummaryUnknownDevicesIgnored: before, one summary naming 2,001
// invented devices put them all in the session's maps, the node's Pulls
// and what HQ is said to hold, relayed on. Now they are counted and
// dropped.
func TestSummaryUnknownDevicesIgnored(t *testing.T) {
	h := newHarness(t, 35)
	v := h.addNode("s1", ledger.RoleTerminal)
	h.sell(0, "TEA", 1)
	a := h.fleet.Enroll("s1", ledger.RoleTerminal)
	s := established(t, h, v, a, func(c *SessionConfig) { c.Anchor, c.Pulls = v.anchors, v.pulls })
	vv := map[string]uint64{}
	for k := 0; k < 2001; k++ {
		vv[fmt.Sprintf("dJUNK%04d", k)] = 7
	}
	if err := s.Step(h.ctx, encodeFrame(msgSummary, &summaryMsg{Scope: "s1", VV: vv, Anchor: vv, AnchorSeen: h.now})); err != nil {
		t.Fatal(err)
	}
	if got := len(s.Acked("s1")); got != 0 {
		t.Fatalf("%d uncertified devices acked", got)
	}
	if got := len(v.anchors.Acked("s1")); got != 0 {
		t.Fatalf("%d uncertified devices in the anchor view", got)
	}
	if got := s.Stats().Rejected["unknown_device"]; got < 2001 {
		t.Fatalf("counted %d unknown devices", got)
	}
	wants := 0
	for _, f := range s.Ready() {
		if f[2] == byte(msgWant) {
			wants++
		}
	}
	if wants > maxUnknown { // each asked once for its certificate, at most maxUnknown
		t.Fatalf("%d wants for uncertified devices, bound %d", wants, maxUnknown)
	}
	if err := s.Step(h.ctx, encodeFrame(msgOps, &opsMsg{Scope: "s9", Ops: [][]byte{}})); err != nil {
		t.Fatal(err)
	}
	if got := s.Stats().Rejected["scope_not_shared"]; got != 1 {
		t.Fatalf("frame of an unshared scope counted %d times", got)
	}
}
