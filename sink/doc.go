// Package sink feeds the anchor's ops to systems outside the mesh: the
// shared loop (Runner) and the op decoding the targets use. Targets live
// in sink/pg (PostgreSQL) and sink/mqtt (an MQTT broker).
//
// How it works: a sink's cursor is a version vector per scope, stored
// where the target can make it durable (PostgreSQL: in the same
// transaction as the rows; MQTT: a file in the data folder, written after
// the broker acknowledged every message). The Runner streams what the
// cursor lacks with ledger.Ops, in batches of at most Config.BatchOps,
// writes each batch and advances the cursor; the ledger's subscription
// only wakes it.
//
// Invariants:
//   - Sync is never blocked: the subscription callback only signals a
//     channel of one; all reading and writing runs on the Runner's own
//     goroutine.
//   - Every op is written at least once: the cursor moves only after the
//     target said the batch is durable; after any failure the cursor is
//     reloaded from the target, so an ambiguous commit is resolved by the
//     target's own record. Targets make the effect idempotent (op ids).
//   - Ops at one (device, seq) — both branches of a fork — are never split
//     across two batches.
//
// HAZARDS:
//   - A fork's second branch that reaches the anchor after the cursor has
//     passed its seq is not written: the vector already covers the seq.
//     The ledger keeps it as evidence (GET /v1/conflicts lists the fork).
//   - Backlog is counted as the anchor's vectors beyond the last cursor
//     known durable: while the target is down and the cursor was never
//     loaded, that is every op the anchor holds.
//   - Day is the UTC date of an op's HLC: stores have no time zone yet.
//
// Imports: ledger and crdt only (fence_test.go); node imports sink.
package sink
