// Package mqtt is the anchor's MQTT sink (storemesh anchor --mqtt
// tcp://HOST:1883 [--mqtt-prefix P]): semantic events for downstream
// systems. docs/mqtt.md lists every topic and payload.
//
// How it works: each batch of ops becomes messages at QoS 1; when the
// broker has acknowledged all of them, the outbox cursor (a JSON file in
// the anchor's data folder, one per broker URL and prefix, written with
// fsync and rename) moves past them. When idle, the sink announces newly
// open conflicts (their ids are kept in the same file) and publishes the
// retained fleet/{device}/health.status of each device whose status
// changed.
//
// Invariants:
//   - At least once: a batch is published again after any failure until
//     the broker acknowledged it and the cursor was saved; payloads carry
//     op_id (conflict_id for conflicts) so consumers de-duplicate.
//   - The sink's own connection uses a clean session: the outbox, not the
//     broker, remembers what is left to send.
//
// HAZARDS:
//   - Messages are ordered per batch only: after a retry a consumer may
//     see an op again after later ones.
//   - Health is as far as the anchor knows: last_contact is null for a
//     device that syncs only through another terminal.
//   - Removing the outbox file publishes the whole history again.
//
// Imports: sink, ledger, crdt, paho.mqtt.golang.
package mqtt
