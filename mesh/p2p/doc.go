// Package p2p drives storemesh's sync protocol (package mesh's Session)
// over libp2p (docs/design.md §4, §6): the host, the connection gater, mDNS
// discovery, static peers and anchors, and one driver goroutine per peer.
//
// What lives here:
//   - Mesh: one libp2p host keyed by the device's ed25519 key (its peer id
//     is the certificate's Device), TCP and QUIC, Noise/TLS, no relay, NAT
//     port mapping, AutoNAT probing or hole punching. It finds peers by mDNS
//     (one named interface), static peer addresses and anchors, keeps one
//     sync session per peer and pushes every durable op to every
//     established session.
//
// Session ownership: for each connected peer exactly one side opens the
// sync stream, the side whose peer id sorts first (both sides see the same
// pair, so they agree without a message). An inbound stream is always
// accepted and replaces any older session with that peer: a peer only
// opens a new stream when it lost the old one, so the old one is stale.
// A connection that has no established session after HelloTimeout is
// closed, so unenrolled hosts cannot hold connections open.
//
// Push and relay: the ledger subscription hands this device's own new ops
// to every established session at once. Ops a session received fresh from
// their author (mesh.Session.TakeRelay) are handed to the other sessions: one
// hop, so an anchor behind one terminal gets every terminal's sales at
// once; summaries carry news further. A relay leaves out the peers that
// have a session with the author themselves (mesh.Neighbors), so in a LAN
// where every device sees every other an op crosses once to each device
// (see mesh.Session.TakeRelay). Sessions share one mesh.Pulls, so one
// peer, not all, is asked for each missing op.
//
// Framing: each frame is a varint length prefix and the frame
// (go-msgio). A length above mesh.MaxFrame resets the stream and bans the peer:
// an honest peer never builds one.
//
// Trust: the mesh.Session verifies the peer's certificate in the hello (same
// fleet, signed, unexpired, not revoked, matching the connection's peer id
// and key). A session that ends with a bannable mesh.ProtocolError (mesh.IsBannable)
// bans the peer in the connection gater for Config.BanPeriod and closes its
// connections; revoked devices are refused by the gater at every dial and
// accept.
//
// Concurrency: a mesh.Session is driven by one goroutine (driver.run); a
// reader goroutine feeds it frames and a writer goroutine drains its
// output, so a slow peer never stalls reading (no write/write deadlock).
// Other goroutines read a session's stats under the driver's mutex.
// Lock order: Mesh.mu is never held while taking a driver's mutex (the
// ledger's subscriber can run on a driver goroutine that holds it).
//
// HAZARDS:
//   - hashicorp/mdns joins multicast on the interface of the default route
//     whatever interface it is given: never enable MDNS in tests outside a
//     network namespace the test created (see TESTING.md).
//   - mDNS is pull-only: a peer that leaves is noticed when it misses
//     MDNSMissLimit queries; the mesh then pings it and closes the
//     connection if the ping fails. Without that libp2p notices after
//     about 40 s.
//
// Imports: mesh, ledger, crdt, libp2p, hashicorp/mdns. Imported by node
// and cmd only; the simulator never imports it.
package p2p
