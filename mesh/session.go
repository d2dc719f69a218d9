package mesh

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"storemesh/crdt"
	"storemesh/ledger"
)

// SessionConfig configures one peer session.
type SessionConfig struct {
	RemoteID  string            // peer id authenticated by the transport
	RemotePub ed25519.PublicKey // peer's identity key, authenticated by the transport
	Now       func() int64      // Unix ns; the only clock the session reads
	Found     string            // how the peer was found, for status: mdns, static, anchor, inbound, sim
	Logger    *slog.Logger

	// Pulls is shared by the node's sessions so one peer, not all, is asked
	// for each missing op. Nil: a private tracker (tests of one session).
	Pulls *Pulls
	// Anchor is shared by the node's sessions: what HQ holds and when it
	// was last reached, learned directly or from peers. Nil: private.
	Anchor *AnchorView
	// Neighbors is shared by the node's sessions: the peers it has an
	// established session with, told to peers so they do not relay to us
	// what we have first hand. Nil: private.
	Neighbors *Neighbors

	// BatchBytes caps the ops in one frame: small enough to interleave
	// pushes with a catch-up, large enough that framing is noise. 64 KiB.
	BatchBytes int
	// MaxPull caps the ops of one device asked for in one pull, so a
	// catch-up after a long outage streams in steps rather than buffering
	// the whole log at the sender. 2,048 ops (about 600 KiB of sales).
	MaxPull uint64
	// WindowBytes bounds the bytes sent in answer to the peer's wants and
	// not yet acknowledged (flow.go), as raft's MaxInflightBytes bounds
	// the bandwidth-delay product. 1 MiB: 16 full frames, a LAN round trip
	// of catch-up at 1 GB/s, 3 s of a 3G uplink.
	WindowBytes int
	// AckTicks after which an unacknowledged frame leaves the window (the
	// ack was lost, or the peer refused the ops). 10: two summary periods.
	AckTicks int
	// MaxStrikes is how many wants the peer may repeat faster than it
	// consumes them (or make for devices without a certificate) before
	// the session closes with CodeAbusive. Strikes decay one per tick. 64.
	MaxStrikes int
	// RetryTicks between repeats of an unanswered hello. 3.
	RetryTicks int
	// SummaryTicks between unprompted summaries (anti-entropy: it repairs
	// lost frames and carries news across more than one hop). 5. A scope
	// that is quiet (see Session.quiet) skips them.
	SummaryTicks int
	// KeepaliveTicks bounds how long a quiet scope goes without a full
	// summary, a backstop for anything the quiet rule cannot see, and how
	// long an unanswered fork request waits before it is repeated.
	// 12 × SummaryTicks (a minute).
	KeepaliveTicks int
}

func (c *SessionConfig) fill() {
	if c.BatchBytes <= 0 {
		c.BatchBytes = 64 << 10
	}
	if c.MaxPull == 0 {
		c.MaxPull = 2048
	}
	if c.WindowBytes <= 0 {
		c.WindowBytes = 1 << 20
	}
	if c.MaxStrikes <= 0 {
		c.MaxStrikes = 64
	}
	if c.Pulls == nil {
		c.Pulls = NewPulls()
	}
	if c.Anchor == nil {
		c.Anchor = NewAnchorView()
	}
	if c.Neighbors == nil {
		c.Neighbors = NewNeighbors()
	}
	c.fillTicks()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *SessionConfig) fillTicks() {
	if c.RetryTicks <= 0 {
		c.RetryTicks = 3
	}
	if c.SummaryTicks <= 0 {
		c.SummaryTicks = 5
	}
	if c.KeepaliveTicks <= 0 {
		c.KeepaliveTicks = 12 * c.SummaryTicks
	}
	if c.AckTicks <= 0 {
		c.AckTicks = 2 * c.SummaryTicks
	}
}

// Validate reports what makes c unusable for a session, as its fields
// will be once NewSession fills the defaults: the peer's identity and the
// clock are required, and the limits must fit together (a frame's batch
// below MaxFrame, the window at least one batch, the keepalive at least
// one summary period). Zero limits take their defaults; negative ones
// are refused, so a typo in a tuning is an error, not a default.
func (c SessionConfig) Validate() error {
	var errs []error
	if c.RemoteID == "" {
		errs = append(errs, errors.New("RemoteID is required"))
	}
	if len(c.RemotePub) != ed25519.PublicKeySize {
		errs = append(errs, fmt.Errorf("RemotePub is %d bytes, want %d", len(c.RemotePub), ed25519.PublicKeySize))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("a clock (Now) is required"))
	}
	for name, v := range map[string]int{
		"BatchBytes": c.BatchBytes, "WindowBytes": c.WindowBytes, "AckTicks": c.AckTicks, "MaxStrikes": c.MaxStrikes,
		"RetryTicks": c.RetryTicks, "SummaryTicks": c.SummaryTicks, "KeepaliveTicks": c.KeepaliveTicks,
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d: negative", name, v))
		}
	}
	c.fill()
	if c.BatchBytes > MaxFrame/2 {
		errs = append(errs, fmt.Errorf("BatchBytes %d above %d (half of MaxFrame: a batch may run one op over)", c.BatchBytes, MaxFrame/2))
	}
	if c.WindowBytes < c.BatchBytes {
		errs = append(errs, fmt.Errorf("WindowBytes %d below BatchBytes %d: no frame would fit the window", c.WindowBytes, c.BatchBytes))
	}
	if c.MaxPull > maxOpsPerFrame*1024 {
		errs = append(errs, fmt.Errorf("MaxPull %d above %d", c.MaxPull, maxOpsPerFrame*1024))
	}
	if c.KeepaliveTicks < c.SummaryTicks {
		errs = append(errs, fmt.Errorf("KeepaliveTicks %d below SummaryTicks %d", c.KeepaliveTicks, c.SummaryTicks))
	}
	return errors.Join(errs...)
}

// Keepalive is the keepalive, in ticks, of a session made with c: its
// KeepaliveTicks, or the default that follows from SummaryTicks.
func (c SessionConfig) Keepalive() int {
	c.fillTicks()
	return c.KeepaliveTicks
}

// SessionStats are one session's counters.
type SessionStats struct {
	OpsIn, OpsOut       uint64
	BytesIn, BytesOut   uint64
	FramesIn, FramesOut uint64
	LastSync            int64             // Unix ns of the last frame received after the hello
	Rejected            map[string]uint64 // by reason: op rejections and ignored messages
	ServedBytes         uint64            // op bytes sent in answer to wants (flow.go)
	WantsMerged         uint64            // wants folded into a job already queued
	OwnAhead            uint64            // summary entries holding more of this device's own chain than it does
}

// scopeState is what the session knows of one shared scope.
type scopeState struct {
	acked  crdt.VersionVector  // the peer holds these durably (its summaries)
	sent   crdt.VersionVector  // the peer has, or was pushed, up to here
	synced bool                // a full summary arrived: sent is meaningful
	behind bool                // acked may hold ops we lack: pull on tick
	ackDue map[string]bool     // devices whose ops arrived since our last ack
	told   uint64              // sum of the vector in our last summary (entries only grow)
	forks  map[string]forkMemo // fork requests and sends made, "want:"/"head:"/"sent:" + device

	toldTick   int    // our tick when we sent that summary
	toldAnchor uint64 // sum of the anchor vector it carried
	peerQuiet  bool   // the peer's last full summary: no forks, no head we hold differently

	// peerHas is, per device, the newest op the peer is known to hold: a
	// head from its full summary, an op it sent us, or an op we sent it
	// that it has since acknowledged (sentHead, until then). Holding an op
	// means holding its whole chain, so when the peer holds our head of
	// every device, a summary of ours would tell it nothing.
	peerHas  map[string]headAt
	sentHead map[string]headAt
	owed     bool // the peer has had no full summary of ours: send one

	pulled        int                   // bytes of pulled ops since our last ack (flushAck)
	unknown       map[string]unknownDev // advertised devices waiting for their certificate (uncertified)
	toldNeighbors uint64                // Neighbors' version in our last full summary (FleetScope only)
	toldAck       uint64                // sum of the vector in our last summary that carried all of it
}

// headAt names one op of a device: its seq and the first bytes of its hash.
type headAt struct {
	seq    uint64
	prefix [headLen]byte
}

func headOf(seq uint64, h []byte) headAt {
	a := headAt{seq: seq}
	copy(a.prefix[:], h)
	return a
}

// learn records that the peer holds op a (of device d) when it is newer
// than what was known.
func (st *scopeState) learn(m map[string]headAt, d string, a headAt) {
	if a.seq > m[d].seq {
		m[d] = a
	}
}

// Session is the sync protocol with one peer as a pure state machine
// (docs/design.md §2): frames and ticks go in through Step and Tick, frames come
// out through Ready. It touches no socket, starts no goroutine and reads
// time only through cfg.Now. The ledger is its storage. Not safe for
// concurrent use: the driver serialises calls.
type Session struct {
	l        *ledger.Ledger
	cfg      SessionConfig
	log      *slog.Logger
	out      [][]byte
	tick     int
	err      error
	hello    bool // peer's hello verified
	peer     *ledger.Certificate
	all      bool   // peer replicates every store
	peerS    string // the peer's store (with FleetScope, its scopes) when !all
	sc       map[string]*scopeState
	order    []string          // keys of sc, sorted
	relay    []*ledger.Op      // fresh ops from their author, for the driver to push on
	toldSeen int64             // the newest anchor statement clock in our last summary to the peer
	toldOwn  map[string]uint64 // on an anchor: seq of the own statement last sent, per scope
	certTold map[string]int    // anchor → tick its certificate was last relayed to the peer
	counted  bool              // this session is in cfg.Neighbors
	// peerNear is the set of devices the peer has an established session
	// with (its last fleet-wide summary); nil until it says. Ops of those
	// authors are not relayed to it.
	peerNear map[string]bool
	news     []string // scopes in which pulled ops were applied, for Announce
	stats    SessionStats

	// Flow control (flow.go).
	jobs     []*serveJob
	inflight []inflight
	inBytes  int
	strikes  int
}

// NewSession starts a session with the peer described by cfg over l.
func NewSession(l *ledger.Ledger, cfg SessionConfig) *Session {
	cfg.fill()
	return &Session{
		l: l, cfg: cfg,
		log:   cfg.Logger.With("peer", cfg.RemoteID, "found", cfg.Found),
		sc:    map[string]*scopeState{},
		stats: SessionStats{Rejected: map[string]uint64{}},
	}
}

// Start queues our hello. Nothing else is sent before the peer's hello is
// verified.
func (s *Session) Start(ctx context.Context) { s.sendHello() }

// Ready returns the frames to send, in order, and forgets them.
func (s *Session) Ready() [][]byte {
	out := s.out
	s.out = nil
	return out
}

// Established reports whether the peer's hello was verified.
func (s *Session) Established() bool { return s.hello && s.err == nil }

// PeerCert is the peer's verified certificate (nil before the hello).
func (s *Session) PeerCert() *ledger.Certificate { return s.peer }

// Acked returns what the peer durably holds in scope, as far as we know.
func (s *Session) Acked(scope string) crdt.VersionVector {
	if st := s.sc[scope]; st != nil {
		return st.acked.Clone()
	}
	return crdt.VersionVector{}
}

// Stats returns a copy of the counters.
func (s *Session) Stats() SessionStats {
	c := s.stats
	c.Rejected = maps.Clone(s.stats.Rejected)
	return c
}

// Err is why the session closed, nil while it is open.
func (s *Session) Err() error { return s.err }

func (s *Session) emit(t msgType, body any) {
	b := encodeFrame(t, body)
	s.out = append(s.out, b)
	s.stats.FramesOut++
	s.stats.BytesOut += uint64(len(b))
}

// fail closes the session, queueing a bye that tells the peer why.
func (s *Session) fail(err error) error {
	if s.err != nil {
		return s.err
	}
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		pe = protoErr(CodeStorage, "%v", err)
	}
	s.err = pe
	s.release()
	s.stats.Rejected[pe.Code]++
	if pe.Code != CodePeerBye {
		s.emit(msgBye, &byeMsg{Code: pe.Code, Detail: pe.Detail})
	}
	s.log.Warn("sync session closed", "code", pe.Code, "detail", pe.Detail)
	return pe
}

// errClosed ends a session its transport closed.
var errClosed = protoErr(CodePeerBye, "session closed by its transport")

// Close ends the session from outside, when its transport is gone (a reset
// stream, a link down): the peer leaves the node's Neighbors. No bye is
// queued. Calling it again, or after the session failed, does nothing.
func (s *Session) Close() {
	if s.err == nil {
		s.err = errClosed
	}
	s.release()
}

// release takes the peer out of the node's Neighbors.
func (s *Session) release() {
	if s.counted {
		s.counted = false
		s.cfg.Neighbors.remove(s.cfg.RemoteID)
	}
}

// Step handles one frame from the peer. A non-nil error means the session
// is closed: send what Ready holds (a bye), then drop the stream.
func (s *Session) Step(ctx context.Context, b []byte) error {
	if s.err != nil {
		return s.err
	}
	s.stats.FramesIn++
	s.stats.BytesIn += uint64(len(b))
	t, msg, err := decodeFrame(b)
	if err != nil {
		return s.fail(err)
	}
	if msg == nil {
		s.stats.Rejected["unknown_type"]++
		s.log.Info("ignoring unknown message type", "type", t)
		return nil
	}
	if h, ok := msg.(*helloMsg); ok {
		return s.onHello(ctx, h)
	}
	if !s.hello {
		// Frames can overtake a lost hello on a lossy link; the peer
		// repeats what matters. Nothing is applied before the hello.
		s.stats.Rejected["before_hello"]++
		return nil
	}
	s.stats.LastSync = s.cfg.Now()
	switch m := msg.(type) {
	case *summaryMsg:
		err = s.onSummary(ctx, m)
	case *opsMsg:
		err = s.onOps(ctx, m)
	case *wantMsg:
		err = s.onWant(ctx, m)
	case *byeMsg:
		return s.fail(protoErr(CodePeerBye, "%s: %s", m.Code, m.Detail))
	}
	if err != nil {
		return err
	}
	return s.serve(ctx) // an ack or a want may have opened the window
}

func (s *Session) scope(scope string) *scopeState {
	st := s.sc[scope]
	if st == nil {
		st = &scopeState{acked: crdt.VersionVector{}, sent: crdt.VersionVector{}, forks: map[string]forkMemo{},
			peerHas: map[string]headAt{}, sentHead: map[string]headAt{}}
		s.sc[scope] = st
		s.order = append(s.order, scope)
		slices.Sort(s.order)
	}
	return st
}

// Tick advances the session's clock by one tick: it repeats an unanswered
// hello, sends periodic summaries (anti-entropy) and repeats pulls whose
// answer did not come (lost frames).
func (s *Session) Tick(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	s.tick++
	if !s.hello {
		if s.tick%s.cfg.RetryTicks == 0 {
			s.sendHello()
		}
		return nil
	}
	if s.tick%s.cfg.SummaryTicks == 0 {
		s.summarise(true)
	}
	for _, sc := range s.order {
		s.flushAck(sc, s.sc[sc])
	}
	for _, sc := range s.order {
		if st := s.sc[sc]; st.synced && st.behind {
			s.pull(sc, st)
		}
	}
	s.expireInflight()
	return s.serve(ctx)
}
