package p2p

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/mesh"
)

// How a peer was found, as shown in status (docs/design.md §4: the status page
// says which path is in use).
const (
	FoundMDNS    = "mdns"
	FoundStatic  = "static"
	FoundAnchor  = "anchor"
	FoundInbound = "inbound"
)

// Config configures a Mesh. Start from DefaultConfig.
type Config struct {
	// Key is the device's ed25519 key; its peer id must be the Device of
	// Ledger.Self().
	Key ed25519.PrivateKey
	// Ledger is this device's ledger, opened with its certificate.
	Ledger *ledger.Ledger
	// Listen multiaddrs (TCP and/or QUIC). Empty: dial out only.
	Listen []string
	// Peers are static peer multiaddrs ending in /p2p/ID, for LANs that
	// block multicast. The mesh keeps reconnecting to them.
	Peers []string
	// Anchors are cloud anchors' multiaddrs ending in /p2p/ID, kept
	// connected like Peers and shown as the uplink path.
	Anchors []string
	// MDNS turns on LAN discovery on MDNSInterface (required then).
	MDNS          bool
	MDNSInterface string
	// MDNSQueryInterval: 1 s. Discovery and rediscovery latency is one
	// period; a query costs one small multicast packet per peer.
	MDNSQueryInterval time.Duration
	// MDNSMissLimit: 3 queries unanswered and a peer is gone: pinged, and
	// its connection closed if the ping fails. One lost packet is normal.
	MDNSMissLimit int
	// TickInterval drives the sessions' anti-entropy and retries: 1 s.
	TickInterval time.Duration
	// DialBackoffMin/Max bound the jittered exponential backoff between
	// dials of a static peer or anchor: 250 ms (a dropped Wi-Fi is back
	// fast) to 10 s (an absent anchor costs one dial every ~10 s).
	DialBackoffMin time.Duration
	DialBackoffMax time.Duration
	// DialTimeout bounds one dial or stream open: 5 s, a slow venue link.
	DialTimeout time.Duration
	// HelloTimeout: a connection with no established session after it is
	// closed: 10 s, ten times a hello's round trip on a bad link.
	HelloTimeout time.Duration
	// BanPeriod: how long a peer that failed the fleet handshake, sent
	// garbage or forged ops is refused: 5 min. Long enough to stop a loop
	// of retries; short enough that a re-enrolled device is back soon.
	BanPeriod time.Duration
	// LANPrefixes are exempt from libp2p's per-IP connection rate and
	// count limits (terminals reconnect often after Wi-Fi drops).
	LANPrefixes []string
	// SessionTuning, if set, adjusts each session's config (tests, bench).
	SessionTuning func(*mesh.SessionConfig)
	// Now is the wall clock for certificate checks and status: time.Now.
	Now func() time.Time

	agent string // the identify agent string, with this process's instance id (clones.go)
	// Rand jitters dial backoff. Default: seeded from the device key, so a
	// run is repeatable and two devices do not retry in lockstep.
	Rand *rand.Rand
	// Logger: default discard.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default; the caller adds Key,
// Ledger, Listen and the discovery settings.
func DefaultConfig() Config {
	return Config{
		MDNSQueryInterval: time.Second,
		MDNSMissLimit:     3,
		TickInterval:      time.Second,
		DialBackoffMin:    250 * time.Millisecond,
		DialBackoffMax:    10 * time.Second,
		DialTimeout:       5 * time.Second,
		HelloTimeout:      10 * time.Second,
		BanPeriod:         5 * time.Minute,
		LANPrefixes: []string{
			"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
			"::1/128", "fc00::/7", "fe80::/10",
		},
		Now:    time.Now,
		Logger: slog.New(slog.DiscardHandler),
	}
}

// fill sets zero fields to their defaults.
func (c *Config) fill() {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.MDNSQueryInterval, d.MDNSQueryInterval)
	setDur(&c.TickInterval, d.TickInterval)
	setDur(&c.DialBackoffMin, d.DialBackoffMin)
	setDur(&c.DialBackoffMax, d.DialBackoffMax)
	setDur(&c.DialTimeout, d.DialTimeout)
	setDur(&c.HelloTimeout, d.HelloTimeout)
	setDur(&c.BanPeriod, d.BanPeriod)
	if c.MDNSMissLimit == 0 {
		c.MDNSMissLimit = d.MDNSMissLimit
	}
	if c.LANPrefixes == nil {
		c.LANPrefixes = d.LANPrefixes
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
}

// Validate returns every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	id, err := DeviceID(c.Key)
	if err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.Ledger == nil:
		errs = append(errs, errors.New("no ledger"))
	case c.Ledger.Self() == nil:
		errs = append(errs, errors.New("ledger opened without a device certificate"))
	case err == nil && c.Ledger.Self().Device != id:
		errs = append(errs, fmt.Errorf("certificate is for device %s, the key's peer id is %s", c.Ledger.Self().Device, id))
	}
	for _, s := range c.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			errs = append(errs, fmt.Errorf("listen %q: %w", s, err))
		}
	}
	for _, list := range [][]string{c.Peers, c.Anchors} {
		for _, s := range list {
			if _, err := peer.AddrInfoFromString(s); err != nil {
				errs = append(errs, fmt.Errorf("peer %q (want a multiaddr ending in /p2p/ID): %w", s, err))
			}
		}
	}
	if c.MDNS && c.MDNSInterface == "" {
		errs = append(errs, errors.New("mDNS needs MDNSInterface (hashicorp/mdns would pick the default route's interface)"))
	}
	for name, v := range map[string]time.Duration{
		"MDNSQueryInterval": c.MDNSQueryInterval, "TickInterval": c.TickInterval,
		"DialBackoffMin": c.DialBackoffMin, "DialBackoffMax": c.DialBackoffMax, "DialTimeout": c.DialTimeout,
		"HelloTimeout": c.HelloTimeout, "BanPeriod": c.BanPeriod,
	} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.DialBackoffMax < c.DialBackoffMin {
		errs = append(errs, errors.New("DialBackoffMax below DialBackoffMin"))
	}
	if c.MDNSMissLimit <= 0 {
		errs = append(errs, errors.New("MDNSMissLimit must be positive"))
	}
	for _, s := range c.LANPrefixes {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("LAN prefix %q: %w", s, err))
		}
	}
	if c.Now == nil || c.Logger == nil {
		errs = append(errs, errors.New("the Now and Logger fields are required"))
	}
	if c.SessionTuning != nil {
		// The tuning as it will apply to every session (the peer's
		// identity stands in for any peer's).
		sc := mesh.SessionConfig{RemoteID: "any", RemotePub: make(ed25519.PublicKey, ed25519.PublicKeySize), Now: func() int64 { return 0 }}
		c.SessionTuning(&sc)
		if err := sc.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("session tuning: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Mesh is one device's presence on the network: a libp2p host, peer
// discovery, and a sync session with every connected fleet peer.
type Mesh struct {
	cfg     Config
	log     *slog.Logger
	h       host.Host
	gater   *gater
	l       *ledger.Ledger
	self    peer.ID
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	unsub   func()
	clones  *cloneWatch        // two processes of one device (clones.go)
	idSub   event.Subscription // identify events, for clones
	mdns    *mdnsState
	pulls   *mesh.Pulls      // shared by the sessions
	anchors *mesh.AnchorView // shared by the sessions
	near    *mesh.Neighbors  // shared by the sessions: peers with an established session

	rngMu sync.Mutex
	rng   *rand.Rand

	lastAnchor atomic.Int64 // unix ns of the last frame from an anchor

	chMu    sync.Mutex
	changed chan struct{}

	mu       sync.Mutex // never held while taking a driver's mu
	closed   bool
	peers    map[peer.ID]*peerInfo
	sessions map[peer.ID]*driver
	opening  map[peer.ID]bool
	protoErr map[string]uint64
}

type peerInfo struct {
	static, anchor bool // configured
	mdns           bool // seen by mDNS
	mdnsLast       time.Time
	missed         int
	gone           bool
	dialing        bool
	waitSince      time.Time // connected without an established session since (housekeeping)
	kick           chan struct{}
	cert           *ledger.Certificate
	total          mesh.SessionStats  // of ended sessions
	anchorAcked    crdt.VersionVector // last acknowledgement of our store, when an anchor
}

func (pi *peerInfo) found() string {
	switch {
	case pi.anchor:
		return FoundAnchor
	case pi.static:
		return FoundStatic
	case pi.mdns:
		return FoundMDNS
	}
	return FoundInbound
}

// New starts the mesh: the host listens, the sync protocol is served,
// static peers and anchors are dialed and mDNS (if on) starts.
func New(ctx context.Context, cfg Config) (*Mesh, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mesh: config: %w", err)
	}
	self, _ := peerIDOf(cfg.Key)
	m := &Mesh{
		cfg: cfg, l: cfg.Ledger, self: self,
		log:      cfg.Logger.With("self", self.String()),
		changed:  make(chan struct{}),
		peers:    map[peer.ID]*peerInfo{},
		sessions: map[peer.ID]*driver{},
		opening:  map[peer.ID]bool{},
		protoErr: map[string]uint64{},
		rng:      cfg.Rand,
		pulls:    mesh.NewPulls(),
		anchors:  mesh.NewAnchorView(),
		near:     mesh.NewNeighbors(),
	}
	if m.rng == nil {
		sum := sha256.Sum256(cfg.Key.Public().(ed25519.PublicKey))
		m.rng = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])))
	}
	m.gater = newGater(cfg.Now, cfg.BanPeriod, cfg.Ledger.Revoked, m.log.With("component", "gate"))
	m.clones = newCloneWatch(cfg.Now, m.log.With("component", "clones"))
	cfg.agent = m.clones.agent()
	h, err := newHost(&cfg, m.gater)
	if err != nil {
		return nil, err
	}
	m.h = h
	m.idSub, err = h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("mesh: identify events: %w", err)
	}
	go watchIdentify(m.idSub, m.clones)
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	h.Network().Notify(&network.NotifyBundle{ConnectedF: m.connected, DisconnectedF: m.disconnected})
	h.SetStreamHandler(ProtocolID, m.handleStream)
	m.unsub = m.l.Subscribe(m.onDurable)
	m.wg.Add(1)
	go m.housekeeping()
	for _, s := range cfg.Peers {
		if err := m.addTarget(s, FoundStatic); err != nil {
			m.Close()
			return nil, err
		}
	}
	for _, s := range cfg.Anchors {
		if err := m.addTarget(s, FoundAnchor); err != nil {
			m.Close()
			return nil, err
		}
	}
	if cfg.MDNS {
		if err := m.startMDNS(); err != nil {
			m.Close()
			return nil, err
		}
	}
	m.log.Info("mesh started", "addrs", m.Addrs(), "mdns", cfg.MDNS, "peers", len(cfg.Peers), "anchors", len(cfg.Anchors))
	return m, nil
}

// Close stops discovery and every session and closes the host.
func (m *Mesh) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	ds := slices.Collect(maps.Values(m.sessions))
	m.mu.Unlock()
	m.unsub()
	m.stopMDNS()
	for _, d := range ds {
		d.cancel(errMeshClosed)
	}
	m.cancel()
	_ = m.idSub.Close()
	err := m.h.Close()
	m.wg.Wait()
	return err
}

// ID is this device's peer id.
func (m *Mesh) ID() string { return m.self.String() }

// Host is the libp2p host (tests and tools; the node does not need it).
func (m *Mesh) Host() host.Host { return m.h }

// Addrs are the full multiaddrs peers can dial, each ending /p2p/ID.
func (m *Mesh) Addrs() []string {
	suffix := "/p2p/" + m.self.String()
	var out []string
	for _, a := range m.h.Addrs() {
		out = append(out, a.String()+suffix)
	}
	return out
}

// AddPeer adds a static peer (a multiaddr ending in /p2p/ID) at run time;
// the mesh keeps it connected like Config.Peers.
func (m *Mesh) AddPeer(addr string) error { return m.addTarget(addr, FoundStatic) }

func (m *Mesh) peer(p peer.ID) *peerInfo {
	pi := m.peers[p]
	if pi == nil {
		pi = &peerInfo{}
		m.peers[p] = pi
	}
	return pi
}

// opens reports whether this side opens the sync stream to p.
func (m *Mesh) opens(p peer.ID) bool { return m.self < p }

func (m *Mesh) connected(_ network.Network, c network.Conn) {
	p := c.RemotePeer()
	m.mu.Lock()
	m.peer(p)
	m.mu.Unlock()
	m.log.Debug("connected", "peer", p.String(), "addr", c.RemoteMultiaddr().String(), "dir", c.Stat().Direction.String())
	m.notify()
	if m.opens(p) {
		go m.openSession(p)
	}
}

func (m *Mesh) disconnected(n network.Network, c network.Conn) {
	m.clones.closed(c)
	p := c.RemotePeer()
	if n.Connectedness(p) == network.Connected {
		return
	}
	m.mu.Lock()
	pi := m.peer(p)
	pi.waitSince = time.Time{}
	if pi.kick != nil {
		select {
		case pi.kick <- struct{}{}:
		default:
		}
	}
	m.mu.Unlock()
	m.log.Debug("disconnected", "peer", p.String())
	m.notify()
}

// openSession opens the sync stream to a connected peer, unless a session
// or an open is already under way.
func (m *Mesh) openSession(p peer.ID) {
	m.mu.Lock()
	if m.closed || m.sessions[p] != nil || m.opening[p] || m.gater.Banned(p) != "" {
		m.mu.Unlock()
		return
	}
	m.opening[p] = true
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(network.WithNoDial(m.ctx, "sync stream"), m.cfg.DialTimeout)
	s, err := m.h.NewStream(ctx, p, ProtocolID)
	cancel()
	m.mu.Lock()
	delete(m.opening, p)
	m.mu.Unlock()
	if err != nil {
		m.log.Debug("open sync stream", "peer", p.String(), "err", err)
		return
	}
	m.startSession(s)
}

func (m *Mesh) handleStream(s network.Stream) { m.startSession(s) }

// startSession runs a session on s, replacing any older one with the peer.
func (m *Mesh) startSession(s network.Stream) {
	p := s.Conn().RemotePeer()
	if code := m.gater.Banned(p); code != "" {
		_ = s.Reset()
		return
	}
	pub, err := rawEd25519(s.Conn())
	if err != nil {
		m.log.Warn("peer cut off and banned", "peer", p.String(), "code", mesh.CodeNotEnrolled, "detail", err.Error())
		m.gater.Ban(p, mesh.CodeNotEnrolled)
		_ = s.Reset()
		_ = m.h.Network().ClosePeer(p)
		return
	}
	if m.secondInstance(s) {
		m.log.Debug("sync stream refused: another process of this device already syncs here", "peer", p.String())
		_ = s.Reset()
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = s.Reset()
		return
	}
	d := newDriver(m, s, pub, m.peer(p).found())
	old := m.sessions[p]
	m.sessions[p] = d
	m.wg.Add(1)
	m.mu.Unlock()
	if old != nil {
		old.stop(errReplaced)
	}
	go func() {
		defer m.wg.Done()
		d.run()
	}()
}

func (m *Mesh) sessionEstablished(d *driver, cert *ledger.Certificate) {
	m.mu.Lock()
	m.peer(d.peer).cert = cert
	m.mu.Unlock()
	if cert.Role == ledger.RoleAnchor {
		m.anchorContact()
	}
	d.log.Info("peer synced", "name", cert.Name, "store", cert.Store, "role", cert.Role)
	m.notify()
}

func (m *Mesh) sessionEnded(d *driver, code string) {
	snap := d.snapshot()
	m.mu.Lock()
	if m.sessions[d.peer] == d {
		delete(m.sessions, d.peer)
	}
	pi := m.peer(d.peer)
	addStats(&pi.total, snap.stats)
	if d.anchor.Load() && snap.acked != nil {
		if pi.anchorAcked == nil {
			pi.anchorAcked = crdt.VersionVector{}
		}
		pi.anchorAcked.Merge(snap.acked)
	}
	if code != "" {
		m.protoErr[code]++
	}
	m.mu.Unlock()
	m.notify()
}

func addStats(dst *mesh.SessionStats, s mesh.SessionStats) {
	dst.OpsIn += s.OpsIn
	dst.OpsOut += s.OpsOut
	dst.BytesIn += s.BytesIn
	dst.BytesOut += s.BytesOut
	dst.FramesIn += s.FramesIn
	dst.FramesOut += s.FramesOut
	dst.LastSync = max(dst.LastSync, s.LastSync)
	dst.ServedBytes += s.ServedBytes
	dst.WantsMerged += s.WantsMerged
	for k, v := range s.Rejected {
		if dst.Rejected == nil {
			dst.Rejected = map[string]uint64{}
		}
		dst.Rejected[k] += v
	}
}

func (m *Mesh) anchorContact() { m.lastAnchor.Store(m.cfg.Now().UnixNano()) }

// housekeeping opens missing sessions and closes connections that never
// became a session.
func (m *Mesh) housekeeping() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		now := m.cfg.Now()
		var open, stale []peer.ID
		m.mu.Lock()
		connected := map[peer.ID]bool{}
		for _, p := range m.h.Network().Peers() {
			connected[p] = true
			pi := m.peer(p)
			d := m.sessions[p]
			if d == nil && m.opens(p) && !m.opening[p] {
				open = append(open, p)
			}
			switch {
			case d != nil && d.established.Load():
				pi.waitSince = time.Time{}
			case pi.waitSince.IsZero():
				pi.waitSince = now
			case now.Sub(pi.waitSince) > m.cfg.HelloTimeout:
				stale = append(stale, p)
				pi.waitSince = time.Time{}
			}
		}
		// Forget hosts that connected once and are nothing to us.
		for p, pi := range m.peers {
			if !connected[p] && pi.kick == nil && !pi.mdns && pi.cert == nil && m.sessions[p] == nil && !m.opening[p] {
				delete(m.peers, p)
			}
		}
		m.mu.Unlock()
		for _, p := range open {
			go m.openSession(p)
		}
		for _, p := range stale {
			m.log.Info("closing connection without a sync session", "peer", p.String(), "after", m.cfg.HelloTimeout)
			_ = m.h.Network().ClosePeer(p)
		}
	}
}

func (m *Mesh) notify() {
	m.chMu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.chMu.Unlock()
}

func (m *Mesh) changedCh() <-chan struct{} {
	m.chMu.Lock()
	defer m.chMu.Unlock()
	return m.changed
}
