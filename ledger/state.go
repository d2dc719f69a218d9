package ledger

import (
	"cmp"
	"slices"
	"time"

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
	// Refunded is the refund amount honoured against this sale (see
	// refunds.go): never more than Total, each refund counted once.
	Refunded int64 `json:"refunded,omitempty"`
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
	// credit is the units refunds honour into this counter (refunds.go).
	// It is not in the PN-counter because a refund's honoured units can
	// shrink when an earlier refund of the same sale arrives later.
	credit int64
	// stockOps counts the received, counted and transferred ops of this
	// (store, sku): one makes the SKU stock-tracked here (see tracked).
	stockOps int
	uses     []saleUse // sorted by saleUse.compare when sorted is set
	sorted   bool
	// conflicts caches the oversold lines (without resolutions), sorted
	// by id; dirty says the counter or its uses changed since.
	conflicts []Conflict
	dirty     bool
}

func (e *stockEntry) value() int64 { return e.counter.Value() + e.credit }

// state is the materialised view of a replica's ops. It is a pure function
// of the set of ops applied, whatever their order: every field is either a
// CRDT or derived from one, re-evaluated where an arrival changes it.
type state struct {
	stock  map[stockKey]*stockEntry
	sales  map[string]*SaleRecord // the sale log, a grow-only set: sale id → record
	report map[repKey]*repCell    // sales report aggregates (reports.go)
	// priceHist is every price write per SKU, by (hlc, device) (variance.go).
	priceHist map[string][]pricePoint
	stores    map[string]*crdt.LWW[StoreRecord] // store records (stores.go)
	zones     map[string]*time.Location         // their time zones, loaded
	byRef     map[string]string                 // device + "\x00" + ref → sale id (idempotency)
	books     map[string]*refundBook            // sale id → the refunds naming it (also before the sale arrives)
	inflight  map[string][]*Refund              // sale id → local refunds being committed (refunds.go)
	catalog   map[string]*crdt.LWW[CatalogItem]
	prices    map[string]*crdt.LWW[PriceSet]
	policy    map[string]*crdt.LWW[Policy]
	resolved  map[string]*crdt.LWW[ConflictResolved]

	// Conflict caches (conflicts.go): entries whose oversells must be
	// recomputed, per store the SKUs with oversold lines (sorted), and per
	// store the refund conflicts.
	dirty      map[stockKey]*stockEntry
	overSKUs   map[string][]string
	refundConf map[string]map[string]Conflict
	refundList map[string][]Conflict // sorted cache of refundConf; nil when stale

	receipts receiptBook
	allot    allotBook // stock allotments (allot.go)
}

func newState() *state {
	return &state{
		stock:      map[stockKey]*stockEntry{},
		sales:      map[string]*SaleRecord{},
		byRef:      map[string]string{},
		books:      map[string]*refundBook{},
		inflight:   map[string][]*Refund{},
		catalog:    map[string]*crdt.LWW[CatalogItem]{},
		prices:     map[string]*crdt.LWW[PriceSet]{},
		policy:     map[string]*crdt.LWW[Policy]{},
		resolved:   map[string]*crdt.LWW[ConflictResolved]{},
		dirty:      map[stockKey]*stockEntry{},
		overSKUs:   map[string][]string{},
		refundConf: map[string]map[string]Conflict{},
		refundList: map[string][]Conflict{},
		receipts:   newReceiptBook(),
	}
}

func (s *state) entry(store, sku string) *stockEntry {
	k := stockKey{store, sku}
	e := s.stock[k]
	if e == nil {
		e = &stockEntry{sorted: true}
		s.stock[k] = e
	}
	return e
}

// touch marks (store, sku)'s oversells for recomputation.
func (s *state) touch(store, sku string, e *stockEntry) {
	if !e.dirty {
		e.dirty = true
		s.dirty[stockKey{store, sku}] = e
	}
}

// ReceiptNo is the fallback receipt number of an op written without one
// (by a build before receipt numbers): the last six characters of the
// device id and the seq.
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
			ID: id, Store: o.Store, Device: o.Device,
			Seq: o.Seq, HLC: o.HLC, At: o.HLC.Wall / 1e6, Total: b.Total(), Sale: *b,
		}
		s.sales[id] = rec
		s.reportSale(o, b)
		s.receipts.addSale(o, b.ReceiptSeq, id)
		if b.Ref != "" {
			s.byRef[o.Device+"\x00"+b.Ref] = id
		}
		for _, l := range b.Lines {
			e := s.entry(o.Store, l.SKU)
			e.counter.Dec(o.Device, uint64(l.Qty))
			u := saleUse{hlc: o.HLC, device: o.Device, seq: o.Seq, hash: o.hash, qty: l.Qty, sale: id}
			if n := len(e.uses); n > 0 && e.uses[n-1].compare(u) > 0 {
				e.sorted = false
			}
			e.uses = append(e.uses, u)
			s.touch(o.Store, l.SKU, e)
		}
		s.evaluate(id)
	case *Refund:
		s.receipts.addRefund(o, b.ReceiptSeq)
		if b.Ref != "" {
			s.byRef[o.Device+"\x00"+b.Ref] = o.ID()
		}
		s.addRefund(o, b)
	case *StockReceived:
		e := s.stockOp(o.Store, b.SKU)
		e.counter.Inc(o.Device, uint64(b.Qty))
	case *StockCounted:
		e := s.stockOp(o.Store, b.SKU)
		if d := b.OnHand - b.Seen; d > 0 {
			e.counter.Inc(o.Device, uint64(d))
		} else if d < 0 {
			e.counter.Dec(o.Device, uint64(-d))
		}
	case *StockTransferred:
		e := s.stockOp(o.Store, b.SKU)
		switch o.Store {
		case b.From:
			e.counter.Dec(o.Device, uint64(b.Qty))
		case b.To:
			e.counter.Inc(o.Device, uint64(b.Qty))
		}
	case *CatalogItem:
		lwwSet(s.catalog, b.SKU, *b, o)
		s.notePrice(o, b.SKU, b.UnitPrice, b.Currency)
		for k, e := range s.stock { // whether the SKU is tracked may have changed
			if k.sku == b.SKU {
				s.touch(k.store, k.sku, e)
			}
		}
	case *PriceSet:
		lwwSet(s.prices, b.SKU, *b, o)
		s.notePrice(o, b.SKU, b.UnitPrice, b.Currency)
	case *Policy:
		lwwSet(s.policy, o.Store, *b, o)
	case *StoreRecord:
		s.setStore(o, b)
	case *ConflictResolved:
		lwwSet(s.resolved, b.Conflict, *b, o)
	}
}

// stockOp returns (store, sku)'s entry for a stock op and marks it.
func (s *state) stockOp(store, sku string) *stockEntry {
	e := s.entry(store, sku)
	e.stockOps++
	s.touch(store, sku, e)
	return e
}

func lwwSet[T any](m map[string]*crdt.LWW[T], key string, v T, o *Op) {
	r := m[key]
	if r == nil {
		r = &crdt.LWW[T]{}
		m[key] = r
	}
	r.Set(v, o.HLC, o.Device)
}
