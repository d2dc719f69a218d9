package sim

import (
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

// sweepSeeds says how many seeds each library scenario runs:
// SIM_SEEDS (a count N for seeds 1..N, or a list like "1..500,900"), else
// 3 with -short, 2 under -race, 10 otherwise. CI's full sweep sets
// SIM_SEEDS=200 (docs/scenarios.md).
func sweepSeeds(t *testing.T, env string, short, race, normal int) []uint64 {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			v = "1.." + strconv.Itoa(n)
			if n == 0 {
				return nil
			}
		}
		seeds, err := ParseSeeds(v)
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		return seeds
	}
	n := normal
	switch {
	case testing.Short():
		n = short
	case raceEnabled:
		n = race
	}
	if n == 0 {
		return nil
	}
	seeds, _ := ParseSeeds("1.." + strconv.Itoa(n))
	return seeds
}

// TestLibraryScenarios runs every library scenario (fleet-1000 aside,
// see TestFleet1000) over many seeds; every invariant must hold on every
// one. SIM_PUSH=durable drives the sessions as mesh's libp2p driver does.
func TestLibraryScenarios(t *testing.T) {
	seeds := sweepSeeds(t, "SIM_SEEDS", 3, 2, 10)
	for _, name := range Library() {
		if name == "fleet-1000" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if raceEnabled && name == "fleet-small" && os.Getenv("SIM_SEEDS") == "" {
				t.Skip("52 nodes are slow under -race; the non-race sweep runs it")
			}
			sc, err := loadWithPush(name, os.Getenv("SIM_PUSH"))
			if err != nil {
				t.Fatal(err)
			}
			reportFailures(t, Explore(sc, seeds, runtime.GOMAXPROCS(0)), len(seeds))
		})
	}
}

// TestFleet1000 runs the 1,000-device scenario for SIM_FLEET_SEEDS seeds
// (none by default: about a minute each on two cores).
func TestFleet1000(t *testing.T) {
	seeds := sweepSeeds(t, "SIM_FLEET_SEEDS", 0, 0, 0)
	if len(seeds) == 0 {
		t.Skip("set SIM_FLEET_SEEDS=N to run fleet-1000 for seeds 1..N (about a minute each)")
	}
	sc, err := LoadScenario("fleet-1000")
	if err != nil {
		t.Fatal(err)
	}
	var fails []Failure
	for _, seed := range seeds {
		r, err := Run(sc, seed)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("seed %d: %d ops, caught up %.1f s after the last heal, converged %.1f s after the quiet point, %s wall",
			seed, r.Ops.Total, r.CatchUpS, r.ConvergenceS, r.Wall.Round(1e7))
		if !r.Converged || r.Ops.Total != 100_000 || r.Nodes != 1002 {
			t.Errorf("seed %d: converged %v, %d ops, %d nodes", seed, r.Converged, r.Ops.Total, r.Nodes)
		}
		fails = append(fails, r.Failures...)
	}
	reportFailures(t, fails, len(seeds))
}

func reportFailures(t *testing.T, fails []Failure, runs int) {
	t.Helper()
	var seeds []uint64
	for i, f := range fails {
		if !slices.Contains(seeds, f.Seed) {
			seeds = append(seeds, f.Seed)
		}
		if i < 20 {
			t.Error(f)
		}
	}
	if len(seeds) > 0 {
		t.Errorf("%d of %d seeds failed: %v; reproduce with: go run ./cmd/storemesh sim run %s --seed %d",
			len(seeds), runs, seeds, fails[0].Scenario, seeds[0])
	}
	t.Logf("%d seeds, %d failures", runs, len(fails))
}

// TestFullMeshRelayBytes: in shop-mesh every device sees every other, so
// a sale should cross the LAN about once to each device. Relaying ops to
// peers that have them first hand, and gossiping anchor news and summaries
// to every peer, once took this scenario to 9.1× the ideal bytes (each op
// once to each other replica); now it is about 2.2×.
func TestFullMeshRelayBytes(t *testing.T) {
	sc, err := LoadScenario("shop-mesh")
	if err != nil {
		t.Fatal(err)
	}
	r, err := RunWorkers(sc, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed() {
		t.Fatalf("shop-mesh fails:\n%s", text(t, r))
	}
	if ratio := float64(r.Wire.BytesDelivered) / float64(r.Wire.IdealBytes); ratio > 3 {
		t.Errorf("shop-mesh put %.2f× the ideal bytes on the wire, want at most 3×", ratio)
	}
}

// TestHQAcknowledgementsSpread: after convergence every store device
// learns within a few summary periods what HQ holds of its store, so its
// "queued for HQ" count drains. market-day's stalls have several devices
// with their own sessions to the anchor; when the anchor acknowledged to
// each only what came from it, seed 1 took 48 s (a keepalive).
func TestHQAcknowledgementsSpread(t *testing.T) {
	sc, err := LoadScenario("market-day")
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 5; seed++ {
		r, err := RunWorkers(sc, seed, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.HQAckedS < 0 || r.HQAckedS > 20 {
			t.Errorf("seed %d: every device knew what HQ holds %.1f s after convergence, want within 20 s", seed, r.HQAckedS)
		}
	}
}
