package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// cli is what every subcommand gets: where to write and how to read the
// environment (tests replace both).
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError is a command-line mistake: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// stringList is a repeatable flag (--peer A --peer B). Its default is
// replaced, not extended, by the first value given.
type stringList struct {
	vals []string
	set  bool
}

func (s *stringList) String() string { return strings.Join(s.vals, ",") }
func (s *stringList) Set(v string) error {
	if !s.set {
		s.vals, s.set = nil, true
	}
	s.vals = append(s.vals, v)
	return nil
}

func listFlag(fs *flagSet, name, usage string, defaults ...string) *stringList {
	l := &stringList{vals: defaults}
	fs.Var(l, name, usage)
	return l
}

// flagSet is a subcommand's flags and its help text.
type flagSet struct {
	*flag.FlagSet
	help string
}

// newFlags makes a subcommand's flag set. Every command takes --config.
func newFlags(name, usage, summary string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.String("config", "", "JSON file of flag values, e.g. {\"http\":\"127.0.0.1:8080\",\"peer\":[\"/ip4/...\"]} (env STOREMESH_CONFIG)")
	return &flagSet{FlagSet: fs, help: usage + "\n\n" + summary}
}

// printHelp writes a subcommand's usage and flags.
func printHelp(w io.Writer, fs *flagSet) {
	fmt.Fprintf(w, "Usage: %s\n\nFlags (each also from env STOREMESH_<FLAG> or --config; precedence flag > env > config > default):\n", fs.help)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s\n        %s%s\n", f.Name, f.Usage, def)
	})
}

// parse reads args (flags may follow positional arguments), then fills
// every flag not given on the command line from STOREMESH_<FLAG>, then
// from the --config file. It returns the positional arguments. A help
// request prints the usage and returns errHelp.
func (c *cli) parse(fs *flagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printHelp(c.stdout, fs)
				return nil, errHelp
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	cfgPath := fs.Lookup("config").Value.String()
	if cfgPath == "" {
		cfgPath = c.getenv("STOREMESH_CONFIG")
	}
	var cfg map[string]json.RawMessage
	if cfgPath != "" {
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			return nil, usagef("--config: %v", err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, usagef("--config %s: want a JSON object of flag names to values: %v", cfgPath, err)
		}
		var unknown []string
		for k := range cfg {
			if fs.Lookup(k) == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, usagef("--config %s: unknown flags %s for %s", cfgPath, strings.Join(unknown, ", "), fs.Name())
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] || f.Name == "config" {
			return
		}
		if v, ok := lookupEnv(c.getenv, f.Name); ok {
			err = setFlag(fs, f, splitList(f, v))
			if err != nil {
				err = usagef("env %s: %v", envName(f.Name), err)
			}
			return
		}
		if raw, ok := cfg[f.Name]; ok {
			vals, e := configValues(raw)
			if e == nil {
				e = setFlag(fs, f, vals)
			}
			if e != nil {
				err = usagef("--config %s: %s: %v", cfgPath, f.Name, e)
			}
		}
	})
	return pos, err
}

var errHelp = errors.New("help requested")

func envName(flagName string) string {
	return "STOREMESH_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(envName(name))
	return v, v != ""
}

// splitList splits a list flag's env value on commas.
func splitList(f *flag.Flag, v string) []string {
	if _, ok := f.Value.(*stringList); ok {
		var out []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	return []string{v}
}

// setFlag sets f through the flag set, so it counts as given (explicit).
func setFlag(fs *flagSet, f *flag.Flag, vals []string) error {
	if _, ok := f.Value.(*stringList); !ok && len(vals) != 1 {
		return fmt.Errorf("takes one value, got %d", len(vals))
	}
	for _, v := range vals {
		if err := fs.Set(f.Name, v); err != nil {
			return err
		}
	}
	return nil
}

// configValues reads a config value: a string, number, bool or a list of
// strings.
func configValues(raw json.RawMessage) ([]string, error) {
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return []string{s}, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	switch v.(type) {
	case bool, float64:
		return []string{string(raw)}, nil
	}
	return nil, fmt.Errorf("want a string, number, boolean or list of strings, got %s", raw)
}

// logFlags adds --log-format and --log-level.
type logFlags struct{ format, level *string }

func addLogFlags(fs *flagSet, level string) logFlags {
	return logFlags{
		format: fs.String("log-format", "text", "log format: text or json"),
		level:  fs.String("log-level", level, "log level: debug, info, warn or error"),
	}
}

func (l logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*l.level)); err != nil {
		return nil, usagef("--log-level %q: debug, info, warn or error", *l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch *l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: text or json", *l.format)
}

// exitError is an exit code whose reason was already printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitCode reports err and maps it to an exit code.
func (c *cli) exitCode(err error) int {
	var ue *usageError
	var ee exitError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ee):
		return int(ee)
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "storemesh: %v\n(run with --help for usage)\n", err)
		return exitUsage
	default:
		fmt.Fprintf(c.stderr, "storemesh: %v\n", err)
		return exitFailure
	}
}
