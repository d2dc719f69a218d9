package sim

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"storemesh/crdt"
	"storemesh/ledger"
)

// The wire format of mesh (wire.go), restated for the fault injector
// only: the simulator itself never looks inside a frame.
type wireFrame struct {
	_    struct{} `cbor:",toarray"`
	V    uint8
	T    uint8
	Body cbor.RawMessage
}

type wireOps struct {
	Scope string   `cbor:"1,keyasint"`
	Certs [][]byte `cbor:"2,keyasint,omitempty"`
	Ops   [][]byte `cbor:"3,keyasint"`
	Fresh bool     `cbor:"4,keyasint,omitempty"`
}

const msgOpsType = 3

// stripOp returns a frame hook that removes one op (device, seq) from
// every ops frame delivered to victim: that replica never receives it,
// neither pushed nor pulled, nor relayed by anyone else. The repair
// (anti-entropy) keeps asking and keeps losing it.
func stripOp(t *testing.T, victim, device string, seq uint64, hits *int) func(from, to string, b []byte) []byte {
	return func(from, to string, b []byte) []byte {
		if to != victim {
			return b
		}
		var f wireFrame
		if err := crdt.Unmarshal(b, &f); err != nil || f.T != msgOpsType {
			return b
		}
		var m wireOps
		if err := crdt.Unmarshal(f.Body, &m); err != nil {
			t.Errorf("ops frame body: %v", err)
			return b
		}
		kept := m.Ops[:0:0]
		for _, raw := range m.Ops {
			if o, err := ledger.DecodeOp(raw); err == nil && o.Device == device && o.Seq == seq {
				*hits++
				continue
			}
			kept = append(kept, raw)
		}
		if len(kept) == len(m.Ops) {
			return b
		}
		m.Ops = kept
		body, err := crdt.Marshal(&m)
		if err == nil {
			f.Body = body
			b, err = crdt.Marshal(&f)
		}
		if err != nil {
			t.Fatalf("re-encode frame: %v", err)
		}
		return b
	}
}

const faultScenario = `{
  "name": "fault-injection",
  "catalog": [{"sku": "TEA", "price": 350, "stock": 100}, {"sku": "BUN", "price": 200, "stock": 100}],
  "anchors": 1,
  "stores": [{"id": "s1", "managers": 1, "terminals": 2, "uplinks": 1}],
  "lan": {"latency": "3ms", "jitter": "2ms"},
  "uplink": {"latency": "40ms", "jitter": "10ms"},
  "workload": {"end": "10m", "ops_per_minute": 3, "mix": {"sale": 1}},
  "settle": "2m"
}`

// TestCheckerCatchesALostOp corrupts the simulated network so one replica
// never receives one terminal's op, and asserts the run fails with that
// replica, the broken invariants and the seed named.
func TestCheckerCatchesALostOp(t *testing.T) {
	sc, err := ParseScenario([]byte(faultScenario))
	if err != nil {
		t.Fatal(err)
	}
	const seed = 7
	hits := 0
	r, err := run(sc, seed, hooks{frame: stripOp(t, "s1.t2", "s1.t1", 5, &hits)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if hits == 0 {
		t.Fatal("the hook never saw the op: the test proves nothing")
	}
	if !r.Failed() {
		t.Fatalf("the checker missed a replica that never got an acknowledged op:\n%s", text(t, r))
	}
	want := map[string]bool{InvLostAck: false, InvConvergence: false, InvCountedOnce: false}
	for _, f := range r.Failures {
		if f.Seed != seed {
			t.Errorf("failure without its seed: %s", f)
		}
		if _, ok := want[f.Invariant]; ok && f.Node == "s1.t2" && f.Scope == "s1" {
			want[f.Invariant] = true
		}
		if f.Node != "s1.t2" {
			t.Errorf("failure blames a healthy replica: %s", f)
		}
	}
	for inv, seen := range want {
		if !seen {
			t.Errorf("no %s failure for s1.t2", inv)
		}
	}
	out := text(t, r)
	for _, s := range []string{"result    FAIL", "seed 7", "no-lost-ack", "s1.t1/5(sale)"} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
	// The same run without the fault passes: the failure is the fault's.
	if clean, err := Run(sc, seed); err != nil || clean.Failed() {
		t.Fatalf("clean run: %v\n%s", err, text(t, clean))
	}
}

// TestMainExitCodes: 0 on a pass, 1 when an invariant fails, 2 on bad
// usage. A settle period too short to converge after a heal at the very
// end is an honest invariant failure.
func TestMainExitCodes(t *testing.T) {
	dir := t.TempDir()
	short := strings.Replace(faultScenario, `"settle": "2m"`, `"settle": "1ms", "check": "1ms",
  "events": [{"at": "9m", "cut": ["s1.t1", "*"], "for": "1m"}]`, 1)
	files := map[string]string{"ok.json": faultScenario, "short.json": short}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	svg := filepath.Join(dir, "run.svg")
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"run", filepath.Join(dir, "ok.json"), "--seed", "3", "--svg", svg}, 0, "result    PASS"},
		{[]string{"run", "--json", filepath.Join(dir, "ok.json")}, 0, `"failures": []`},
		{[]string{"run", filepath.Join(dir, "short.json")}, 1, "FAIL convergence (seed 1)"},
		{[]string{"explore", filepath.Join(dir, "short.json"), "--seeds", "1..2", "--workers", "2"}, 1, "2 of 2 seeds failed: 1 2"},
		{[]string{"explore", filepath.Join(dir, "ok.json"), "--seeds", "1,2"}, 0, "all 2 seeds passed"},
		{[]string{"run"}, 2, ""},
		{[]string{"frobnicate"}, 2, ""},
		{[]string{"run", filepath.Join(dir, "missing.json")}, 2, ""},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(c.args, &stdout, &stderr); code != c.code || !strings.Contains(stdout.String(), c.out) {
			t.Errorf("Main(%q) = %d, want %d with %q\nstdout: %s\nstderr: %s", c.args, code, c.code, c.out, stdout.String(), stderr.String())
		}
	}
	b, err := os.ReadFile(svg)
	if err != nil || !bytes.HasPrefix(b, []byte("<svg")) || !bytes.HasSuffix(b, []byte("</svg>\n")) {
		t.Errorf("svg: %v, %.80q", err, b)
	}
}

func text(t *testing.T, r *Report) string {
	t.Helper()
	if r == nil {
		return "<no report>"
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
