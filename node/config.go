package node

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/ledger"
	"storemesh/mesh/p2p"
	"storemesh/sink"
)

// Config says which device a node is and how it runs. Start from
// DefaultConfig; add the device (Key, Cert, Fleet), DataDir and addresses.
type Config struct {
	// Key and Cert are the device's ed25519 key (its libp2p identity) and
	// its fleet certificate; Fleet is the fleet public key.
	Key   ed25519.PrivateKey
	Cert  *ledger.Certificate
	Fleet ed25519.PublicKey
	// DataDir holds the badger store (DataDir/badger), a copy of the fleet
	// public key (DataDir/fleet.pub, for audit export) and the last anchor
	// contact. One process at a time: badger locks it.
	DataDir string
	// DeviceDir, if set, is the device folder (storemesh enroll). The node
	// keeps a second copy of its own-chain record there (DeviceDir/ownchain),
	// so a data folder put back from an older copy (a restore) is noticed
	// at start: the chain is then refilled from peers, or a new epoch is
	// started, and no seq is reused (ledger/doc.go, "Restores and clones").
	DeviceDir string
	// OwnWait is ledger.Config.OwnWait: how long a sale waits for peers to
	// refill this device's own chain before it goes to a new chain. 0: 10 s.
	OwnWait time.Duration
	// Datastore, if set, is used instead of badger in DataDir (tests). The
	// node does not close it.
	Datastore ds.Batching
	// HTTPAddr is where the API and the terminal page listen:
	// 127.0.0.1:8080. Port 0 picks a free port (see Node.HTTPAddr).
	HTTPAddr string
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// every API call. A non-loopback HTTPAddr requires one (docs/design.md §6).
	Token string
	// Listen, Peers, Anchors, MDNS, MDNSInterface: see p2p.Config.
	Listen        []string
	Peers         []string
	Anchors       []string
	MDNS          bool
	MDNSInterface string
	// OfflineAfter: with no frame from an anchor for this long, the node
	// is offline and the store's offline policy applies. 60 s: twelve
	// anchor summaries or heartbeats (every 5 s; relayed by peers at least
	// every 15 s) missed is not a blip.
	OfflineAfter time.Duration
	// MaxBody bounds a request body: 64 KiB, far above a 200-line sale.
	MaxBody int64
	// StatusEvery is how often status changes are looked for, to push
	// them to the page: 500 ms, quick enough to watch a heal happen.
	StatusEvery time.Duration
	// Postgres and MQTT, when set, feed the anchor's ops to a PostgreSQL
	// database (a connection URL) and an MQTT broker (tcp://HOST:1883),
	// topics under MQTTPrefix (docs/postgres.md, docs/mqtt.md). Anchors
	// only. SinkTuning, if set, adjusts the sinks' loop (tests).
	Postgres   string
	MQTT       string
	MQTTPrefix string
	SinkTuning func(*sink.Config)
	// MeshTuning, if set, adjusts the mesh config (tests, demo).
	MeshTuning func(*p2p.Config)
	// Now is the wall clock: time.Now.
	Now func() time.Time
	// Logger: default discard.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:     "127.0.0.1:8080",
		OfflineAfter: 60 * time.Second,
		MaxBody:      64 << 10,
		StatusEvery:  500 * time.Millisecond,
		Now:          time.Now,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.OfflineAfter == 0 {
		c.OfflineAfter = d.OfflineAfter
	}
	if c.MaxBody == 0 {
		c.MaxBody = d.MaxBody
	}
	if c.StatusEvery == 0 {
		c.StatusEvery = d.StatusEvery
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
	if len(c.Fleet) != ed25519.PublicKeySize {
		errs = append(errs, errors.New("fleet public key missing"))
	}
	if c.Cert == nil {
		errs = append(errs, errors.New("device certificate missing"))
	}
	if len(c.Key) != ed25519.PrivateKeySize {
		errs = append(errs, errors.New("device key missing"))
	} else if c.Cert != nil {
		if id, err := p2p.DeviceID(c.Key); err != nil {
			errs = append(errs, err)
		} else if id != c.Cert.Device {
			errs = append(errs, fmt.Errorf("certificate is for device %s, the key is device %s", c.Cert.Device, id))
		}
	}
	if c.Cert != nil && len(c.Fleet) == ed25519.PublicKeySize {
		if err := c.Cert.Verify(c.Fleet, time.Time{}); err != nil {
			errs = append(errs, fmt.Errorf("certificate: %w", err))
		}
	}
	if c.DataDir == "" && c.Datastore == nil {
		errs = append(errs, errors.New("data directory missing"))
	}
	if err := CheckHTTPAddr(c.HTTPAddr, c.Token); err != nil {
		errs = append(errs, err)
	}
	if c.OfflineAfter < 0 || c.MaxBody < 0 || c.StatusEvery < 0 {
		errs = append(errs, errors.New("OfflineAfter, MaxBody and StatusEvery must not be negative"))
	}
	return errors.Join(errs...)
}

// CheckHTTPAddr refuses an HTTP address that is not loopback unless a
// token protects it: the API moves money and stock.
func CheckHTTPAddr(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http address %q: %w", addr, err)
	}
	if isLoopback(host) || token != "" {
		return nil
	}
	return fmt.Errorf("http address %q is not loopback: set --token (clients then send Authorization: Bearer TOKEN), or listen on 127.0.0.1", addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
