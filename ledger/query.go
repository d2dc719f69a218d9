package ledger

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	ds "github.com/ipfs/go-datastore"

	"storemesh/crdt"
)

// VersionVector returns a copy of the durable version vector of scope:
// per device, the highest contiguous seq held. It doubles as the
// acknowledgement a peer sends: everything it covers is on disk here.
func (l *Ledger) VersionVector(scope string) crdt.VersionVector {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.vv[scope].Clone()
}

// VersionSum is the sum of VersionVector(scope), without copying it: it
// grows whenever the vector does.
func (l *Ledger) VersionSum(scope string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.vv[scope].Sum()
}

// Seq returns the highest contiguous seq held from device in scope.
func (l *Ledger) Seq(scope, device string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.vv[scope][device]
}

// Lacks lists the ranges theirs holds in scope that this replica does not:
// what to pull from a peer that advertised theirs. It copies nothing when
// nothing is missing (sync asks on every tick).
func (l *Ledger) Lacks(scope string, theirs crdt.VersionVector) []crdt.Range {
	l.mu.Lock()
	defer l.mu.Unlock()
	return theirs.Missing(l.vv[scope])
}

// EachHead calls fn with every device of scope, its version vector entry
// and the hash of the first op placed there, under the ledger's lock (fn
// must not call the ledger), until fn returns false. all is whether fn
// always returned true; forked whether any chain of scope is forked. Sync
// asks it of every peer every summary period: it copies nothing.
func (l *Ledger) EachHead(scope string, fn func(device string, seq uint64, head *Hash) bool) (all, forked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	forked = l.forked[scope] > 0
	for d, seq := range l.vv[scope] {
		c := l.chains[chainKey{scope, d}]
		if seq == 0 || c == nil {
			continue
		}
		if !fn(d, seq, &c.main[seq-1]) {
			return false, forked
		}
	}
	return true, forked
}

// HasScope reports whether this replica holds scope: its own store,
// FleetScope, or a store it has data of.
func (l *Ledger) HasScope(scope string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.vv[scope]
	return ok || scope == FleetScope || (l.cfg.Self != nil && scope == l.cfg.Self.Store)
}

// Scopes lists the scopes this replica holds data for, plus its own store
// and FleetScope, sorted.
func (l *Ledger) Scopes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	set := map[string]bool{FleetScope: true}
	if l.cfg.Self != nil && l.cfg.Self.Store != FleetScope {
		set[l.cfg.Self.Store] = true
	}
	for s := range l.vv {
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Certificate returns the certificates known for device.
func (l *Ledger) Certificate(device string) []*Certificate {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.certs[device])
}

// Certificates returns every known certificate, ordered by device.
func (l *Ledger) Certificates() []*Certificate {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*Certificate
	for _, cs := range l.certs {
		out = append(out, cs...)
	}
	slices.SortFunc(out, func(a, b *Certificate) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Expiry, b.Expiry))
	})
	return out
}

// Revoked reports whether device has been revoked fleet-wide.
func (l *Ledger) Revoked(device string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.st.revoked[device]
	return ok
}

// Stock lists the counters of scope (every store when scope is ""),
// sorted by store then SKU.
func (l *Ledger) Stock(scope string) []StockItem {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []StockItem
	for k, e := range l.st.stock {
		if scope == "" || k.store == scope {
			out = append(out, StockItem{Store: k.store, SKU: k.sku, OnHand: e.value()})
		}
	}
	slices.SortFunc(out, func(a, b StockItem) int { return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.SKU, b.SKU)) })
	return out
}

// OnHand returns the counter of (store, sku).
func (l *Ledger) OnHand(store, sku string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.st.stock[stockKey{store, sku}]; e != nil {
		return e.value()
	}
	return 0
}

// Sales lists the sale log of scope (every store when ""), ordered by
// (hlc, device, seq).
func (l *Ledger) Sales(scope string) []SaleRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.st.sales)
	if scope != "" {
		n = 0
	}
	out := make([]SaleRecord, 0, n)
	for _, r := range l.st.sales { // the sale log's records, one per id
		if scope == "" || r.Store == scope {
			out = append(out, *r)
			out[len(out)-1].Receipt = l.saleReceipt(r.Device, r.Seq, r.ReceiptSeq)
		}
	}
	slices.SortFunc(out, func(a, b SaleRecord) int {
		return cmp.Or(a.HLC.Compare(b.HLC), cmp.Compare(a.Device, b.Device), cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// SaleIDs lists the ids in the sale log of scope (every store when ""),
// in no particular order: Sales without the copies and the sort.
func (l *Ledger) SaleIDs(scope string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.st.sales))
	for id, r := range l.st.sales {
		if scope == "" || r.Store == scope {
			out = append(out, id)
		}
	}
	return out
}

// Sale returns a sale by id.
func (l *Ledger) Sale(id string) (SaleRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.st.sales[id]
	if !ok {
		return SaleRecord{}, false
	}
	out := *r
	out.Receipt = l.saleReceipt(r.Device, r.Seq, r.ReceiptSeq)
	return out, true
}

// ByRef returns the id of the sale or refund device wrote with ref (the
// POS's Idempotency-Key), so a retried request finds the first one.
func (l *Ledger) ByRef(device, ref string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.st.byRef[device+"\x00"+ref]
	return id, ok
}

// Catalog returns the catalog, with each SKU's price the latest of its
// catalog entry and price.set ops, sorted by SKU.
func (l *Ledger) Catalog() []CatalogItem {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]CatalogItem, 0, len(l.st.catalog))
	for sku, r := range l.st.catalog {
		item := r.Value
		if p := l.st.prices[sku]; p != nil && (r.TS.Less(p.TS) || (r.TS == p.TS && r.Device < p.Device)) {
			item.UnitPrice, item.Currency = p.Value.UnitPrice, p.Value.Currency
		}
		out = append(out, item)
	}
	slices.SortFunc(out, func(a, b CatalogItem) int { return cmp.Compare(a.SKU, b.SKU) })
	return out
}

// Policy returns the offline policy of store, if one was set.
func (l *Ledger) Policy(store string) (Policy, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.st.policy[store]; r != nil {
		return r.Value, true
	}
	return Policy{}, false
}

// Conflicts lists the oversells and over-refunds of scope ("" for every
// store), resolved ones included with their resolution, sorted by id.
func (l *Ledger) Conflicts(scope string) []Conflict {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.conflicts(scope)
}

// OpenConflicts counts the conflicts of scope ("" for every store) not
// yet resolved, without listing them.
func (l *Ledger) OpenConflicts(scope string) (open, resolved int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	count := func(c *Conflict, r bool) {
		if r {
			resolved++
		} else {
			open++
		}
	}
	if scope != "" {
		l.st.eachConflict(scope, count)
		return open, resolved
	}
	l.st.settle()
	for _, st := range l.st.conflictStores() {
		l.st.eachConflict(st, count)
	}
	return open, resolved
}

// Fork describes a device with more than one op at some seq.
type Fork struct {
	Store  string   `json:"store"`
	Device string   `json:"device"`
	Seqs   []uint64 `json:"seqs"`
}

// Forks lists every flagged device, sorted.
func (l *Ledger) Forks() []Fork {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Fork
	for k, c := range l.chains {
		if !c.forked() {
			continue
		}
		f := Fork{Store: k.scope, Device: k.device}
		for s := range c.extra {
			f.Seqs = append(f.Seqs, s)
		}
		slices.Sort(f.Seqs)
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Fork) int { return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.Device, b.Device)) })
	return out
}

// ForkDigests returns, for each forked device of scope, a hash over all of
// its ops. Peers compare them to find a branch one of them lacks.
func (l *Ledger) ForkDigests(scope string) map[string]Hash {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.forked[scope] == 0 {
		return nil // a nil map reads as empty; most scopes have no fork
	}
	out := map[string]Hash{}
	for d, seq := range l.vv[scope] { // every chain of scope has an entry
		if c := l.chains[chainKey{scope, d}]; c != nil && c.forked() {
			out[d] = c.digest(seq)
		}
	}
	return out
}

// Heads returns, per device of scope, the hash of the first op placed at
// its version vector entry: peers compare heads to notice two branches of
// one device that reached the same seq.
func (l *Ledger) Heads(scope string) map[string]Hash {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]Hash{}
	for d, seq := range l.vv[scope] {
		if c := l.chains[chainKey{scope, d}]; c != nil && seq > 0 {
			out[d] = c.main[seq-1]
		}
	}
	return out
}

// HoldsOp reports whether the op with hash h is placed at (scope, device,
// seq). It allocates nothing.
func (l *Ledger) HoldsOp(scope, device string, seq uint64, h Hash) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.chains[chainKey{scope, device}]
	return c != nil && seq <= l.vv[scope][device] && seq <= c.length() && c.has(seq, h)
}

// HashesAt returns the hashes of every op placed at (scope, device, seq).
func (l *Ledger) HashesAt(scope, device string, seq uint64) []Hash {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.chains[chainKey{scope, device}]; c != nil && seq <= l.vv[scope][device] {
		return c.at(seq)
	}
	return nil
}

// HoldsAt reports whether this replica holds any op at (scope, device,
// seq), and whether one of them has a hash starting with prefix (a peer's
// short head). It allocates nothing: sync asks for every head of every
// summary.
func (l *Ledger) HoldsAt(scope, device string, seq uint64, prefix []byte) (held, match bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.chains[chainKey{scope, device}]
	if c == nil || seq == 0 || seq > l.vv[scope][device] || seq > c.length() {
		return false, false
	}
	if bytes.HasPrefix(c.main[seq-1][:], prefix) {
		return true, true
	}
	for _, h := range c.extra[seq] {
		if bytes.HasPrefix(h[:], prefix) {
			return true, true
		}
	}
	return true, false
}

// Digest is a hash of scope's replicated state: every device's chain (head
// hash, or all op hashes when forked) and the derived stock, sales and open
// conflicts. Two replicas that hold the same ops print the same digest.
func (l *Ledger) Digest(scope string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := sha256.New()
	h.Write([]byte("storemesh-digest-v1\x00" + scope + "\x00"))
	vv := l.vv[scope]
	var n [8]byte
	for _, d := range vv.Devices() {
		seq := vv[d]
		dg := l.chains[chainKey{scope, d}].digest(seq)
		binary.BigEndian.PutUint64(n[:], seq)
		h.Write([]byte(d + "\x00"))
		h.Write(n[:])
		h.Write(dg[:])
	}
	keys := make([]stockKey, 0)
	for k := range l.st.stock {
		if k.store == scope {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b stockKey) int { return cmp.Compare(a.sku, b.sku) })
	for _, k := range keys {
		binary.BigEndian.PutUint64(n[:], uint64(l.st.stock[k].value()))
		h.Write([]byte("s\x00" + k.sku + "\x00"))
		h.Write(n[:])
	}
	l.st.eachConflict(scope, func(c *Conflict, resolved bool) {
		fmt.Fprintf(h, "c\x00%s\x00%d\x00%t", c.ID, c.Oversold, resolved)
		if c.Kind == ConflictOverRefund {
			fmt.Fprintf(h, "\x00%d", c.Excess)
		}
	})
	return hex.EncodeToString(h.Sum(nil))
}

// RawOp is one stored op's encoding with the coordinates sync needs.
type RawOp struct {
	Device string
	Seq    uint64
	Bytes  []byte
}

// Ops streams ops of scope that a peer with version vector theirs lacks, in
// per-device seq order, in batches of at most maxBytes (one op larger than
// that still goes alone). fn may stop the stream by returning an error.
// Every op at a seq is sent, both branches of a fork included.
func (l *Ledger) Ops(ctx context.Context, scope string, theirs crdt.VersionVector, maxBytes int, fn func(batch []RawOp) error) error {
	l.mu.Lock()
	var keys []opRef
	for _, r := range l.vv[scope].Missing(theirs) {
		keys = l.appendKeys(keys, scope, r)
	}
	l.mu.Unlock()
	return l.stream(ctx, keys, maxBytes, fn)
}

// History streams every op of device in scope after seq after, all
// branches included: the answer to a peer that reported NeedHistory.
func (l *Ledger) History(ctx context.Context, scope, device string, after uint64, maxBytes int, fn func(batch []RawOp) error) error {
	l.mu.Lock()
	keys := l.appendKeys(nil, scope, crdt.Range{Device: device, After: after, Through: l.vv[scope][device]})
	l.mu.Unlock()
	return l.stream(ctx, keys, maxBytes, fn)
}

// Range streams device's ops in scope with seq in (after, through], all
// branches included; through 0 means everything held. It answers a peer's
// pull request.
func (l *Ledger) Range(ctx context.Context, scope, device string, after, through uint64, maxBytes int, fn func(batch []RawOp) error) error {
	l.mu.Lock()
	have := l.vv[scope][device]
	if through == 0 || through > have {
		through = have
	}
	keys := l.appendKeys(nil, scope, crdt.Range{Device: device, After: after, Through: through})
	l.mu.Unlock()
	return l.stream(ctx, keys, maxBytes, fn)
}

type opRef struct {
	key    ds.Key
	device string
	seq    uint64
}

// appendKeys adds the storage keys of every op of r. Called under l.mu.
func (l *Ledger) appendKeys(keys []opRef, scope string, r crdt.Range) []opRef {
	c := l.chains[chainKey{scope, r.Device}]
	if c == nil {
		return keys
	}
	for s := r.After + 1; s <= r.Through; s++ {
		for _, h := range c.at(s) {
			keys = append(keys, opRef{opKeyOf(scope, r.Device, s, h), r.Device, s})
		}
	}
	return keys
}

func (l *Ledger) stream(ctx context.Context, refs []opRef, maxBytes int, fn func([]RawOp) error) error {
	var batch []RawOp
	size := 0
	for _, r := range refs {
		v, err := l.ds.Get(ctx, r.key)
		if errors.Is(err, ds.ErrNotFound) {
			continue // a fork op placed but not yet durable; sent next round
		}
		if err != nil {
			return fmt.Errorf("%w: get %s: %v", ErrStorage, r.key, err)
		}
		if len(batch) > 0 && size+len(v) > maxBytes {
			if err := fn(batch); err != nil {
				return err
			}
			batch, size = nil, 0
		}
		batch = append(batch, RawOp{Device: r.device, Seq: r.seq, Bytes: v})
		size += len(v)
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}
