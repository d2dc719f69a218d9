package mesh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
)

// Stable codes of a ProtocolError: they name why a session was closed in
// logs, metrics and the peer's bye. Add codes; never rename one.
const (
	CodeBadFrame         = "bad_frame"
	CodeOversized        = "oversized"
	CodeBadHello         = "bad_hello"
	CodeNotEnrolled      = "not_enrolled"
	CodeWrongFleet       = "wrong_fleet"
	CodeCertExpired      = "cert_expired"
	CodeCertNotYetValid  = "cert_not_yet_valid" // by our clock: likely ours is behind; not banned
	CodeRevoked          = "revoked"
	CodeIdentityMismatch = "identity_mismatch"
	CodeForgedOp         = "forged_op"
	CodePeerBye          = "peer_bye"
	CodeStorage          = "storage"
)

// ProtocolError closes a session. Code is stable; Detail is for people.
type ProtocolError struct{ Code, Detail string }

func (e *ProtocolError) Error() string { return "mesh: " + e.Code + ": " + e.Detail }

func protoErr(code, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// IsBannable reports whether err shows the peer is not a trustworthy member
// of the fleet (as opposed to a transient fault): the transport should
// refuse it for a while.
func IsBannable(err error) bool {
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case CodeNotEnrolled, CodeWrongFleet, CodeCertExpired, CodeRevoked, CodeIdentityMismatch, CodeForgedOp, CodeBadFrame, CodeOversized, CodeBadHello:
		return true
	}
	return false
}

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

	toldNeighbors uint64 // Neighbors' version in our last full summary (FleetScope only)
	toldAck       uint64 // sum of the vector in our last summary that carried all of it
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
// (DESIGN §2): frames and ticks go in through Step and Tick, frames come
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
	order    []string     // keys of sc, sorted
	relay    []*ledger.Op // fresh ops from their author, for the driver to push on
	toldSeen int64        // the anchor contact time in our last summary to the peer
	counted  bool         // this session is in cfg.Neighbors
	// peerNear is the set of devices the peer has an established session
	// with (its last fleet-wide summary); nil until it says. Ops of those
	// authors are not relayed to it.
	peerNear map[string]bool
	news     []string // scopes in which pulled ops were applied, for Announce
	stats    SessionStats
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

func (s *Session) sendHello() {
	self := s.l.Self()
	m := &helloMsg{Fleet: s.l.FleetID(), Cert: self.Encode()}
	if self.Store == ledger.FleetScope {
		m.All = true
	} else {
		m.Scopes = []string{self.Store, ledger.FleetScope}
	}
	s.emit(msgHello, m)
}

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
		return s.onSummary(ctx, m)
	case *opsMsg:
		return s.onOps(ctx, m)
	case *wantMsg:
		return s.onWant(ctx, m)
	case *byeMsg:
		return s.fail(protoErr(CodePeerBye, "%s: %s", m.Code, m.Detail))
	}
	return nil
}

func (s *Session) onHello(ctx context.Context, m *helloMsg) error {
	if s.hello {
		// The peer repeats its hello while it has not seen ours: answer.
		s.sendHello()
		return nil
	}
	if m.Fleet != s.l.FleetID() {
		return s.fail(protoErr(CodeWrongFleet, "peer of fleet %s", m.Fleet))
	}
	cert, err := s.l.AddCertificate(ctx, m.Cert)
	if err != nil {
		if ledger.RejectReason(err) == ledger.ReasonFleet {
			return s.fail(protoErr(CodeWrongFleet, "%v", err))
		}
		if ledger.RejectReason(err) == "" {
			return s.fail(err) // storage
		}
		return s.fail(protoErr(CodeNotEnrolled, "%v", err))
	}
	switch {
	case cert.Device != s.cfg.RemoteID:
		return s.fail(protoErr(CodeIdentityMismatch, "certificate of %s presented by %s", cert.Device, s.cfg.RemoteID))
	case !bytes.Equal(cert.PubKey, s.cfg.RemotePub):
		return s.fail(protoErr(CodeIdentityMismatch, "certificate key differs from the connection's key"))
	case s.l.Revoked(cert.Device):
		return s.fail(protoErr(CodeRevoked, "device %s is revoked", cert.Device))
	}
	// Our ledger's time, not the raw clock: after a clock reset backwards
	// it is still as late as our own newest op.
	if err := cert.ValidAt(time.Unix(0, s.l.Now()).UnixMilli()); err != nil {
		if ledger.RejectReason(err) == ledger.ReasonCertExpired {
			return s.fail(protoErr(CodeCertExpired, "%v", err))
		}
		s.log.Warn("peer certificate not yet valid by our clock: is this device's clock behind?", "err", err)
		return s.fail(protoErr(CodeCertNotYetValid, "%v", err))
	}
	s.hello, s.peer = true, cert
	s.counted = true
	s.cfg.Neighbors.add(s.cfg.RemoteID)
	s.all = cert.Role == ledger.RoleAnchor
	s.peerS = cert.Store
	s.log = s.log.With("peer_name", cert.Name, "peer_store", cert.Store, "peer_role", cert.Role)
	s.log.Info("sync session established")
	s.summarise(false)
	return nil
}

// shared reports whether both sides replicate scope.
func (s *Session) shared(scope string) bool {
	return (s.all || scope == s.peerS || scope == ledger.FleetScope) && s.l.HoldsScope(scope)
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
		hb.AnchorSeen, s.toldSeen = seen, seen
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
	s.emit(msgSummary, &summaryMsg{Scope: scope, VV: vv, Partial: true})
	return true
}

// sendAnchorNews sends what HQ holds of scope, and when it was last heard
// of, as a partial summary without a version vector.
func (s *Session) sendAnchorNews(scope string, st *scopeState) {
	m := &summaryMsg{Scope: scope, VV: crdt.VersionVector{}, Partial: true,
		Anchor: s.cfg.Anchor.Acked(scope), AnchorSeen: s.cfg.Anchor.Seen()}
	st.toldAnchor = m.Anchor.Sum()
	s.toldSeen = max(s.toldSeen, m.AnchorSeen)
	s.emit(msgSummary, m)
}

func (s *Session) sendSummary(scope string) {
	m := &summaryMsg{Scope: scope, VV: s.l.VersionVector(scope)}
	if !s.all { // an anchor knows better than we do what it holds
		m.Anchor = s.cfg.Anchor.Acked(scope)
		m.AnchorSeen = s.cfg.Anchor.Seen()
		s.toldSeen = max(s.toldSeen, m.AnchorSeen)
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
		st.toldAnchor = m.Anchor.Sum()
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
	now := s.cfg.Now()
	if s.all {
		s.cfg.Anchor.merge(s.cfg.RemoteID, m.Scope, m.VV, now, now)
	} else if s.l.Self().Store != ledger.FleetScope {
		s.cfg.Anchor.merge(s.cfg.RemoteID, m.Scope, m.Anchor, m.AnchorSeen, now)
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
		if err := s.sendRange(ctx, scope, d, 0, 0); err != nil {
			return false, err
		}
	}
	return agree, nil
}

func (s *Session) sendRange(ctx context.Context, scope, device string, after, through uint64) error {
	return s.l.Range(ctx, scope, device, after, through, s.cfg.BatchBytes, func(batch []ledger.RawOp) error {
		s.sendOps(scope, batch, false)
		return nil
	})
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
			if reason == "" {
				reason = "busy"
			}
			s.stats.Rejected[reason]++
			switch ledger.Reason(reason) {
			case ledger.ReasonDecode, ledger.ReasonBadSignature, ledger.ReasonFleet, ledger.ReasonVersion:
				return s.fail(protoErr(CodeForgedOp, "%v", r.Err))
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
	if len(ack) > 0 {
		s.emit(msgSummary, &summaryMsg{Scope: scope, VV: ack, Partial: true})
	}
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

func (s *Session) onWant(ctx context.Context, m *wantMsg) error {
	if !s.shared(m.Scope) {
		s.stats.Rejected["scope_not_shared"]++
		return nil
	}
	if err := s.sendRange(ctx, m.Scope, m.Device, m.After, m.Through); err != nil {
		return s.fail(err)
	}
	return nil
}

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
	return nil
}

// NewProtocolError makes a ProtocolError for a transport that finds a peer
// misbehaving below the session (an oversized length prefix).
func NewProtocolError(code, format string, args ...any) *ProtocolError {
	return protoErr(code, format, args...)
}
