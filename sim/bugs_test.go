package sim

import "testing"

// TestClockResetRegression: a terminal whose clock is reset two days back
// used to refuse every peer (their certificates' not-before lay in its
// future: cert_expired, bannable) while it kept acknowledging sales that
// could never leave it. Sessions now judge certificates by the ledger's
// time, which never runs behind the device's own newest op.
func TestClockResetRegression(t *testing.T) {
	sc, err := LoadScenario("clock-reset")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(sc, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed() {
		t.Fatalf("clock-reset fails:\n%s", text(t, r))
	}
	for _, code := range []string{"cert_expired", "cert_not_yet_valid"} {
		if n := r.Wire.SessionErrors[code]; n > 0 {
			t.Errorf("%d sessions ended with %s", n, code)
		}
	}
}
