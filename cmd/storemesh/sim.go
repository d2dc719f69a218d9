package main

import "storemesh/sim"

// runSim hands the arguments to the simulator: storemesh sim run FILE
// [--seed N] [--json]; exit 1 when an invariant fails.
func runSim(c *cli, args []string) error {
	if code := sim.Main(args, c.stdout, c.stderr); code != 0 {
		return exitError(code)
	}
	return nil
}
