package ledger

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"storemesh/crdt"
)

// allotInFlight holds this device's own allotment spends that Append has
// placed in its chain but group commit has not made durable (and so not
// materialised) yet: two concurrent sales must not both spend one unit.
type allotInFlight struct {
	units      map[stockKey]int64
	ops        map[Hash][]allotSpend
	overspends uint64                       // devices seen overspent, per (store, sku)
	flagged    map[stockKey]map[string]bool // which
}

type allotSpend struct {
	k stockKey
	n int64
}

func noReserve(*Op) {}

// allotCheck is Append's hook, under l.mu: it refuses a local op that
// spends allotted units this device does not hold (ErrAllotmentExhausted),
// or an allotment op that does not fit the state, fills an allot.set's
// Seen with this replica's version vector of the store, and returns the
// (possibly re-encoded) body and a func that reserves the op's spends once
// it is placed.
func (l *Ledger) allotCheck(store string, kind Kind, b body) (func(*Op), error) {
	self := ChainOwner(l.cfg.Self.Device)
	var spends []allotSpend
	switch b := b.(type) {
	case *Sale:
		for _, ln := range b.Lines {
			spends = addSpend(spends, stockKey{store, ln.SKU}, ln.Qty)
		}
	case *StockTransferred:
		if store == b.From {
			spends = addSpend(spends, stockKey{store, b.SKU}, b.Qty)
		}
	case *AllotSet:
		a := l.st.allot.skus[stockKey{store, b.SKU}]
		if b.Allotted && a.allotted() {
			return nil, fmt.Errorf("%w: %s is already allotted in %s", ErrBadInput, b.SKU, store)
		}
		if !b.Allotted {
			b.Seen = nil
		} else {
			b.Seen = maps.Clone(map[string]uint64(l.vv[store]))
		}
		return noReserve, nil // Append encodes the body as changed here
	case *AllotTransfer:
		if err := l.allotEpochOK(store, b.SKU, b.Epoch); err != nil {
			return nil, err
		}
		if b.To == self {
			return nil, fmt.Errorf("%w: transfer to oneself", ErrBadInput)
		}
		spends = addSpend(spends, stockKey{store, b.SKU}, b.Qty)
	case *AllotRequest:
		if err := l.allotEpochOK(store, b.SKU, b.Epoch); err != nil {
			return nil, err
		}
	case *AllotWriteoff:
		if err := l.allotEpochOK(store, b.SKU, b.Epoch); err != nil {
			return nil, err
		}
		if b.Device == self {
			return nil, fmt.Errorf("%w: write-off of one's own units", ErrBadInput)
		}
		c := l.st.allot.skus[stockKey{store, b.SKU}].counter()
		if r := c.bc.Rights(b.Device); r < b.Units {
			return nil, fmt.Errorf("%w: %s holds %d units of %s, not %d", ErrBadInput, b.Device, r, b.SKU, b.Units)
		}
	}
	// Only allotted SKUs are checked; sum the op's spends per SKU first.
	var held []allotSpend
	for _, sp := range spends {
		a := l.st.allot.skus[sp.k]
		if !a.allotted() {
			continue
		}
		here := a.counter().bc.Rights(self) - l.allotHeld.units[sp.k]
		if here < sp.n {
			return nil, &AllotmentError{Store: sp.k.store, SKU: sp.k.sku, Want: sp.n, Here: max(here, 0),
				Elsewhere: l.holdingsLocked(sp.k, self)}
		}
		held = append(held, sp)
	}
	if len(held) == 0 {
		return noReserve, nil
	}
	return func(o *Op) { l.allotHeld.reserve(o.hash, held) }, nil
}

func marshalBody(b body) ([]byte, error) {
	out, err := crdt.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("%w: encode body: %v", ErrBadInput, err)
	}
	return out, nil
}

func addSpend(s []allotSpend, k stockKey, n int64) []allotSpend {
	for i := range s {
		if s[i].k == k {
			s[i].n += n
			return s
		}
	}
	return append(s, allotSpend{k, n})
}

func (l *Ledger) allotEpochOK(store, sku, epoch string) error {
	a := l.st.allot.skus[stockKey{store, sku}]
	if !a.allotted() {
		return fmt.Errorf("%w: %s is not allotted in %s", ErrBadInput, sku, store)
	}
	if a.conv.Value.ID != epoch {
		return fmt.Errorf("%w: allotment epoch %s of %s is not the one in force (%s)", ErrBadInput, epoch, sku, a.conv.Value.ID)
	}
	return nil
}

func (f *allotInFlight) reserve(h Hash, sp []allotSpend) {
	if f.units == nil {
		f.units = map[stockKey]int64{}
		f.ops = map[Hash][]allotSpend{}
	}
	f.ops[h] = sp
	for _, s := range sp {
		f.units[s.k] += s.n
	}
}

// allotLanded releases an own op's reservation once it is materialised,
// and flags a device an op left with negative rights (logged and counted;
// the state shows it under AllotStatus.Overspent).
// Called under l.mu.
func (l *Ledger) allotLanded(p pendingOp) {
	o := p.op
	f := &l.allotHeld
	sp, ok := f.ops[o.hash]
	if !ok {
		l.allotFlag(p)
		return
	}
	delete(f.ops, o.hash)
	for _, s := range sp {
		if f.units[s.k] -= s.n; f.units[s.k] == 0 {
			delete(f.units, s.k)
		}
	}
}

func (l *Ledger) allotFlag(p pendingOp) {
	var skus []string
	switch b := p.body.(type) {
	case *Sale:
		for _, ln := range b.Lines {
			skus = append(skus, ln.SKU)
		}
	case *AllotTransfer:
		skus = []string{b.SKU}
	case *AllotSet:
		skus = []string{b.SKU}
	case *AllotWriteoff:
		skus = []string{b.SKU}
	case *StockTransferred:
		skus = []string{b.SKU}
	case *StockCounted:
		skus = []string{b.SKU}
	default:
		return
	}
	f := &l.allotHeld
	for _, sku := range skus {
		k := stockKey{p.op.Store, sku}
		a := l.st.allot.skus[k]
		if !a.allotted() {
			continue
		}
		c := a.counter()
		for _, d := range c.bc.Devices() {
			r := c.bc.Rights(d)
			if r >= 0 || f.flagged[k][d] {
				continue
			}
			if f.flagged == nil {
				f.flagged = map[stockKey]map[string]bool{}
			}
			if f.flagged[k] == nil {
				f.flagged[k] = map[string]bool{}
			}
			f.flagged[k][d] = true
			f.overspends++
			l.log.Warn("allotment overspent: a device spent units it did not hold", "op", p.op.String(),
				"device", d, "store", k.store, "sku", sku, "rights", r)
		}
	}
}

// AllotOverspends counts the (store, sku, device) found with negative
// rights to an allotted SKU since Open (replay included): each is logged
// once, and listed by AllotStatus.Overspent.
func (l *Ledger) AllotOverspends() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allotHeld.overspends
}

// AllotHolding is one device's units of an allotted SKU.
type AllotHolding struct {
	Device string `json:"device"`
	Name   string `json:"name,omitempty"`
	Role   Role   `json:"role,omitempty"`
	Units  int64  `json:"units"`
}

// Label names the holder for people: "HQ" for an anchor, else the
// certificate's device name, else a short device id.
func (h AllotHolding) Label() string {
	switch {
	case h.Role == RoleAnchor:
		return "HQ"
	case h.Name != "":
		return h.Name
	case len(h.Device) > 8:
		return h.Device[len(h.Device)-8:]
	}
	return h.Device
}

// AllotOpenRequest is a device's unanswered request for units.
type AllotOpenRequest struct {
	Device   string `json:"device"`
	ID       string `json:"id"`
	Want     int64  `json:"want"`
	Received uint64 `json:"received"`
}

// AllotStatus is the state of one allotted (store, sku).
type AllotStatus struct {
	Store    string `json:"store"`
	SKU      string `json:"sku"`
	Allotted bool   `json:"allotted"`
	Epoch    string `json:"epoch,omitempty"`
	Total    int64  `json:"total"` // the counter's value; equals on_hand
	// Holders lists every device holding units, most first (then by id).
	Holders []AllotHolding `json:"holders"`
	// Received is each holder's (and requester's) running total of units
	// that ever reached it.
	Received map[string]uint64 `json:"-"`
	// Overspent lists devices whose rights are negative: a remote device
	// that spent units it did not hold (a write-off it had not heard of,
	// or a sale under ordinary rules it made before it learned the SKU
	// was allotted). Honest devices never appear here.
	Overspent []AllotHolding     `json:"overspent,omitempty"`
	Requests  []AllotOpenRequest `json:"requests,omitempty"`
}

// Rights returns the units device holds per s.
func (s *AllotStatus) Rights(device string) int64 {
	for _, h := range s.Holders {
		if h.Device == device {
			return h.Units
		}
	}
	for _, h := range s.Overspent {
		if h.Device == device {
			return h.Units
		}
	}
	return 0
}

// Allotted reports whether sku is allotted in store.
func (l *Ledger) Allotted(store, sku string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.allot.skus[stockKey{store, sku}].allotted()
}

// Allotments lists the allotted SKUs of store ("" for every store),
// sorted by store then SKU.
func (l *Ledger) Allotments(store string) []AllotStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []AllotStatus
	for k := range l.st.allot.on {
		if store == "" || k.store == store {
			out = append(out, l.allotStatusLocked(k, l.st.allot.skus[k]))
		}
	}
	slices.SortFunc(out, func(a, b AllotStatus) int { return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.SKU, b.SKU)) })
	return out
}

// Allotment returns the status of (store, sku); ok is false when it is
// not allotted.
func (l *Ledger) Allotment(store, sku string) (AllotStatus, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := stockKey{store, sku}
	a := l.st.allot.skus[k]
	if !a.allotted() {
		return AllotStatus{Store: store, SKU: sku}, false
	}
	return l.allotStatusLocked(k, a), true
}

func (l *Ledger) allotStatusLocked(k stockKey, a *allotSKU) AllotStatus {
	c := a.counter()
	st := AllotStatus{Store: k.store, SKU: k.sku, Allotted: true, Epoch: c.epoch, Total: c.bc.Value(), Received: map[string]uint64{}}
	for _, d := range c.bc.Devices() {
		h := l.holding(d, c.bc.Rights(d))
		st.Received[d] = c.bc.Received(d)
		switch {
		case h.Units > 0:
			st.Holders = append(st.Holders, h)
		case h.Units < 0:
			st.Overspent = append(st.Overspent, h)
		}
	}
	slices.SortFunc(st.Holders, func(a, b AllotHolding) int {
		return cmp.Or(cmp.Compare(b.Units, a.Units), cmp.Compare(a.Device, b.Device))
	})
	for _, d := range slices.Sorted(maps.Keys(c.requests)) {
		x := c.requests[d]
		rq := x.body.(*AllotRequest)
		if c.bc.Received(d) > rq.Received {
			continue // answered
		}
		st.Requests = append(st.Requests, AllotOpenRequest{Device: d, ID: x.chain + "/" + itoa(x.seq), Want: rq.Want, Received: rq.Received})
	}
	return st
}

func (l *Ledger) holding(device string, units int64) AllotHolding {
	h := AllotHolding{Device: device, Units: units}
	if cs := l.certs[device]; len(cs) > 0 {
		c := cs[len(cs)-1]
		h.Name, h.Role = c.Name, c.Role
	}
	return h
}

// holdingsLocked lists the devices other than self holding units of k.
func (l *Ledger) holdingsLocked(k stockKey, self string) []AllotHolding {
	st := l.allotStatusLocked(k, l.st.allot.skus[k])
	out := st.Holders[:0:0]
	for _, h := range st.Holders {
		if h.Device != self {
			out = append(out, h)
		}
	}
	return out
}
