package mesh

import (
	"context"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// TestNewerEnvelopeIsRefusedNotBanned: an op in an envelope version newer
// than this build knows (a newer peer) is refused and counted as
// unsupported_version; the session stays open and the peer is not cut
// off as a forger.
func TestNewerEnvelopeIsRefusedNotBanned(t *testing.T) {
	h := newHarness(t, 14)
	v, open := victim(t, h)
	peer := h.fleet.Enroll("s1", ledger.RoleTerminal)
	pl, err := h.fleet.Open(h.ctx, ledgertest.MemStore(), peer)
	if err != nil {
		t.Fatal(err)
	}
	o, err := pl.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 100))
	if err != nil {
		t.Fatal(err)
	}
	newer := *o
	newer.V = 2
	if err := newer.Seal(peer.Key); err != nil {
		t.Fatal(err)
	}
	before := v.l.Digest("s1")
	s := open(peer.ID(), peer.Cert.PubKey)
	if err := s.Step(h.ctx, helloFrom(nil, peer.Cert)); err != nil {
		t.Fatal(err)
	}
	if err := s.Step(h.ctx, encodeFrame(msgOps, &opsMsg{Scope: "s1", Ops: [][]byte{newer.Raw()}})); err != nil {
		t.Fatalf("a newer envelope closed the session: %v", err)
	}
	if !s.Established() {
		t.Fatal("session closed")
	}
	if n := s.Stats().Rejected[string(ledger.ReasonVersion)]; n != 1 {
		t.Fatalf("unsupported_version counted %d times, want 1 (%v)", n, s.Stats().Rejected)
	}
	if v.l.Digest("s1") != before {
		t.Fatal("the refused op changed the victim's data")
	}
}
