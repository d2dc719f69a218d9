// Package sim is storemesh's deterministic simulator (docs/design.md §9): a fleet
// of real ledgers and real mesh.Sessions over a simulated network and
// simulated time, with faults, a workload and invariant checks.
//
// What lives here:
//   - Scenario: the script (JSON, docs/scenarios.md), ParseScenario,
//     LoadScenario and the library in scenarios/ (embedded).
//   - Run: one run for one seed; Explore: many seeds on a few goroutines,
//     each run on its own; Main: the "storemesh sim" command line.
//   - lanes.go (the partitions a run is split into, and the event loop
//     that runs them in parallel), world.go (nodes, clocks, global
//     events), net.go (links, sessions,
//     frames), workload.go (the trade), faults.go (partitions, crashes,
//     backups and restores, clock faults, flaps), revoke.go (revocations
//     and what the checks expect of them), check.go (invariants),
//     report.go and svg.go (what a run says).
//
// Only the network and time are simulated. Each node is ledger.Open over
// an in-memory go-datastore (its disk: it survives a crash, and a backup
// is a copy of it) and one mesh.Session per connected peer, driven the
// way mesh/p2p drives them: Start, Step, Tick, Push, Ready, TakeRelay,
// TakeNews and Announce; one mesh.Pulls and one mesh.AnchorView shared by
// a node's sessions; local ops pushed to every session; ops received fresh
// from their author relayed to the node's other sessions; scopes that
// gained pulled ops announced to them; never Push or Announce from inside
// a Step of the same session. Push policy "durable" floods instead (every
// durable op to every session), for comparison. There is no second protocol here.
//
// Determinism: the seed decides everything. Virtual time is int64 ns.
// The nodes are split into lanes (the anchors; each store), each with its
// own event queue ordered by (time, sequence number), its own PCG source
// seeded by the seed and the lane's index, and its own trace; scenario
// events, samples and checks are global events, run alone. Lanes run in
// parallel in windows no longer than the least latency of a link between
// lanes, so nothing a lane does in a window reaches another lane within
// it; frames that cross are handed over at the window's end, in lane
// order. The lane split and the window come from the scenario alone, so a
// report is the same whatever the number of goroutines (RunWorkers;
// TestLanesWorkerCountInvisible). Device keys come from
// ledgertest.NewFleet(seed); every node's physical clock is a function of
// virtual time (integer drift arithmetic); no wall clock and no map
// iteration order reaches behaviour (nodes, links and sessions are visited
// in index order). The wall clock appears only in Report.Wall and its
// split, which the text and JSON reports leave out.
//
// Invariants checked after every run, per scope and per replica:
//   - convergence: every replica of a scope has the same ledger.Digest
//     (the run gives them Settle after the quiet point: faults healed,
//     workload over);
//   - no-lost-ack: every op whose Append returned is in every replica of
//     its scope, unless it was made by a device after the backup it was
//     later restored from and no other replica held it at the restore
//     (its disk was replaced: "exempt", counted in the report);
//   - counted-once: each replica's sale log lists every acknowledged sale
//     once and nothing else;
//   - stock-conserved: OnHand per (store, SKU) equals the harness's own
//     sum of the acknowledged ops: received − sold + refunded ± transfers
//     ± count corrections, refunds counted by the ledger's rule (per sale,
//     in (hlc, device, seq, hash) order, up to the units left: a line two
//     partitioned terminals both refunded counts once);
//   - same-conflicts: every replica of a store lists the same conflicts;
//   - forks-flagged: a device with two acknowledged ops at one seq (a
//     restored device that sold before it learned its last seq) is listed
//     by ledger.Forks on every replica of the scope, and no other is;
//   - revoked-dropped: an acknowledged op of a revoked device past its
//     revocation's cut-off is on no replica (and exempt from no-lost-ack,
//     the stock and the sale log); revoked devices are not checked as
//     replicas (they are cut off by design);
//   - hq-acknowledged: within two keepalives of convergence every running
//     device of a store with an uplink knows what HQ holds of its store:
//     nothing left counted as queued for HQ (its mesh.AnchorView against
//     its ledger, as the node's status computes queued_for_anchor). The
//     run goes on after convergence until then, and reports how long it
//     took.
//
// HAZARDS:
//   - Per-frame loss, duplication and reordering model a worse network
//     than a libp2p stream (which delivers in order or resets); they test
//     the anti-entropy, not the transport.
//   - A crash drops the frames in flight on its links (the connection is
//     reset); a restored device's ops "held elsewhere" are judged from
//     other replicas' placed ops at the moment of the restore, so an op
//     that only sat unplaced in a peer's memory counts as gone.
//   - "Caught up" is measured against the version vectors of the ops made
//     before the last heal; it says nothing about fork branches (the
//     final digest check does).
//   - A big run holds every replica's ledger in memory: fleet-1000 peaks
//     near 3 GB.
//   - Inside a window a lane must touch only its own nodes and links and
//     the read-only scenario: a link between lanes is dialled, connected
//     and closed by global events only (a failed session's close waits for
//     the window's end), and fault hooks force one worker. dial and
//     closeLink panic if that is broken; the race detector runs the lane
//     tests.
//
// Imports: mesh (the state machine; never mesh/p2p), ledger, ledgertest,
// crdt and go-datastore; never libp2p (fence_test.go). Imported only by
// cmd.
package sim
