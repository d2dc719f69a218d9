// Package mesh is storemesh's sync protocol (docs/design.md §2, §4): a pure,
// deterministic state machine per peer. Frames and ticks go in (Step,
// Tick, Push), frames come out (Ready); no goroutines, sockets or wall
// clock inside. libp2p drives it in production (package mesh/p2p); the
// simulator drives the same code over simulated links.
//
// Protocol /storemesh/sync/1 (wire.go): hello (fleet, certificate,
// scopes), summary (version vector, heads, fork digests per scope — also
// the acknowledgement), ops (a bounded batch of one scope's ops with their
// authors' certificates), want (a pull of one device's range), bye.
//
// Invariants:
//   - Nothing but a hello is acted on before the peer's certificate is
//     verified (same fleet, signed, valid now, not revoked, matching the
//     transport-authenticated identity).
//   - Ops travel with their original signatures; the ledger verifies each.
//   - Catch-up is pulled: a node asks one peer (Pulls is shared by a node's
//     sessions) for each missing range, so bytes on the wire follow what is
//     missing. New local ops are pushed at once; ops fresh from their
//     author are relayed one hop (TakeRelay), to the peers that do not
//     have a session with the author themselves (Neighbors, told in
//     fleet-wide summaries).
//   - Anti-entropy is periodic but quiet. A scope's summary is skipped
//     while the peer is known to hold our newest op of every device (from
//     its summaries' heads, the ops it sent us and its acknowledgements of
//     ours), or has a session with the device itself (whose own
//     anti-entropy covers it), and neither side has reported a fork or a
//     differing head; a full summary still goes once per keepalive (a
//     minute). News of HQ alone goes in a small partial summary, to peers
//     that do not hear it from the same source. An anchor, and a node with
//     fresh news of one, send a heartbeat when all is quiet, so "last HQ
//     contact" stays fresh. A summary says when its sender has had none of
//     ours (Unsynced), and is answered with one.
//
// HAZARD: Push must not be called from inside a Step of the same session:
// the ledger's subscribers run inside ApplyBatch. Queue and push after.
//
// Imports: ledger, crdt, fxamacker/cbor. Never libp2p or net: the
// simulator imports this package.
package mesh
