package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrSchemaTooNew: the database's schema was migrated by a newer storemesh
// than this one; writing to it could corrupt what the newer one expects.
var ErrSchemaTooNew = errors.New("pg: database schema is newer than this storemesh knows")

// migration is one step of the schema. Steps are only ever appended: a
// released step is never edited (the database records which it ran).
type migration struct {
	version     int
	description string
	sql         string
}

// migrations is the schema, step by step. docs/postgres.md describes it.
var migrations = []migration{{
	version:     1,
	description: "ops, sale lines, refunds, stock moves, stores, devices, day closes, sales_daily, cursors",
	sql: `
CREATE TABLE ops (
	op_id        text PRIMARY KEY,
	store        text NOT NULL,
	device       text NOT NULL,
	chain        text NOT NULL,
	seq          bigint NOT NULL,
	hlc_wall     bigint NOT NULL,
	hlc_logical  integer NOT NULL,
	at           timestamptz NOT NULL,
	kind         text NOT NULL,
	body_version integer NOT NULL,
	body         jsonb,
	body_cbor    bytea,
	raw          bytea NOT NULL,
	written_by   text NOT NULL,
	written_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ops_store_at ON ops (store, at);
CREATE INDEX ops_chain_seq ON ops (chain, seq);
CREATE TABLE sale_lines (
	op_id      text NOT NULL REFERENCES ops (op_id),
	line_no    integer NOT NULL,
	store      text NOT NULL,
	device     text NOT NULL,
	day        date NOT NULL,
	at         timestamptz NOT NULL,
	sku        text NOT NULL,
	qty        bigint NOT NULL,
	unit_price bigint NOT NULL,
	amount     bigint NOT NULL,
	currency   text NOT NULL,
	payment    text NOT NULL,
	PRIMARY KEY (op_id, line_no)
);
CREATE INDEX sale_lines_store_day ON sale_lines (store, day, sku);
CREATE TABLE refunds (
	op_id    text PRIMARY KEY REFERENCES ops (op_id),
	store    text NOT NULL,
	device   text NOT NULL,
	day      date NOT NULL,
	at       timestamptz NOT NULL,
	sale_id  text NOT NULL,
	amount   bigint NOT NULL
);
CREATE INDEX refunds_sale ON refunds (sale_id);
CREATE TABLE refund_lines (
	op_id   text NOT NULL REFERENCES refunds (op_id),
	line_no integer NOT NULL,
	sku     text NOT NULL,
	qty     bigint NOT NULL,
	amount  bigint NOT NULL,
	PRIMARY KEY (op_id, line_no)
);
CREATE TABLE stock_moves (
	op_id       text PRIMARY KEY REFERENCES ops (op_id),
	store       text NOT NULL,
	device      text NOT NULL,
	day         date NOT NULL,
	at          timestamptz NOT NULL,
	kind        text NOT NULL,
	sku         text NOT NULL,
	delta       bigint NOT NULL,
	on_hand     bigint,
	transfer_id text,
	other_store text
);
CREATE INDEX stock_moves_store_sku ON stock_moves (store, sku);
CREATE TABLE stores (
	store      text PRIMARY KEY,
	name       text,
	currency   text,
	time_zone  text,
	source     text NOT NULL,
	first_seen timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE devices (
	device     text PRIMARY KEY,
	name       text NOT NULL,
	store      text NOT NULL,
	role       text NOT NULL,
	not_before timestamptz NOT NULL,
	expiry     timestamptz NOT NULL,
	revoked    boolean NOT NULL DEFAULT false,
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE day_closes (
	op_id  text PRIMARY KEY REFERENCES ops (op_id),
	store  text NOT NULL,
	device text NOT NULL,
	at     timestamptz NOT NULL,
	day    date,
	body   jsonb
);
CREATE TABLE sales_daily (
	store           text NOT NULL,
	day             date NOT NULL,
	sku             text NOT NULL,
	units_sold      bigint NOT NULL DEFAULT 0,
	gross           bigint NOT NULL DEFAULT 0,
	refunded_units  bigint NOT NULL DEFAULT 0,
	refunded_amount bigint NOT NULL DEFAULT 0,
	net             bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (store, day, sku)
);
CREATE TABLE storemesh_cursors (
	anchor     text NOT NULL,
	scope      text NOT NULL,
	vv         jsonb NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (anchor, scope)
);
`,
}}

// SchemaVersion is the newest schema this build knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate brings the database to SchemaVersion, each step in its own
// transaction recorded in storemesh_schema, under an advisory lock so two
// anchors starting at once do not both run a step. A database at a newer
// version is refused with ErrSchemaTooNew.
func migrate(ctx context.Context, c *pgx.Conn) (int, error) {
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS storemesh_schema (
		version     integer PRIMARY KEY,
		description text NOT NULL,
		applied_at  timestamptz NOT NULL DEFAULT now())`); err != nil {
		// Two anchors creating it at once: one wins, the other sees a
		// unique violation on the catalog; the table exists either way.
		if _, err2 := c.Exec(ctx, `SELECT 1 FROM storemesh_schema LIMIT 1`); err2 != nil {
			return 0, fmt.Errorf("pg: create storemesh_schema: %w", err)
		}
	}
	for {
		have, done, err := migrateStep(ctx, c)
		if err != nil || done {
			return have, err
		}
	}
}

// migrateStep runs the next migration, if any, in one transaction.
func migrateStep(ctx context.Context, c *pgx.Conn) (have int, done bool, err error) {
	tx, err := c.Begin(ctx)
	if err != nil {
		return 0, false, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7405151770)`); err != nil {
		return 0, false, fmt.Errorf("pg: migration lock: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM storemesh_schema`).Scan(&have); err != nil {
		return 0, false, fmt.Errorf("pg: read schema version: %w", err)
	}
	if have > SchemaVersion() {
		return have, false, fmt.Errorf("%w: the database is at version %d, this build knows up to %d: upgrade storemesh (or point --postgres elsewhere)",
			ErrSchemaTooNew, have, SchemaVersion())
	}
	if have == SchemaVersion() {
		return have, true, tx.Commit(ctx)
	}
	m := migrations[have] // versions are 1, 2, 3 …: migrations[have] is the next
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return have, false, fmt.Errorf("pg: migration %d (%s): %w", m.version, m.description, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO storemesh_schema (version, description) VALUES ($1, $2)`, m.version, m.description); err != nil {
		return have, false, fmt.Errorf("pg: record migration %d: %w", m.version, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return have, false, fmt.Errorf("pg: commit migration %d: %w", m.version, err)
	}
	return m.version, false, nil
}
