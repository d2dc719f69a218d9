package ledger

import (
	"cmp"
	"slices"

	"storemesh/crdt"
)

// Price variance (docs/design.md §5): a sale line charged at a price other
// than the list price in force at the sale's HLC — the catalog.upsert or
// price.set of its SKU latest by (HLC, device) among those not after the
// sale. Every price write is kept per SKU so the answer is a function of
// the set of ops, whatever order they arrived in.

type pricePoint struct {
	ts       crdt.Timestamp
	device   string
	price    int64
	currency string
}

func (p pricePoint) compare(q pricePoint) int {
	return cmp.Or(p.ts.Compare(q.ts), cmp.Compare(p.device, q.device))
}

func (s *state) notePrice(o *Op, sku string, price int64, currency string) {
	if s.priceHist == nil {
		s.priceHist = map[string][]pricePoint{}
	}
	p := pricePoint{ts: o.HLC, device: o.Device, price: price, currency: currency}
	h := s.priceHist[sku]
	i, _ := slices.BinarySearchFunc(h, p, pricePoint.compare)
	s.priceHist[sku] = slices.Insert(h, i, p)
}

// listPrice is the price of sku in force at ts, if any was set by then.
func (s *state) listPrice(sku string, ts crdt.Timestamp) (pricePoint, bool) {
	h := s.priceHist[sku]
	i, _ := slices.BinarySearchFunc(h, ts, func(p pricePoint, t crdt.Timestamp) int {
		if p.ts.Compare(t) <= 0 {
			return -1
		}
		return 1
	})
	if i == 0 {
		return pricePoint{}, false
	}
	return h[i-1], true
}

// VarianceLine is one sale line charged off the list price.
type VarianceLine struct {
	Sale      string `json:"sale_id"`
	Receipt   string `json:"receipt_no"`
	Store     string `json:"store"`
	Device    string `json:"device"`
	At        int64  `json:"at_ms"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
	Charged   int64  `json:"unit_price"` // as charged
	ListPrice int64  `json:"list_price"` // in force at the sale's HLC
	Currency  string `json:"currency"`
	// Difference is (charged − list) × qty; ListCurrency differs from
	// Currency when the list price was in another currency.
	Difference   int64  `json:"difference"`
	ListCurrency string `json:"list_currency"`
}

// PriceVariance lists, in the sale log's order, the lines of the sales q
// selects (Store, From, To, Device; Limit bounds the lines, After is
// not used) whose charged price differs from the list price in force at
// their HLC, and whether more lines follow. Lines of a SKU with no price
// set before the sale are not listed.
func (l *Ledger) PriceVariance(q SalesQuery) ([]VarianceLine, bool, error) {
	q.After, q.Desc = "", false
	limit := q.Limit
	q.Limit = 0
	sales, _, err := l.SalesPage(q)
	if err != nil {
		return nil, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []VarianceLine{}
	for _, r := range sales {
		for _, ln := range r.Lines {
			p, ok := l.st.listPrice(ln.SKU, r.HLC)
			if !ok || (p.price == ln.UnitPrice && p.currency == r.Currency) {
				continue
			}
			if limit > 0 && len(out) == limit {
				return out, true, nil
			}
			out = append(out, VarianceLine{Sale: r.ID, Receipt: r.Receipt, Store: r.Store, Device: r.Device, At: r.At,
				SKU: ln.SKU, Qty: ln.Qty, Charged: ln.UnitPrice, ListPrice: p.price, Currency: r.Currency,
				Difference: (ln.UnitPrice - p.price) * ln.Qty, ListCurrency: p.currency})
		}
	}
	return out, false, nil
}
