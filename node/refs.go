package node

import (
	"context"
	"sync"

	"storemesh/crdt"
	"storemesh/ledger"
)

// Idempotency keys are stored in the op they produced (the body's Ref), so
// a retry finds the first write even after a restart. Sales are found with
// ledger.ByRef; refunds and stock ops, whose bodies the ledger does not
// index for lookup, through refIndex, built from this device's own ops at
// start and kept up to date from the ledger's subscription. The index is
// for idempotency only: refund limits are the ledger's replicated rule.

// refEntry is an op this device wrote with an idempotency key.
type refEntry struct {
	Kind  ledger.Kind
	ID    string
	Store string
	Seq   uint64
	Body  any // *ledger.Refund, *ledger.StockReceived or *ledger.StockCounted
}

type refIndex struct {
	self string
	mu   sync.Mutex
	m    map[string]refEntry
}

// buildRefs reads this device's own ops once (as the ledger's own replay
// does) for their keys. Nothing is written while it runs: the mesh and the
// API start after it. What a sale has left to refund is the ledger's
// (ledger.Refunds), not this index's.
func buildRefs(ctx context.Context, l *ledger.Ledger, self string) (*refIndex, error) {
	x := &refIndex{self: self, m: map[string]refEntry{}}
	for _, scope := range l.Scopes() {
		err := l.Ops(ctx, scope, crdt.VersionVector{}, 1<<20, func(batch []ledger.RawOp) error {
			for _, r := range batch {
				o, err := ledger.DecodeOp(r.Bytes)
				if err != nil {
					return err
				}
				x.add(o)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return x, nil
}

// add indexes o if it is one of our own ops with a key. Safe on the
// ledger's committing goroutine: it only decodes and takes a short lock.
// An op may be added more than once (the handler that wrote it, and the
// subscription): the first write with a key is the one retries get.
func (x *refIndex) add(o *ledger.Op) {
	if ledger.ChainOwner(o.Device) != x.self {
		return
	}
	var body any
	var ref string
	switch o.Kind {
	case ledger.KindRefund:
		b := new(ledger.Refund)
		if crdt.Unmarshal(o.Body, b) != nil {
			return
		}
		body, ref = b, b.Ref
	case ledger.KindStockReceived:
		b := new(ledger.StockReceived)
		if crdt.Unmarshal(o.Body, b) != nil {
			return
		}
		body, ref = b, b.Ref
	case ledger.KindStockCounted:
		b := new(ledger.StockCounted)
		if crdt.Unmarshal(o.Body, b) != nil {
			return
		}
		body, ref = b, b.Ref
	default:
		return
	}
	if ref == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.m[ref]; !ok {
		x.m[ref] = refEntry{Kind: o.Kind, ID: o.ID(), Store: o.Store, Seq: o.Seq, Body: body}
	}
}

func (x *refIndex) get(ref string) (refEntry, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.m[ref]
	return e, ok
}

// priorWrite finds what this device already wrote with key: a sale
// (saleID set) or another op (entry set).
func (n *Node) priorWrite(key string) (saleID string, entry refEntry, found bool) {
	if key == "" {
		return "", refEntry{}, false
	}
	if id, ok := n.l.ByRef(n.self.Device, key); ok {
		if _, isSale := n.l.Sale(id); isSale {
			return id, refEntry{}, true
		}
	}
	if e, ok := n.refs.get(key); ok {
		return "", e, true
	}
	return "", refEntry{}, false
}

// keyLocks serialises requests that carry the same idempotency key, so two
// concurrent retries cannot both miss the first write and write twice.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks key ("" locks nothing) and returns the unlock function.
func (k *keyLocks) lock(key string) func() {
	if key == "" {
		return func() {}
	}
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
