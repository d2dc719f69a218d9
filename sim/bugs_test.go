package sim

import (
	"path/filepath"
	"testing"
)

// knownBugs are scenarios in testdata/bugs that fail because of a bug
// outside the simulator. Each must still fail, the way it is described;
// when one passes, the bug is fixed: move the scenario to the library.
var knownBugs = []struct {
	file, why string
	check     func(*Report) bool
}{{
	file: "clock-reset.json",
	why: "a device whose clock is behind its peers' certificates' not-before refuses every peer (mesh.Session.onHello checks " +
		"the peer certificate against the raw physical clock, code cert_expired, bannable) while ledger.Append keeps " +
		"acknowledging sales that can then never leave the device",
	check: func(r *Report) bool {
		lost := false
		for _, f := range r.Failures {
			lost = lost || (f.Invariant == InvLostAck && f.Node != "cafe.t1")
		}
		return r.Wire.SessionErrors["cert_expired"] > 0 && lost
	},
}}

func TestKnownBugs(t *testing.T) {
	for _, b := range knownBugs {
		sc, err := LoadScenario(filepath.Join("testdata", "bugs", b.file))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Run(sc, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Failed() {
			t.Errorf("%s passes: is it fixed (%s)? Move it to the library.", b.file, b.why)
			continue
		}
		if !b.check(r) {
			t.Errorf("%s fails differently from the known bug (%s):\n%s", b.file, b.why, text(t, r))
		}
	}
}
