package p2p

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/mdns"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// MDNSService is the DNS-SD service storemesh peers announce (docs/design.md §4).
const MDNSService = "_storemesh._tcp"

// TXT record of the service: "v=1", "id=PEER", "fleet=FLEET", and one
// "addr=MULTIADDR" (without /p2p/) per address on the mDNS interface.
const (
	txtVersion  = "v=1"
	maxTXTAddrs = 8
)

// mdnsAddrTTL keeps a sighted peer's addresses in the peerstore well past
// a few missed queries.
const mdnsAddrTTL = 2 * time.Minute

type mdnsState struct {
	server *mdns.Server
	iface  *net.Interface
}

// startMDNS announces this device on the configured interface and starts
// the query loop. See the package HAZARDS: only on a LAN or in a test's
// own network namespace.
func (m *Mesh) startMDNS() error {
	iface, err := net.InterfaceByName(m.cfg.MDNSInterface)
	if err != nil {
		return fmt.Errorf("mesh: mDNS interface: %w", err)
	}
	ips, err := interfaceIPv4(iface)
	if err != nil {
		return err
	}
	port := 0
	var txtAddrs []string
	for _, a := range m.h.Addrs() {
		ip, err := manet.ToIP(a)
		if err != nil || !containsIP(ips, ip) {
			continue
		}
		if port == 0 {
			if p, err := a.ValueForProtocol(ma.P_TCP); err == nil {
				fmt.Sscan(p, &port)
			}
		}
		if len(txtAddrs) < maxTXTAddrs {
			txtAddrs = append(txtAddrs, "addr="+a.String())
		}
	}
	if len(txtAddrs) == 0 {
		return fmt.Errorf("mesh: no listen address on mDNS interface %s (listen on 0.0.0.0 or on its address)", iface.Name)
	}
	if port == 0 {
		port = 9 // SRV needs a port; peers dial the TXT addresses
	}
	txt := append([]string{txtVersion, "id=" + m.ID(), "fleet=" + m.l.FleetID()}, txtAddrs...)
	svc, err := mdns.NewMDNSService(m.ID(), MDNSService, "local.", m.ID()+".local.", port, ips, txt)
	if err != nil {
		return fmt.Errorf("mesh: mDNS service: %w", err)
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Iface: iface, Logger: mdnsLogger(m.log)})
	if err != nil {
		return fmt.Errorf("mesh: mDNS server on %s: %w", iface.Name, err)
	}
	m.mdns = &mdnsState{server: srv, iface: iface}
	m.wg.Add(1)
	go m.mdnsLoop(iface)
	m.log.Info("mDNS on", "iface", iface.Name, "ips", ips, "interval", m.cfg.MDNSQueryInterval)
	return nil
}

func (m *Mesh) stopMDNS() {
	if m.mdns != nil {
		_ = m.mdns.server.Shutdown()
	}
}

func interfaceIPv4(iface *net.Interface) ([]net.IP, error) {
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, fmt.Errorf("mesh: addresses of %s: %w", iface.Name, err)
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			ips = append(ips, n.IP.To4())
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("mesh: mDNS interface %s has no IPv4 address", iface.Name)
	}
	return ips, nil
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// mdnsLoop queries every MDNSQueryInterval. Each query blocks for the
// interval while answers stream in; a peer that misses MDNSMissLimit
// queries in a row is marked gone and probed.
func (m *Mesh) mdnsLoop(iface *net.Interface) {
	defer m.wg.Done()
	logger := mdnsLogger(m.log)
	for m.ctx.Err() == nil {
		entries := make(chan *mdns.ServiceEntry, 64) // the library drops what it cannot send at once
		seen := map[peer.ID]bool{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for e := range entries {
				if p, ok := m.mdnsSighted(e); ok {
					seen[p] = true
				}
			}
		}()
		start := time.Now()
		err := mdns.QueryContext(m.ctx, &mdns.QueryParam{
			Service: MDNSService, Domain: "local", Timeout: m.cfg.MDNSQueryInterval,
			Interface: iface, Entries: entries, DisableIPv6: true, Logger: logger,
		})
		close(entries)
		<-done
		if m.ctx.Err() != nil {
			return
		}
		if err != nil {
			m.log.Debug("mDNS query failed", "err", err)
			if rest := m.cfg.MDNSQueryInterval - time.Since(start); rest > 0 {
				select {
				case <-time.After(rest):
				case <-m.ctx.Done():
					return
				}
			}
		}
		m.mdnsRound(seen)
	}
}

// mdnsSighted handles one answer: a peer of our fleet is dialed if not
// connected, with libp2p's dial backoff cleared (it was just seen alive).
func (m *Mesh) mdnsSighted(e *mdns.ServiceEntry) (peer.ID, bool) {
	var id, fleet string
	var addrs []ma.Multiaddr
	version := false
	for _, f := range e.InfoFields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "v":
			version = v == "1"
		case "id":
			id = v
		case "fleet":
			fleet = v
		case "addr":
			if a, err := ma.NewMultiaddr(v); err == nil {
				addrs = append(addrs, a)
			}
		}
	}
	if !version || fleet != m.l.FleetID() || id == m.ID() {
		return "", false
	}
	p, err := peer.Decode(id)
	if err != nil {
		return "", false
	}
	if len(addrs) == 0 && e.AddrV4 != nil && e.Port != 0 {
		if a, err := manet.FromNetAddr(&net.TCPAddr{IP: e.AddrV4, Port: e.Port}); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return "", false
	}
	m.h.Peerstore().AddAddrs(p, addrs, mdnsAddrTTL)
	connected := m.h.Network().Connectedness(p) == network.Connected
	m.mu.Lock()
	pi := m.peer(p)
	first, back := !pi.mdns, pi.gone
	pi.mdns, pi.gone, pi.missed, pi.mdnsLast = true, false, 0, m.cfg.Now()
	dial := !connected && !pi.dialing && !m.closed
	if dial {
		pi.dialing = true
	}
	m.mu.Unlock()
	switch {
	case first:
		m.log.Info("peer found by mDNS", "peer", id, "addrs", addrs)
	case back:
		m.log.Info("peer answers mDNS again", "peer", id)
	}
	if dial {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.dial(peer.AddrInfo{ID: p, Addrs: addrs}, FoundMDNS)
			m.mu.Lock()
			m.peer(p).dialing = false
			m.mu.Unlock()
		}()
	}
	return p, true
}

// mdnsRound counts a query round against the peers that did not answer.
func (m *Mesh) mdnsRound(seen map[peer.ID]bool) {
	var gone []peer.ID
	m.mu.Lock()
	for p, pi := range m.peers {
		if !pi.mdns || seen[p] || pi.gone {
			continue
		}
		pi.missed++
		if pi.missed >= m.cfg.MDNSMissLimit {
			pi.gone = true
			gone = append(gone, p)
		}
	}
	m.mu.Unlock()
	for _, p := range gone {
		m.log.Info("peer stopped answering mDNS", "peer", p.String(), "missed", m.cfg.MDNSMissLimit)
		m.notify()
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.probe(p)
		}()
	}
}

// probe pings a peer that went quiet on mDNS and closes its connection if
// the ping fails: libp2p alone notices a vanished peer only after ~40 s.
func (m *Mesh) probe(p peer.ID) {
	if m.h.Network().Connectedness(p) != network.Connected {
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, 2*m.cfg.MDNSQueryInterval)
	defer cancel()
	res, ok := <-ping.Ping(ctx, m.h, p) // closed without a result at the deadline
	if ok && res.Error == nil {
		m.log.Debug("quiet peer still answers ping", "peer", p.String(), "rtt", res.RTT)
		return
	}
	if m.ctx.Err() != nil {
		return
	}
	if !ok {
		res.Error = ctx.Err()
	}
	m.log.Info("closing connection to vanished peer", "peer", p.String(), "err", res.Error)
	_ = m.h.Network().ClosePeer(p)
}

// dial connects to a peer once, after clearing libp2p's own dial backoff
// (the callers have their own reason to believe it is reachable).
func (m *Mesh) dial(ai peer.AddrInfo, why string) error {
	if sw, ok := m.h.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(ai.ID)
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.DialTimeout)
	defer cancel()
	err := m.h.Connect(ctx, ai)
	if err != nil {
		m.log.Debug("dial failed", "peer", ai.ID.String(), "found", why, "err", err)
	}
	return err
}

// addTarget registers a static peer or anchor and keeps it connected.
func (m *Mesh) addTarget(addr, found string) error {
	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return fmt.Errorf("mesh: %s peer %q: %w", found, addr, err)
	}
	if ai.ID == m.self {
		return fmt.Errorf("mesh: %s peer %q is this device", found, addr)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errMeshClosed
	}
	pi := m.peer(ai.ID)
	if pi.kick != nil { // already kept connected; just learn the address
		pi.static = pi.static || found == FoundStatic
		pi.anchor = pi.anchor || found == FoundAnchor
		m.mu.Unlock()
		m.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		return nil
	}
	pi.static = found == FoundStatic
	pi.anchor = found == FoundAnchor
	pi.kick = make(chan struct{}, 1)
	kick := pi.kick
	m.wg.Add(1)
	m.mu.Unlock()
	m.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	go m.keepConnected(*ai, found, kick)
	return nil
}

// keepConnected dials a static peer or anchor whenever it is not
// connected, with jittered exponential backoff between failures.
func (m *Mesh) keepConnected(ai peer.AddrInfo, found string, kick <-chan struct{}) {
	defer m.wg.Done()
	backoff := m.cfg.DialBackoffMin
	for m.ctx.Err() == nil {
		if m.h.Network().Connectedness(ai.ID) == network.Connected {
			backoff = m.cfg.DialBackoffMin
			select {
			case <-kick:
			case <-m.ctx.Done():
				return
			}
			continue
		}
		if m.gater.Banned(ai.ID) == "" && m.dial(ai, found) == nil {
			backoff = m.cfg.DialBackoffMin
			continue
		}
		wait := m.jitter(backoff)
		backoff = min(2*backoff, m.cfg.DialBackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-m.ctx.Done():
			t.Stop()
			return
		}
	}
}

// jitter returns a duration in [d/2, d].
func (m *Mesh) jitter(d time.Duration) time.Duration {
	m.rngMu.Lock()
	defer m.rngMu.Unlock()
	return d/2 + time.Duration(m.rng.Int64N(int64(d/2)+1))
}

// mdnsLogger routes hashicorp/mdns's log lines to slog at debug level
// (it logs on every failed query while a link is down).
func mdnsLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Debug("mdns", "msg", string(bytes.TrimSpace(b)))
	return len(b), nil
}
