package ledger

import (
	"errors"
	"fmt"
	"strings"

	"storemesh/crdt"
)

// Stock allotments (docs/design.md §5, issue 14): an allotted SKU's units in a
// store are a bounded counter (crdt.BCounter) whose rights are held by
// devices; a device sells only units it holds, checked on its own state,
// so a scarce item is never oversold, offline included.
//
// How the state stays order-free: every entry of the counter is derived
// from signed ops, each contributing to an entry owned by its author.
//
//   - allot.set (manager or anchor, an LWW register per (store, sku)) turns
//     allotment on or off. Its body names the writer's version vector of
//     the store (Seen). Under the winning allot.set (its op id is the
//     epoch), each stock movement of the SKU — a sale line, a receipt, a
//     count's delta, a store transfer, and the refund units honoured
//     against a sale (refunds.go), which count as a movement of the sale
//     itself — counts as follows:
//     a movement the writer had seen (seq ≤ Seen[chain]) is the writer's
//     (positive ones mint to it, negative ones use from it); any later
//     movement is its author's own (a receipt mints to the receiving
//     device, a sale uses the seller's rights).
//   - allot.transfer (the giver, on its own rights) hands units to a
//     device; allot.writeoff (manager or anchor) reclaims the units a gone
//     device holds, credited to the writer; allot.request asks for units.
//     Each names the epoch it belongs to and is ignored under another.
//
// Totals stay exact across a conversion by construction: every movement
// counts exactly once, on one side of the writer's Seen, so the counter's
// Value equals the ordinary stock counter (on_hand) at every replica, in
// every order. Turning allotment off simply stops consulting the counter.
//
// Entries are keyed by ChainOwner(device), so a device's later epoch
// (PEERID~2) keeps the rights of its earlier one.

// The allotment op kinds.
const (
	KindAllotSet      Kind = "allot.set"
	KindAllotTransfer Kind = "allot.transfer"
	KindAllotRequest  Kind = "allot.request"
	KindAllotWriteoff Kind = "allot.writeoff"
)

// ErrAllotmentExhausted refuses a local sale (or hand-over) of an allotted
// SKU beyond the units this device holds. The *AllotmentError carrying it
// says where units are.
var ErrAllotmentExhausted = errors.New("ledger: allotment exhausted on this device")

// AllotmentError is ErrAllotmentExhausted with the figures.
type AllotmentError struct {
	Store, SKU string
	Want, Here int64
	Elsewhere  []AllotHolding // devices holding units, most first
}

func (e *AllotmentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "allotment of %s exhausted here: %d wanted, %d held here", e.SKU, e.Want, e.Here)
	if len(e.Elsewhere) == 0 {
		b.WriteString("; no units anywhere else")
	} else {
		b.WriteString("; ")
		for i, h := range e.Elsewhere {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d at %s", h.Units, h.Label())
		}
	}
	return b.String()
}

func (e *AllotmentError) Unwrap() error { return ErrAllotmentExhausted }

// MaxAllotSeen bounds the version vector an allot.set carries.
const MaxAllotSeen = 4096

// AllotSet turns allotment of a SKU in the op's store on or off. Seen is
// the writer's version vector of the store when it wrote: stock movements
// it covers count as the writer's (its view of on_hand becomes its
// rights), later ones as their authors'.
type AllotSet struct {
	SKU      string            `cbor:"1,keyasint" json:"sku"`
	Allotted bool              `cbor:"2,keyasint" json:"allotted"`
	Seen     map[string]uint64 `cbor:"3,keyasint,omitempty" json:"seen,omitempty"`
}

func (b *AllotSet) validate() error {
	if !ValidSKU(b.SKU) {
		return fmt.Errorf("bad sku %q", b.SKU)
	}
	if len(b.Seen) > MaxAllotSeen {
		return fmt.Errorf("seen names %d devices (max %d)", len(b.Seen), MaxAllotSeen)
	}
	for d := range b.Seen {
		if d == "" || len(d) > 128 {
			return fmt.Errorf("bad device in seen")
		}
	}
	return nil
}

// AllotTransfer hands Qty units of the giver's rights to device To.
type AllotTransfer struct {
	SKU   string `cbor:"1,keyasint" json:"sku"`
	Epoch string `cbor:"2,keyasint" json:"epoch"`
	To    string `cbor:"3,keyasint" json:"to"`
	Qty   int64  `cbor:"4,keyasint" json:"qty"`
}

func (b *AllotTransfer) validate() error {
	if err := checkSKUQty(b.SKU, b.Qty); err != nil {
		return err
	}
	if b.Epoch == "" || len(b.Epoch) > 64 {
		return fmt.Errorf("epoch missing")
	}
	if b.To == "" || len(b.To) > 128 || b.To != ChainOwner(b.To) {
		return fmt.Errorf("bad recipient %q", b.To)
	}
	return nil
}

// AllotRequest says: the author wants Want more units. Received is the
// author's Received total when it asked; the request is answered once the
// author has received more than that.
type AllotRequest struct {
	SKU      string `cbor:"1,keyasint" json:"sku"`
	Epoch    string `cbor:"2,keyasint" json:"epoch"`
	Want     int64  `cbor:"3,keyasint" json:"want"`
	Received uint64 `cbor:"4,keyasint" json:"received"`
}

func (b *AllotRequest) validate() error {
	if err := checkSKUQty(b.SKU, b.Want); err != nil {
		return err
	}
	if b.Epoch == "" || len(b.Epoch) > 64 {
		return fmt.Errorf("epoch missing")
	}
	return nil
}

// AllotWriteoff reclaims Units of Device's rights (a revoked, lost or long
// silent device), credited to the writer, the store's bank. Seq is the
// last op of Device (in its chain Chain) the writer had seen: what Device
// did with its rights up to there was counted; anything it did after, on
// units now reclaimed, drives its rights negative and is flagged as an
// overspend (AllotStatus.Overspent), every replica alike.
type AllotWriteoff struct {
	SKU    string `cbor:"1,keyasint" json:"sku"`
	Epoch  string `cbor:"2,keyasint" json:"epoch"`
	Device string `cbor:"3,keyasint" json:"device"`
	Units  int64  `cbor:"4,keyasint" json:"units"`
	Chain  string `cbor:"5,keyasint,omitempty" json:"chain,omitempty"`
	Seq    uint64 `cbor:"6,keyasint,omitempty" json:"seq,omitempty"`
	Reason string `cbor:"7,keyasint,omitempty" json:"reason,omitempty"`
}

func (b *AllotWriteoff) validate() error {
	if err := checkSKUQty(b.SKU, b.Units); err != nil {
		return err
	}
	if b.Epoch == "" || len(b.Epoch) > 64 {
		return fmt.Errorf("epoch missing")
	}
	if b.Device == "" || len(b.Device) > 128 || b.Device != ChainOwner(b.Device) || len(b.Chain) > 140 {
		return fmt.Errorf("bad device %q", b.Device)
	}
	if len(b.Reason) > 500 {
		return fmt.Errorf("reason longer than 500 bytes")
	}
	return nil
}

// allotMove is one stock movement of a (store, sku) in one chain: the op's
// seq and its signed delta (16 bytes a movement; kept per chain id).
type allotMove struct {
	seq   uint64
	delta int64
}

// allotConv is the value of the allot.set register.
type allotConv struct {
	ID, By string // op id (the epoch) and ChainOwner of its author
	Set    AllotSet
}

type allotAct struct {
	kind   Kind
	author string // ChainOwner
	chain  string
	seq    uint64
	hlc    crdt.Timestamp
	body   body
}

// allotSKU is everything known about one (store, sku) for allotments.
type allotSKU struct {
	conv  crdt.LWW[allotConv]
	moves map[string][]allotMove // chain id → its movements, in seq order
	acts  []allotAct             // transfers, requests, write-offs of every epoch
	calc  *allotCalc             // derived for conv's epoch; nil until asked for or after conv changed
}

// allotCalc is the counter under the epoch in force.
type allotCalc struct {
	epoch    string
	bc       crdt.BCounter
	requests map[string]allotAct // device → its latest request (by hlc) in the epoch
}

func (a *allotSKU) allotted() bool { return a != nil && a.conv.IsSet() && a.conv.Value.Set.Allotted }

// counter returns the derived counter of the epoch in force, building it
// from the moves and acts when needed.
func (a *allotSKU) counter() *allotCalc {
	if a.calc != nil && a.calc.epoch == a.conv.Value.ID {
		return a.calc
	}
	c := &allotCalc{epoch: a.conv.Value.ID, requests: map[string]allotAct{}}
	a.calc = c
	for chain, ms := range a.moves {
		for _, m := range ms {
			a.addMove(chain, m)
		}
	}
	for _, x := range a.acts {
		a.addAct(x)
	}
	return c
}

func (a *allotSKU) addMove(chain string, m allotMove) {
	c := a.calc
	owner := ChainOwner(chain)
	if s := a.conv.Value.Set.Seen; m.seq <= s[chain] {
		owner = a.conv.Value.By
	}
	if m.delta > 0 {
		c.bc.Mint(owner, uint64(m.delta))
	} else if m.delta < 0 {
		c.bc.AddUse(owner, uint64(-m.delta))
	}
}

func (a *allotSKU) addAct(x allotAct) {
	c := a.calc
	switch b := x.body.(type) {
	case *AllotTransfer:
		if b.Epoch == c.epoch && b.To != x.author {
			c.bc.AddTransfer(x.author, b.To, uint64(b.Qty))
		}
	case *AllotWriteoff:
		if b.Epoch == c.epoch && b.Device != x.author {
			c.bc.AddReclaim(x.author, b.Device, uint64(b.Units))
		}
	case *AllotRequest:
		if b.Epoch == c.epoch {
			if have, ok := c.requests[x.author]; !ok || have.hlc.Less(x.hlc) {
				c.requests[x.author] = x
			}
		}
	}
}

// allotBook is the state's allotment part: every (store, sku) with a stock
// movement or an allotment op, and the set of those allotted now.
type allotBook struct {
	skus map[stockKey]*allotSKU
	on   map[stockKey]bool
}

func (s *state) allotOf(store, sku string) *allotSKU {
	if s.allot.skus == nil {
		s.allot.skus = map[stockKey]*allotSKU{}
		s.allot.on = map[stockKey]bool{}
	}
	k := stockKey{store, sku}
	a := s.allot.skus[k]
	if a == nil {
		a = &allotSKU{}
		s.allot.skus[k] = a
	}
	return a
}

func (s *state) allotMoved(o *Op, sku string, delta int64) {
	s.allotMovedAt(o.Store, o.Device, o.Seq, sku, delta)
}

// allotMovedAt records a movement of (store, sku) made by op (chain, seq).
func (s *state) allotMovedAt(store, chain string, seq uint64, sku string, delta int64) {
	a := s.allotOf(store, sku)
	m := allotMove{seq: seq, delta: delta}
	if a.moves == nil {
		a.moves = map[string][]allotMove{}
	}
	a.moves[chain] = append(a.moves[chain], m)
	if a.calc != nil && a.calc.epoch == a.conv.Value.ID {
		a.addMove(chain, m)
	}
}

// allotApply is state.apply's hook: it records every stock movement and
// allotment op. It is a function of the set of ops, not their order.
func (s *state) allotApply(o *Op, b body) {
	switch b := b.(type) {
	case *Sale:
		for _, l := range b.Lines {
			s.allotMoved(o, l.SKU, -l.Qty)
		}
	case *StockReceived:
		s.allotMoved(o, b.SKU, b.Qty)
	case *StockCounted:
		if d := b.OnHand - b.Seen; d != 0 {
			s.allotMoved(o, b.SKU, d)
		}
	case *StockTransferred:
		if o.Store == b.From {
			s.allotMoved(o, b.SKU, -b.Qty)
		} else {
			s.allotMoved(o, b.SKU, b.Qty)
		}
	case *AllotSet:
		a := s.allotOf(o.Store, b.SKU)
		if a.conv.Set(allotConv{ID: o.ID(), By: ChainOwner(o.Device), Set: *b}, o.HLC, o.Device) {
			a.calc = nil
			if k := (stockKey{o.Store, b.SKU}); b.Allotted {
				s.allot.on[k] = true
			} else {
				delete(s.allot.on, k)
			}
		}
	case *AllotTransfer, *AllotRequest, *AllotWriteoff:
		var sku string
		switch b := b.(type) {
		case *AllotTransfer:
			sku = b.SKU
		case *AllotRequest:
			sku = b.SKU
		case *AllotWriteoff:
			sku = b.SKU
		}
		a := s.allotOf(o.Store, sku)
		x := allotAct{kind: o.Kind, author: ChainOwner(o.Device), chain: o.Device, seq: o.Seq, hlc: o.HLC, body: b}
		a.acts = append(a.acts, x)
		if a.calc != nil && a.calc.epoch == a.conv.Value.ID {
			a.addAct(x)
		}
	}
}
