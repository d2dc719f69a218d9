// Package crdt holds the pure data types storemesh replicates: a hybrid
// logical clock (HLC), version vectors, a PN-counter, a bounded counter
// (BCounter, an escrow of rights for stock allotments), a grow-only set and
// a last-writer-wins register, plus the one deterministic CBOR codec every
// other package encodes with.
//
// Invariants:
//   - Every Merge is commutative, associative and idempotent; the property
//     tests in this package check each law over random operation sequences.
//   - Nothing here does I/O, starts a goroutine, reads the wall clock or uses
//     the global random source. Time reaches the HLC through an injected
//     PhysicalClock.
//   - Encoding is CBOR core deterministic: the same value has the same bytes
//     on every replica, so hashes and signatures over encodings agree.
//
// HAZARD: the HLC refuses to follow a remote timestamp further than
// MaxOffset ahead of the local physical clock (see Clock.Update). A device
// whose clock runs further ahead than that still has its ops accepted, but
// local ops written afterwards may order before them in LWW registers.
//
// HAZARD: BCounter.Reclaim takes rights from a device that may not have
// heard of it; a device that acts on reclaimed rights drives its own
// rights negative (visible, not prevented). Reclaim only gone devices.
//
// Imports: the standard library and fxamacker/cbor only. Nothing of
// storemesh, no networking, no storage. Anyone may import crdt.
package crdt
