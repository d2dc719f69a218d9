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
	f.Add([]byte{0x83, 0x18, 0x01, 0x02, 0xa0})             // version 1 in a two-byte head
	f.Add([]byte{0x83, 0x01, 0x09, 0xa0})                   // a type this build does not know
	f.Add([]byte{0x83, 0x01, 0x09, 0xff})                   // ... whose body is not CBOR
	f.Add([]byte{0x83, 0x01, 0x05, 0xa1, 0x01, 0x61, 0x78}) // a bye
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, msg, err := decodeFrame(b)
		// The fast path for our own frame head must decide exactly as the
		// generic decoder of the whole frame does.
		// (On an error only the code matters: the type is not used.)
		rtyp, rmsg, rerr := decodeFrameReference(b)
		if (err == nil) != (rerr == nil) || (err == nil && (typ != rtyp || (msg == nil) != (rmsg == nil))) ||
			(err != nil && err.(*ProtocolError).Code != rerr.(*ProtocolError).Code) {
			t.Fatalf("decodeFrame (%v, %T, %v), reference (%v, %T, %v)", typ, msg, err, rtyp, rmsg, rerr)
		}
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

// decodeFrameReference is decodeFrame without the fast path: the whole
// frame through the generic decoder, then its body.
func decodeFrameReference(b []byte) (msgType, any, error) {
	if len(b) > MaxFrame {
		return 0, nil, protoErr(CodeOversized, "frame of %d bytes", len(b))
	}
	return decodeFrameWhole(b)
}

// TestFrameEncodingIsCanonical: the frames built with the fixed head are
// byte for byte what the generic encoder makes of the frame struct.
func TestFrameEncodingIsCanonical(t *testing.T) {
	bodies := map[msgType]any{
		msgHello:   &helloMsg{Fleet: "f1", Cert: []byte{1, 2}, Scopes: []string{"s1", "*"}},
		msgSummary: &summaryMsg{Scope: "s1", VV: crdt.VersionVector{"d1": 3}, Heads: map[string][]byte{"d1": make([]byte, headLen)}},
		msgOps:     &opsMsg{Scope: "s1", Ops: [][]byte{{0x80}}, Fresh: true},
		msgWant:    &wantMsg{Scope: "s1", Device: "d1", After: 1, Through: 9},
		msgBye:     &byeMsg{Code: "x"},
	}
	for typ, body := range bodies {
		b, err := crdt.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		want, err := crdt.Marshal(&frame{V: wireVersion, T: typ, Body: b})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeFrame(typ, body); string(got) != string(want) {
			t.Fatalf("%s: % x, want % x", typ, got, want)
		}
	}
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
