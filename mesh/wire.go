package mesh

import (
	"crypto/sha256"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"storemesh/crdt"
	"storemesh/ledger"
)

// Wire format of /storemesh/sync/1. Every frame is one CBOR array
// [version, type, body]; the transport adds a length prefix. A receiver
// ignores (and counts) message types it does not know, so a newer peer can
// add messages without breaking an older one; it closes the session on
// anything it cannot parse.
const (
	wireVersion = 1
	// MaxFrame bounds one frame. Ops frames are built far below it
	// (SessionConfig.BatchBytes); the bound only stops a hostile length.
	MaxFrame = 1 << 20
	// maxOpsPerFrame bounds the op count of one frame (a sale is ≥ 150 B).
	maxOpsPerFrame = MaxFrame / 64
	// maxScopes bounds the scopes named in one hello.
	maxScopes = 4096
)

type msgType uint8

const (
	msgHello   msgType = 1 // who I am: fleet, certificate, scopes
	msgSummary msgType = 2 // what I durably hold in a scope: version vector, fork digests; doubles as the ack
	msgOps     msgType = 3 // ops of one scope, per-device order, with certificates of their authors
	msgWant    msgType = 4 // send me a device's ops in (after, through]: a pull
	msgBye     msgType = 5 // I am closing, and why
)

func (t msgType) String() string {
	switch t {
	case msgHello:
		return "hello"
	case msgSummary:
		return "summary"
	case msgOps:
		return "ops"
	case msgWant:
		return "want"
	case msgBye:
		return "bye"
	}
	return fmt.Sprintf("type%d", uint8(t))
}

type frame struct {
	_    struct{} `cbor:",toarray"`
	V    uint8
	T    msgType
	Body cbor.RawMessage
}

type helloMsg struct {
	Fleet  string   `cbor:"1,keyasint"`
	Cert   []byte   `cbor:"2,keyasint"`
	All    bool     `cbor:"3,keyasint,omitempty"` // replicates every store (anchor)
	Scopes []string `cbor:"4,keyasint,omitempty"`
}

type summaryMsg struct {
	Scope string             `cbor:"1,keyasint"`
	VV    crdt.VersionVector `cbor:"2,keyasint"`
	Forks map[string][]byte  `cbor:"3,keyasint,omitempty"` // device → ledger.ForkDigests
	// Partial summaries (acknowledgements of an ops frame) list only the
	// devices of that frame; they never imply a device is absent.
	Partial bool `cbor:"4,keyasint,omitempty"`
	// Heads holds, per device, the first headLen bytes of the hash of the
	// op at its VV entry, so two branches of a forked device that reached
	// the same seq are noticed.
	Heads map[string][]byte `cbor:"5,keyasint,omitempty"`
	// Anchor and AnchorSeen were unsigned claims about HQ (what anchors
	// hold, when one was last heard of). They are no longer sent, and a
	// receiver ignores and counts them (unsigned_hq_claim): HQ's word
	// travels as Statements.
	Anchor     crdt.VersionVector `cbor:"6,keyasint,omitempty"`
	AnchorSeen int64              `cbor:"7,keyasint,omitempty"`
	// Unsynced says the sender has had no full summary of this scope from
	// the receiver (it was lost, or not sent yet): the receiver owes one,
	// even when it has nothing new to say.
	Unsynced bool `cbor:"8,keyasint,omitempty"`
	// Neighbors lists, in fleet-wide summaries, the devices the sender has
	// an established session with (the receiver among them, so nil means
	// "not said"): the receiver does not relay to it their fresh ops.
	Neighbors []string `cbor:"9,keyasint,omitempty"`
	// Statements are anchors' signed statements of what they hold of this
	// scope (AnchorStatement, statement.go), each in its wire form,
	// relayed unchanged: an anchor's own, or the newest of each anchor the
	// sender holds. Sent when they changed since the sender last told the
	// receiver, not every period.
	Statements [][]byte `cbor:"10,keyasint,omitempty"`
	// AnchorCerts are the certificates of the anchors whose statements a
	// relay carries, so a terminal that never met an anchor can verify
	// them: sent with the first statement of each anchor in a session,
	// and again once per keepalive.
	AnchorCerts [][]byte `cbor:"11,keyasint,omitempty"`
}

// maxStatements bounds the statements one summary may carry; more are
// ignored and counted.
const maxStatements = 16

const headLen = 8

type opsMsg struct {
	Scope string   `cbor:"1,keyasint"`
	Certs [][]byte `cbor:"2,keyasint,omitempty"`
	Ops   [][]byte `cbor:"3,keyasint"`
	// Fresh ops were pushed as they were made (or relayed once from their
	// author); the others answer a pull.
	Fresh bool `cbor:"4,keyasint,omitempty"`
}

type wantMsg struct {
	Scope   string `cbor:"1,keyasint"`
	Device  string `cbor:"2,keyasint"`
	After   uint64 `cbor:"3,keyasint"`
	Through uint64 `cbor:"4,keyasint,omitempty"` // 0: everything, all fork branches
}

type byeMsg struct {
	Code   string `cbor:"1,keyasint"`
	Detail string `cbor:"2,keyasint,omitempty"`
}

// encodeFrame wraps body as a frame of type t.
func encodeFrame(t msgType, body any) []byte {
	b, err := crdt.Marshal(body)
	if err != nil {
		// Every message is strings, ints, byte slices and maps of those.
		panic(fmt.Sprintf("mesh: encode %s: %v", t, err))
	}
	return frameOf(t, b)
}

// frameHead is the canonical CBOR head of a frame whose version and type
// are below 24: an array of three items, then each as one byte. Every
// frame this build makes has this head, so the body is the frame's bytes
// from offset 3 and neither side needs a second encoding pass or copy.
const frameHead = 0x83

func frameOf(t msgType, body []byte) []byte {
	if wireVersion > 23 || t > 23 {
		b, err := crdt.Marshal(&frame{V: wireVersion, T: t, Body: body})
		if err != nil {
			panic(fmt.Sprintf("mesh: encode %s: %v", t, err))
		}
		return b
	}
	out := make([]byte, 3+len(body))
	out[0], out[1], out[2] = frameHead, wireVersion, byte(t)
	copy(out[3:], body)
	return out
}

// decodeFrame parses one frame from a peer. It returns the message (one of
// the *Msg types) or, for a type this build does not know, (t, nil, nil).
// A frame with our fixed head has its body decoded in place; any other
// (and a type this build does not know, so that the whole frame is still
// checked to be well-formed) goes through decodeFrameWhole, and both decide
// every input the same way (FuzzDecodeFrame).
func decodeFrame(b []byte) (msgType, any, error) {
	if len(b) > MaxFrame {
		return 0, nil, protoErr(CodeOversized, "frame of %d bytes", len(b))
	}
	if len(b) > 3 && b[0] == frameHead && b[1] == wireVersion && b[2] < 24 {
		t := msgType(b[2])
		if msg := newMsg(t); msg != nil {
			return decodeBody(t, msg, b[3:]) // its decoder refuses trailing bytes
		}
	}
	return decodeFrameWhole(b)
}

// decodeFrameWhole decodes the frame array with the generic decoder, then
// its body.
func decodeFrameWhole(b []byte) (msgType, any, error) {
	var f frame
	if err := crdt.Unmarshal(b, &f); err != nil {
		return 0, nil, protoErr(CodeBadFrame, "%v", err)
	}
	if f.V != wireVersion {
		return 0, nil, protoErr(CodeBadFrame, "wire version %d", f.V)
	}
	msg := newMsg(f.T)
	if msg == nil {
		return f.T, nil, nil
	}
	return decodeBody(f.T, msg, f.Body)
}

type message interface{ check() error }

// newMsg returns an empty message of type t, nil for a type this build
// does not know.
func newMsg(t msgType) message {
	switch t {
	case msgHello:
		return new(helloMsg)
	case msgSummary:
		return new(summaryMsg)
	case msgOps:
		return new(opsMsg)
	case msgWant:
		return new(wantMsg)
	case msgBye:
		return new(byeMsg)
	}
	return nil
}

// decodeBody decodes body into msg, an empty message of type t, and
// checks it.
func decodeBody(t msgType, msg message, body []byte) (msgType, any, error) {
	if err := crdt.Unmarshal(body, msg); err != nil {
		return t, nil, protoErr(CodeBadFrame, "%s: %v", t, err)
	}
	if err := msg.check(); err != nil {
		return t, nil, protoErr(CodeBadFrame, "%s: %v", t, err)
	}
	return t, msg, nil
}

func checkScope(s string) error {
	if s != ledger.FleetScope && !ledger.ValidStoreID(s) {
		return fmt.Errorf("bad scope %q", s)
	}
	return nil
}

func (m *helloMsg) check() error {
	if len(m.Cert) == 0 || len(m.Cert) > 4096 {
		return fmt.Errorf("certificate of %d bytes", len(m.Cert))
	}
	if len(m.Scopes) > maxScopes {
		return fmt.Errorf("%d scopes", len(m.Scopes))
	}
	for _, s := range m.Scopes {
		if err := checkScope(s); err != nil {
			return err
		}
	}
	return nil
}

func (m *summaryMsg) check() error {
	if err := checkScope(m.Scope); err != nil {
		return err
	}
	if err := crdt.ValidateVersionVector(m.VV); err != nil {
		return err
	}
	for d, h := range m.Forks {
		if d == "" || len(h) != sha256.Size {
			return fmt.Errorf("bad fork digest for %q", d)
		}
	}
	if err := crdt.ValidateVersionVector(m.Anchor); err != nil {
		return err
	}
	for d, h := range m.Heads {
		if len(h) != headLen || m.VV[d] == 0 {
			return fmt.Errorf("bad head for %q", d)
		}
	}
	if len(m.Neighbors) > maxScopes {
		return fmt.Errorf("%d neighbors", len(m.Neighbors))
	}
	for _, d := range m.Neighbors {
		if d == "" || len(d) > 128 {
			return fmt.Errorf("bad neighbor id of %d bytes", len(d))
		}
	}
	return nil
}

func (m *opsMsg) check() error {
	if err := checkScope(m.Scope); err != nil {
		return err
	}
	if len(m.Ops) > maxOpsPerFrame || len(m.Certs) > maxOpsPerFrame {
		return fmt.Errorf("%d ops, %d certificates", len(m.Ops), len(m.Certs))
	}
	for _, o := range m.Ops {
		if len(o) == 0 || len(o) > ledger.MaxOpBytes {
			return fmt.Errorf("op of %d bytes", len(o))
		}
	}
	return nil
}

func (m *wantMsg) check() error {
	if err := checkScope(m.Scope); err != nil {
		return err
	}
	if m.Device == "" || len(m.Device) > 128 {
		return fmt.Errorf("bad device")
	}
	if m.Through != 0 && m.Through <= m.After {
		return fmt.Errorf("empty range (%d, %d]", m.After, m.Through)
	}
	return nil
}

func (m *byeMsg) check() error {
	if len(m.Code) > 64 || len(m.Detail) > 1024 {
		return fmt.Errorf("bye too long")
	}
	return nil
}

// HelloFrame builds a hello frame by hand, for tools and tests that play a
// peer (the Session builds its own).
func HelloFrame(fleet string, cert []byte, scopes ...string) []byte {
	return encodeFrame(msgHello, &helloMsg{Fleet: fleet, Cert: cert, Scopes: scopes})
}

// OpsFrame builds an ops frame by hand, for tools and tests that play a peer.
func OpsFrame(scope string, certs, ops [][]byte) []byte {
	return encodeFrame(msgOps, &opsMsg{Scope: scope, Certs: certs, Ops: ops})
}

// WantFrame builds a want frame by hand, for tools and tests that play a
// peer: device's ops in scope in (after, through]; through 0 is all.
func WantFrame(scope, device string, after, through uint64) []byte {
	return encodeFrame(msgWant, &wantMsg{Scope: scope, Device: device, After: after, Through: through})
}
