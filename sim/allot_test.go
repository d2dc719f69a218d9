package sim

import (
	"runtime"
	"sync"
	"testing"
)

// TestAllotPriceOfSafety runs the allotment scenarios over SIM_ALLOT_SEEDS
// seeds (3 by default) and logs, summed over the seeds, the sales of the
// allotted SKU taken, refused, and refused while units existed elsewhere
// (the figures docs/scenarios.md quotes). Every run must pass.
func TestAllotPriceOfSafety(t *testing.T) {
	seeds := sweepSeeds(t, "SIM_ALLOT_SEEDS", 3, 1, 3)
	for _, name := range []string{"scarce-item-allotted", "allot-flap"} {
		t.Run(name, func(t *testing.T) {
			sc, err := LoadScenario(name)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var refused, elsewhere, requests, transfers int
			next := make(chan uint64)
			var wg sync.WaitGroup
			for range runtime.GOMAXPROCS(0) {
				wg.Go(func() {
					for seed := range next {
						r, err := Run(sc, seed)
						if err != nil {
							t.Error(err)
							continue
						}
						mu.Lock()
						for _, f := range r.Failures {
							t.Errorf("seed %d: %s", seed, f)
						}
						refused += r.Ops.Refused[refusedAllot]
						elsewhere += r.Ops.Refused[refusedAllotElsewhere]
						requests += r.Ops.ByKind["allot.request"]
						transfers += r.Ops.ByKind["allot.transfer"]
						mu.Unlock()
					}
				})
			}
			for _, s := range seeds {
				next <- s
			}
			close(next)
			wg.Wait()
			t.Logf("%s over %d seeds: %d sales refused allotment_exhausted, %d of them while units existed elsewhere; %d requests, %d transfers",
				name, len(seeds), refused, elsewhere, requests, transfers)
		})
	}
}
