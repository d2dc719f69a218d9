package ledger

import (
	"cmp"
	"slices"
	"strings"
)

// Conflict kinds.
const (
	ConflictOversell   = "oversell"    // a sale line past the available stock
	ConflictOverRefund = "over_refund" // a refund past what its sale has left
)

// Conflict is an open or resolved inconsistency every replica holding the
// same ops reports identically (DESIGN §5).
type Conflict struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"` // ConflictOversell or ConflictOverRefund
	Store  string `json:"store"`
	SKU    string `json:"sku"` // over_refund: the first SKU refunded past its sale ("" when only the amount is)
	Sale   string `json:"sale_id"`
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
	// Oversold is, for an oversell, the units of this sale line past the
	// available stock; for an over_refund, the units the refund names
	// that its sale had no longer left (honoured 0).
	Oversold int64 `json:"oversold"`
	OnHand   int64 `json:"on_hand"` // oversell: the counter's current value
	// Refund and Excess are set for an over_refund: the refund's op id and
	// the amount (minor units) asked past what was honoured.
	Refund     string            `json:"refund_id,omitempty"`
	Excess     int64             `json:"excess_amount,omitempty"`
	Resolution *ConflictResolved `json:"resolution,omitempty"`
}

// tracked reports whether (store, sku) is stock-tracked, so that a
// negative counter is an oversell: the catalog says so ("tracked" or
// "untracked"), or, unset, some stock op for it exists in the store. A
// stall that never records stock gets no oversell conflicts.
func (s *state) tracked(k stockKey, e *stockEntry) bool {
	if r := s.catalog[k.sku]; r != nil {
		switch r.Value.Stock {
		case StockTracked:
			return true
		case StockUntracked:
			return false
		}
	}
	return e.stockOps > 0
}

// settle recomputes the oversells of every entry that changed since the
// last read. Each costs the sale lines it finds oversold (and a sort of
// its uses only when they arrived out of order), never the whole history.
func (s *state) settle() {
	for k, e := range s.dirty {
		s.recompute(k, e)
		delete(s.dirty, k)
	}
}

// recompute lists (store, sku)'s oversold sale lines: sales ordered by
// (hlc, device, seq, hash); the latest ones, up to the deficit, are
// oversold.
func (s *state) recompute(k stockKey, e *stockEntry) {
	e.dirty = false
	had := len(e.conflicts) > 0
	e.conflicts = e.conflicts[:0]
	v := e.value()
	if v < 0 && s.tracked(k, e) {
		if !e.sorted {
			slices.SortFunc(e.uses, saleUse.compare)
			e.sorted = true
		}
		deficit := -v
		for i := len(e.uses) - 1; i >= 0 && deficit > 0; i-- {
			u := e.uses[i]
			over := min(u.qty, deficit)
			deficit -= over
			e.conflicts = append(e.conflicts, Conflict{ID: "oversell:" + k.store + ":" + k.sku + ":" + u.sale,
				Kind: ConflictOversell, Store: k.store, SKU: k.sku, Sale: u.sale,
				Device: u.device, Seq: u.seq, Oversold: over, OnHand: v})
		}
		slices.SortFunc(e.conflicts, func(a, b Conflict) int { return cmp.Compare(a.ID, b.ID) })
	}
	has := len(e.conflicts) > 0
	if had == has {
		return
	}
	skus := s.overSKUs[k.store]
	i, found := slices.BinarySearchFunc(skus, k.sku, compareIDPart)
	switch {
	case has && !found:
		s.overSKUs[k.store] = slices.Insert(skus, i, k.sku)
	case !has && found:
		s.overSKUs[k.store] = slices.Delete(skus, i, i+1)
	}
}

// compareIDPart orders store ids and SKUs as they sort inside a conflict
// id, where each is followed by ':' (which neither may contain).
func compareIDPart(a, b string) int { return strings.Compare(a+":", b+":") }

// setRefundConflict records (or with ok false clears) the conflict of a
// refund.
func (s *state) setRefundConflict(store, id string, c Conflict, ok bool) {
	m := s.refundConf[store]
	old, had := m[id]
	switch {
	case ok && had && old == c:
		return
	case ok:
		if m == nil {
			m = map[string]Conflict{}
			s.refundConf[store] = m
		}
		m[id] = c
	case had:
		delete(m, id)
	default:
		return
	}
	delete(s.refundList, store)
}

// conflicts lists the conflicts of scope ("" for every store), resolved
// ones with their resolution, sorted by id: refund conflicts
// ("overrefund:…") before oversells ("oversell:…"). Reads come from the
// caches; only what changed since the last read is recomputed.
func (s *state) conflicts(scope string) []Conflict {
	s.settle()
	stores := []string{scope}
	if scope == "" {
		stores = s.conflictStores()
	}
	var out []Conflict
	for _, st := range stores {
		out = append(out, s.refundConflicts(st)...)
	}
	if len(stores) > 1 {
		slices.SortFunc(out, func(a, b Conflict) int { return cmp.Compare(a.ID, b.ID) })
	}
	for _, st := range stores {
		for _, sku := range s.overSKUs[st] {
			out = append(out, s.stock[stockKey{st, sku}].conflicts...)
		}
	}
	for i := range out {
		out[i].Resolution = nil
		if r := s.resolved[out[i].ID]; r != nil {
			res := r.Value
			out[i].Resolution = &res
		}
	}
	return out
}

// eachConflict calls fn with every conflict of store in id order, without
// copying the list (Digest).
func (s *state) eachConflict(store string, fn func(c *Conflict, resolved bool)) {
	s.settle()
	rs := s.refundConflicts(store)
	for i := range rs {
		fn(&rs[i], s.resolved[rs[i].ID] != nil)
	}
	for _, sku := range s.overSKUs[store] {
		cs := s.stock[stockKey{store, sku}].conflicts
		for i := range cs {
			fn(&cs[i], s.resolved[cs[i].ID] != nil)
		}
	}
}

// conflictStores lists the stores with conflicts, in id order. Called
// after settle.
func (s *state) conflictStores() []string {
	var stores []string
	for st, skus := range s.overSKUs {
		if len(skus) > 0 {
			stores = append(stores, st)
		}
	}
	for st, m := range s.refundConf {
		if len(m) > 0 && len(s.overSKUs[st]) == 0 {
			stores = append(stores, st)
		}
	}
	slices.SortFunc(stores, compareIDPart)
	return stores
}

func (s *state) refundConflicts(store string) []Conflict {
	if l, ok := s.refundList[store]; ok {
		return l
	}
	m := s.refundConf[store]
	l := make([]Conflict, 0, len(m))
	for _, c := range m {
		l = append(l, c)
	}
	slices.SortFunc(l, func(a, b Conflict) int { return cmp.Compare(a.ID, b.ID) })
	s.refundList[store] = l
	return l
}
