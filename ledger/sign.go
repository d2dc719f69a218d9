package ledger

import (
	"crypto/ed25519"
	"errors"
)

// ErrReadOnly is returned by SignStatement on a ledger opened without a
// device key.
var ErrReadOnly = errors.New("ledger: no device key: read-only")

// SignStatement signs msg with this device's key, under domain (a
// protocol's name and version, so a signature made for one kind of
// statement can never pass for another, nor for an op). Package mesh
// signs an anchor's statements with it (what HQ holds); the key itself
// never leaves the ledger.
func (l *Ledger) SignStatement(domain string, msg []byte) ([]byte, error) {
	if l.cfg.Key == nil {
		return nil, ErrReadOnly
	}
	return ed25519.Sign(l.cfg.Key, statementBytes(domain, msg)), nil
}

// VerifyStatement checks a SignStatement signature by the device key pub.
func VerifyStatement(pub ed25519.PublicKey, domain string, msg, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, statementBytes(domain, msg), sig)
}

func statementBytes(domain string, msg []byte) []byte {
	b := make([]byte, 0, len(domain)+1+len(msg))
	b = append(b, domain...)
	b = append(b, 0)
	return append(b, msg...)
}
