// Package ledgertest makes fleets, devices and ledgers for tests of the
// ledger and of the packages above it. It is deterministic: keys come from
// a seeded source, and clocks are virtual.
//
// Imports: ledger, crdt, go-datastore. Only tests and the simulator import it.
package ledgertest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"storemesh/ledger"
)

// Epoch is the virtual "now" certificates are valid around: 2026-01-01.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Fleet is a fleet key with a deterministic key source.
type Fleet struct {
	Key  *ledger.FleetKey
	rand io.Reader
}

// NewFleet makes a fleet whose keys all derive from seed.
func NewFleet(seed uint64) *Fleet {
	r := rand.NewChaCha8(seedBytes(seed))
	k, err := ledger.NewFleetKey(r)
	if err != nil {
		panic(err) // ChaCha8 never fails to read
	}
	return &Fleet{Key: k, rand: r}
}

func seedBytes(seed uint64) [32]byte {
	return sha256.Sum256([]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32), byte(seed >> 40), byte(seed >> 48), byte(seed >> 56)})
}

// Device is an enrolled device's key and certificate.
type Device struct {
	Key  ed25519.PrivateKey
	Cert *ledger.Certificate
}

// ID is the device id.
func (d *Device) ID() string { return d.Cert.Device }

// DeviceOpt changes a certificate before it is signed.
type DeviceOpt func(*ledger.Certificate)

// Expiring sets the certificate's expiry.
func Expiring(t time.Time) DeviceOpt {
	return func(c *ledger.Certificate) { c.Expiry = t.UnixMilli() }
}

// WithID sets the device id (for example a libp2p peer id).
func WithID(id string) DeviceOpt { return func(c *ledger.Certificate) { c.Device = id } }

// Enroll makes a device of store with role. Its id is "d" and the hex of
// the first 8 bytes of its public key unless WithID says otherwise.
func (f *Fleet) Enroll(store string, role ledger.Role, opts ...DeviceOpt) *Device {
	pub, priv, err := ed25519.GenerateKey(f.rand)
	if err != nil {
		panic(err)
	}
	return f.EnrollKey(priv, store, role, append([]DeviceOpt{WithID("d" + hex.EncodeToString(pub[:8]))}, opts...)...)
}

// EnrollKey certifies an existing key.
func (f *Fleet) EnrollKey(priv ed25519.PrivateKey, store string, role ledger.Role, opts ...DeviceOpt) *Device {
	c := ledger.Certificate{
		PubKey: priv.Public().(ed25519.PublicKey), Name: "test", Store: store, Role: role,
		NotBefore: Epoch.Add(-24 * time.Hour).UnixMilli(), Expiry: Epoch.Add(365 * 24 * time.Hour).UnixMilli(),
	}
	for _, o := range opts {
		o(&c)
	}
	cert, err := f.Key.Issue(c)
	if err != nil {
		panic(err)
	}
	return &Device{Key: priv, Cert: cert}
}

// Clock is a virtual physical clock that advances 1 ms per reading.
type Clock struct{ ns atomic.Int64 }

// NewClock starts at Epoch.
func NewClock() *Clock { c := &Clock{}; c.ns.Store(Epoch.UnixNano()); return c }

// Now returns the current virtual time and advances it by 1 ms.
func (c *Clock) Now() int64 { return c.ns.Add(int64(time.Millisecond)) - int64(time.Millisecond) }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// Config returns a ledger config for d in fleet f on a virtual clock.
func (f *Fleet) Config(d *Device, clock *Clock) ledger.Config {
	cfg := ledger.DefaultConfig()
	cfg.Fleet = f.Key.Public()
	if d != nil {
		cfg.Self, cfg.Key = d.Cert, d.Key
	}
	if clock == nil {
		clock = NewClock()
	}
	cfg.Now = clock.Now
	return cfg
}

// MemStore returns a thread-safe in-memory datastore.
func MemStore() ds.Batching { return dssync.MutexWrap(ds.NewMapDatastore()) }

// Open opens a ledger for d over store with a virtual clock, and gives it
// every certificate in certs.
func (f *Fleet) Open(ctx context.Context, store ds.Batching, d *Device, certs ...*ledger.Certificate) (*ledger.Ledger, error) {
	l, err := ledger.Open(ctx, store, f.Config(d, nil))
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if _, err := l.AddCertificate(ctx, c.Encode()); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Sale is a one-line sale body.
func Sale(sku string, qty, price int64) *ledger.Sale {
	return &ledger.Sale{Lines: []ledger.SaleLine{{SKU: sku, Qty: qty, UnitPrice: price}}, Currency: "EUR", Payment: "cash"}
}
