package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"storemesh/crdt"
)

const opVersion = 1

// MaxOpBytes bounds one encoded op. A sale with the maximum number of lines
// fits comfortably; anything larger is refused before decoding.
const MaxOpBytes = 16 << 10

// Hash identifies an op: SHA-256 of its canonical signed encoding.
type Hash [32]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short is the first 8 bytes in hex, for logs and keys.
func (h Hash) Short() string { return hex.EncodeToString(h[:8]) }

// Op is the signed envelope of every state change (docs/design.md §3). Its
// canonical CBOR encoding is what is stored, sent and hashed.
type Op struct {
	_      struct{} `cbor:",toarray"`
	V      uint8
	Fleet  string
	Store  string
	Device string
	Seq    uint64
	Prev   []byte // hash of the same device's op Seq-1 in this store; empty for Seq 1
	HLC    crdt.Timestamp
	Kind   Kind
	BodyV  uint16
	Body   cbor.RawMessage
	Sig    []byte

	raw  []byte // canonical encoding, set by sealing or decoding
	hash Hash
}

// Raw returns the op's canonical encoding (do not modify it).
func (o *Op) Raw() []byte { return o.raw }

// Hash returns the op's identity.
func (o *Op) Hash() Hash { return o.hash }

// ID is the op hash's short form; a sale's id.
func (o *Op) ID() string { return hex.EncodeToString(o.hash[:12]) }

func (o *Op) String() string {
	return fmt.Sprintf("%s/%s/%d(%s)", o.Store, o.Device, o.Seq, o.Kind)
}

func (o *Op) signedBytes() ([]byte, error) {
	u := *o
	u.Sig = nil
	u.raw = nil
	b, err := crdt.Marshal(&u)
	if err != nil {
		return nil, err
	}
	return append([]byte("storemesh-op-v1\x00"), b...), nil
}

// Seal signs the op with key and fills in its encoding and hash. Append
// seals local ops; tools and tests use Seal to build ops by hand (a forged
// or malformed op is still refused by Apply).
func (o *Op) Seal(key ed25519.PrivateKey) error {
	msg, err := o.signedBytes()
	if err != nil {
		return fmt.Errorf("ledger: encode op: %w", err)
	}
	o.Sig = ed25519.Sign(key, msg)
	raw, err := crdt.Marshal(o)
	if err != nil {
		return fmt.Errorf("ledger: encode op: %w", err)
	}
	o.raw = raw
	o.hash = sha256.Sum256(raw)
	return nil
}

// DecodeOp parses an op from bytes that may come from a peer or a file. It
// checks the form (canonical encoding, sizes, field shapes), not the
// signature or the author's rights: Apply does those.
func DecodeOp(b []byte) (*Op, error) {
	if len(b) > MaxOpBytes {
		return nil, reject(ReasonDecode, "op is %d bytes (max %d)", len(b), MaxOpBytes)
	}
	var o Op
	if err := crdt.UnmarshalCanonical(b, &o); err != nil {
		return nil, reject(ReasonDecode, "op: %v", err)
	}
	switch {
	case o.V != opVersion:
		return nil, reject(ReasonVersion, "op version %d", o.V)
	case o.Seq == 0:
		return nil, reject(ReasonDecode, "seq 0")
	case o.Seq == 1 && len(o.Prev) != 0, o.Seq > 1 && len(o.Prev) != sha256.Size:
		return nil, reject(ReasonChain, "seq %d with a %d-byte prev hash", o.Seq, len(o.Prev))
	case o.Device == "" || len(o.Device) > 128:
		return nil, reject(ReasonDecode, "device id length %d", len(o.Device))
	case !validChainID(o.Device):
		return nil, reject(ReasonDecode, "device id %q has a malformed epoch", o.Device)
	case o.Store != FleetScope && !ValidStoreID(o.Store):
		return nil, reject(ReasonDecode, "bad store id %q", o.Store)
	case len(o.Sig) != ed25519.SignatureSize:
		return nil, reject(ReasonDecode, "signature is %d bytes", len(o.Sig))
	case len(o.Kind) == 0 || len(o.Kind) > 64:
		return nil, reject(ReasonDecode, "kind length %d", len(o.Kind))
	case len(o.Body) == 0:
		return nil, reject(ReasonDecode, "empty body")
	}
	o.raw = append([]byte(nil), b...)
	o.hash = sha256.Sum256(o.raw)
	return &o, nil
}

// verifySig checks the author's signature with pub.
func (o *Op) verifySig(pub ed25519.PublicKey) error {
	msg, err := o.signedBytes()
	if err != nil {
		return reject(ReasonDecode, "op: %v", err)
	}
	if !ed25519.Verify(pub, msg, o.Sig) {
		return reject(ReasonBadSignature, "op %s", o)
	}
	return nil
}

// prevHash returns Prev as a Hash (zero for seq 1).
func (o *Op) prevHash() Hash {
	var h Hash
	copy(h[:], o.Prev)
	return h
}
