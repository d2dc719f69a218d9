package pg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/sink"
)

// Config says where the sink writes and for whom.
type Config struct {
	// URL is a PostgreSQL connection string (postgres://user@host:5432/db,
	// or key=value form). Tables go in the connection's search_path:
	// add ?search_path=SCHEMA for a schema of their own.
	URL string
	// Anchor names the cursor: the anchor's device id. Anchors sharing a
	// database keep a cursor each; op ids keep rows unique.
	Anchor string
	// Ledger prices refund lines (the refunded sale's unit prices) and
	// lists devices (certificates) and stores.
	Ledger *ledger.Ledger
	// ConnectTimeout bounds one connection attempt: 5 s.
	ConnectTimeout time.Duration
	// Logger: default discard.
	Logger *slog.Logger
}

// Validate checks c, the URL's syntax included.
func (c *Config) Validate() error {
	var errs []error
	if _, err := pgx.ParseConfig(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("pg: --postgres URL: %w", err))
	}
	if c.Anchor == "" || c.Ledger == nil {
		errs = append(errs, errors.New("pg: Anchor and Ledger are required"))
	}
	return errors.Join(errs...)
}

// Target is the PostgreSQL sink (a sink.Target).
type Target struct {
	cfg     Config
	log     *slog.Logger
	conn    *pgx.Conn
	devices string // fingerprint of the device rows last written
}

var _ sink.Target = (*Target)(nil)

// New checks cfg; it does not connect (Cursor does, and again after every
// failure).
func New(cfg Config) (*Target, error) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Target{cfg: cfg, log: cfg.Logger}, nil
}

// Name implements sink.Target.
func (t *Target) Name() string { return "postgres" }

// Check connects once and migrates: the anchor calls it at start so a
// schema newer than this build is refused before it serves.
func (t *Target) Check(ctx context.Context) error { return t.connect(ctx) }

func (t *Target) connect(ctx context.Context) error {
	if t.conn != nil && !t.conn.IsClosed() {
		return nil
	}
	t.drop()
	cc, err := pgx.ParseConfig(t.cfg.URL)
	if err != nil {
		return err
	}
	cc.ConnectTimeout = t.cfg.ConnectTimeout
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "storemesh-sink"
	}
	cctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout)
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return fmt.Errorf("pg: connect: %w", err)
	}
	v, err := migrate(ctx, c)
	if err != nil {
		c.Close(context.Background())
		return err
	}
	t.conn, t.devices = c, ""
	t.log.Info("postgres sink connected", "schema_version", v)
	return nil
}

func (t *Target) drop() {
	if t.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		t.conn.Close(ctx)
		cancel()
		t.conn = nil
	}
}

// Cursor implements sink.Target: the anchor's vectors from storemesh_cursors.
func (t *Target) Cursor(ctx context.Context) (sink.Cursor, error) {
	t.drop() // after a failure the connection may be half-broken: start clean
	if err := t.connect(ctx); err != nil {
		return nil, err
	}
	rows, err := t.conn.Query(ctx, `SELECT scope, vv FROM storemesh_cursors WHERE anchor = $1`, t.cfg.Anchor)
	if err != nil {
		return nil, fmt.Errorf("pg: read cursor: %w", err)
	}
	defer rows.Close()
	cur := sink.Cursor{}
	for rows.Next() {
		var scope string
		var raw []byte
		if err := rows.Scan(&scope, &raw); err != nil {
			return nil, fmt.Errorf("pg: read cursor: %w", err)
		}
		vv := crdt.VersionVector{}
		if err := json.Unmarshal(raw, &vv); err != nil {
			return nil, fmt.Errorf("pg: cursor of scope %s: %w", scope, err)
		}
		cur[scope] = vv
	}
	return cur, rows.Err()
}

// Idle implements sink.Target: it keeps the devices and stores tables in
// step with the certificates the anchor holds.
func (t *Target) Idle(ctx context.Context) error {
	if err := t.connect(ctx); err != nil {
		return err
	}
	return t.syncDevices(ctx)
}

// Close implements sink.Target.
func (t *Target) Close() error {
	t.drop()
	return nil
}

func (t *Target) syncDevices(ctx context.Context) error {
	l := t.cfg.Ledger
	certs := l.Certificates()
	var ids, names, certStores, roles []string
	var nb, ex []time.Time
	var revoked []bool
	fp := ""
	for _, c := range certs {
		r := l.Revoked(c.Device)
		ids, names, certStores, roles = append(ids, c.Device), append(names, c.Name), append(certStores, c.Store), append(roles, string(c.Role))
		nb, ex = append(nb, time.UnixMilli(c.NotBefore).UTC()), append(ex, time.UnixMilli(c.Expiry).UTC())
		revoked = append(revoked, r)
		fp += fmt.Sprintf("%s/%s/%d/%v|", c.Device, c.Store, c.Expiry, r)
	}
	stores := l.Stores()
	for _, st := range stores {
		if st.Declared {
			fp += fmt.Sprintf("S%s/%s/%s/%s|", st.ID, st.Name, st.Currency, st.TimeZone)
		}
	}
	if fp == t.devices {
		return nil
	}
	b := &pgx.Batch{}
	// A device may hold several certificates (renewals): the last one
	// listed wins, in one statement per device to keep the upsert simple.
	for i := range ids {
		b.Queue(`INSERT INTO devices (device, name, store, role, not_before, expiry, revoked, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, now())
			ON CONFLICT (device) DO UPDATE SET name = EXCLUDED.name, store = EXCLUDED.store, role = EXCLUDED.role,
				not_before = EXCLUDED.not_before, expiry = EXCLUDED.expiry, revoked = EXCLUDED.revoked, updated_at = now()`,
			ids[i], names[i], certStores[i], roles[i], nb[i], ex[i], revoked[i])
		if certStores[i] != ledger.FleetScope {
			b.Queue(`INSERT INTO stores (store, source) VALUES ($1, 'certificate') ON CONFLICT (store) DO NOTHING`, certStores[i])
		}
	}
	// Declared stores (store.set records) carry their name, currency and
	// time zone.
	for _, st := range stores {
		if st.Declared {
			b.Queue(`INSERT INTO stores (store, name, currency, time_zone, source) VALUES ($1, $2, $3, $4, 'record')
				ON CONFLICT (store) DO UPDATE SET name = EXCLUDED.name, currency = EXCLUDED.currency,
					time_zone = EXCLUDED.time_zone, source = 'record'`, st.ID, st.Name, st.Currency, st.TimeZone)
		}
	}
	if err := t.conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("pg: devices: %w", err)
	}
	t.devices = fp
	return nil
}
