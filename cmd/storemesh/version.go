package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func runVersion(c *cli, args []string) error {
	fs := newFlags("version", "storemesh version", "Prints the version, the Go version and the commit when known.")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	commit := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				commit = " commit " + s.Value[:12]
			}
		}
	}
	fmt.Fprintf(c.stdout, "storemesh %s (%s%s)\n", version, runtime.Version(), commit)
	return nil
}
