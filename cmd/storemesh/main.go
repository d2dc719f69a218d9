package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// command is one subcommand.
type command struct {
	name    string // "fleet init"
	summary string
	run     func(c *cli, args []string) error
}

var commands = []command{
	{"fleet init", "make the fleet key (the merchant's root of trust)", runFleetInit},
	{"enroll", "make a device key and its certificate", runEnroll},
	{"node", "run a terminal: mesh, ledger, HTTP API and terminal page", runNode},
	{"anchor", "run a cloud anchor: replicates every store", runAnchor},
	{"demo", "the newcomer's tour: a small fleet on loopback, a partition, a heal", runDemo},
	{"sim", "run simulator scenarios (storemesh sim run FILE [--seed N] [--json])", runSim},
	{"revoke", "revoke a device through a manager or anchor node (--fleet: with the fleet's authority)", runRevoke},
	{"audit export", "write a verifiable audit bundle of a stopped node's data", runAuditExport},
	{"audit verify", "verify an audit bundle offline", runAuditVerify},
	{"version", "print the version", runVersion},
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	}
	for _, cmd := range commands {
		words := strings.Fields(cmd.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == cmd.name {
			return c.exitCode(cmd.run(c, args[len(words):]))
		}
	}
	if args[0] == "fleet" || args[0] == "audit" {
		return c.exitCode(usagef("%s needs a subcommand: see storemesh --help", args[0]))
	}
	return c.exitCode(usagef("unknown command %q", args[0]))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "storemesh: point of sale that keeps selling offline and syncs without a server.")
	fmt.Fprintln(w, "\nUsage: storemesh COMMAND [flags]   (storemesh COMMAND --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 failure, 2 usage.")
}
