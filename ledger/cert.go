package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"storemesh/crdt"
)

// FleetScope is the store id of fleet-wide data (catalog, prices,
// revocations) and the store of an anchor's certificate (every store).
const FleetScope = "*"

// Role is what a device may do.
type Role string

const (
	RoleTerminal Role = "terminal" // sells and counts stock in its own store
	RoleManager  Role = "manager"  // a terminal that may also set prices, catalog and policy
	RoleAnchor   Role = "anchor"   // cloud peer: replicates and may write every store
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleTerminal || r == RoleManager || r == RoleAnchor }

const certVersion = 1

// Certificate binds a device's ed25519 key to a fleet, a store and a role,
// signed by the fleet key. It travels with the device's ops so any replica
// can check them offline.
type Certificate struct {
	_         struct{} `cbor:",toarray"`
	V         uint8
	Fleet     string // fleet id, FleetID of the fleet public key
	Device    string // the device's libp2p peer id (opaque here)
	PubKey    []byte // ed25519 public key, 32 bytes
	Name      string
	Store     string // store id, or FleetScope for anchors
	Role      Role
	NotBefore int64 // Unix milliseconds
	Expiry    int64 // Unix milliseconds
	Sig       []byte
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidStoreID reports whether s can name a store.
func ValidStoreID(s string) bool { return idPattern.MatchString(s) }

// FleetID derives the fleet id from the fleet public key: "f" and the
// first 80 bits of its SHA-256 in lower-case base32.
func FleetID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "f" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10]))
}

// FleetKey is the merchant's root of trust. It signs device certificates
// and is kept offline; devices hold only its public half.
type FleetKey struct {
	Private ed25519.PrivateKey
}

// NewFleetKey makes a fleet key from the random source r.
func NewFleetKey(r io.Reader) (*FleetKey, error) {
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("ledger: fleet key: %w", err)
	}
	return &FleetKey{Private: priv}, nil
}

// Public returns the fleet public key.
func (k *FleetKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// ID returns the fleet id.
func (k *FleetKey) ID() string { return FleetID(k.Public()) }

// Issue fills in the fleet id and signs c. The caller sets Device, PubKey,
// Name, Store, Role, NotBefore and Expiry.
func (k *FleetKey) Issue(c Certificate) (*Certificate, error) {
	c.V = certVersion
	c.Fleet = k.ID()
	c.Sig = nil
	if err := c.checkFields(); err != nil {
		return nil, err
	}
	msg, err := c.signedBytes()
	if err != nil {
		return nil, err
	}
	c.Sig = ed25519.Sign(k.Private, msg)
	return &c, nil
}

func (c *Certificate) signedBytes() ([]byte, error) {
	u := *c
	u.Sig = nil
	b, err := crdt.Marshal(&u)
	if err != nil {
		return nil, fmt.Errorf("ledger: encode certificate: %w", err)
	}
	return append([]byte("storemesh-cert-v1\x00"), b...), nil
}

func (c *Certificate) checkFields() error {
	switch {
	case c.V != certVersion:
		return reject(ReasonVersion, "certificate version %d", c.V)
	case c.Device == "" || len(c.Device) > 128:
		return reject(ReasonCertInvalid, "device id length %d", len(c.Device))
	case len(c.PubKey) != ed25519.PublicKeySize:
		return reject(ReasonCertInvalid, "public key is %d bytes", len(c.PubKey))
	case len(c.Name) > 128:
		return reject(ReasonCertInvalid, "name too long")
	case !c.Role.Valid():
		return reject(ReasonCertInvalid, "unknown role %q", c.Role)
	case c.Role == RoleAnchor && c.Store != FleetScope:
		return reject(ReasonCertInvalid, "anchor certificate must cover store %q", FleetScope)
	case c.Role != RoleAnchor && !ValidStoreID(c.Store):
		return reject(ReasonCertInvalid, "bad store id %q", c.Store)
	case c.Expiry <= c.NotBefore:
		return reject(ReasonCertInvalid, "expiry not after not-before")
	}
	return nil
}

// Encode returns the certificate's canonical bytes.
func (c *Certificate) Encode() []byte {
	b, err := crdt.Marshal(c)
	if err != nil {
		// A Certificate is plain strings, ints and byte slices: encoding cannot fail.
		panic(fmt.Sprintf("ledger: encode certificate: %v", err))
	}
	return b
}

// DecodeCertificate parses certificate bytes from a peer or a file. It
// checks the form, not the signature: call Verify for that.
func DecodeCertificate(b []byte) (*Certificate, error) {
	if len(b) > 4096 {
		return nil, reject(ReasonDecode, "certificate is %d bytes", len(b))
	}
	var c Certificate
	if err := crdt.UnmarshalCanonical(b, &c); err != nil {
		return nil, reject(ReasonDecode, "certificate: %v", err)
	}
	if err := c.checkFields(); err != nil {
		return nil, err
	}
	if len(c.Sig) != ed25519.SignatureSize {
		return nil, reject(ReasonCertInvalid, "signature is %d bytes", len(c.Sig))
	}
	return &c, nil
}

// Verify checks the fleet signature and that the certificate is valid at
// instant at. A zero at skips the validity window (used for ops, which are
// checked against their own timestamps with ValidAt).
func (c *Certificate) Verify(fleet ed25519.PublicKey, at time.Time) error {
	if err := c.checkFields(); err != nil {
		return err
	}
	if c.Fleet != FleetID(fleet) {
		return reject(ReasonFleet, "certificate of fleet %s, want %s", c.Fleet, FleetID(fleet))
	}
	msg, err := c.signedBytes()
	if err != nil {
		return err
	}
	if !ed25519.Verify(fleet, msg, c.Sig) {
		return reject(ReasonBadSignature, "certificate of %s not signed by the fleet key", c.Device)
	}
	if !at.IsZero() {
		return c.ValidAt(at.UnixMilli())
	}
	return nil
}

// ValidAt checks the validity window at Unix milliseconds ms.
func (c *Certificate) ValidAt(ms int64) error {
	if ms < c.NotBefore {
		return reject(ReasonCertInvalid, "certificate of %s not valid before %s", c.Device, time.UnixMilli(c.NotBefore).UTC().Format(time.RFC3339))
	}
	if ms >= c.Expiry {
		return reject(ReasonCertExpired, "certificate of %s expired %s", c.Device, time.UnixMilli(c.Expiry).UTC().Format(time.RFC3339))
	}
	return nil
}

// MayWrite reports whether the certificate's holder may author an op of
// kind in store. This is the least-privilege rule of docs/design.md §6.
func (c *Certificate) MayWrite(kind Kind, store string) error {
	spec, known := kinds[kind]
	if store == FleetScope && known && !spec.fleetWide {
		return reject(ReasonStore, "%s cannot be fleet-wide", kind)
	}
	if store != FleetScope && known && spec.fleetWide {
		return reject(ReasonStore, "%s must be fleet-wide (store %q)", kind, FleetScope)
	}
	switch c.Role {
	case RoleAnchor:
		return nil
	case RoleManager:
		if store != c.Store && store != FleetScope {
			return reject(ReasonStore, "manager of %s cannot write store %s", c.Store, store)
		}
		return nil
	default: // terminal
		// Role first: manager-only kinds (prices, catalog, revocations) are
		// fleet-wide, so a store check first would always call a terminal's
		// price.set "wrong_store" and never "role_not_allowed".
		if !known || spec.managerOnly {
			return reject(ReasonRole, "a terminal may not write %s", kind)
		}
		if store != c.Store {
			return reject(ReasonStore, "terminal of %s cannot write store %s", c.Store, store)
		}
		return nil
	}
}
