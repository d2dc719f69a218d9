package pg

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"storemesh/ledger"
	"storemesh/sink"
)

type update struct {
	sql  string
	args []any
}

// refreshRefunds brings the honoured columns of every stored refund of the
// sales this batch touched to what the ledger honours now, and moves
// sales_daily's refunded figures by the difference. A refund's honoured
// part depends on the other refunds of its sale (ledger/refunds.go), so a
// refund, or its sale, arriving later changes it; the batch that inserts
// that op refreshes the sale's refunds. The refund part of sales_daily is
// therefore the sum of refund_lines' honoured columns, whichever batch
// wrote what: a batch replayed after a lost commit finds nothing to move.
func (t *Target) refreshRefunds(ctx context.Context, tx pgx.Tx, d *details) ([]update, error) {
	if len(d.sales) == 0 {
		return nil, nil
	}
	type line struct{ qty, amount int64 }
	want := map[string][]line{}
	paid := map[string]int64{}
	l := t.cfg.Ledger
	sales := make([]string, 0, len(d.sales))
	for s := range d.sales {
		sales = append(sales, s)
	}
	slices.Sort(sales)
	for _, sid := range sales {
		rs := l.Refunds(sid)
		if len(rs.Refunds) == 0 {
			continue
		}
		var sale *ledger.Sale
		if rec, ok := l.Sale(sid); ok {
			sale = &rec.Sale
		}
		for _, rr := range rs.Refunds {
			// Honoured lists the lines with units honoured, in line order.
			h := ledger.Refund{Lines: make([]ledger.RefundLine, len(rr.Lines)), Amount: rr.Paid}
			j := 0
			for i, ln := range rr.Lines {
				h.Lines[i].SKU = ln.SKU
				if j < len(rr.Honoured) && rr.Honoured[j].SKU == ln.SKU {
					h.Lines[i].Qty = rr.Honoured[j].Qty
					j++
				}
			}
			amounts := sink.RefundLineAmounts(&h, sale)
			ls := make([]line, len(h.Lines))
			for i := range ls {
				ls[i] = line{h.Lines[i].Qty, amounts[i]}
			}
			want[rr.ID], paid[rr.ID] = ls, rr.Paid
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	rows, err := tx.Query(ctx, `SELECT r.op_id, r.store, r.day, r.honoured_amount, l.line_no, l.sku, l.honoured_qty, l.honoured_amount
		FROM refunds r JOIN refund_lines l USING (op_id)
		WHERE r.op_id = ANY($1) ORDER BY r.op_id, l.line_no FOR UPDATE`, ids)
	if err != nil {
		return nil, fmt.Errorf("pg: read refunds: %w", err)
	}
	defer rows.Close()
	var ups []update
	seen := map[string]bool{}
	for rows.Next() {
		var id, store, sku string
		var day time.Time
		var paidNow, qtyNow, amtNow int64
		var lineNo int
		if err := rows.Scan(&id, &store, &day, &paidNow, &lineNo, &sku, &qtyNow, &amtNow); err != nil {
			return nil, fmt.Errorf("pg: read refunds: %w", err)
		}
		if !seen[id] {
			seen[id] = true
			if paid[id] != paidNow {
				ups = append(ups, update{`UPDATE refunds SET honoured_amount = $2 WHERE op_id = $1`, []any{id, paid[id]}})
			}
		}
		ls := want[id]
		if lineNo < 1 || lineNo > len(ls) {
			continue
		}
		w := ls[lineNo-1]
		if w.qty == qtyNow && w.amount == amtNow {
			continue
		}
		ups = append(ups, update{`UPDATE refund_lines SET honoured_qty = $3, honoured_amount = $4 WHERE op_id = $1 AND line_no = $2`,
			[]any{id, lineNo, w.qty, w.amount}})
		k := dayKey{store: store, day: day.UTC(), sku: sku}
		r := d.daily[k]
		if r == nil {
			r = &dayRow{}
			d.daily[k] = r
		}
		r.refUnits += w.qty - qtyNow
		r.refAmount += w.amount - amtNow
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pg: read refunds: %w", err)
	}
	return ups, nil
}
