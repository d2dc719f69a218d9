package pg

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/sink"
)

// Write implements sink.Target: the ops, their detail rows, the
// sales_daily deltas of the ops actually inserted, and the scope's cursor,
// in one transaction.
func (t *Target) Write(ctx context.Context, scope string, ops []sink.Op, cursor crdt.VersionVector) error {
	if err := t.connect(ctx); err != nil {
		return err
	}
	// Sorted by op id: two anchors inserting overlapping batches then take
	// the rows' locks in the same order and cannot deadlock.
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b sink.Op) int { return cmp.Compare(a.ID(), b.ID()) })
	ops = slices.CompactFunc(ops, func(a, b sink.Op) bool { return a.ID() == b.ID() })
	vv, err := json.Marshal(cursor)
	if err != nil {
		return err
	}
	tx, err := t.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pg: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	inserted, err := insertOps(ctx, tx, ops, t.cfg.Anchor)
	if err != nil {
		return err
	}
	d := t.details(ops, inserted)
	if err := d.copy(ctx, tx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	d.queue(b)
	b.Queue(`INSERT INTO storemesh_cursors (anchor, scope, vv, updated_at) VALUES ($1, $2, $3::jsonb, now())
		ON CONFLICT (anchor, scope) DO UPDATE SET vv = EXCLUDED.vv, updated_at = now()`, t.cfg.Anchor, scope, string(vv))
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("pg: write details: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pg: commit: %w", err)
	}
	return nil
}

// insertOps inserts the ops (ON CONFLICT DO NOTHING) and returns the ids
// of those this transaction inserted.
func insertOps(ctx context.Context, tx pgx.Tx, ops []sink.Op, anchor string) (map[string]bool, error) {
	n := len(ops)
	ids, stores, devices, chains, kinds := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	bodies := make([]*string, n)
	cbors, raws := make([][]byte, n), make([][]byte, n)
	seqs, walls := make([]int64, n), make([]int64, n)
	logicals, bvs := make([]int32, n), make([]int32, n)
	ats := make([]time.Time, n)
	for i, o := range ops {
		ids[i], stores[i], devices[i], chains[i], kinds[i] = o.ID(), o.Store, o.Owner, o.Device, string(o.Kind)
		seqs[i], walls[i], logicals[i], bvs[i] = int64(o.Seq), o.HLC.Wall, int32(o.HLC.Logical), int32(o.BodyV)
		ats[i], raws[i] = o.At, o.Raw()
		if o.Body != nil {
			if b, err := json.Marshal(o.Body); err == nil {
				s := string(b)
				bodies[i] = &s
			}
		}
		if bodies[i] == nil {
			cbors[i] = o.Op.Body
		}
	}
	rows, err := tx.Query(ctx, `INSERT INTO ops (op_id, store, device, chain, seq, hlc_wall, hlc_logical, at, kind, body_version, body, body_cbor, raw, written_by)
		SELECT id, st, dev, ch, sq, w, lg, at, k, bv, b::jsonb, bc, r, $14
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::int[], $8::timestamptz[],
			$9::text[], $10::int[], $11::text[], $12::bytea[], $13::bytea[]) AS u(id, st, dev, ch, sq, w, lg, at, k, bv, b, bc, r)
		ORDER BY id
		ON CONFLICT (op_id) DO NOTHING
		RETURNING op_id`,
		ids, stores, devices, chains, seqs, walls, logicals, ats, kinds, bvs, bodies, cbors, raws, anchor)
	if err != nil {
		return nil, fmt.Errorf("pg: insert ops: %w", err)
	}
	got := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pg: insert ops: %w", err)
		}
		got[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pg: insert ops: %w", err)
	}
	return got, nil
}

type dayKey struct {
	store, sku string
	day        time.Time
}

type dayRow struct{ sold, gross, refUnits, refAmount int64 }

// details are the rows derived from newly inserted ops.
type details struct {
	saleLines   [][]any
	refunds     [][]any
	refundLines [][]any
	moves       [][]any
	closes      [][]any
	stores      map[string]bool
	daily       map[dayKey]*dayRow
}

func (t *Target) details(ops []sink.Op, inserted map[string]bool) *details {
	d := &details{stores: map[string]bool{}, daily: map[dayKey]*dayRow{}}
	row := func(store string, day time.Time, sku string) *dayRow {
		k := dayKey{store: store, day: day, sku: sku}
		if d.daily[k] == nil {
			d.daily[k] = &dayRow{}
		}
		return d.daily[k]
	}
	for _, o := range ops {
		if !inserted[o.ID()] {
			continue // another anchor, or an earlier try of ours, wrote it
		}
		if o.Store != ledger.FleetScope {
			d.stores[o.Store] = true
		}
		y, m, dd := o.At.Date()
		day := time.Date(y, m, dd, 0, 0, 0, 0, time.UTC)
		switch b := o.Body.(type) {
		case *ledger.Sale:
			for i, l := range b.Lines {
				d.saleLines = append(d.saleLines, []any{o.ID(), i + 1, o.Store, o.Owner, day, o.At, l.SKU, l.Qty, l.UnitPrice,
					l.Qty * l.UnitPrice, b.Currency, b.Payment})
				r := row(o.Store, day, l.SKU)
				r.sold += l.Qty
				r.gross += l.Qty * l.UnitPrice
			}
		case *ledger.Refund:
			// The body as sent: when two tills refund the same line the
			// ledger may honour less than this amount (see docs/postgres.md).
			d.refunds = append(d.refunds, []any{o.ID(), o.Store, o.Owner, day, o.At, b.Sale, b.Amount})
			var sale *ledger.Sale
			if rec, ok := t.cfg.Ledger.Sale(b.Sale); ok {
				sale = &rec.Sale
			}
			amounts := sink.RefundLineAmounts(b, sale)
			for i, l := range b.Lines {
				d.refundLines = append(d.refundLines, []any{o.ID(), i + 1, l.SKU, l.Qty, amounts[i]})
				r := row(o.Store, day, l.SKU)
				r.refUnits += l.Qty
				r.refAmount += amounts[i]
			}
		}
		if sku, delta, ok := o.StockDelta(); ok {
			var onHand *int64
			var transfer, other *string
			switch b := o.Body.(type) {
			case *ledger.StockCounted:
				onHand = &b.OnHand
			case *ledger.StockTransferred:
				transfer = &b.Transfer
				o2 := b.To
				if o.Store == b.To {
					o2 = b.From
				}
				other = &o2
			}
			d.moves = append(d.moves, []any{o.ID(), o.Store, o.Owner, day, o.At, string(o.Kind), sku, delta, onHand, transfer, other})
		}
		if o.Kind == sink.KindDayClosed {
			var body *string
			if o.Body != nil {
				if j, err := json.Marshal(o.Body); err == nil {
					s := string(j)
					body = &s
				}
			}
			d.closes = append(d.closes, []any{o.ID(), o.Store, o.Owner, o.At, body})
		}
	}
	return d
}

// copy inserts the detail rows with COPY: they belong to ops this
// transaction inserted, so none can exist yet.
func (d *details) copy(ctx context.Context, tx pgx.Tx) error {
	for _, c := range []struct {
		table string
		cols  []string
		rows  [][]any
	}{
		{"sale_lines", []string{"op_id", "line_no", "store", "device", "day", "at", "sku", "qty", "unit_price", "amount", "currency", "payment"}, d.saleLines},
		{"refunds", []string{"op_id", "store", "device", "day", "at", "sale_id", "amount"}, d.refunds},
		{"refund_lines", []string{"op_id", "line_no", "sku", "qty", "amount"}, d.refundLines},
		{"stock_moves", []string{"op_id", "store", "device", "day", "at", "kind", "sku", "delta", "on_hand", "transfer_id", "other_store"}, d.moves},
	} {
		if len(c.rows) == 0 {
			continue
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{c.table}, c.cols, pgx.CopyFromRows(c.rows)); err != nil {
			return fmt.Errorf("pg: copy %s: %w", c.table, err)
		}
	}
	return nil
}

// queue adds the day closes, stores and sales_daily upserts to b.
func (d *details) queue(b *pgx.Batch) {
	for _, r := range d.closes {
		b.Queue(`INSERT INTO day_closes (op_id, store, device, at, body) VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING`, r...)
	}
	stores := make([]string, 0, len(d.stores))
	for s := range d.stores {
		stores = append(stores, s)
	}
	slices.Sort(stores)
	if len(stores) > 0 {
		b.Queue(`INSERT INTO stores (store, source) SELECT s, 'ops' FROM unnest($1::text[]) AS u(s) ORDER BY s ON CONFLICT (store) DO NOTHING`, stores)
	}
	keys := make([]dayKey, 0, len(d.daily))
	for k := range d.daily {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b dayKey) int {
		return cmp.Or(cmp.Compare(a.store, b.store), a.day.Compare(b.day), cmp.Compare(a.sku, b.sku))
	})
	if len(keys) == 0 {
		return
	}
	n := len(keys)
	st, sk := make([]string, n), make([]string, n)
	dy := make([]time.Time, n)
	sold, gross, ru, ra := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, k := range keys {
		r := d.daily[k]
		st[i], dy[i], sk[i] = k.store, k.day, k.sku
		sold[i], gross[i], ru[i], ra[i] = r.sold, r.gross, r.refUnits, r.refAmount
	}
	b.Queue(`INSERT INTO sales_daily AS t (store, day, sku, units_sold, gross, refunded_units, refunded_amount, net)
		SELECT s, d, k, u, g, ru, ra, g - ra
		FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) AS x(s, d, k, u, g, ru, ra)
		ORDER BY s, d, k
		ON CONFLICT (store, day, sku) DO UPDATE SET
			units_sold = t.units_sold + EXCLUDED.units_sold,
			gross = t.gross + EXCLUDED.gross,
			refunded_units = t.refunded_units + EXCLUDED.refunded_units,
			refunded_amount = t.refunded_amount + EXCLUDED.refunded_amount,
			net = t.net + EXCLUDED.net`, st, dy, sk, sold, gross, ru, ra)
}
