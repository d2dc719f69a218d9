// Package node composes one storemesh peer (docs/design.md §8): a ledger on badger,
// a mesh, the HTTP API of docs/design.md §8a, Prometheus metrics, server-sent
// events and the embedded terminal page. It only wires those together: the
// rules live in ledger (what an op may be) and mesh (how ops travel).
//
// What lives here:
//   - Node: New opens storage, ledger and mesh and starts serving; Run
//     waits for a signal; Close stops HTTP, mesh, ledger and badger in
//     that order.
//   - The HTTP API, built from one route table (http.go) that also
//     declares every error code a route can answer; api/openapi.json is
//     tested against it.
//   - The offline policy (offline.go): offline means no frame from an
//     anchor within Config.OfflineAfter; the last contact is persisted in
//     the data directory so a restart in a dead zone still counts.
//   - Fleet and device key files (keys.go), used by cmd/storemesh.
//   - The data folder (datadir.go): FORMAT (its format version), IDENTITY
//     (the device and fleet that first used it), fleet.pub (written once),
//     ownchain (the ledger's durable own-chain record), badger/.
//
// Invariants:
//   - Every request is validated before anything is written: a refused
//     request never changes stored state.
//   - A write is acknowledged (201) only after the ledger made it durable.
//   - An Idempotency-Key is stored in the op it produced, so a retry after
//     a crash or restart finds the first write instead of writing twice.
//     Requests with the same key are serialised.
//   - The ledger's subscriber callback never blocks: events to pages are
//     non-blocking sends; a page that falls behind is told to resync.
//   - A data folder is opened only by the device and fleet that first used
//     it, in a format this build reads; fleet.pub is never overwritten.
//     Everything is checked before the ledger opens. A start that fails
//     removes the data folder if that start made it; a busy --listen or
//     --http port fails the start.
//
// HAZARDS:
//   - badger locks the data directory: one process at a time (audit export
//     needs the node stopped).
//   - SetAnchors rebuilds the mesh (it cannot forget a peer): every
//     connection drops and re-dials; fine for a demo or an operator's
//     change, not for a hot path.
//   - stock.counted moves the counter by (on_hand - what this replica
//     shows): a count taken while sales are still arriving from peers is
//     off by those sales, as on paper.
//   - A non-loopback HTTP address needs a token; the token is compared in
//     constant time but sent in clear: put TLS in front on untrusted LANs.
//
// Imports: ledger, mesh, crdt, api, prometheus. Only cmd imports node.
package node
