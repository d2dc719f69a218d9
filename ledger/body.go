package ledger

import (
	"fmt"
	"regexp"

	"storemesh/crdt"
)

// Kind names what an op does.
type Kind string

// The op kinds of docs/design.md §3. Add kinds freely; never rename one.
const (
	KindSale             Kind = "sale"
	KindRefund           Kind = "refund"
	KindStockReceived    Kind = "stock.received"
	KindStockCounted     Kind = "stock.counted"
	KindStockTransferred Kind = "stock.transferred"
	KindPriceSet         Kind = "price.set"
	KindCatalogUpsert    Kind = "catalog.upsert"
	KindPolicySet        Kind = "policy.set"
	KindConflictResolved Kind = "conflict.resolved"
	KindDeviceRevoked    Kind = "device.revoked"
)

// bodyVersion is the newest body version this build fully understands.
// Ops of a known kind with a newer body version are stored and relayed but
// not materialised, so an old terminal can carry a new anchor's ops.
//
// Version 2 added fields to sales and refunds (ReceiptSeq) and catalog
// entries (Stock). Bodies are canonical CBOR and an old build's decoder
// re-encodes what it read, so it would refuse a body with a field it does
// not know as not canonical: Append therefore writes those kinds as
// version 2 (which an old build stores and relays) and every other kind
// as version 1. Version 1 bodies of every kind still decode: the new
// fields are omitempty, absent means zero.
const bodyVersion = 2

// writeVersion is the body version Append writes for kind.
func writeVersion(kind Kind) uint16 {
	switch kind {
	case KindSale, KindRefund, KindCatalogUpsert, KindDeviceRevoked: // device.revoked v2: revoke.go
		return 2
	}
	return 1
}

type kindSpec struct {
	fleetWide   bool // lives in FleetScope, not in a store
	managerOnly bool // terminals may not write it
	newBody     func() body
}

var kinds = map[Kind]kindSpec{
	KindSale:             {newBody: func() body { return new(Sale) }},
	KindRefund:           {newBody: func() body { return new(Refund) }},
	KindStockReceived:    {newBody: func() body { return new(StockReceived) }},
	KindStockCounted:     {newBody: func() body { return new(StockCounted) }},
	KindStockTransferred: {newBody: func() body { return new(StockTransferred) }},
	KindConflictResolved: {newBody: func() body { return new(ConflictResolved) }},
	KindPolicySet:        {managerOnly: true, newBody: func() body { return new(Policy) }},
	KindPriceSet:         {fleetWide: true, managerOnly: true, newBody: func() body { return new(PriceSet) }},
	KindCatalogUpsert:    {fleetWide: true, managerOnly: true, newBody: func() body { return new(CatalogItem) }},
	KindDeviceRevoked:    {fleetWide: true, managerOnly: true, newBody: func() body { return new(DeviceRevoked) }},
	KindAllotSet:         {managerOnly: true, newBody: func() body { return new(AllotSet) }},
	KindAllotTransfer:    {newBody: func() body { return new(AllotTransfer) }},
	KindAllotRequest:     {newBody: func() body { return new(AllotRequest) }},
	KindAllotWriteoff:    {managerOnly: true, newBody: func() body { return new(AllotWriteoff) }},
	KindStoreSet:         {managerOnly: true, newBody: func() body { return new(StoreRecord) }}, // stores.go
}

// body is implemented by every op body; validate checks the fields a
// well-behaved author would have checked before signing.
type body interface{ validate() error }

// versionedBody is a body whose rules depend on its version (an older
// version still decodes); validate checks the version this build writes.
type versionedBody interface {
	body
	validateVersion(v uint16) error
}

// Limits on body fields. They keep counters far from overflow and bound
// what a single op can carry.
const (
	MaxQty       = 1_000_000
	MaxUnitPrice = 100_000_000_00 // minor units
	MaxLines     = 200
)

var (
	skuPattern      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
	methodPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
)

// ValidSKU reports whether s can name a SKU.
func ValidSKU(s string) bool { return skuPattern.MatchString(s) }

// SaleLine is one line of a sale: qty units of sku at unit_price minor units.
type SaleLine struct {
	SKU       string `cbor:"1,keyasint" json:"sku"`
	Qty       int64  `cbor:"2,keyasint" json:"qty"`
	UnitPrice int64  `cbor:"3,keyasint" json:"unit_price"`
}

// Sale is the body of a sale op. Sales are never edited; a refund is its
// own op.
type Sale struct {
	Lines    []SaleLine `cbor:"1,keyasint" json:"lines"`
	Currency string     `cbor:"2,keyasint" json:"currency"`
	Payment  string     `cbor:"3,keyasint" json:"payment"`
	Ref      string     `cbor:"4,keyasint,omitempty" json:"ref,omitempty"`     // the POS's Idempotency-Key
	Offline  bool       `cbor:"5,keyasint,omitempty" json:"offline,omitempty"` // taken while no anchor was reachable
	// ReceiptSeq is the device's sale number (receipts.go), set by Append;
	// 0 in ops written before receipt numbers (body version 1).
	ReceiptSeq uint64 `cbor:"6,keyasint,omitempty" json:"receipt_seq,omitempty"`
}

// Total is the sum of qty × unit price over the lines.
func (s *Sale) Total() int64 {
	var t int64
	for _, l := range s.Lines {
		t += l.Qty * l.UnitPrice
	}
	return t
}

func (s *Sale) validate() error {
	if len(s.Lines) == 0 || len(s.Lines) > MaxLines {
		return fmt.Errorf("sale has %d lines (1..%d)", len(s.Lines), MaxLines)
	}
	for i, l := range s.Lines {
		if err := checkSKUQty(l.SKU, l.Qty); err != nil {
			return fmt.Errorf("line %d: %w", i+1, err)
		}
		if l.UnitPrice < 0 || l.UnitPrice > MaxUnitPrice {
			return fmt.Errorf("line %d: unit price %d out of range", i+1, l.UnitPrice)
		}
	}
	if !currencyPattern.MatchString(s.Currency) {
		return fmt.Errorf("currency %q is not an ISO 4217 code", s.Currency)
	}
	if !methodPattern.MatchString(s.Payment) {
		return fmt.Errorf("payment method %q", s.Payment)
	}
	if len(s.Ref) > 128 {
		return fmt.Errorf("ref longer than 128 bytes")
	}
	return nil
}

// RefundLine returns qty units of sku.
type RefundLine struct {
	SKU string `cbor:"1,keyasint" json:"sku"`
	Qty int64  `cbor:"2,keyasint" json:"qty"`
}

// Refund is a compensating op that references a sale by id.
type Refund struct {
	Sale   string       `cbor:"1,keyasint" json:"sale_id"`
	Lines  []RefundLine `cbor:"2,keyasint" json:"lines"`
	Amount int64        `cbor:"3,keyasint" json:"amount"`
	Ref    string       `cbor:"4,keyasint,omitempty" json:"ref,omitempty"`
	// ReceiptSeq is the device's refund number (receipts.go), set by
	// Append; 0 in ops written before receipt numbers.
	ReceiptSeq uint64 `cbor:"5,keyasint,omitempty" json:"receipt_seq,omitempty"`
}

func (r *Refund) validate() error {
	if r.Sale == "" || len(r.Sale) > 64 {
		return fmt.Errorf("refund names no sale")
	}
	if len(r.Lines) == 0 || len(r.Lines) > MaxLines {
		return fmt.Errorf("refund has %d lines (1..%d)", len(r.Lines), MaxLines)
	}
	for i, l := range r.Lines {
		if err := checkSKUQty(l.SKU, l.Qty); err != nil {
			return fmt.Errorf("line %d: %w", i+1, err)
		}
	}
	if r.Amount < 0 {
		return fmt.Errorf("negative refund amount")
	}
	return nil
}

// StockReceived adds qty units of sku to the op's store.
type StockReceived struct {
	SKU string `cbor:"1,keyasint" json:"sku"`
	Qty int64  `cbor:"2,keyasint" json:"qty"`
	Ref string `cbor:"3,keyasint,omitempty" json:"ref,omitempty"`
}

func (b *StockReceived) validate() error { return checkSKUQty(b.SKU, b.Qty) }

// StockCounted records a physical count: the counter moves by OnHand−Seen,
// the difference from the value the counting device saw.
type StockCounted struct {
	SKU    string `cbor:"1,keyasint" json:"sku"`
	OnHand int64  `cbor:"2,keyasint" json:"on_hand"`
	Seen   int64  `cbor:"3,keyasint" json:"seen"`
	Ref    string `cbor:"4,keyasint,omitempty" json:"ref,omitempty"`
}

func (b *StockCounted) validate() error {
	if !ValidSKU(b.SKU) {
		return fmt.Errorf("bad sku %q", b.SKU)
	}
	if b.OnHand < 0 || b.OnHand > MaxQty*1000 || b.Seen < -MaxQty*1000 || b.Seen > MaxQty*1000 {
		return fmt.Errorf("count out of range")
	}
	return nil
}

// StockTransferred moves qty units of sku between stores. A transfer is two
// ops with the same Transfer id, one in each store's scope; each moves only
// its own store's counter (out of From, into To).
type StockTransferred struct {
	SKU      string `cbor:"1,keyasint" json:"sku"`
	Qty      int64  `cbor:"2,keyasint" json:"qty"`
	From     string `cbor:"3,keyasint" json:"from"`
	To       string `cbor:"4,keyasint" json:"to"`
	Transfer string `cbor:"5,keyasint" json:"transfer"`
}

func (b *StockTransferred) validate() error {
	if err := checkSKUQty(b.SKU, b.Qty); err != nil {
		return err
	}
	if !ValidStoreID(b.From) || !ValidStoreID(b.To) || b.From == b.To {
		return fmt.Errorf("transfer from %q to %q", b.From, b.To)
	}
	if b.Transfer == "" || len(b.Transfer) > 64 {
		return fmt.Errorf("transfer id missing")
	}
	return nil
}

// CatalogItem is a fleet-wide catalog entry (an LWW register per SKU).
type CatalogItem struct {
	SKU       string `cbor:"1,keyasint" json:"sku"`
	Name      string `cbor:"2,keyasint" json:"name"`
	UnitPrice int64  `cbor:"3,keyasint" json:"unit_price"`
	Currency  string `cbor:"4,keyasint" json:"currency"`
	// Stock says whether the SKU's stock is tracked (StockTracked,
	// StockUntracked); "" leaves it to the store: tracked there once any
	// stock op for it exists (conflicts.go).
	Stock string `cbor:"5,keyasint,omitempty" json:"stock,omitempty"`
}

// Values of CatalogItem.Stock.
const (
	StockTracked   = "tracked"   // a negative counter is an oversell
	StockUntracked = "untracked" // a coffee, a service: never oversold
)

func (b *CatalogItem) validate() error {
	if !ValidSKU(b.SKU) {
		return fmt.Errorf("bad sku %q", b.SKU)
	}
	if b.Name == "" || len(b.Name) > 200 {
		return fmt.Errorf("name must be 1..200 bytes")
	}
	if b.UnitPrice < 0 || b.UnitPrice > MaxUnitPrice {
		return fmt.Errorf("unit price %d out of range", b.UnitPrice)
	}
	if !currencyPattern.MatchString(b.Currency) {
		return fmt.Errorf("currency %q is not an ISO 4217 code", b.Currency)
	}
	switch b.Stock {
	case "", StockTracked, StockUntracked:
	default:
		return fmt.Errorf("stock %q: tracked or untracked", b.Stock)
	}
	return nil
}

// PriceSet changes only a SKU's price (an LWW register per SKU).
type PriceSet struct {
	SKU       string `cbor:"1,keyasint" json:"sku"`
	UnitPrice int64  `cbor:"2,keyasint" json:"unit_price"`
	Currency  string `cbor:"3,keyasint" json:"currency"`
}

func (b *PriceSet) validate() error {
	c := CatalogItem{SKU: b.SKU, Name: "-", UnitPrice: b.UnitPrice, Currency: b.Currency}
	return c.validate()
}

// Policy is a store's offline policy (docs/design.md §5), an LWW register per store.
type Policy struct {
	OfflineMethods []string `cbor:"1,keyasint" json:"offline_methods"`
	MaxOfflineSale int64    `cbor:"2,keyasint" json:"max_offline_sale"`  // minor units; 0 = no limit
	MaxOfflineAge  int64    `cbor:"3,keyasint" json:"max_offline_age_s"` // seconds without an anchor before offline card payments stop; 0 = no limit
}

func (b *Policy) validate() error {
	if len(b.OfflineMethods) > 16 {
		return fmt.Errorf("too many offline methods")
	}
	for _, m := range b.OfflineMethods {
		if !methodPattern.MatchString(m) {
			return fmt.Errorf("payment method %q", m)
		}
	}
	if b.MaxOfflineSale < 0 || b.MaxOfflineAge < 0 {
		return fmt.Errorf("negative limit")
	}
	return nil
}

// ConflictResolved closes an open conflict.
type ConflictResolved struct {
	Conflict string `cbor:"1,keyasint" json:"conflict"`
	Action   string `cbor:"2,keyasint" json:"action"` // backorder, substitute, refund, recount, other
	Note     string `cbor:"3,keyasint,omitempty" json:"note,omitempty"`
}

func (b *ConflictResolved) validate() error {
	if b.Conflict == "" || len(b.Conflict) > 200 {
		return fmt.Errorf("conflict id missing")
	}
	switch b.Action {
	case "backorder", "substitute", "refund", "recount", "other":
	default:
		return fmt.Errorf("unknown action %q", b.Action)
	}
	if len(b.Note) > 1000 {
		return fmt.Errorf("note longer than 1000 bytes")
	}
	return nil
}

func checkSKUQty(sku string, qty int64) error {
	if !ValidSKU(sku) {
		return fmt.Errorf("bad sku %q", sku)
	}
	if qty <= 0 || qty > MaxQty {
		return fmt.Errorf("quantity %d out of range (1..%d)", qty, MaxQty)
	}
	return nil
}

// decodeBody decodes and validates an op's body. It returns (nil, nil) for
// an op this build does not understand (unknown kind or newer body version):
// such ops are stored and relayed but not materialised.
func decodeBody(o *Op) (body, error) {
	b, err := decodeBodyOnly(o)
	if err != nil || b == nil {
		return b, err
	}
	if err := fitsStore(o.Store, b); err != nil {
		return nil, reject(ReasonBody, "%s: %v", o.Kind, err)
	}
	return b, nil
}

// decodeStored is decodeBody for an op already in storage: one an older
// build accepted before a rule of fitsStore existed is kept, with no
// effect on the state, rather than reported corrupt.
func decodeStored(o *Op) (body, error) {
	b, err := decodeBodyOnly(o)
	if err != nil || b == nil {
		return b, err
	}
	if fitsStore(o.Store, b) != nil {
		return nil, nil
	}
	return b, nil
}

func decodeBodyOnly(o *Op) (body, error) {
	spec, ok := kinds[o.Kind]
	if !ok || o.BodyV > bodyVersion {
		return nil, nil
	}
	if o.BodyV == 0 {
		return nil, reject(ReasonBody, "%s: body version 0", o.Kind)
	}
	b := spec.newBody()
	if err := crdt.UnmarshalCanonical(o.Body, b); err != nil {
		return nil, reject(ReasonBody, "%s: %v", o.Kind, err)
	}
	check := b.validate
	if vb, ok := b.(versionedBody); ok {
		check = func() error { return vb.validateVersion(o.BodyV) }
	}
	if err := check(); err != nil {
		return nil, reject(ReasonBody, "%s: %v", o.Kind, err)
	}
	return b, nil
}

// fitsStore checks the rules that tie a body to its op's store: a
// transfer op moves stock of its own store, so the store is its From or
// its To.
func fitsStore(store string, b body) error {
	if t, ok := b.(*StockTransferred); ok && store != t.From && store != t.To {
		return fmt.Errorf("transfer from %q to %q in store %q", t.From, t.To, store)
	}
	return nil
}
