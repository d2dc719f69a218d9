package ledger

import (
	"cmp"
	"slices"

	"storemesh/crdt"
)

// SaleRecord is a sale as the sale log holds it.
type SaleRecord struct {
	ID      string         `json:"sale_id"`
	Receipt string         `json:"receipt_no"`
	Store   string         `json:"store"`
	Device  string         `json:"device"`
	Seq     uint64         `json:"seq"`
	HLC     crdt.Timestamp `json:"-"`
	At      int64          `json:"at_ms"` // HLC physical time, Unix ms
	Total   int64          `json:"total"`
	Sale
	Refunded int64 `json:"refunded,omitempty"` // sum of refund amounts referencing this sale
}

// StockItem is one (store, sku) counter.
type StockItem struct {
	Store  string `json:"store"`
	SKU    string `json:"sku"`
	OnHand int64  `json:"on_hand"`
}

type stockKey struct{ store, sku string }

// saleUse is one sale line's claim on a (store, sku) counter, kept so that
// oversells can be attributed deterministically.
type saleUse struct {
	hlc    crdt.Timestamp
	device string
	seq    uint64
	hash   Hash
	qty    int64
	sale   string
}

func (a saleUse) compare(b saleUse) int {
	if c := a.hlc.Compare(b.hlc); c != 0 {
		return c
	}
	if c := cmp.Compare(a.device, b.device); c != 0 {
		return c
	}
	if c := cmp.Compare(a.seq, b.seq); c != 0 {
		return c
	}
	return slices.Compare(a.hash[:], b.hash[:])
}

type stockEntry struct {
	counter crdt.PNCounter
	uses    []saleUse // unsorted; sorted on demand
}

// state is the materialised view of a replica's ops. It is a pure function
// of the set of ops applied, whatever their order: every field is either a
// CRDT or derived on demand from one.
type state struct {
	stock    map[stockKey]*stockEntry
	sales    map[string]*SaleRecord // the sale log, a grow-only set: sale id → record
	byRef    map[string]string      // device + "\x00" + ref → sale id (idempotency)
	refunds  map[string]int64       // sale id → refunded amount (also for refunds seen before their sale)
	catalog  map[string]*crdt.LWW[CatalogItem]
	prices   map[string]*crdt.LWW[PriceSet]
	policy   map[string]*crdt.LWW[Policy]
	resolved map[string]*crdt.LWW[ConflictResolved]
	revoked  map[string]crdt.Timestamp // device → earliest revocation
	allot    allotBook                 // stock allotments (allot.go)
}

func newState() *state {
	return &state{
		stock:    map[stockKey]*stockEntry{},
		sales:    map[string]*SaleRecord{},
		byRef:    map[string]string{},
		refunds:  map[string]int64{},
		catalog:  map[string]*crdt.LWW[CatalogItem]{},
		prices:   map[string]*crdt.LWW[PriceSet]{},
		policy:   map[string]*crdt.LWW[Policy]{},
		resolved: map[string]*crdt.LWW[ConflictResolved]{},
		revoked:  map[string]crdt.Timestamp{},
	}
}

func (s *state) entry(store, sku string) *stockEntry {
	k := stockKey{store, sku}
	e := s.stock[k]
	if e == nil {
		e = &stockEntry{}
		s.stock[k] = e
	}
	return e
}

// ReceiptNo is the human receipt number of a device's op: the last six
// characters of the device id and the seq.
func ReceiptNo(device string, seq uint64) string {
	short := device
	if len(short) > 6 {
		short = short[len(short)-6:]
	}
	return short + "-" + itoa(seq)
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// apply folds one op (already verified and placed) into the state. b is
// its decoded body, nil for an op this build does not understand.
func (s *state) apply(o *Op, b body) {
	s.allotApply(o, b)
	switch b := b.(type) {
	case *Sale:
		id := o.ID()
		rec := &SaleRecord{
			ID: id, Receipt: ReceiptNo(o.Device, o.Seq), Store: o.Store, Device: o.Device,
			Seq: o.Seq, HLC: o.HLC, At: o.HLC.Wall / 1e6, Total: b.Total(), Sale: *b,
			Refunded: s.refunds[id],
		}
		s.sales[id] = rec
		if b.Ref != "" {
			s.byRef[o.Device+"\x00"+b.Ref] = id
		}
		for _, l := range b.Lines {
			e := s.entry(o.Store, l.SKU)
			e.counter.Dec(o.Device, uint64(l.Qty))
			e.uses = append(e.uses, saleUse{hlc: o.HLC, device: o.Device, seq: o.Seq, hash: o.hash, qty: l.Qty, sale: id})
		}
	case *Refund:
		s.refunds[b.Sale] += b.Amount
		if rec := s.sales[b.Sale]; rec != nil {
			rec.Refunded += b.Amount
		}
		if b.Ref != "" {
			s.byRef[o.Device+"\x00"+b.Ref] = o.ID()
		}
		for _, l := range b.Lines {
			s.entry(o.Store, l.SKU).counter.Inc(o.Device, uint64(l.Qty))
		}
	case *StockReceived:
		s.entry(o.Store, b.SKU).counter.Inc(o.Device, uint64(b.Qty))
	case *StockCounted:
		e := s.entry(o.Store, b.SKU)
		if d := b.OnHand - b.Seen; d > 0 {
			e.counter.Inc(o.Device, uint64(d))
		} else if d < 0 {
			e.counter.Dec(o.Device, uint64(-d))
		}
	case *StockTransferred:
		e := s.entry(o.Store, b.SKU)
		if o.Store == b.From {
			e.counter.Dec(o.Device, uint64(b.Qty))
		} else {
			e.counter.Inc(o.Device, uint64(b.Qty))
		}
	case *CatalogItem:
		lwwSet(s.catalog, b.SKU, *b, o)
	case *PriceSet:
		lwwSet(s.prices, b.SKU, *b, o)
	case *Policy:
		lwwSet(s.policy, o.Store, *b, o)
	case *ConflictResolved:
		lwwSet(s.resolved, b.Conflict, *b, o)
	case *DeviceRevoked:
		if t, ok := s.revoked[b.Device]; !ok || o.HLC.Less(t) {
			s.revoked[b.Device] = o.HLC
		}
	}
}

func lwwSet[T any](m map[string]*crdt.LWW[T], key string, v T, o *Op) {
	r := m[key]
	if r == nil {
		r = &crdt.LWW[T]{}
		m[key] = r
	}
	r.Set(v, o.HLC, o.Device)
}

// Conflict is an open or resolved inconsistency every replica holding the
// same ops reports identically (DESIGN §5).
type Conflict struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"` // "oversell"
	Store      string            `json:"store"`
	SKU        string            `json:"sku"`
	Sale       string            `json:"sale_id"`
	Device     string            `json:"device"`
	Seq        uint64            `json:"seq"`
	Oversold   int64             `json:"oversold"` // units of this sale line past the available stock
	OnHand     int64             `json:"on_hand"`  // the counter's current value
	Resolution *ConflictResolved `json:"resolution,omitempty"`
}

// oversells lists the oversold sale lines of every (store, sku) in scope
// whose counter is below zero: sales ordered by (hlc, device, seq, hash);
// the latest ones, up to the deficit, are oversold.
func (s *state) oversells(inScope func(store string) bool) []Conflict {
	var out []Conflict
	for k, e := range s.stock {
		if !inScope(k.store) {
			continue
		}
		v := e.counter.Value()
		if v >= 0 {
			continue
		}
		uses := slices.Clone(e.uses)
		slices.SortFunc(uses, saleUse.compare)
		deficit := -v
		for i := len(uses) - 1; i >= 0 && deficit > 0; i-- {
			u := uses[i]
			over := min(u.qty, deficit)
			deficit -= over
			id := "oversell:" + k.store + ":" + k.sku + ":" + u.sale
			c := Conflict{ID: id, Kind: "oversell", Store: k.store, SKU: k.sku, Sale: u.sale,
				Device: u.device, Seq: u.seq, Oversold: over, OnHand: v}
			if r := s.resolved[id]; r != nil {
				res := r.Value
				c.Resolution = &res
			}
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Conflict) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
