package mesh

import (
	"errors"
	"testing"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

func TestStatementRoundTrip(t *testing.T) {
	h := newHarness(t, 51)
	anchor := h.addNode(ledger.FleetScope, ledger.RoleAnchor)
	term := h.addNode("s1", ledger.RoleTerminal)
	if _, err := term.l.AddCertificate(h.ctx, anchor.dev.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	raw, err := SignStatement(anchor.l, &AnchorStatement{Anchor: anchor.dev.ID(), Scope: "s1", VV: crdt.VersionVector{"dX": 3}, Clock: h.now, Seq: 9})
	if err != nil {
		t.Fatal(err)
	}
	st, body, sig, err := DecodeStatement(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyStatement(term.l, st, body, sig); err != nil {
		t.Fatal(err)
	}
	// A terminal's key cannot speak for HQ, and a changed byte breaks it.
	forged, err := SignStatement(term.l, &AnchorStatement{Anchor: term.dev.ID(), Scope: "s1", VV: crdt.VersionVector{"dX": 3}, Clock: h.now, Seq: 9})
	if err != nil {
		t.Fatal(err)
	}
	st, body, sig, err = DecodeStatement(forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyStatement(term.l, st, body, sig); !errors.Is(err, ErrStatementUnsigned) {
		t.Fatalf("terminal's statement: %v", err)
	}
	st, body, sig, _ = DecodeStatement(raw)
	st.Anchor = anchor.dev.ID()
	body = append([]byte(nil), body...)
	body[len(body)-1] ^= 1
	if err := VerifyStatement(term.l, st, body, sig); !errors.Is(err, ErrStatementUnsigned) {
		t.Fatalf("changed statement: %v", err)
	}
}

// TestLyingHQClaimIgnored: before, one terminal's summary took another's
// "queued for HQ" from 10 to 0 (an unsigned Anchor vector) and added
// 2,001 junk devices, then relayed. Now unsigned claims and statements
// signed by a non-anchor are ignored and counted; a real statement counts.
func TestLyingHQClaimIgnored(t *testing.T) {
	h := newHarness(t, 52)
	v := h.addNode("s1", ledger.RoleTerminal)
	for range 10 {
		h.sell(0, "TEA", 1)
	}
	anchor := h.addNode(ledger.FleetScope, ledger.RoleAnchor)
	liar := h.fleet.Enroll("s1", ledger.RoleTerminal)
	s := established(t, h, v, liar, func(c *SessionConfig) { c.Anchor = v.anchors })
	queued := func() uint64 { return v.l.VersionVector("s1").Beyond(v.anchors.Acked("s1")) }
	if q := queued(); q != 10 {
		t.Fatalf("queued %d before, want 10", q)
	}
	all := v.l.VersionVector("s1")
	// An unsigned claim.
	lie := &summaryMsg{Scope: "s1", VV: crdt.VersionVector{}, Partial: true, Anchor: all, AnchorSeen: h.now}
	// A statement the liar signed itself, naming itself, and one naming
	// the real anchor but signed by the liar.
	ll, err := ledgerOf(t, h, liar)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := SignStatement(ll, &AnchorStatement{Anchor: liar.ID(), Scope: "s1", VV: all, Clock: h.now, Seq: 1})
	posing, _ := SignStatement(ll, &AnchorStatement{Anchor: anchor.dev.ID(), Scope: "s1", VV: all, Clock: h.now, Seq: 1})
	if _, err := v.l.AddCertificate(h.ctx, anchor.dev.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	lie.Statements = [][]byte{self, posing, []byte("junk")}
	if err := s.Step(h.ctx, encodeFrame(msgSummary, lie)); err != nil {
		t.Fatal(err)
	}
	if q := queued(); q != 10 || v.anchors.Seen() != 0 {
		t.Fatalf("after the lie: queued %d (want 10), HQ seen %d (want never)", q, v.anchors.Seen())
	}
	st := s.Stats().Rejected
	if st["unsigned_hq_claim"] != 1 || st["unsigned_statement"] != 2 || st["bad_statement"] != 1 {
		t.Fatalf("not counted: %v", st)
	}
	// The real anchor's statement, relayed by the same peer, counts.
	real, err := SignStatement(anchor.l, &AnchorStatement{Anchor: anchor.dev.ID(), Scope: "s1", VV: all, Clock: h.now, Seq: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Step(h.ctx, encodeFrame(msgSummary, &summaryMsg{Scope: "s1", VV: crdt.VersionVector{}, Partial: true, Statements: [][]byte{real}})); err != nil {
		t.Fatal(err)
	}
	if q := queued(); q != 0 || v.anchors.Seen() == 0 {
		t.Fatalf("after a signed statement: queued %d, seen %d", q, v.anchors.Seen())
	}
	// Relayed unchanged.
	if got := v.anchors.Statements("s1"); len(got) != 1 || string(got[0]) != string(real) {
		t.Fatal("the statement is not relayed as signed")
	}
}

func ledgerOf(t *testing.T, h *harness, d *ledgertest.Device) (*ledger.Ledger, error) {
	t.Helper()
	cfg := h.fleet.Config(d, nil)
	cfg.Now = h.clock
	return ledger.Open(h.ctx, ledgertest.MemStore(), cfg)
}

func FuzzDecodeStatement(f *testing.F) {
	h := newHarness(&testing.T{}, 53)
	a := h.addNode(ledger.FleetScope, ledger.RoleAnchor)
	raw, err := SignStatement(a.l, &AnchorStatement{Anchor: a.dev.ID(), Scope: "s1", VV: crdt.VersionVector{"d1": 3}, Clock: 1, Seq: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte{0x82, 0x40, 0x40})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, body, sig, err := DecodeStatement(b)
		if err != nil {
			return
		}
		if st.V != statementVersion || st.Anchor == "" || len(body) == 0 {
			t.Fatalf("accepted %+v", st)
		}
		// Verification never panics, and a body that verifies is exactly
		// the bytes the statement was decoded from.
		if VerifyStatement(a.l, st, body, sig) == nil {
			again, err := crdt.Marshal(st)
			if err != nil || string(again) != string(body) {
				t.Fatal("verified a body that is not the statement's canonical form")
			}
		}
	})
}
