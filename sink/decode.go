package sink

import (
	"encoding/hex"
	"math/big"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
)

// KindDayClosed is the kind a day close (Z report) op will carry. The
// ledger does not define it yet; sinks route it by name so a day close
// reaches PostgreSQL and MQTT as soon as it exists.
const KindDayClosed ledger.Kind = "day.closed"

// Op is one op as the sinks see it: the envelope, the device that owns
// its chain, and the decoded body (nil for a kind or body version this
// build does not know; Body is then BodyHex).
type Op struct {
	*ledger.Op
	Owner string // ledger.ChainOwner(Device): the certificate's device
	At    time.Time
	Body  any // *ledger.Sale, *ledger.Refund, ... or nil
}

// Decode decodes o's body into the ledger's body types. An op whose body
// does not decode (unknown kind, newer version) keeps Body nil: it is
// still written, as raw bytes.
func Decode(o *ledger.Op) Op {
	s := Op{Op: o, Owner: ledger.ChainOwner(o.Device), At: time.Unix(0, o.HLC.Wall).UTC()}
	var b any
	switch o.Kind {
	case ledger.KindSale:
		b = new(ledger.Sale)
	case ledger.KindRefund:
		b = new(ledger.Refund)
	case ledger.KindStockReceived:
		b = new(ledger.StockReceived)
	case ledger.KindStockCounted:
		b = new(ledger.StockCounted)
	case ledger.KindStockTransferred:
		b = new(ledger.StockTransferred)
	case ledger.KindPriceSet:
		b = new(ledger.PriceSet)
	case ledger.KindCatalogUpsert:
		b = new(ledger.CatalogItem)
	case ledger.KindPolicySet:
		b = new(ledger.Policy)
	case ledger.KindConflictResolved:
		b = new(ledger.ConflictResolved)
	case ledger.KindDeviceRevoked:
		b = new(ledger.DeviceRevoked)
	case ledger.KindStoreSet:
		b = new(ledger.StoreRecord)
	default:
		return s
	}
	// Any version this build can read: a newer body carries fields this
	// build does not know, is then not canonical to it, and stays raw.
	if o.BodyV == 0 {
		return s
	}
	if err := crdt.UnmarshalCanonical(o.Body, b); err != nil {
		return s
	}
	s.Body = b
	return s
}

// Day is the business day of the op: the UTC date of its HLC. Stores have
// no time zone yet; when they do, this becomes the store's local date.
func (o Op) Day() string { return o.At.Format(time.DateOnly) }

// BodyHex is the op's body as hex CBOR, for ops Decode did not understand.
func (o Op) BodyHex() string { return hex.EncodeToString(o.Op.Body) }

// StockDelta is how a stock op moves its own store's counter: +qty for a
// receipt, on_hand-seen for a count, -qty out of and +qty into a store for
// a transfer. ok is false for other ops.
func (o Op) StockDelta() (sku string, delta int64, ok bool) {
	switch b := o.Body.(type) {
	case *ledger.StockReceived:
		return b.SKU, b.Qty, true
	case *ledger.StockCounted:
		return b.SKU, b.OnHand - b.Seen, true
	case *ledger.StockTransferred:
		switch o.Store {
		case b.From:
			return b.SKU, -b.Qty, true
		case b.To:
			return b.SKU, b.Qty, true
		}
	}
	return "", 0, false
}

// RefundLineAmounts splits a refund's amount over its lines: each line at
// the unit price its SKU had on the sale (when the sale is known), the
// last line taking what rounding leaves so the lines add up to the
// refund's amount; without the sale, by quantity.
func RefundLineAmounts(r *ledger.Refund, sale *ledger.Sale) []int64 {
	out := make([]int64, len(r.Lines))
	if len(out) == 0 {
		return out
	}
	price := map[string]int64{}
	if sale != nil {
		for _, l := range sale.Lines {
			if _, ok := price[l.SKU]; !ok {
				price[l.SKU] = l.UnitPrice
			}
		}
	}
	var weights, total int64
	for i, l := range r.Lines {
		p, ok := price[l.SKU]
		if !ok {
			p = 1
		}
		out[i] = l.Qty * p
		weights += out[i]
	}
	if weights == r.Amount { // the usual case: priced at the sale's prices
		return out
	}
	for i := range out {
		if weights > 0 { // in big integers: qty × price × amount may not fit 64 bits
			v := new(big.Int).Mul(big.NewInt(out[i]), big.NewInt(r.Amount))
			out[i] = v.Quo(v, big.NewInt(weights)).Int64()
		} else {
			out[i] = 0
		}
		total += out[i]
	}
	out[len(out)-1] += r.Amount - total
	return out
}
