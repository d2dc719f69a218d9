package mesh

import (
	"errors"
	"fmt"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
)

// AnchorStatement is HQ's word (docs/design.md §4): an anchor's signed statement
// of what it durably holds of one scope, and when it said so. It is the
// only way terminals learn what HQ holds from anyone but the anchor
// itself: peers relay statements unchanged, and a receiver accepts one
// only when it verifies against a known certificate of role anchor (same
// fleet, valid at the statement's clock, not revoked). "Queued for HQ",
// the status page's last HQ contact and the offline card-payment cut-off
// rest on them; an unsigned claim (the summary's old Anchor/AnchorSeen
// fields) is ignored and counted.
//
// Wire form (versioned, canonical CBOR): the array [body, sig], body the
// canonical encoding of the struct below and sig the anchor's ed25519
// signature of StatementDomain, a zero byte and body
// (ledger.SignStatement). Statements of one anchor and scope are ordered
// by Seq: a newer one replaces an older one, and a replay is ignored.
//
// Checkpoints (the history issue) are meant to extend this type: a new
// field is added with a new key, and V rises when old readers must
// refuse the statement.
type AnchorStatement struct {
	V      uint8              `cbor:"1,keyasint"`
	Anchor string             `cbor:"2,keyasint"` // the anchor's device (peer id)
	Scope  string             `cbor:"3,keyasint"`
	VV     crdt.VersionVector `cbor:"4,keyasint"` // what it durably holds of Scope
	Clock  int64              `cbor:"5,keyasint"` // its ledger time when it signed, Unix ns
	Seq    uint64             `cbor:"6,keyasint"` // rises with every statement of this anchor
}

// StatementDomain separates statement signatures from every other
// signature a device key makes.
const StatementDomain = "storemesh/anchor-statement/1"

const statementVersion = 1

// maxStatementVV bounds the devices one statement names: a store's
// devices, with a wide margin.
const maxStatementVV = 1 << 14

type signedStatement struct {
	_    struct{} `cbor:",toarray"`
	Body []byte
	Sig  []byte
}

// Errors of DecodeStatement and VerifyStatement.
var (
	ErrBadStatement      = errors.New("mesh: malformed anchor statement")
	ErrStatementUnsigned = errors.New("mesh: anchor statement not signed by a known anchor")
)

// SignStatement makes the wire form of st, signed with l's device key.
func SignStatement(l *ledger.Ledger, st *AnchorStatement) ([]byte, error) {
	st.V = statementVersion
	body, err := crdt.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("mesh: encode statement: %w", err)
	}
	sig, err := l.SignStatement(StatementDomain, body)
	if err != nil {
		return nil, err
	}
	return crdt.Marshal(&signedStatement{Body: body, Sig: sig})
}

// DecodeStatement parses the wire form of a statement without checking
// its signature: cheap, so a receiver can drop a stale one before
// verifying. body is what the signature covers.
func DecodeStatement(raw []byte) (st *AnchorStatement, body, sig []byte, err error) {
	var ss signedStatement
	if err := crdt.UnmarshalCanonical(raw, &ss); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	st = &AnchorStatement{}
	if err := crdt.UnmarshalCanonical(ss.Body, st); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	switch {
	case st.V != statementVersion:
		return nil, nil, nil, fmt.Errorf("%w: version %d", ErrBadStatement, st.V)
	case st.Anchor == "" || st.Scope == "":
		return nil, nil, nil, fmt.Errorf("%w: no anchor or scope", ErrBadStatement)
	case len(st.VV) > maxStatementVV:
		return nil, nil, nil, fmt.Errorf("%w: %d devices", ErrBadStatement, len(st.VV))
	}
	return st, ss.Body, ss.Sig, nil
}

// VerifyStatement checks st's signature against l's certificates: the
// signer must hold a certificate of role anchor valid at the statement's
// clock and not be revoked.
func VerifyStatement(l *ledger.Ledger, st *AnchorStatement, body, sig []byte) error {
	if l.Revoked(st.Anchor) {
		return fmt.Errorf("%w: %s is revoked", ErrStatementUnsigned, st.Anchor)
	}
	ms := time.Unix(0, st.Clock).UnixMilli()
	for _, c := range l.Certificate(st.Anchor) {
		if c.Role != ledger.RoleAnchor || c.ValidAt(ms) != nil {
			continue
		}
		if ledger.VerifyStatement(c.PubKey, StatementDomain, body, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrStatementUnsigned, st.Anchor)
}
