package mqtt

import (
	"encoding/json"
	"fmt"
	"time"

	"storemesh/ledger"
	"storemesh/sink"
)

// payloadVersion is the "v" of every payload; docs/mqtt.md describes v 1.
const payloadVersion = 1

// Topics under the prefix (docs/mqtt.md).
const (
	TopicSaleCreated    = "pos/sale.created"
	TopicRefundCreated  = "pos/refund.created"
	TopicStockAdjusted  = "inventory/adjusted"
	TopicConflictOpened = "conflict/opened"
	TopicConflictClosed = "conflict/resolved"
	TopicDayClosed      = "day/closed"
	TopicHealth         = "health.status"
)

func (t *Target) topic(parts ...string) string {
	s := ""
	if t.cfg.Prefix != "" {
		s = t.cfg.Prefix + "/"
	}
	for i, p := range parts {
		if i > 0 {
			s += "/"
		}
		s += p
	}
	return s
}

func (t *Target) storeTopic(store, what string) string { return t.topic("store", store, what) }

// opHeader is what every op payload starts with: the op id consumers
// de-duplicate on, and where the op comes from.
type opHeader struct {
	V      int       `json:"v"`
	OpID   string    `json:"op_id"`
	Kind   string    `json:"kind"`
	Store  string    `json:"store"`
	Device string    `json:"device"`
	Chain  string    `json:"chain,omitempty"` // the op's chain when it is a later epoch of the device
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
}

func header(o sink.Op) opHeader {
	h := opHeader{V: payloadVersion, OpID: o.ID(), Kind: string(o.Kind), Store: o.Store, Device: o.Owner, Seq: o.Seq, At: o.At}
	if o.Device != o.Owner {
		h.Chain = o.Device
	}
	return h
}

type salePayload struct {
	opHeader
	Receipt  string            `json:"receipt_no"`
	Currency string            `json:"currency"`
	Payment  string            `json:"payment"`
	Total    int64             `json:"total"`
	Offline  bool              `json:"offline"`
	Lines    []ledger.SaleLine `json:"lines"`
}

type refundPayload struct {
	opHeader
	SaleID string              `json:"sale_id"`
	Amount int64               `json:"amount"`
	Lines  []ledger.RefundLine `json:"lines"`
}

type stockPayload struct {
	opHeader
	SKU      string `json:"sku"`
	Delta    int64  `json:"delta"`
	OnHand   *int64 `json:"on_hand,omitempty"` // stock.counted: the count
	Transfer string `json:"transfer_id,omitempty"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
}

type resolvedPayload struct {
	opHeader
	ConflictID string `json:"conflict_id"`
	Action     string `json:"action"`
	Note       string `json:"note,omitempty"`
}

type dayClosedPayload struct {
	opHeader
	Body    any    `json:"body,omitempty"`
	BodyHex string `json:"body_cbor_hex,omitempty"`
}

// opMessage is the event for one op; ok is false for kinds with no topic
// (catalog, prices, policy, revocations: fleet-wide configuration).
func (t *Target) opMessage(o sink.Op) (message, bool) {
	if o.Store == ledger.FleetScope {
		return message{}, false
	}
	var topic string
	var p any
	switch b := o.Body.(type) {
	case *ledger.Sale:
		sp := salePayload{opHeader: header(o), Receipt: ledger.ReceiptNo(o.Device, o.Seq), Currency: b.Currency, Payment: b.Payment,
			Total: b.Total(), Offline: b.Offline, Lines: b.Lines}
		topic, p = TopicSaleCreated, sp
	case *ledger.Refund:
		topic, p = TopicRefundCreated, refundPayload{opHeader: header(o), SaleID: b.Sale, Amount: b.Amount, Lines: b.Lines}
	case *ledger.ConflictResolved:
		topic, p = TopicConflictClosed, resolvedPayload{opHeader: header(o), ConflictID: b.Conflict, Action: b.Action, Note: b.Note}
	default:
		if sku, delta, ok := o.StockDelta(); ok {
			sp := stockPayload{opHeader: header(o), SKU: sku, Delta: delta}
			switch b := o.Body.(type) {
			case *ledger.StockCounted:
				sp.OnHand = &b.OnHand
			case *ledger.StockTransferred:
				sp.Transfer, sp.From, sp.To = b.Transfer, b.From, b.To
			}
			topic, p = TopicStockAdjusted, sp
		} else if o.Kind == sink.KindDayClosed {
			dp := dayClosedPayload{opHeader: header(o), Body: o.Body}
			if o.Body == nil {
				dp.BodyHex = o.BodyHex()
			}
			topic, p = TopicDayClosed, dp
		} else {
			return message{}, false
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return message{}, false
	}
	return message{topic: t.storeTopic(o.Store, topic), payload: b}, true
}

type conflictPayload struct {
	V          int    `json:"v"`
	ConflictID string `json:"conflict_id"`
	SaleID     string `json:"sale_id"` // the oversold sale (its op id)
	Kind       string `json:"kind"`
	Store      string `json:"store"`
	SKU        string `json:"sku"`
	Device     string `json:"device"`
	Seq        uint64 `json:"seq"`
	Oversold   int64  `json:"oversold"`
	OnHand     int64  `json:"on_hand"`
}

func (t *Target) conflictMessage(c ledger.Conflict) message {
	b, _ := json.Marshal(conflictPayload{V: payloadVersion, ConflictID: c.ID, SaleID: c.Sale, Kind: c.Kind, Store: c.Store,
		SKU: c.SKU, Device: c.Device, Seq: c.Seq, Oversold: c.Oversold, OnHand: c.OnHand})
	return message{topic: t.storeTopic(c.Store, TopicConflictOpened), payload: b}
}

type healthPayload struct {
	V           int        `json:"v"`
	Device      string     `json:"device"`
	Name        string     `json:"name"`
	Store       string     `json:"store"`
	Role        string     `json:"role"`
	LastContact *time.Time `json:"last_contact"` // null: the anchor has not heard from it directly
	LagSeconds  *float64   `json:"lag_s"`        // seconds since last_contact when published
	OpsHeld     uint64     `json:"ops_held"`     // ops of its own chain in its store the anchor holds
	Forked      bool       `json:"forked"`
	Revoked     bool       `json:"revoked"`
	At          time.Time  `json:"at"`
}

// healthMessages are the retained statuses that changed since published:
// a status changes when its contact moves by a tick's worth (10 s), or its
// ops, fork or revocation change.
func (t *Target) healthMessages() ([]message, map[string]string) {
	l := t.cfg.Ledger
	now := t.cfg.Now()
	var contact map[string]time.Time
	if t.cfg.LastContact != nil {
		contact = t.cfg.LastContact()
	}
	forked := map[string]bool{}
	for _, f := range l.Forks() {
		forked[ledger.ChainOwner(f.Device)] = true
	}
	var msgs []message
	fps := map[string]string{}
	seen := map[string]bool{}
	for _, c := range l.Certificates() {
		if seen[c.Device] || c.Device == l.Self().Device {
			continue
		}
		seen[c.Device] = true
		p := healthPayload{V: payloadVersion, Device: c.Device, Name: c.Name, Store: c.Store, Role: string(c.Role),
			Forked: forked[c.Device], Revoked: l.Revoked(c.Device), At: now.UTC()}
		if c.Store != ledger.FleetScope {
			p.OpsHeld = l.Seq(c.Store, c.Device)
		}
		var bucket int64
		if lc, ok := contact[c.Device]; ok && !lc.IsZero() {
			u := lc.UTC()
			lag := now.Sub(lc).Seconds()
			p.LastContact, p.LagSeconds = &u, &lag
			bucket = lc.Unix() / 10
		}
		fp := fmt.Sprintf("%d/%d/%v/%v/%s/%s", bucket, p.OpsHeld, p.Forked, p.Revoked, p.Store, p.Name)
		if t.health[c.Device] == fp {
			continue
		}
		b, _ := json.Marshal(p)
		msgs = append(msgs, message{topic: t.topic("fleet", c.Device, TopicHealth), payload: b, retained: true})
		fps[c.Device] = fp
	}
	return msgs, fps
}
