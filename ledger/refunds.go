package ledger

import (
	"errors"
	"fmt"
	"slices"

	"storemesh/crdt"
)

// Refunds are bounded by their sale in the replicated state, whatever the
// order ops arrive in. Per sale, refunds are ordered by (hlc, device, seq,
// hash); each refund line is honoured up to the units of that SKU the
// sale still has unrefunded, and the refund's amount up to the price the
// sale charged for the honoured units and to what is left of the sale's
// total. What is not honoured is an over_refund conflict
// ("overrefund:<refund id>"), never credited to stock or to the sale's
// Refunded. A refund whose sale has not arrived (or is of another store)
// has no effect until it does; a refund naming a SKU the sale did not sell
// is honoured 0 for it and flagged. Arrivals re-evaluate only the refunds
// of their own sale.

// ErrRefundExceedsSale refuses a local refund that its sale could not
// honour in full: more units of a SKU than are left unrefunded, a SKU the
// sale did not sell, or more money than is left.
var ErrRefundExceedsSale = errors.New("ledger: refund exceeds what its sale has left")

// ErrUnknownSale refuses a local refund of a sale this replica does not
// hold.
var ErrUnknownSale = errors.New("ledger: refund of a sale this replica does not hold")

type refundEntry struct {
	id     string
	store  string
	device string
	seq    uint64
	hlc    crdt.Timestamp
	hash   Hash
	body   *Refund
	units  []int64      // honoured units per line of body
	paid   int64        // honoured amount
	share  *refundShare // what it adds to the sales report (reports.go)
}

func (a *refundEntry) compare(b *refundEntry) int {
	return saleUse{hlc: a.hlc, device: a.device, seq: a.seq, hash: a.hash}.compare(
		saleUse{hlc: b.hlc, device: b.device, seq: b.seq, hash: b.hash})
}

// refundBook is every refund naming one sale, in order, and what is
// honoured of them.
type refundBook struct {
	refunds []*refundEntry
	units   map[string]int64 // honoured units per SKU
	amount  int64            // honoured amount
}

func (s *state) addRefund(o *Op, b *Refund) {
	if len(s.inflight) > 0 {
		s.releaseRefund(b)
	}
	bk := s.books[b.Sale]
	if bk == nil {
		bk = &refundBook{}
		s.books[b.Sale] = bk
	}
	r := &refundEntry{id: o.ID(), store: o.Store, device: o.Device, seq: o.Seq, hlc: o.HLC, hash: o.hash,
		body: b, units: make([]int64, len(b.Lines))}
	i, _ := slices.BinarySearchFunc(bk.refunds, r, (*refundEntry).compare)
	bk.refunds = slices.Insert(bk.refunds, i, r)
	s.evaluate(b.Sale)
}

// evaluate re-applies the rule to every refund of sale id, moving stock
// credits, the sale's Refunded and the refund conflicts by what changed.
func (s *state) evaluate(id string) {
	bk := s.books[id]
	if bk == nil {
		return
	}
	rec := s.sales[id]
	var sold map[string]int64
	var leftAmount int64
	if rec != nil {
		sold = map[string]int64{}
		for _, l := range rec.Lines {
			sold[l.SKU] += l.Qty
		}
		leftAmount = rec.Total
	}
	units := map[string]int64{}
	moved := map[string]int64{} // net change of honoured units per SKU
	var amount int64
	for _, r := range bk.refunds {
		live := rec != nil && r.store == rec.Store
		want := map[string]int64{}
		var short int64
		shortSKU := ""
		for i, l := range r.body.Lines {
			var take int64
			if live {
				take = min(l.Qty, sold[l.SKU]-units[l.SKU]-want[l.SKU])
			}
			if live && take < l.Qty {
				short += l.Qty - take
				if shortSKU == "" {
					shortSKU = l.SKU
				}
			}
			if d := take - r.units[i]; d != 0 {
				e := s.entry(r.store, l.SKU)
				e.credit += d
				s.touch(r.store, l.SKU, e)
				r.units[i] = take
				moved[l.SKU] += d
			}
			want[l.SKU] += take
		}
		r.paid = 0
		if live {
			r.paid = min(r.body.Amount, RefundPrice(&rec.Sale, units, want), leftAmount)
			leftAmount -= r.paid
		}
		if live {
			s.reportRefund(r, rec, units, want)
		} else {
			s.reportRefund(r, nil, units, want)
		}
		for sku, q := range want {
			units[sku] += q
		}
		amount += r.paid
		c := Conflict{ID: "overrefund:" + r.id, Kind: ConflictOverRefund, Store: r.store, SKU: shortSKU, Sale: id,
			Device: r.device, Seq: r.seq, Oversold: short, Refund: r.id, Excess: r.body.Amount - r.paid}
		s.setRefundConflict(r.store, c.ID, c, live && (short > 0 || c.Excess > 0))
	}
	bk.units, bk.amount = units, amount
	if rec != nil {
		rec.Refunded = amount
		// In an allotment, honoured refund units count as a movement of
		// the sale itself (allot.go): per sale and SKU their total only
		// grows as refunds arrive, so a double refund from two
		// partitioned terminals never hands out rights it later takes
		// back, and the counter still equals on_hand.
		for sku, d := range moved {
			if d != 0 {
				s.allotMovedAt(rec.Store, rec.Device, rec.Seq, sku, d)
			}
		}
	}
}

// RefundPrice is what sale charged for want units per SKU after done
// units per SKU were already refunded: units come off the sale's lines of
// their SKU in order, each at its line's unit price.
func RefundPrice(sale *Sale, done, want map[string]int64) int64 {
	skip := make(map[string]int64, len(done))
	for k, v := range done {
		skip[k] = v
	}
	left := make(map[string]int64, len(want))
	for k, v := range want {
		left[k] = v
	}
	var amount int64
	for _, l := range sale.Lines {
		sk := min(skip[l.SKU], l.Qty)
		skip[l.SKU] -= sk
		take := min(left[l.SKU], l.Qty-sk)
		left[l.SKU] -= take
		amount += take * l.UnitPrice
	}
	return amount
}

// checkRefund refuses a local refund its sale could not honour in full.
// The new refund orders after every refund held (its HLC is newer than
// any this replica has seen), so what is left now is what it gets.
func (s *state) checkRefund(store string, b *Refund) error {
	rec := s.sales[b.Sale]
	if rec == nil || rec.Store != store {
		return fmt.Errorf("%w: %s in store %s", ErrUnknownSale, b.Sale, store)
	}
	sold := map[string]int64{}
	for _, l := range rec.Lines {
		sold[l.SKU] += l.Qty
	}
	done := map[string]int64{}
	var refunded int64
	if bk := s.books[b.Sale]; bk != nil {
		for k, v := range bk.units {
			done[k] = v
		}
		refunded = bk.amount
	}
	// Local refunds appended but not yet durable (a group commit under
	// way) count as refunded already.
	for _, p := range s.inflight[b.Sale] {
		for _, l := range p.Lines {
			done[l.SKU] += l.Qty
		}
		refunded += p.Amount
	}
	want := map[string]int64{}
	for _, l := range b.Lines {
		want[l.SKU] += l.Qty
		if want[l.SKU]+done[l.SKU] > sold[l.SKU] {
			return fmt.Errorf("%w: sale %s sold %d of %q, %d already refunded; cannot refund %d",
				ErrRefundExceedsSale, b.Sale, sold[l.SKU], l.SKU, done[l.SKU], want[l.SKU])
		}
	}
	if p := RefundPrice(&rec.Sale, done, want); b.Amount > p {
		return fmt.Errorf("%w: sale %s charged %d for these units; refund asks %d", ErrRefundExceedsSale, b.Sale, p, b.Amount)
	}
	if b.Amount > rec.Total-refunded {
		return fmt.Errorf("%w: sale %s has %d left to refund; refund asks %d", ErrRefundExceedsSale, b.Sale, rec.Total-refunded, b.Amount)
	}
	return nil
}

// holdRefund notes a local refund Append placed and is committing, so a
// concurrent refund of the same sale is checked against it; apply drops it
// once the refund is durable and in the books.
func (s *state) holdRefund(b body) {
	if r, ok := b.(*Refund); ok {
		s.inflight[r.Sale] = append(s.inflight[r.Sale], r)
	}
}

func (s *state) releaseRefund(b *Refund) {
	l := s.inflight[b.Sale]
	for i, p := range l {
		if p == b {
			l = slices.Delete(l, i, i+1)
			break
		}
	}
	if len(l) == 0 {
		delete(s.inflight, b.Sale)
	} else {
		s.inflight[b.Sale] = l
	}
}

// RefundRecord is one refund of a sale and what of it is honoured.
type RefundRecord struct {
	ID       string       `json:"refund_id"`
	Receipt  string       `json:"receipt_no"`
	Sale     string       `json:"sale_id"`
	Store    string       `json:"store"`
	Device   string       `json:"device"`
	Seq      uint64       `json:"seq"`
	At       int64        `json:"at_ms"`
	Lines    []RefundLine `json:"lines"`    // as the refund asked
	Amount   int64        `json:"amount"`   // as the refund asked
	Honoured []RefundLine `json:"honoured"` // the units credited back to stock
	Paid     int64        `json:"honoured_amount"`
	Conflict bool         `json:"conflict"` // part of it is an over_refund conflict
}

// SaleRefunds is what a sale's refunds add up to on this replica.
type SaleRefunds struct {
	Sale    string           `json:"sale_id"`
	Units   map[string]int64 `json:"units"`  // honoured units per SKU
	Amount  int64            `json:"amount"` // honoured amount
	Refunds []RefundRecord   `json:"refunds"`
}

// Refunds returns the refunds of sale id in their order, with what is
// honoured of each (the replicated rule above).
func (l *Ledger) Refunds(id string) SaleRefunds {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := SaleRefunds{Sale: id, Units: map[string]int64{}}
	bk := l.st.books[id]
	if bk == nil {
		return out
	}
	for k, v := range bk.units {
		if v != 0 {
			out.Units[k] = v
		}
	}
	out.Amount = bk.amount
	for _, r := range bk.refunds {
		out.Refunds = append(out.Refunds, l.refundRecord(r))
	}
	return out
}

// refundRecord is r as this replica honours it. Called under l.mu.
func (l *Ledger) refundRecord(r *refundEntry) RefundRecord {
	rr := RefundRecord{ID: r.id, Receipt: l.refundReceipt(r.device, r.seq, r.body.ReceiptSeq), Sale: r.body.Sale, Store: r.store,
		Device: r.device, Seq: r.seq, At: r.hlc.Wall / 1e6, Lines: r.body.Lines, Amount: r.body.Amount, Paid: r.paid}
	for i, q := range r.units {
		if q > 0 {
			rr.Honoured = append(rr.Honoured, RefundLine{SKU: r.body.Lines[i].SKU, Qty: q})
		}
	}
	_, rr.Conflict = l.st.refundConf[r.store]["overrefund:"+r.id]
	return rr
}
