package p2p

import (
	"cmp"
	"crypto/ed25519"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/x/rate"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ProtocolID is the libp2p protocol of the sync stream. The wire format
// inside carries its own version (wire.go).
const ProtocolID = "/storemesh/sync/1"

// DeviceID returns the libp2p peer id of an ed25519 device key, as a
// string. A device certificate's Device field must equal it: the mesh
// checks the certificate against the key the connection authenticated.
func DeviceID(priv ed25519.PrivateKey) (string, error) {
	id, err := peerIDOf(priv)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func peerIDOf(priv ed25519.PrivateKey) (peer.ID, error) {
	sk, err := libp2pKey(priv)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return "", fmt.Errorf("mesh: peer id: %w", err)
	}
	return id, nil
}

func libp2pKey(priv ed25519.PrivateKey) (crypto.PrivKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("mesh: device key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	sk, err := crypto.UnmarshalEd25519PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("mesh: device key: %w", err)
	}
	return sk, nil
}

// newHost builds the libp2p host: the device key as identity, TCP and
// QUIC, default security (TLS, Noise) and muxer (yamux), the fleet gater,
// and nothing that reaches beyond the peers we name: no relay, no NAT port
// mapping, AutoNAT forced private (it never probes), no hole punching, no
// address discovery from identify, no black-hole detection (a shop LAN
// that was offline is not a black hole).
func newHost(cfg *Config, g *gater) (host.Host, error) {
	sk, err := libp2pKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	// libp2p's TCP transport binds with SO_REUSEPORT (it dials out from
	// the listen port), so a second process could listen on a port already
	// in use and the two would share its connections. Probe each fixed
	// port with a plain bind first: a busy --listen port is an error.
	for _, s := range cfg.Listen {
		if err := probeListen(s); err != nil {
			return nil, err
		}
	}
	rm, err := newResourceManager(cfg.LANPrefixes)
	if err != nil {
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.Identity(sk),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.DefaultSecurity,
		libp2p.DefaultMuxers,
		libp2p.ConnectionGater(g),
		libp2p.ResourceManager(rm),
		libp2p.DisableRelay(),
		libp2p.ForceReachabilityPrivate(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.DisableMetrics(), // the node exports its own; libp2p's would register globals once per host
		libp2p.UDPBlackHoleSuccessCounter(nil),
		libp2p.IPv6BlackHoleSuccessCounter(nil),
		libp2p.WithDialTimeout(cfg.DialTimeout),
		libp2p.UserAgent(cmp.Or(cfg.agent, agentPrefix)),
	}
	// Listen on each address ourselves: libp2p's ListenAddrs succeeds when
	// any one address binds, so a busy port among several went unnoticed.
	opts = append(opts, libp2p.NoListenAddrs)
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("mesh: libp2p host: %w", err)
	}
	for _, s := range cfg.Listen {
		a, err := multiaddr.NewMultiaddr(s)
		if err == nil {
			err = h.Network().Listen(a)
		}
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("mesh: listen on %s: %w", s, err)
		}
	}
	return h, nil
}

// newResourceManager keeps libp2p's default limits, except that peers on
// the LAN prefixes are exempt from the per-IP connection rate limiter
// (0.2/s, burst 16 by default: a terminal reconnecting after each Wi-Fi
// drop would soon be refused) and from the per-IP concurrent connection
// cap. Peers elsewhere (an anchor's Internet side) keep a rate limit; the
// gater and the certificate check do the rest.
func newResourceManager(lan []string) (network.ResourceManager, error) {
	var v4, v6 []rcmgr.NetworkPrefixLimit
	var rl []rate.PrefixLimit
	for _, s := range lan {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("mesh: LAN prefix %q: %w", s, err)
		}
		l := rcmgr.NetworkPrefixLimit{Network: p.Masked(), ConnCount: math.MaxInt}
		if p.Addr().Is4() {
			v4 = append(v4, l)
		} else {
			v6 = append(v6, l)
		}
		rl = append(rl, rate.PrefixLimit{Prefix: p.Masked()}) // zero Limit: unlimited
	}
	limiter := &rate.Limiter{
		NetworkPrefixLimits: rl,
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 1, Burst: 32}}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 56, Limit: rate.Limit{RPS: 1, Burst: 32}}},
			GracePeriod:      time.Minute,
		},
	}
	rm, err := rcmgr.NewResourceManager(
		rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale()),
		rcmgr.WithConnRateLimiters(limiter),
		rcmgr.WithNetworkPrefixLimit(v4, v6),
	)
	if err != nil {
		return nil, fmt.Errorf("mesh: resource manager: %w", err)
	}
	return rm, nil
}

// probeListen binds the TCP or UDP port of a listen multiaddr without
// SO_REUSEPORT and closes it again; port 0 (any) is not probed.
func probeListen(s string) error {
	a, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		return fmt.Errorf("mesh: listen address %q: %w", s, err)
	}
	network, addr, err := manet.DialArgs(a)
	if err != nil {
		return nil // not IP: libp2p says what it makes of it
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
		return nil
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		ln, err := net.Listen(network, addr)
		if err != nil {
			return fmt.Errorf("mesh: listen on %s: %w", s, err)
		}
		return ln.Close()
	case "udp", "udp4", "udp6":
		pc, err := net.ListenPacket(network, addr)
		if err != nil {
			return fmt.Errorf("mesh: listen on %s: %w", s, err)
		}
		return pc.Close()
	}
	return nil
}
