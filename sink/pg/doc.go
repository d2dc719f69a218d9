// Package pg is the anchor's PostgreSQL sink (storemesh anchor --postgres
// URL): every op the anchor holds, as rows BI tools can read. The schema
// is described in docs/postgres.md.
//
// How it works: on connect the sink migrates the schema itself (versioned
// steps recorded in storemesh_schema, under an advisory lock). Each batch
// is one transaction: the ops (INSERT … ON CONFLICT (op_id) DO NOTHING
// RETURNING op_id), the detail rows (sale_lines, refunds, refund_lines,
// stock_moves, day_closes; COPY) and the sales_daily deltas of the ops
// that transaction inserted, and the anchor's cursor in storemesh_cursors.
//
// Invariants:
//   - Every op is in ops exactly once, whatever crashed when: the cursor
//     moves in the same transaction as the rows, and a batch written
//     twice (a commit whose answer was lost) inserts nothing the second
//     time, so sales_daily never counts an op twice.
//   - Anchors sharing a database keep a cursor each (keyed by device id);
//     rows are sorted by op id, so their transactions lock rows in one
//     order and cannot deadlock each other.
//   - A database whose schema is newer than this build is refused
//     (ErrSchemaTooNew); the anchor does not start.
//
// HAZARDS:
//   - refunds and refund_lines hold the refund as its op says. When two
//     tills refund the same line offline the ledger may honour less than
//     the sum; sales_daily counts what the ops say.
//   - refund_lines.amount splits a refund's amount by the refunded sale's
//     unit prices when the anchor holds that sale, else by quantity.
//   - day is the UTC date of the op's HLC until stores have time zones.
//   - The devices table is refreshed from certificates when the sink is
//     idle, not in the ops' transactions.
//
// Imports: sink, ledger, crdt, pgx.
package pg
