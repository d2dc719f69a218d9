package sim

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Explore runs sc once per seed on up to workers goroutines (each run is
// independent, and runs its lanes on one goroutine) and returns every failure, ordered by
// seed. A run that cannot finish is a failure with invariant "error".
func Explore(sc *Scenario, seeds []uint64, workers int) []Failure {
	workers = max(1, min(workers, len(seeds)))
	results := make([][]Failure, len(seeds))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = runFailures(sc, seeds[i])
			}
		}()
	}
	for i := range seeds {
		next <- i
	}
	close(next)
	wg.Wait()
	var out []Failure
	for _, fs := range results {
		out = append(out, fs...)
	}
	slices.SortStableFunc(out, func(a, b Failure) int { return cmp.Compare(a.Seed, b.Seed) })
	return out
}

func runFailures(sc *Scenario, seed uint64) []Failure {
	r, err := RunWorkers(sc, seed, 1) // the seeds already keep every worker busy

	if err != nil {
		return []Failure{{Scenario: sc.Name, Seed: seed, Invariant: InvRunError, Expected: "a finished run", Got: err.Error()}}
	}
	return r.Failures
}

// ParseSeeds reads "7", "1..500" or a comma-separated mix of both.
func ParseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "..")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seeds %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("seeds %q: want LO..HI with LO ≤ HI", s)
			}
		}
		if b-a >= 1<<20 {
			return nil, fmt.Errorf("seeds %q: more than a million seeds", s)
		}
		for x := a; ; x++ {
			out = append(out, x)
			if x == b {
				break
			}
		}
	}
	return out, nil
}
