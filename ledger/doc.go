// Package ledger is one node's durable, signed op log and the state derived
// from it (docs/design.md §3, §6, §7).
//
// What lives here: the op envelope and its canonical encoding; fleet keys
// and device certificates; Append (local ops: seq, prev hash, HLC,
// signature, group-committed fsync); ApplyBatch (remote ops: signature,
// certificate, role, store and chain checks, idempotent, out-of-order ops
// held until their gap fills, equivocation kept as evidence); the
// materialised state (stock PN-counters, the sale log, refunds bounded by
// their sale, LWW catalog, prices and policy, version vectors and digests
// per scope, oversell and over_refund conflicts, receipt numbers); the
// catch-up queries sync uses; audit export/verify; and stock allotments
// (allot*.go: a bounded counter per allotted (store, sku), its ops, the
// Append refusal ErrAllotmentExhausted and the AllotReactor).
//
// Invariants:
//   - An op is acknowledged (Append returns, or a version vector covers it)
//     only after the batch holding it committed to storage.
//   - A device's ops in one store form a hash chain; an op is placed only
//     when its prev is an op already placed at seq-1. The chain is per
//     (store, device) because version vectors are per scope.
//   - The state is a function of the set of placed ops, not of their order:
//     replicas holding the same ops have the same Digest.
//   - Revocation (revoke.go) names a cut-off per chain in the revoked
//     device's own seq. Ops past it are left out of the state, the version
//     vectors (entry = min(chain length, cut-off)), the digests and
//     everything sync serves or asks for, and refused when they arrive,
//     from a peer or from the held set. Ops placed before the revocation
//     arrived stay stored, as evidence, and are left out the same way, so
//     the Digest does not depend on arrival order. Which revocations count
//     (authority, a revoker's revocation past its own cut-off is void) is
//     judged from the set of revocation ops alone (judgeRevocations).
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
//   - Storage faults are refused, never survived silently (badger.go,
//     ownrecord.go): every write first asks the datastore's free-space
//     guard (SpaceChecker) and is refused with ErrNoSpace, nothing placed,
//     while the disk keeps less than BadgerReserve free; a write that fails
//     inside the datastore stops writes (ErrFailed) until reopened; SSTs are
//     verified before badger opens them and every block on read; a damaged
//     file or a panic inside badger at open is an ErrCorrupt naming it.
//   - Restores, lost tails and clones never make a device reuse a seq
//     (ownchain.go). A device writes, per scope, one chain: its id, or a
//     later epoch of it (ID~N, ChainID), a fresh chain from seq 1. It
//     never extends a chain that is forked (another process wrote as it:
//     a clone, or an older copy of its folder that sold) and moves to a
//     new epoch at once; a chain short of what is known of it (its floor:
//     the durable record, the device folder's copy of it kept by the
//     node, a peer's summary, own ops held for a gap) waits for sync to
//     refill it (ErrOwnHistoryBehind, a BehindError saying how long) for
//     at most Config.OwnWait, then moves to a new epoch. A new epoch is
//     above every epoch of the device this replica knows, plus
//     Config.Instance mod 100, so two clones rarely pick one epoch (if
//     they do, that chain forks and each moves on again). Ops of every
//     chain and branch count, once each; a device's chains are ordered
//     by their newest op, and on open it goes on writing the newest.
//   - The durable own-chain record (Config.OwnRecord) never claims more
//     than is stored; on open, an own chain shorter than its record raises
//     the own floor (RaiseOwnFloor), so Append refuses the lost seqs
//     (ErrOwnHistoryBehind) until sync refills them.
//   - A datastore carries its format version (/m/format; none: 1); a newer
//     one is refused (ErrFormat).
//   - An allotted SKU's counter total equals its on_hand; a local sale or
//     allot.transfer never spends more than this device holds, ops in
//     flight in group commit included.
//
// HAZARDS:
//   - A device whose data folder and device folder are both put back
//     from one older copy cannot tell by itself: a peer's summary tells
//     it (then it waits or moves to a new epoch), but a sale made before
//     that summary arrives forks its chain (flagged on every replica;
//     the device then moves on). A peer that lies about how far this
//     device's chain goes makes it wait OwnWait and start a new epoch.
//   - When a revocation changes which placed ops count, the version
//     vectors and the state are rebuilt from the stored ops, under the
//     ledger's lock: a pause proportional to the log (revocations are
//     rare). A version vector entry can then go down; a peer that counted
//     those ops as acknowledged by this replica was counting a revoked
//     device's ops.
//   - An op refused while a revocation was in force that later turns void
//     (its author was revoked below it) is not stored: anti-entropy fetches
//     it again from a peer that kept it.
//   - A revoked device can still equivocate at or below its cut-off (sign a
//     second op at a seq it used): that is a fork, kept and flagged as for
//     any device, not excluded.
//   - A revocation's author is judged by the certificate this replica holds
//     for it: a device re-enrolled under the same id with another role or
//     store could be judged differently by replicas holding different
//     certificates of it.
//   - A refund whose sale is in another store, or has not arrived, has no
//     effect and is not flagged: a replica cannot tell "not yet" from
//     "never". Audit verify counts such refunds as unmatched.
//   - A forked chain may reuse receipt numbers (both branches numbered from
//     the same count); the fork is flagged, and a receipt lookup picks the
//     smaller sale id on every replica.
//   - Ops held for a missing predecessor live in memory only (held.go),
//     bounded in bytes (MaxHeldBytes), per author (MaxHeldPerAuthor) and in
//     time (HeldTTL); a dropped or refused op is sent again by its holder.
//     An own op dropped raises the own-chain floor first, so local writes
//     keep waiting (ErrOwnHistoryBehind).
//   - Replay on open re-reads every op: start-up time grows with the log.
//   - The free-space guard is checked per write, but badger also writes on
//     its own (flushes, compactions): BadgerReserve covers one L0 compaction
//     of the configured sizes; a compaction deep in a large store could need
//     more, and a fault there is still a SIGBUS.
//   - The own-chain record lags the store by the commits in flight when a
//     process is killed: a loss of only the last commit before a SIGKILL is
//     not detected by it. A deleted record file detects nothing (it starts
//     empty).
//   - A corrupt SST block met after open (badger verifies it on read)
//     silently ends an iteration inside badger: replay then sees a chain
//     that ends early (own chains: the record catches it) or does not link
//     (ErrCorrupt).
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
