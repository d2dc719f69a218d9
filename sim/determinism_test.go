package sim

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// reportBytes runs a library scenario and returns its text and JSON
// reports, which must depend on nothing but the scenario and the seed.
func reportBytes(t *testing.T, name, push string, seed uint64) (string, string) {
	t.Helper()
	return reportBytesWorkers(t, name, push, seed, 1)
}

func reportBytesWorkers(t *testing.T, name, push string, seed uint64, workers int) (string, string) {
	t.Helper()
	sc, err := loadWithPush(name, push)
	if err != nil {
		t.Fatal(err)
	}
	r, err := RunWorkers(sc, seed, workers)
	if err != nil {
		t.Fatal(err)
	}
	var txt, js bytes.Buffer
	if err := r.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteSVG(&js); err != nil { // the picture is deterministic too
		t.Fatal(err)
	}
	return txt.String(), js.String()
}

// The scenarios the determinism tests replay: between them they use
// loss, duplication, reordering, crashes, restores and clock faults.
var determinismCases = []struct {
	name, push string
	seed       uint64
}{{"chaos", "", 11}, {"restored-terminal", "", 5}, {"clock-skew", "", 3}, {"chaos", "durable", 12}}

func TestDeterministicInProcess(t *testing.T) {
	for _, c := range determinismCases {
		t1, j1 := reportBytes(t, c.name, c.push, c.seed)
		t2, j2 := reportBytes(t, c.name, c.push, c.seed)
		if t1 != t2 || j1 != j2 {
			t.Errorf("%s seed %d: two runs differ:\n%s\n---\n%s", c.name, c.seed, t1, t2)
		}
		if !strings.Contains(t1, "trace     sha256:") {
			t.Errorf("no trace hash in the report:\n%s", t1)
		}
		if c == determinismCases[0] {
			other, _ := reportBytes(t, c.name, c.push, c.seed+1)
			if traceLine(other) == traceLine(t1) {
				t.Errorf("%s: seeds %d and %d give the same trace: the seed decides nothing", c.name, c.seed, c.seed+1)
			}
		}
	}
}

func traceLine(report string) string {
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "trace") {
			return l
		}
	}
	return ""
}

// TestDeterministicAcrossProcesses re-executes the test binary: a fresh
// process (new map hash seeds, new heap layout) must print the same bytes.
func TestDeterministicAcrossProcesses(t *testing.T) {
	if name := os.Getenv("SIM_DETERMINISM_CHILD"); name != "" {
		seed, _ := strconv.ParseUint(os.Getenv("SIM_DETERMINISM_SEED"), 10, 64)
		txt, js := reportBytes(t, name, os.Getenv("SIM_DETERMINISM_PUSH"), seed)
		os.Stdout.WriteString("<<<" + txt + js + ">>>")
		return
	}
	for _, c := range determinismCases {
		txt, js := reportBytes(t, c.name, c.push, c.seed)
		{
			cmd := exec.Command(os.Args[0], "-test.run=^TestDeterministicAcrossProcesses$", "-test.count=1")
			cmd.Env = append(os.Environ(), "SIM_DETERMINISM_CHILD="+c.name, "SIM_DETERMINISM_PUSH="+c.push,
				"SIM_DETERMINISM_SEED="+strconv.FormatUint(c.seed, 10))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			s := string(out)
			i, j := strings.Index(s, "<<<"), strings.LastIndex(s, ">>>")
			if i < 0 || j < i {
				t.Fatalf("child printed no report:\n%s", s)
			}
			if got := s[i+3 : j]; got != txt+js {
				t.Errorf("%s seed %d: the child process printed a different report:\n%s\n--- parent:\n%s", c.name, c.seed, got, txt)
			}
		}
	}
}

// TestLanesWorkerCountInvisible: how many goroutines run the lanes never
// shows in a report: the lanes of a window are independent, and what
// crosses between them is handed over in lane order.
func TestLanesWorkerCountInvisible(t *testing.T) {
	cases := []struct {
		name string
		seed uint64
	}{{"fleet-small", 4}, {"chaos", 2}, {"restored-anchor", 3}}
	if testing.Short() || raceEnabled {
		cases = cases[1:]
	}
	for _, c := range cases {
		t1, j1 := reportBytesWorkers(t, c.name, "", c.seed, 1)
		if !strings.Contains(t1, "lanes") || strings.Contains(t1, "lanes     1,") {
			t.Fatalf("%s runs in one lane: the test proves nothing\n%s", c.name, t1)
		}
		for _, workers := range []int{2, 5} {
			t2, j2 := reportBytesWorkers(t, c.name, "", c.seed, workers)
			if t1 != t2 || j1 != j2 {
				t.Errorf("%s seed %d: 1 and %d workers differ:\n%s\n---\n%s", c.name, c.seed, workers, t1, t2)
			}
		}
	}
}
