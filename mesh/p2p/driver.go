package p2p

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/mesh"
)

const (
	// maxPendingPush bounds the ops handed to a session and not yet given
	// to it. Past it new ones are dropped: the session's anti-entropy
	// (summaries every few ticks) sends them anyway, from the ledger.
	maxPendingPush = 1 << 14
	// maxQueuedOut is the high-water mark of frames waiting for the
	// stream. The session's own output is bounded (its want window,
	// mesh.SessionConfig.WindowBytes, and one frame per push); past the
	// mark the driver stops feeding the session (no frames read, no
	// pushes, no ticks) until the writer drains: a slow reader is
	// back-pressure, not a ban. 4 MiB: a few windows.
	maxQueuedOut = 4 << 20
	// maxStall is how long the queue may stay above the mark before the
	// session ends (errSlowPeer, not banned): a peer that reads nothing
	// for this long is gone or hostile, and its stream holds our memory.
	maxStall = 2 * time.Minute
	// byeGrace is how long a closing session may spend sending its bye.
	byeGrace = time.Second
)

var (
	errReplaced   = errors.New("mesh: replaced by a newer stream from the same peer")
	errMeshClosed = errors.New("mesh: closed")
	errSlowPeer   = errors.New("mesh: peer read nothing for too long; frames queued")
)

// driver runs one mesh.Session over one libp2p stream. Its loop goroutine is
// the only one that changes the session; the reader feeds it frames and
// the writer drains its output, so the loop never blocks on the network.
type driver struct {
	m      *Mesh
	peer   peer.ID
	found  string
	stream network.Stream
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu        sync.Mutex // guards sess (Stats, Acked, ... from other goroutines)
	sess      *mesh.Session
	oversized uint64 // frames refused by the reader, before the session saw them

	established atomic.Bool
	anchor      atomic.Bool // peer's certificate has the anchor role
	scope       string      // our own store, for Acked

	pushMu   sync.Mutex
	pending  []*ledger.Op
	news     []string // scopes to Announce (other sessions' TakeNews)
	dropped  bool
	pushWake chan struct{}

	outMu     sync.Mutex
	outCond   *sync.Cond
	outQ      [][]byte
	outBytes  int
	outClosed bool
	outDone   chan struct{}
	drained   chan struct{} // the writer flushed: the queue may be below the mark
}

func newDriver(m *Mesh, s network.Stream, pub ed25519.PublicKey, found string) *driver {
	p := s.Conn().RemotePeer()
	ctx, cancel := context.WithCancelCause(m.ctx)
	d := &driver{
		m: m, peer: p, found: found, stream: s,
		log:      m.log.With("peer", p.String(), "found", found, "dir", s.Stat().Direction.String()),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		pushWake: make(chan struct{}, 1),
		outDone:  make(chan struct{}),
		drained:  make(chan struct{}, 1),
	}
	if self := m.l.Self(); self != nil {
		d.scope = self.Store
	}
	d.outCond = sync.NewCond(&d.outMu)
	sc := mesh.SessionConfig{
		RemoteID:  p.String(),
		RemotePub: pub,
		Now:       func() int64 { return m.cfg.Now().UnixNano() },
		Found:     found,
		Logger:    m.log,
		Pulls:     m.pulls,   // one peer, not all, is asked for each missing op
		Anchor:    m.anchors, // what HQ holds, learned directly or relayed by peers
		Neighbors: m.near,    // who we see first hand, told to peers so they do not relay it to us
	}
	if m.cfg.SessionTuning != nil {
		m.cfg.SessionTuning(&sc)
	}
	d.sess = mesh.NewSession(m.l, sc)
	return d
}

// stop ends the driver with cause and waits for it.
func (d *driver) stop(cause error) {
	d.cancel(cause)
	<-d.done
}

// push hands new durable ops to the session. It never blocks: it runs on
// the ledger's committing goroutine.
func (d *driver) push(ops []*ledger.Op) {
	if !d.established.Load() {
		return // the hello's summaries cover them
	}
	d.pushMu.Lock()
	if len(d.pending)+len(ops) > maxPendingPush {
		d.dropped = true
	} else {
		d.pending = append(d.pending, ops...)
	}
	d.pushMu.Unlock()
	select {
	case d.pushWake <- struct{}{}:
	default:
	}
}

// announce queues scopes for the session's Announce, like push.
func (d *driver) announce(scopes []string) {
	if !d.established.Load() {
		return
	}
	d.pushMu.Lock()
	for _, sc := range scopes {
		if !slices.Contains(d.news, sc) {
			d.news = append(d.news, sc)
		}
	}
	d.pushMu.Unlock()
	select {
	case d.pushWake <- struct{}{}:
	default:
	}
}

func (d *driver) takeNews() []string {
	d.pushMu.Lock()
	defer d.pushMu.Unlock()
	n := d.news
	d.news = nil
	return n
}

func (d *driver) takePending() []*ledger.Op {
	d.pushMu.Lock()
	defer d.pushMu.Unlock()
	ops := d.pending
	d.pending = nil
	if d.dropped {
		d.dropped = false
		d.log.Debug("push queue overflowed; anti-entropy will send the rest")
	}
	return ops
}

// run drives the session until the stream, the session or the mesh ends.
func (d *driver) run() {
	defer close(d.done)
	frames := make(chan []byte, 16)
	errs := make(chan error, 2)
	go d.readLoop(frames, errs)
	go d.writeLoop(errs)

	err := d.call(func(ctx context.Context) error { d.sess.Start(ctx); return nil })
	tick := time.NewTicker(d.m.cfg.TickInterval)
	defer tick.Stop()
	for err == nil {
		if d.congested() {
			err = d.waitDrained(errs)
			continue
		}
		select {
		case f := <-frames:
			err = d.call(func(ctx context.Context) error { return d.sess.Step(ctx, f) })
			if err == nil && d.anchor.Load() {
				d.m.anchorContact()
			}
		case <-tick.C:
			err = d.call(d.sess.Tick)
		case <-d.pushWake:
			if ops := d.takePending(); len(ops) > 0 {
				err = d.call(func(ctx context.Context) error { return d.sess.Push(ctx, ops) })
			}
			if news := d.takeNews(); err == nil && len(news) > 0 {
				err = d.call(func(context.Context) error { d.sess.Announce(news); return nil })
			}
		case err = <-errs:
			// The reader queues every frame it read before it reports the
			// stream's end: judge those first, so a peer that sends its
			// hello and resets at once is still refused for what it said
			// (another fleet's hello bans it; a reset alone would not).
			for more := true; more; {
				select {
				case f := <-frames:
					if serr := d.call(func(ctx context.Context) error { return d.sess.Step(ctx, f) }); serr != nil {
						err, more = serr, false
					}
				default:
					more = false
				}
			}
		case <-d.ctx.Done():
			err = context.Cause(d.ctx)
		}
	}
	d.finish(err, frames, errs)
}

// call runs fn on the session under its mutex and queues what it made.
func (d *driver) call(fn func(context.Context) error) error {
	d.mu.Lock()
	err := fn(d.ctx)
	out := d.sess.Ready()
	if err == nil {
		err = d.sess.Err()
	}
	var cert *ledger.Certificate
	if !d.established.Load() && d.sess.Established() {
		cert = d.sess.PeerCert()
	}
	relay := d.sess.TakeRelay()
	news := d.sess.TakeNews()
	d.mu.Unlock()
	if cert != nil {
		d.anchor.Store(cert.Role == ledger.RoleAnchor)
		d.established.Store(true)
		d.m.sessionEstablished(d, cert)
	}
	if len(relay) > 0 {
		d.m.relay(d, relay)
	}
	if len(news) > 0 {
		d.m.announce(d, news)
	}
	if qerr := d.enqueue(out); err == nil {
		err = qerr
	}
	return err
}

func (d *driver) enqueue(frames [][]byte) error {
	if len(frames) == 0 {
		return nil
	}
	d.outMu.Lock()
	defer d.outMu.Unlock()
	for _, f := range frames {
		d.outQ = append(d.outQ, f)
		d.outBytes += len(f)
	}
	d.outCond.Signal()
	return nil
}

// congested reports whether the queue is above the high-water mark.
func (d *driver) congested() bool {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	return d.outBytes > maxQueuedOut
}

// waitDrained blocks the loop, and so the reader behind it and the
// pushes, until the writer drains the queue below the mark, the stream
// ends or maxStall passes.
func (d *driver) waitDrained(errs <-chan error) error {
	stall := time.NewTimer(maxStall)
	defer stall.Stop()
	for d.congested() {
		select {
		case <-d.drained:
		case err := <-errs:
			return err
		case <-d.ctx.Done():
			return context.Cause(d.ctx)
		case <-stall.C:
			return errSlowPeer
		}
	}
	return nil
}

func (d *driver) readLoop(frames chan<- []byte, errs chan<- error) {
	r := msgio.NewVarintReaderSize(d.stream, mesh.MaxFrame)
	for {
		b, err := r.ReadMsg()
		if err != nil {
			if errors.Is(err, msgio.ErrMsgTooLarge) {
				n, _ := r.NextMsgLen()
				err = mesh.NewProtocolError(mesh.CodeOversized, "length prefix %d above %d", n, mesh.MaxFrame)
			}
			errs <- err
			return
		}
		if b == nil {
			b = []byte{} // a zero-length frame; the session calls it bad
		}
		select {
		case frames <- b:
		case <-d.ctx.Done():
			return
		}
	}
}

// writeLoop writes queued frames, batching whatever is queued into one
// flush. After outClosed it drains the queue (a bye) and stops.
func (d *driver) writeLoop(errs chan<- error) {
	defer close(d.outDone)
	bw := bufio.NewWriterSize(d.stream, 64<<10)
	w := msgio.NewVarintWriter(bw)
	for {
		d.outMu.Lock()
		for len(d.outQ) == 0 && !d.outClosed {
			d.outCond.Wait()
		}
		q, closed := d.outQ, d.outClosed
		d.outQ = nil
		d.outMu.Unlock()
		for _, f := range q {
			if err := w.WriteMsg(f); err != nil {
				errs <- err
				return
			}
			d.outMu.Lock()
			d.outBytes -= len(f)
			d.outMu.Unlock()
		}
		if err := bw.Flush(); err != nil {
			errs <- err
			return
		}
		select {
		case d.drained <- struct{}{}:
		default:
		}
		if closed && len(q) == 0 {
			return
		}
	}
}

// refusal reports whether code refuses a peer at the handshake (who it
// is), as opposed to a peer that broke the protocol: the first is told
// why before the stream goes.
func refusal(code string) bool {
	switch code {
	case mesh.CodeWrongFleet, mesh.CodeNotEnrolled, mesh.CodeCertExpired, mesh.CodeCertNotYetValid,
		mesh.CodeRevoked, mesh.CodeIdentityMismatch:
		return true
	}
	return false
}

// finish closes the stream, bans the peer when the error says it is not a
// trustworthy fleet member, and tells the mesh.
func (d *driver) finish(err error, frames <-chan []byte, errs <-chan error) {
	d.established.Store(false) // ending: status counts running sessions only
	var pe *mesh.ProtocolError
	isProto := errors.As(err, &pe)
	if isProto && pe.Code == mesh.CodeOversized {
		// Found by the reader, not the session: count it alongside the
		// session's own rejections.
		d.mu.Lock()
		d.oversized++
		d.mu.Unlock()
	}
	// Let the writer send what is queued (the session's bye), briefly.
	_ = d.stream.SetWriteDeadline(time.Now().Add(byeGrace))
	d.outMu.Lock()
	d.outClosed = true
	d.outCond.Broadcast()
	d.outMu.Unlock()
	grace := time.After(byeGrace)
	flushed := false
	select {
	case <-d.outDone:
		flushed = true
	case <-grace:
	}
	if flushed && isProto && refusal(pe.Code) {
		// We refuse the peer at the handshake: close our side rather than
		// reset it, and give the peer a moment to read to the end and
		// close its own. A reset makes the peer drop what it
		// has not read yet (our hello and bye among it), so a peer of
		// another fleet would see a reset and never learn, or ban, why.
		_ = d.stream.CloseWrite()
	drain:
		for {
			select {
			case <-frames: // what the peer still says no longer matters
			case <-errs: // our read side ended: the peer closed or reset
				break drain
			case <-grace:
				break drain
			}
		}
	}
	d.cancel(err)
	_ = d.stream.Reset()
	<-d.outDone
	d.mu.Lock()
	d.sess.Close() // the peer leaves our neighbors
	d.mu.Unlock()

	bannable := mesh.IsBannable(err)
	switch {
	case bannable:
		d.m.gater.Ban(d.peer, pe.Code)
		d.log.Warn("peer cut off and banned", "code", pe.Code, "detail", pe.Detail, "ban", d.m.cfg.BanPeriod)
	case isProto:
		d.log.Info("sync session closed", "code", pe.Code, "detail", pe.Detail)
	case errors.Is(err, errReplaced), errors.Is(err, errMeshClosed), errors.Is(err, context.Canceled):
		d.log.Debug("sync session stopped", "err", err)
	default:
		d.log.Info("sync stream ended", "err", err)
	}
	code := ""
	if isProto {
		code = pe.Code
	}
	d.m.sessionEnded(d, code)
	if bannable {
		_ = d.m.h.Network().ClosePeer(d.peer)
	}
}

// onDurable runs on the ledger's committing goroutine: hand this
// device's new ops to every session without blocking. Ops from peers are
// not pushed here: the session that received one fresh from its author
// hands it on one hop (relay), and summaries carry news further.
func (m *Mesh) onDurable(ops []*ledger.Op) {
	self := m.self.String()
	var local []*ledger.Op
	for _, o := range ops {
		if o.Device == self {
			local = append(local, o)
		}
	}
	if len(local) > 0 {
		m.mu.Lock()
		ds := slices.Collect(maps.Values(m.sessions))
		m.mu.Unlock()
		for _, d := range ds {
			d.push(local)
		}
	}
	for _, o := range ops {
		if o.Kind == ledger.KindDeviceRevoked {
			go m.dropRevoked()
			break
		}
	}
	m.notify()
}

// relay hands ops that session from received fresh from their author to every
// other session (one hop: DESIGN §4 store-and-forward, e.g. to an anchor
// only this device reaches). Called on from's goroutine, outside its lock.
func (m *Mesh) relay(from *driver, ops []*ledger.Op) {
	m.mu.Lock()
	ds := slices.Collect(maps.Values(m.sessions))
	m.mu.Unlock()
	for _, d := range ds {
		if d != from {
			d.push(ops)
		}
	}
}

// announce tells every other session that scopes gained pulled ops.
func (m *Mesh) announce(from *driver, scopes []string) {
	m.mu.Lock()
	ds := slices.Collect(maps.Values(m.sessions))
	m.mu.Unlock()
	for _, d := range ds {
		if d != from {
			d.announce(scopes)
		}
	}
}

// dropRevoked cuts off connected peers whose device was revoked.
func (m *Mesh) dropRevoked() {
	for _, p := range m.h.Network().Peers() {
		if m.l.Revoked(p.String()) {
			m.log.Warn("revoked peer cut off", "peer", p.String())
			m.gater.Ban(p, mesh.CodeRevoked)
			_ = m.h.Network().ClosePeer(p)
		}
	}
}

// snapshot reads the session's public state under its mutex.
type snapshot struct {
	established bool
	cert        *ledger.Certificate
	stats       mesh.SessionStats
	acked       crdt.VersionVector
}

func (d *driver) snapshot() snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := snapshot{established: d.sess.Established(), cert: d.sess.PeerCert(), stats: d.sess.Stats()}
	if d.oversized > 0 {
		if s.stats.Rejected == nil {
			s.stats.Rejected = map[string]uint64{}
		}
		s.stats.Rejected[mesh.CodeOversized] += d.oversized
	}
	if d.scope != "" {
		s.acked = d.sess.Acked(d.scope)
	}
	return s
}

// rawEd25519 returns the raw ed25519 key of a connection's remote peer.
func rawEd25519(c network.Conn) (ed25519.PublicKey, error) {
	k := c.RemotePublicKey()
	if k == nil {
		return nil, errors.New("no remote public key")
	}
	raw, err := k.Raw()
	if err != nil {
		return nil, fmt.Errorf("remote key: %w", err)
	}
	if k.Type() != cryptopb.KeyType_Ed25519 || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("remote key is %s, not ed25519", k.Type())
	}
	return ed25519.PublicKey(raw), nil
}
