//go:build race

package sim

// raceEnabled: the race detector slows runs about tenfold; the seed
// sweeps shrink under it.
const raceEnabled = true
