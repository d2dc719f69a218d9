// Package ledger is one node's durable, signed op log and the state derived
// from it (DESIGN §3, §6, §7).
//
// What lives here: the op envelope and its canonical encoding; fleet keys
// and device certificates; Append (local ops: seq, prev hash, HLC,
// signature, group-committed fsync); ApplyBatch (remote ops: signature,
// certificate, role, store and chain checks, idempotent, out-of-order ops
// held until their gap fills, equivocation kept as evidence); the
// materialised state (stock PN-counters, the sale log, refunds bounded by
// their sale, LWW catalog, prices and policy, version vectors and digests
// per scope, oversell and over_refund conflicts, receipt numbers); the
// catch-up queries sync uses; and audit export/verify.
//
// Invariants:
//   - An op is acknowledged (Append returns, or a version vector covers it)
//     only after the batch holding it committed to storage.
//   - A device's ops in one store form a hash chain; an op is placed only
//     when its prev is an op already placed at seq-1. The chain is per
//     (store, device) because version vectors are per scope.
//   - The state is a function of the set of placed ops, not of their order:
//     replicas holding the same ops have the same Digest.
//   - A refund never credits more than its sale has left (refunds.go): per
//     sale, refunds in (hlc, device, seq, hash) order are honoured up to
//     the units and money left; the excess is an over_refund conflict. An
//     arrival re-evaluates only its own sale's refunds.
//   - Oversells are cached per (store, sku) and recomputed only when that
//     counter or its sale lines change (conflicts.go); only stock-tracked
//     SKUs oversell (catalog Stock, or any stock op in the store).
//   - Receipt numbers are in the signed body, gapless per chain for sales
//     and for refunds (receipts.go); Append takes the next one under the
//     ledger lock, after every check that could refuse the op.
//
// HAZARDS:
//   - A refund whose sale is in another store, or has not arrived, has no
//     effect and is not flagged: a replica cannot tell "not yet" from
//     "never". Audit verify counts such refunds as unmatched.
//   - A forked chain may reuse receipt numbers (both branches numbered from
//     the same count); the fork is flagged, and a receipt lookup picks the
//     smaller sale id on every replica.
//   - Revocation is checked when an op arrives: a replica that applied a
//     revoked device's op before it learned of the revocation keeps it. The
//     mesh refuses revoked peers, which bounds the window.
//   - Ops held for a missing predecessor live in memory only (bounded by
//     Config.MaxHeld); after a restart peers send them again.
//   - Replay on open re-reads every op: start-up time grows with the log.
//   - ApplyBatch verifies one signature per device run (the newest op's;
//     prev hashes cover the rest, signatures included). An op whose own
//     signature is broken is therefore kept when a later op of the same
//     device vouches for it: only a holder of the device's key can make
//     that, and VerifyStored and audit verify still check every signature
//     and report it (ProblemSignature) as evidence against the device.
//
// Imports: crdt, go-datastore and go-ds-badger4, the standard library.
// Never libp2p or net: the ledger knows nothing of the network.
package ledger
