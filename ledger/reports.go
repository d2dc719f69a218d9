package ledger

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Sales reports (issue 17) are answered from aggregates the state keeps as
// ops apply, never by scanning the sale log per request. Each sale adds to
// one row per dimension — its day, its device, its payment method, and
// each SKU it sold — keyed by (store, currency, quarter hour). Refunds count on the
// day they were made, by the device that made them, under their sale's
// payment method, and per SKU by the units honoured; what a refund adds is
// what the refund rule honours (refunds.go), so a refund that an earlier
// one overtakes moves its figures as the rule moves it. Days are the
// store's local dates (its store.set time zone, UTC until it has one).

// Report dimensions.
const (
	ByDay     = "day"
	BySKU     = "sku"
	ByDevice  = "device"
	ByPayment = "payment"
)

// ReportDims lists the dimensions a sales report can group by.
var ReportDims = []string{ByDay, BySKU, ByDevice, ByPayment}

// ReportRow is one group of a sales report. Money is in minor units of
// Currency; Net = Gross − Refunds.
type ReportRow struct {
	Store       string `json:"store"`
	Key         string `json:"key"` // the day (YYYY-MM-DD), SKU, device id or payment method
	Currency    string `json:"currency"`
	Sales       int64  `json:"sales"`        // sales counted (with this SKU, for by=sku)
	Units       int64  `json:"units"`        // units sold
	Gross       int64  `json:"gross"`        // sales total (the SKU's lines, for by=sku)
	Refunds     int64  `json:"refunds"`      // refund amount honoured
	RefundCount int64  `json:"refund_count"` // refunds honouring something
	RefundUnits int64  `json:"refund_units"` // units refunded
	Net         int64  `json:"net"`
}

// repKey's slot is the quarter hour (Unix seconds / 900) of the op's HLC:
// every zone's days are whole quarter hours, so the store's local day of
// a cell is known at query time, and a change of the store's time zone
// needs no rebuild.
type repKey struct {
	store, currency string
	slot            int64
	dim, key        string // key "" for ByDay: the day is the slot's
}

const slotSeconds = 900

func slotOf(wallNS int64) int64 { return wallNS / 1e9 / slotSeconds }

type repCell struct {
	sales, units, gross, refunds, refundCount, refundUnits int64
}

// refundShare is what one refund contributes to the report.
type refundShare struct {
	slot              int64
	payment, currency string
	paid              int64
	counted           bool
	units, amounts    map[string]int64 // per SKU
}

// dayIn is the date at loc of an HLC wall time.
func dayIn(loc *time.Location, wallNS int64) string {
	return time.Unix(0, wallNS).In(loc).Format(time.DateOnly)
}

// zone is store's time zone: its record's, else UTC.
func (s *state) zone(store string) *time.Location {
	if z := s.zones[store]; z != nil {
		return z
	}
	return time.UTC
}

// localDay is store's business day of an HLC wall time.
func (s *state) localDay(store string, wallNS int64) string { return dayIn(s.zone(store), wallNS) }

func (s *state) repCell(k repKey) *repCell {
	if s.report == nil {
		s.report = map[repKey]*repCell{}
	}
	c := s.report[k]
	if c == nil {
		c = &repCell{}
		s.report[k] = c
	}
	return c
}

// reportSale adds a sale to the aggregates.
func (s *state) reportSale(o *Op, b *Sale) {
	slot, total := slotOf(o.HLC.Wall), b.Total()
	units := int64(0)
	perSKU := map[string][2]int64{}
	for _, l := range b.Lines {
		units += l.Qty
		v := perSKU[l.SKU]
		perSKU[l.SKU] = [2]int64{v[0] + l.Qty, v[1] + l.Qty*l.UnitPrice}
	}
	for _, dk := range [...][2]string{{ByDay, ""}, {ByDevice, ChainOwner(o.Device)}, {ByPayment, b.Payment}} {
		c := s.repCell(repKey{o.Store, b.Currency, slot, dk[0], dk[1]})
		c.sales++
		c.units += units
		c.gross += total
	}
	for sku, v := range perSKU {
		c := s.repCell(repKey{o.Store, b.Currency, slot, BySKU, sku})
		c.sales++
		c.units += v[0]
		c.gross += v[1]
	}
}

// reportRefund moves refund r's contribution to what the rule honours now:
// paid in all, and units per SKU priced from the sale (done: the units of
// each SKU honoured to refunds ordered before r).
func (s *state) reportRefund(r *refundEntry, rec *SaleRecord, done, units map[string]int64) {
	next := &refundShare{slot: slotOf(r.hlc.Wall), paid: r.paid, units: map[string]int64{}, amounts: map[string]int64{}}
	if rec != nil {
		next.payment, next.currency = rec.Payment, rec.Currency
		// The honoured amount spread over the SKUs by what the sale
		// charged for each; the rounding goes to the last SKU.
		prices := map[string]int64{}
		var sum int64
		skus := slices.Sorted(maps.Keys(units))
		for _, sku := range skus {
			if units[sku] > 0 {
				next.units[sku] = units[sku]
				prices[sku] = RefundPrice(&rec.Sale, done, map[string]int64{sku: units[sku]})
				sum += prices[sku]
			}
		}
		left := r.paid
		for i, sku := range skus {
			if units[sku] <= 0 {
				continue
			}
			a := left
			if sum > 0 && i < len(skus)-1 {
				a = r.paid * prices[sku] / sum
			}
			next.amounts[sku] = a
			left -= a
		}
		next.counted = r.paid > 0 || len(next.units) > 0
	}
	s.applyRefundShare(r, r.share, -1)
	s.applyRefundShare(r, next, 1)
	r.share = next
}

func (s *state) applyRefundShare(r *refundEntry, sh *refundShare, sign int64) {
	if sh == nil || sh.currency == "" {
		return
	}
	var units int64
	for _, u := range sh.units {
		units += u
	}
	count := int64(0)
	if sh.counted {
		count = 1
	}
	for _, dk := range [...][2]string{{ByDay, ""}, {ByDevice, ChainOwner(r.device)}, {ByPayment, sh.payment}} {
		c := s.repCell(repKey{r.store, sh.currency, sh.slot, dk[0], dk[1]})
		c.refunds += sign * sh.paid
		c.refundUnits += sign * units
		c.refundCount += sign * count
	}
	for sku, u := range sh.units {
		c := s.repCell(repKey{r.store, sh.currency, sh.slot, BySKU, sku})
		c.refunds += sign * sh.amounts[sku]
		c.refundUnits += sign * u
		c.refundCount += sign * count
	}
}

// ReportQuery selects a sales report: Store ("" for every store held),
// From and To (the store's local dates, YYYY-MM-DD, inclusive; "" for no bound) and By
// (one of ReportDims).
type ReportQuery struct {
	Store, From, To, By string
}

// Validate reports a query that names no dimension or a malformed date.
func (q ReportQuery) Validate() error {
	if !slices.Contains(ReportDims, q.By) {
		return fmt.Errorf("%w: by %q: want one of %v", ErrBadInput, q.By, ReportDims)
	}
	return validDates(q.From, q.To)
}

// validDates checks a from/to range of dates (YYYY-MM-DD, "" unbounded).
func validDates(from, to string) error {
	for _, d := range []string{from, to} {
		if d == "" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return fmt.Errorf("%w: date %q: want YYYY-MM-DD", ErrBadInput, d)
		}
	}
	if from != "" && to != "" && to < from {
		return fmt.Errorf("%w: to %s before from %s", ErrBadInput, to, from)
	}
	return nil
}

// inDates reports whether day lies in the from/to range ("" unbounded).
func inDates(day, from, to string) bool {
	return (from == "" || day >= from) && (to == "" || day <= to)
}

// SalesReport answers q from the aggregates, rows ordered by store,
// currency and key. Its cost is the number of aggregate rows, not of
// sales.
func (l *Ledger) SalesReport(q ReportQuery) ([]ReportRow, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	sum := map[[3]string]*ReportRow{}
	type slotAt struct {
		store string
		slot  int64
	}
	days := map[slotAt]string{} // the store's local day of a slot
	for k, c := range l.st.report {
		if k.dim != q.By || (q.Store != "" && k.store != q.Store) {
			continue
		}
		sa := slotAt{k.store, k.slot}
		day, ok := days[sa]
		if !ok {
			day = l.st.localDay(k.store, k.slot*slotSeconds*1e9)
			days[sa] = day
		}
		if !inDates(day, q.From, q.To) {
			continue
		}
		key := k.key
		if q.By == ByDay {
			key = day
		}
		id := [3]string{k.store, k.currency, key}
		r := sum[id]
		if r == nil {
			r = &ReportRow{Store: k.store, Currency: k.currency, Key: key}
			sum[id] = r
		}
		r.Sales += c.sales
		r.Units += c.units
		r.Gross += c.gross
		r.Refunds += c.refunds
		r.RefundCount += c.refundCount
		r.RefundUnits += c.refundUnits
	}
	l.mu.Unlock()
	out := make([]ReportRow, 0, len(sum))
	for _, r := range sum {
		if r.Sales == 0 && r.RefundCount == 0 && r.Refunds == 0 {
			continue
		}
		r.Net = r.Gross - r.Refunds
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b ReportRow) int {
		return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.Currency, b.Currency), cmp.Compare(a.Key, b.Key))
	})
	return out, nil
}

// SalesQuery selects a page of the sale log: Store ("" every store),
// From/To (the store's local dates, inclusive, "" unbounded), Device (a device id: its
// chains, every epoch), After (the id of the last sale of the previous
// page: the page starts after it in the log's order), Limit (≤ 0: no
// limit) and Desc (newest first).
type SalesQuery struct {
	Store, From, To, Device, After string
	Limit                          int
	Desc                           bool
}

// ErrUnknownCursor: SalesQuery.After names no sale this replica holds.
var ErrUnknownCursor = errors.New("ledger: cursor names no sale held here")

// SalesPage lists one page of the sale log in (hlc, device, seq, id)
// order (reversed with Desc), and whether more follow.
func (l *Ledger) SalesPage(q SalesQuery) ([]SaleRecord, bool, error) {
	if err := validDates(q.From, q.To); err != nil {
		return nil, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	order := func(a, b *SaleRecord) int {
		c := cmp.Or(a.HLC.Compare(b.HLC), cmp.Compare(a.Device, b.Device), cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.ID, b.ID))
		if q.Desc {
			return -c
		}
		return c
	}
	var after *SaleRecord
	if q.After != "" {
		after = l.st.sales[q.After]
		if after == nil {
			return nil, false, fmt.Errorf("%w: %s", ErrUnknownCursor, q.After)
		}
	}
	var sel []*SaleRecord
	for _, r := range l.st.sales {
		if (q.Store != "" && r.Store != q.Store) || (q.Device != "" && ChainOwner(r.Device) != ChainOwner(q.Device)) {
			continue
		}
		if (q.From != "" || q.To != "") && !inDates(l.st.localDay(r.Store, r.HLC.Wall), q.From, q.To) {
			continue
		}
		if after != nil && order(r, after) <= 0 {
			continue
		}
		sel = append(sel, r)
	}
	slices.SortFunc(sel, order)
	more := false
	if q.Limit > 0 && len(sel) > q.Limit {
		sel, more = sel[:q.Limit], true
	}
	out := make([]SaleRecord, len(sel))
	for i, r := range sel {
		out[i] = *r
		out[i].Receipt = l.saleReceipt(r.Device, r.Seq, r.ReceiptSeq)
	}
	return out, more, nil
}

// RefundsQuery selects a page of refunds, as SalesQuery does sales.
type RefundsQuery struct {
	Store, From, To, Device, After string
	Limit                          int
}

// RefundsPage lists one page of the refunds this replica holds in
// (hlc, device, seq) order, and whether more follow. After is a refund id.
func (l *Ledger) RefundsPage(q RefundsQuery) ([]RefundRecord, bool, error) {
	if err := validDates(q.From, q.To); err != nil {
		return nil, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var sel []*refundEntry
	var after *refundEntry
	for _, bk := range l.st.books {
		for _, r := range bk.refunds {
			if r.id == q.After {
				after = r
			}
			if (q.Store != "" && r.store != q.Store) || (q.Device != "" && ChainOwner(r.device) != ChainOwner(q.Device)) {
				continue
			}
			if (q.From != "" || q.To != "") && !inDates(l.st.localDay(r.store, r.hlc.Wall), q.From, q.To) {
				continue
			}
			sel = append(sel, r)
		}
	}
	if q.After != "" && after == nil {
		return nil, false, fmt.Errorf("%w: %s", ErrUnknownCursor, q.After)
	}
	slices.SortFunc(sel, (*refundEntry).compare)
	if after != nil {
		i, _ := slices.BinarySearchFunc(sel, after, (*refundEntry).compare)
		for i < len(sel) && sel[i].compare(after) <= 0 {
			i++
		}
		sel = sel[i:]
	}
	more := false
	if q.Limit > 0 && len(sel) > q.Limit {
		sel, more = sel[:q.Limit], true
	}
	out := make([]RefundRecord, len(sel))
	for i, r := range sel {
		out[i] = l.refundRecord(r)
	}
	return out, more, nil
}
