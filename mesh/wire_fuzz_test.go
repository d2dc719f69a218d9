package mesh

import (
	"testing"

	"storemesh/crdt"
	"storemesh/ledger"
)

func encodeForTest(o *ledger.Op) ([]byte, error) { return crdt.Marshal(o) }

func FuzzDecodeFrame(f *testing.F) {
	f.Add(encodeFrame(msgHello, &helloMsg{Fleet: "f1", Cert: []byte{1, 2}, Scopes: []string{"s1", "*"}}))
	f.Add(encodeFrame(msgSummary, &summaryMsg{Scope: "s1", VV: crdt.VersionVector{"d1": 3}, Heads: map[string][]byte{"d1": make([]byte, headLen)}}))
	f.Add(encodeFrame(msgOps, &opsMsg{Scope: "s1", Ops: [][]byte{{0x80}}, Fresh: true}))
	f.Add(encodeFrame(msgWant, &wantMsg{Scope: "s1", Device: "d1", After: 1, Through: 9}))
	f.Add(encodeFrame(msgBye, &byeMsg{Code: "x"}))
	f.Add([]byte{0x83, 0x01, 0x02, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, msg, err := decodeFrame(b)
		if err != nil || msg == nil {
			return
		}
		// Whatever decodes re-encodes and decodes to the same type.
		again := encodeFrame(typ, msg)
		if t2, _, err := decodeFrame(again); err != nil || t2 != typ {
			t.Fatalf("re-decode of %s: %v", typ, err)
		}
	})
}

// FuzzSessionStep feeds arbitrary frames to an established session: it
// never panics, and nothing but valid ops changes the ledger.
func FuzzSessionStep(f *testing.F) {
	f.Add(encodeFrame(msgSummary, &summaryMsg{Scope: "s1", VV: crdt.VersionVector{"d1": 3}}))
	f.Add(encodeFrame(msgOps, &opsMsg{Scope: "s1", Ops: [][]byte{{0x80}}}))
	f.Add(encodeFrame(msgWant, &wantMsg{Scope: "s1", Device: "d1"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := newHarness(t, 1)
		v := h.addNode("s1", ledger.RoleTerminal)
		h.sell(0, "TEA", 1)
		peer := h.fleet.Enroll("s1", ledger.RoleTerminal)
		s := NewSession(v.l, SessionConfig{RemoteID: peer.ID(), RemotePub: peer.Cert.PubKey, Now: h.clock})
		s.Start(h.ctx)
		if err := s.Step(h.ctx, helloFrom(nil, peer.Cert)); err != nil {
			t.Fatal(err)
		}
		before := v.l.Digest("s1")
		_ = s.Step(h.ctx, b)
		s.Ready()
		if v.l.Digest("s1") != before {
			t.Fatal("random frame changed the ledger")
		}
	})
}
