package ledger

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is; each one's Reason is
// the stable code used in logs, metrics and the HTTP API.
var (
	ErrClosed      = errors.New("ledger: closed")
	ErrFailed      = errors.New("ledger: stopped taking writes after a storage failure; reopen to recover")
	ErrStorage     = errors.New("ledger: storage error")
	ErrCorrupt     = errors.New("ledger: stored value is corrupt")
	ErrNoKey       = errors.New("ledger: opened without a device key; read-only")
	ErrBadInput    = errors.New("ledger: bad input")
	ErrTooManyHeld = errors.New("ledger: too many out-of-order ops held; try again later")
)

// Reason is a stable, machine-readable rejection code.
type Reason string

// Rejection reasons for ops and certificates. They are part of the public
// contract (metrics labels, API error codes): add new ones, never rename.
const (
	ReasonDecode        Reason = "bad_encoding"
	ReasonVersion       Reason = "unsupported_version"
	ReasonFleet         Reason = "wrong_fleet"
	ReasonUnknownDevice Reason = "unknown_device"
	ReasonBadSignature  Reason = "bad_signature"
	ReasonCertInvalid   Reason = "certificate_invalid"
	ReasonCertExpired   Reason = "certificate_expired"
	ReasonRevoked       Reason = "device_revoked"
	ReasonRole          Reason = "role_not_allowed"
	ReasonStore         Reason = "wrong_store"
	ReasonScope         Reason = "scope_not_held"
	ReasonBody          Reason = "bad_body"
	ReasonChain         Reason = "bad_chain"
)

// RejectError says why an op or certificate was refused. Nothing stored
// changes when one is returned.
type RejectError struct {
	Reason Reason
	Detail string
}

func (e *RejectError) Error() string {
	if e.Detail == "" {
		return "ledger: rejected: " + string(e.Reason)
	}
	return fmt.Sprintf("ledger: rejected: %s: %s", e.Reason, e.Detail)
}

func reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// RejectReason returns the reason of a *RejectError in err's chain, or ""
// when err is not a rejection.
func RejectReason(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// CorruptError names a stored key whose value could not be read back.
type CorruptError struct {
	Key string
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("ledger: corrupt value at %s: %v", e.Key, e.Err)
}
func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }
