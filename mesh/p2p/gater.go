package p2p

import (
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

var _ connmgr.ConnectionGater = (*gater)(nil)

// gater refuses connections, both ways, with peers that failed the
// fleet handshake recently (banned) and with revoked devices. Unknown
// peers pass: the certificate check happens in the sync hello, which needs
// a connection; a peer that fails it is banned and cut off.
type gater struct {
	now     func() time.Time
	period  time.Duration
	revoked func(device string) bool

	refused atomic.Uint64 // connections refused, both ways
	log     *slog.Logger

	mu       sync.Mutex
	bans     map[peer.ID]ban
	byReason map[string]uint64        // refusals by reason: "revoked", or the ban's code
	logged   map[refusalKey]time.Time // when a refusal was last logged, so a redial loop logs once a ban period
}

// refusalKey is one peer refused for one reason.
type refusalKey struct {
	p      peer.ID
	reason string
}

// ReasonRevoked is the gate's refusal reason for a revoked device; a
// banned peer is refused with its ban's code.
const ReasonRevoked = "revoked"

type ban struct {
	until time.Time
	code  string
}

func newGater(now func() time.Time, period time.Duration, revoked func(string) bool, log *slog.Logger) *gater {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &gater{now: now, period: period, revoked: revoked, log: log, bans: map[peer.ID]ban{},
		byReason: map[string]uint64{}, logged: map[refusalKey]time.Time{}}
}

// Ban refuses p for the ban period, with code (a mesh.ProtocolError code) as
// the reason shown in status.
func (g *gater) Ban(p peer.ID, code string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.bans[p] = ban{until: g.now().Add(g.period), code: code}
}

// Banned returns the reason p is banned, or "" when it is not.
func (g *gater) Banned(p peer.ID) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.bans[p]
	if !ok {
		return ""
	}
	if !g.now().Before(b.until) {
		delete(g.bans, p)
		return ""
	}
	return b.code
}

// Bans counts the peers banned now.
func (g *gater) Bans() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	now := g.now()
	for p, b := range g.bans {
		if now.Before(b.until) {
			n++
		} else {
			delete(g.bans, p)
		}
	}
	return n
}

func (g *gater) allowed(p peer.ID, dir string) bool {
	reason := g.Banned(p)
	if reason == "" && g.revoked != nil && g.revoked(p.String()) {
		reason = ReasonRevoked
	}
	if reason == "" {
		return true
	}
	g.refused.Add(1)
	g.mu.Lock()
	g.byReason[reason]++
	k := refusalKey{p, reason}
	now := g.now()
	last, seen := g.logged[k]
	quiet := seen && now.Sub(last) < g.period
	if !quiet {
		g.logged[k] = now
		if len(g.logged) > 4096 { // bounded: forget the oldest era at once
			clear(g.logged)
			g.logged[k] = now
		}
	}
	g.mu.Unlock()
	if !quiet {
		g.log.Warn("connection refused at the gate", "peer", p.String(), "reason", reason, "direction", dir)
	}
	return false
}

// RefusedBy returns the connections refused, by reason.
func (g *gater) RefusedBy() map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.byReason)
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                                { return g.allowed(p, "outbound") }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool                    { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool                     { return true }
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
func (g *gater) InterceptSecured(d network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p, d.String())
}
