// Hello and trust: the handshake that verifies a peer's certificate
// before anything else is acted on, and the codes a session closes with.

package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"storemesh/ledger"
)

// Stable codes of a ProtocolError: they name why a session was closed in
// logs, metrics and the peer's bye. Add codes; never rename one.
const (
	CodeBadFrame         = "bad_frame"
	CodeOversized        = "oversized"
	CodeBadHello         = "bad_hello"
	CodeNotEnrolled      = "not_enrolled"
	CodeWrongFleet       = "wrong_fleet"
	CodeCertExpired      = "cert_expired"
	CodeCertNotYetValid  = "cert_not_yet_valid" // by our clock: likely ours is behind; not banned
	CodeRevoked          = "revoked"
	CodeIdentityMismatch = "identity_mismatch"
	CodeForgedOp         = "forged_op"
	CodePeerBye          = "peer_bye"
	CodeStorage          = "storage"
)

// ProtocolError closes a session. Code is stable; Detail is for people.
type ProtocolError struct{ Code, Detail string }

func (e *ProtocolError) Error() string { return "mesh: " + e.Code + ": " + e.Detail }

func protoErr(code, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// IsBannable reports whether err shows the peer is not a trustworthy member
// of the fleet (as opposed to a transient fault): the transport should
// refuse it for a while.
func IsBannable(err error) bool {
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case CodeNotEnrolled, CodeWrongFleet, CodeCertExpired, CodeRevoked, CodeIdentityMismatch, CodeForgedOp, CodeBadFrame, CodeOversized, CodeBadHello, CodeAbusive:
		return true
	}
	return false
}

// NewProtocolError makes a ProtocolError for a transport that finds a peer
// misbehaving below the session (an oversized length prefix).
func NewProtocolError(code, format string, args ...any) *ProtocolError {
	return protoErr(code, format, args...)
}

func (s *Session) sendHello() {
	self := s.l.Self()
	m := &helloMsg{Fleet: s.l.FleetID(), Cert: self.Encode()}
	if self.Store == ledger.FleetScope {
		m.All = true
	} else {
		m.Scopes = []string{self.Store, ledger.FleetScope}
	}
	s.emit(msgHello, m)
}

func (s *Session) onHello(ctx context.Context, m *helloMsg) error {
	if s.hello {
		// The peer repeats its hello while it has not seen ours: answer.
		s.sendHello()
		return nil
	}
	if m.Fleet != s.l.FleetID() {
		return s.fail(protoErr(CodeWrongFleet, "peer of fleet %s", m.Fleet))
	}
	cert, err := s.l.AddCertificate(ctx, m.Cert)
	if err != nil {
		if ledger.RejectReason(err) == ledger.ReasonFleet {
			return s.fail(protoErr(CodeWrongFleet, "%v", err))
		}
		if ledger.RejectReason(err) == "" {
			return s.fail(err) // storage
		}
		return s.fail(protoErr(CodeNotEnrolled, "%v", err))
	}
	switch {
	case cert.Device != s.cfg.RemoteID:
		return s.fail(protoErr(CodeIdentityMismatch, "certificate of %s presented by %s", cert.Device, s.cfg.RemoteID))
	case !bytes.Equal(cert.PubKey, s.cfg.RemotePub):
		return s.fail(protoErr(CodeIdentityMismatch, "certificate key differs from the connection's key"))
	case s.l.Revoked(cert.Device):
		return s.fail(protoErr(CodeRevoked, "device %s is revoked", cert.Device))
	}
	// Our ledger's time, not the raw clock: after a clock reset backwards
	// it is still as late as our own newest op.
	if err := cert.ValidAt(time.Unix(0, s.l.Now()).UnixMilli()); err != nil {
		if ledger.RejectReason(err) == ledger.ReasonCertExpired {
			return s.fail(protoErr(CodeCertExpired, "%v", err))
		}
		s.log.Warn("peer certificate not yet valid by our clock: is this device's clock behind?", "err", err)
		return s.fail(protoErr(CodeCertNotYetValid, "%v", err))
	}
	s.hello, s.peer = true, cert
	s.counted = true
	s.cfg.Neighbors.add(s.cfg.RemoteID)
	s.all = cert.Role == ledger.RoleAnchor
	s.peerS = cert.Store
	s.log = s.log.With("peer_name", cert.Name, "peer_store", cert.Store, "peer_role", cert.Role)
	s.log.Info("sync session established")
	s.summarise(false)
	return nil
}

// shared reports whether both sides replicate scope.
func (s *Session) shared(scope string) bool {
	return (s.all || scope == s.peerS || scope == ledger.FleetScope) && s.l.HoldsScope(scope)
}
