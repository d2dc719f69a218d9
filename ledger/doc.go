// Package ledger is one node's durable, signed op log and the state derived
// from it (DESIGN §3, §6, §7).
//
// What lives here: the op envelope and its canonical encoding; fleet keys
// and device certificates; Append (local ops: seq, prev hash, HLC,
// signature, group-committed fsync); ApplyBatch (remote ops: signature,
// certificate, role, store and chain checks, idempotent, out-of-order ops
// held until their gap fills, equivocation kept as evidence); the
// materialised state (stock PN-counters, the sale log, LWW catalog, prices
// and policy, version vectors and digests per scope, oversell conflicts);
// the catch-up queries sync uses; audit export/verify; and stock
// allotments (allot*.go: a bounded counter per allotted (store, sku), its
// ops, the Append refusal ErrAllotmentExhausted and the AllotReactor that
// moves units between devices).
//
// Invariants:
//   - An op is acknowledged (Append returns, or a version vector covers it)
//     only after the batch holding it committed to storage.
//   - A device's ops in one store form a hash chain; an op is placed only
//     when its prev is an op already placed at seq-1. The chain is per
//     (store, device) because version vectors are per scope.
//   - The state is a function of the set of placed ops, not of their order:
//     replicas holding the same ops have the same Digest.
//   - An allotted SKU's counter total equals its on_hand; a local sale or
//     allot.transfer never spends more than this device holds, ops in
//     flight in group commit included.
//
// HAZARDS:
//   - Revocation is checked when an op arrives: a replica that applied a
//     revoked device's op before it learned of the revocation keeps it. The
//     mesh refuses revoked peers, which bounds the window.
//   - Ops held for a missing predecessor live in memory only (held.go),
//     bounded in bytes (MaxHeldBytes), per author (MaxHeldPerAuthor) and in
//     time (HeldTTL); a dropped or refused op is sent again by its holder.
//     An own op dropped raises the own-chain floor first, so local writes
//     keep waiting (ErrOwnHistoryBehind).
//   - Replay on open re-reads every op: start-up time grows with the log.
//   - ApplyBatch verifies one signature per device run (the newest op's;
//     prev hashes cover the rest, signatures included). An op whose own
//     signature is broken is therefore kept when a later op of the same
//     device vouches for it: only a holder of the device's key can make
//     that, and VerifyStored and audit verify still check every signature
//     and report it (ProblemSignature) as evidence against the device.
//   - Allotments: a device that sells an allotted SKU before it has heard
//     the SKU became allotted, or after a write-off of its units it had
//     not heard of, overspends; it is flagged (AllotStatus.Overspent),
//     every replica alike, never hidden. allot*.go keeps every stock
//     movement (seq, delta: 16 bytes, per chain) of every (store, sku) in
//     memory so a late allot.set can be applied in any order: memory grows
//     with the stock history (16 MB per million sale lines), as the sale
//     log's uses already do.
//
// Imports: crdt, go-datastore and go-ds-badger4, the standard library.
// Never libp2p or net: the ledger knows nothing of the network.
package ledger
