package sim

import "testing"

// BenchmarkFleet1000 runs the 1,000-device, 100-store, 100,000-op
// scenario (docs/design.md §10: under 60 s on two cores). Run it with
// -benchtime 1x: one run is about a minute.
func BenchmarkFleet1000(b *testing.B) { benchScenario(b, "fleet-1000") }

// BenchmarkFleetSmall is the same shape at 52 nodes, for quick comparisons.
func BenchmarkFleetSmall(b *testing.B) { benchScenario(b, "fleet-small") }

func benchScenario(b *testing.B, name string) {
	sc, err := LoadScenario(name)
	if err != nil {
		b.Fatal(err)
	}
	batchGC() // as "storemesh sim run" does
	var wall, converge, catchUp float64
	ops, runs := 0, 0
	for b.Loop() {
		runs++
		r, err := Run(sc, uint64(runs))
		if err != nil {
			b.Fatal(err)
		}
		if r.Failed() || !r.Converged {
			b.Fatalf("seed %d: %v", runs, r.Failures)
		}
		wall += r.Wall.Seconds()
		ops += r.Ops.Total
		converge += r.ConvergenceS
		catchUp += r.CatchUpS
	}
	n := float64(runs)
	b.ReportMetric(wall/n, "wall-s/run")
	b.ReportMetric(float64(ops)/wall, "ops/s")
	b.ReportMetric(converge/n, "converge-virtual-s")
	b.ReportMetric(catchUp/n, "catchup-virtual-s")
	b.ReportMetric(float64(ops)/n, "ops/run")
}
