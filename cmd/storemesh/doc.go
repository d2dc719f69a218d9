// Command storemesh is the one binary of docs/design.md §8a: fleet init, enroll,
// node, anchor, demo, sim, audit export/verify, version.
//
// Every subcommand's flags may also come from the environment
// (STOREMESH_<FLAG>, upper case, dashes as underscores; lists
// comma-separated) or from a JSON --config file; precedence is flag > env >
// config > default. Exit codes: 0 ok, 1 failure, 2 usage.
//
// The demo (demo.go) runs a small fleet in this process: real libp2p on
// 127.0.0.1 with static peers only, real badger in a temp directory, the
// real HTTP API. HAZARD: it must never enable mDNS (TESTING.md).
//
// Tests build the binary once (TestMain) and drive it as separate
// processes on loopback.
//
// Imports: node, ledger, mesh, sim. Nothing imports it.
package main
