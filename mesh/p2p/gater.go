package p2p

import (
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

	mu   sync.Mutex
	bans map[peer.ID]ban
}

type ban struct {
	until time.Time
	code  string
}

func newGater(now func() time.Time, period time.Duration, revoked func(string) bool) *gater {
	return &gater{now: now, period: period, revoked: revoked, bans: map[peer.ID]ban{}}
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

func (g *gater) allowed(p peer.ID) bool {
	if g.Banned(p) != "" || (g.revoked != nil && g.revoked(p.String())) {
		g.refused.Add(1)
		return false
	}
	return true
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                                { return g.allowed(p) }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool                    { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool                     { return true }
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
