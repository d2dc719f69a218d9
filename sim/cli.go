package sim

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
)

const usage = `usage:
  sim run FILE [--seed N] [--json] [--svg OUT] [--push P]   run one scenario; exit 1 when an invariant fails
  sim explore FILE --seeds 1..500 [--workers N] [--push P]  run many seeds; print the failing ones; exit 1 if any
  sim list                                       list the scenario library
FILE is a scenario file or the name of a library scenario (docs/scenarios.md).
--push relay|durable overrides the scenario's push policy.
`

// Main is "storemesh sim": args are what follows "sim". It returns the
// exit code: 0 pass, 1 an invariant failed, 2 bad usage or a run error.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		batchGC()
		return cliRun(args[1:], stdout, stderr)
	case "explore":
		batchGC()
		return cliExplore(args[1:], stdout, stderr)
	case "list":
		for _, name := range Library() {
			sc, err := LoadScenario(name)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 2
			}
			fmt.Fprintf(stdout, "%-20s %s\n", name, sc.Description)
		}
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sim: unknown command %q\n%s", args[0], usage)
	return 2
}

// BatchGCPercent is the garbage collector's target while the simulator's
// command runs (GOGC in the environment wins). A run is a batch job whose
// heap is nearly all live — every replica's ledger — so at Go's default of
// 100 the collector marks that whole heap again each time it doubles. On
// fleet-1000, 200 took 7% less CPU in paired runs on a quiet machine and
// up to 20% on a busy one, for about 20% more peak memory; 400 was slower
// (page faults on the larger heap), as was GOGC=off (docs/benchmarks.md).
const BatchGCPercent = 200

// batchGC sets BatchGCPercent unless GOGC is set.
func batchGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(BatchGCPercent)
	}
}

// parseArgs parses flags wherever they stand and returns the one
// positional argument (the scenario).
func parseArgs(fs *flag.FlagSet, args []string) (string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("want one scenario FILE, got %d arguments", len(pos))
	}
	return pos[0], nil
}

func cliRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 1, "the seed that decides the run")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	svg := fs.String("svg", "", "write the convergence/queue graph to this SVG file")
	push := fs.String("push", "", "override the scenario's push policy: relay or durable")
	file, err := parseArgs(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "sim run: %v\n%s", err, usage)
		return 2
	}
	sc, err := loadWithPush(file, *push)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	r, err := Run(sc, *seed)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err == nil && *svg != "" {
		var b bytes.Buffer
		if err = r.WriteSVG(&b); err == nil {
			err = os.WriteFile(*svg, b.Bytes(), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "sim run:", err)
		return 2
	}
	_ = r.WriteRunTook(stderr)
	if r.Failed() {
		return 1
	}
	return 0
}

func cliExplore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim explore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seedSpec := fs.String("seeds", "1..100", "seeds to run: N, LO..HI, or a comma-separated list")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "runs in parallel")
	push := fs.String("push", "", "override the scenario's push policy: relay or durable")
	file, err := parseArgs(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "sim explore: %v\n%s", err, usage)
		return 2
	}
	seeds, err := ParseSeeds(*seedSpec)
	if err != nil {
		fmt.Fprintln(stderr, "sim explore:", err)
		return 2
	}
	sc, err := loadWithPush(file, *push)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fails := Explore(sc, seeds, *workers)
	var bad []uint64
	for _, f := range fails {
		if !slices.Contains(bad, f.Seed) {
			bad = append(bad, f.Seed)
		}
		fmt.Fprintln(stdout, f)
	}
	if len(bad) == 0 {
		fmt.Fprintf(stdout, "%s: all %d seeds passed\n", sc.Name, len(seeds))
		return 0
	}
	ss := make([]string, len(bad))
	for i, s := range bad {
		ss[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(stdout, "%s: %d of %d seeds failed: %s\nreproduce: storemesh sim run %s --seed %d\n",
		sc.Name, len(bad), len(seeds), strings.Join(ss, " "), file, bad[0])
	return 1
}

func loadWithPush(file, push string) (*Scenario, error) {
	sc, err := LoadScenario(file)
	if err != nil || push == "" {
		return sc, err
	}
	sc.Push = push
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("sim: scenario %s: %w", file, err)
	}
	return sc, nil
}
