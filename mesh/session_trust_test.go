package mesh

import (
	"context"
	"errors"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// victim returns a terminal ledger with a few sales and a session towards
// a peer presenting cert over a connection authenticated as (id, pub).
func victim(t *testing.T, h *harness) (*simNode, func(id string, pub []byte) *Session) {
	v := h.addNode("s1", ledger.RoleTerminal)
	for k := 0; k < 3; k++ {
		h.sell(0, "TEA", 1)
	}
	return v, func(id string, pub []byte) *Session {
		s := NewSession(v.l, SessionConfig{RemoteID: id, RemotePub: pub, Now: h.clock})
		s.Start(h.ctx)
		s.Ready()
		return s
	}
}

func helloFrom(l *ledger.Ledger, cert *ledger.Certificate) []byte {
	return encodeFrame(msgHello, &helloMsg{Fleet: cert.Fleet, Cert: cert.Encode(), Scopes: []string{cert.Store, ledger.FleetScope}})
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("got %v, want protocol error %s", err, code)
	}
}

func TestUntrustedPeersCannotSync(t *testing.T) {
	h := newHarness(t, 11)
	v, open := victim(t, h)
	before := v.l.Digest("s1")
	other := ledgertest.NewFleet(99).Enroll("s1", ledger.RoleTerminal)
	expired := h.fleet.Enroll("s1", ledger.RoleTerminal, ledgertest.Expiring(ledgertest.Epoch.Add(-time.Hour)))
	good := h.fleet.Enroll("s1", ledger.RoleTerminal)
	cases := []struct {
		name  string
		id    string
		pub   []byte
		frame []byte
		code  string
	}{
		{"other fleet", other.ID(), other.Cert.PubKey, helloFrom(nil, other.Cert), CodeWrongFleet},
		{"expired certificate", expired.ID(), expired.Cert.PubKey, helloFrom(nil, expired.Cert), CodeCertExpired},
		{"someone else's certificate", "dSTOLEN", good.Cert.PubKey, helloFrom(nil, good.Cert), CodeIdentityMismatch},
		{"certificate for another key", good.ID(), other.Cert.PubKey, helloFrom(nil, good.Cert), CodeIdentityMismatch},
		{"garbage certificate", good.ID(), good.Cert.PubKey, encodeFrame(msgHello, &helloMsg{Fleet: good.Cert.Fleet, Cert: []byte("not a certificate")}), CodeNotEnrolled},
		{"garbage frame", good.ID(), good.Cert.PubKey, []byte{0xff, 0x00, 0x13}, CodeBadFrame},
		{"oversized frame", good.ID(), good.Cert.PubKey, make([]byte, MaxFrame+1), CodeOversized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := open(c.id, c.pub)
			wantCode(t, s.Step(h.ctx, c.frame), c.code)
			for _, f := range s.Ready() {
				if typ, _, _ := decodeFrame(f); typ != msgBye {
					t.Fatalf("sent %s to a refused peer", typ)
				}
			}
			if !IsBannable(s.Err()) {
				t.Fatalf("%v not bannable", s.Err())
			}
		})
	}
	// An unenrolled peer's ops are refused even if it skips the hello.
	s := open(good.ID(), good.Cert.PubKey)
	if err := s.Step(h.ctx, encodeFrame(msgOps, &opsMsg{Scope: "s1", Ops: [][]byte{{1}}})); err != nil {
		t.Fatal(err)
	}
	if got := v.l.Digest("s1"); got != before {
		t.Fatal("refused peers changed the victim's data")
	}
}

func TestRevokedPeerCannotSync(t *testing.T) {
	h := newHarness(t, 12)
	mgr := h.addNode("s1", ledger.RoleManager)
	bad := h.fleet.Enroll("s1", ledger.RoleTerminal)
	if _, err := mgr.l.Append(h.ctx, ledger.FleetScope, ledger.KindDeviceRevoked, &ledger.DeviceRevoked{Device: bad.ID(), Reason: "stolen", Cert: bad.Cert.Encode()}); err != nil {
		t.Fatal(err)
	}
	s := NewSession(mgr.l, SessionConfig{RemoteID: bad.ID(), RemotePub: bad.Cert.PubKey, Now: h.clock})
	s.Start(h.ctx)
	wantCode(t, s.Step(h.ctx, helloFrom(nil, bad.Cert)), CodeRevoked)
}

func TestForgedOpsCutThePeerOff(t *testing.T) {
	h := newHarness(t, 13)
	v, open := victim(t, h)
	peer := h.fleet.Enroll("s1", ledger.RoleTerminal)
	// A valid op of the peer's, with its signature broken.
	pl, err := h.fleet.Open(h.ctx, ledgertest.MemStore(), peer)
	if err != nil {
		t.Fatal(err)
	}
	o, err := pl.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100))
	if err != nil {
		t.Fatal(err)
	}
	forged := *o
	forged.Sig = append([]byte(nil), o.Sig...)
	forged.Sig[0] ^= 1
	raw, err := encodeForTest(&forged)
	if err != nil {
		t.Fatal(err)
	}
	before := v.l.Digest("s1")
	s := open(peer.ID(), peer.Cert.PubKey)
	if err := s.Step(h.ctx, helloFrom(nil, peer.Cert)); err != nil {
		t.Fatal(err)
	}
	if !s.Established() {
		t.Fatal("valid peer not established")
	}
	// Unknown message types are ignored and counted, not fatal.
	if err := s.Step(h.ctx, encodeFrame(msgType(42), map[string]int{"x": 1})); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.Step(h.ctx, encodeFrame(msgOps, &opsMsg{Scope: "s1", Ops: [][]byte{raw}})), CodeForgedOp)
	if v.l.Digest("s1") != before {
		t.Fatal("forged op changed the victim's data")
	}
	if s.Stats().Rejected["unknown_type"] != 1 || s.Stats().Rejected[string(ledger.ReasonBadSignature)] != 1 {
		t.Fatalf("counters %v", s.Stats().Rejected)
	}
}
