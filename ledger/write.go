package ledger

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// ErrOwnHistoryBehind refuses a local write while this replica holds ops of
// its own device that it cannot place yet: the device was restored from an
// old backup and must learn its own last seq from the mesh before it sells,
// or it would fork its own chain.
var ErrOwnHistoryBehind = errors.New("ledger: this device's own history is still arriving from peers; wait for sync")

// ErrOwnChainForked is kept for callers that still match it: Append no
// longer returns it. A device whose own chain forked writes a new epoch
// of its chain instead (ownChainLocked).
var ErrOwnChainForked = errors.New("ledger: this device's own chain is forked")

// Append makes a local op of kind in store with body b (a pointer to one of
// the body types, e.g. *Sale), signs it and returns once it is durable.
// Concurrent callers share one storage commit (group commit).
func (l *Ledger) Append(ctx context.Context, store string, kind Kind, b any) (*Op, error) {
	if l.cfg.Key == nil {
		return nil, ErrNoKey
	}
	bb, ok := b.(body)
	if !ok || kinds[kind].newBody == nil {
		return nil, fmt.Errorf("%w: unknown op kind %q", ErrBadInput, kind)
	}
	if fmt.Sprintf("%T", bb) != fmt.Sprintf("%T", kinds[kind].newBody()) {
		return nil, fmt.Errorf("%w: body %T does not fit kind %s", ErrBadInput, b, kind)
	}
	if err := bb.validate(); err != nil {
		return nil, &RejectError{Reason: ReasonBody, Detail: err.Error()}
	}
	if err := l.cfg.Self.MayWrite(kind, store); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return nil, err
	}
	if err := fitsStore(store, bb); err != nil {
		re := &RejectError{Reason: ReasonBody, Detail: err.Error()}
		l.countReject(nil, re)
		return nil, re
	}
	if r, ok := bb.(*Refund); ok {
		if err := l.st.checkRefund(store, r); err != nil {
			return nil, err
		}
	}
	self, c, err := l.ownChainLocked(store)
	if err != nil {
		return nil, err
	}
	if err := l.admitLocal(store, self, c.length()+1, bb); err != nil {
		return nil, err
	}
	reserve, err := l.allotCheck(store, kind, bb)
	if err != nil {
		return nil, err
	}
	hlc := l.clock.Now()
	if err := l.cfg.Self.ValidAt(hlc.Wall / 1e6); err != nil {
		// Every peer would refuse the op: refuse it here, before the sale
		// is acknowledged to a customer.
		return nil, err
	}
	bb = l.st.numberReceipt(self, bb)
	enc, err := marshalBody(bb)
	if err != nil {
		return nil, err
	}
	o := &Op{
		V: opVersion, Fleet: l.fleetID, Store: store, Device: self,
		Seq: c.length() + 1, HLC: hlc, Kind: kind, BodyV: writeVersion(kind), Body: enc,
	}
	if o.Seq > 1 {
		prev := c.main[o.Seq-2]
		o.Prev = prev[:]
	}
	if err := o.Seal(l.cfg.Key); err != nil {
		return nil, err
	}
	if len(o.raw) > MaxOpBytes {
		return nil, fmt.Errorf("%w: op is %d bytes (max %d)", ErrBadInput, len(o.raw), MaxOpBytes)
	}
	if err := l.roomFor(len(o.raw)); err != nil {
		return nil, err
	}
	l.st.reserveReceipt(self, bb)
	l.st.holdRefund(bb)
	c.place(o, placeNext)
	reserve(o)
	// This process just signed it with the key of its own certificate
	// (Open checks they match): a replica sharing the cache need not verify.
	l.cfg.SigCache.add(o, l.cfg.Self.PubKey)
	req := &commitReq{puts: []putKV{{opKey(o), o.raw}}, ops: []pendingOp{{o, bb}}}
	if err := l.commit(req); err != nil {
		return nil, err
	}
	l.stats.Appended++
	return o, nil
}

// heldFor reports whether an op of device's chain in scope is held at or
// past this replica's head: peers know a longer history. An index lookup,
// no scan: every local sale asks it under the lock.
func (l *Ledger) heldFor(scope, device string) bool {
	var n uint64
	if c := l.chains[chainKey{scope, device}]; c != nil {
		n = c.length()
	}
	return l.held.from(scope, device, n)
}

// Outcome is what Apply did with one op.
type Outcome int

const (
	Applied   Outcome = iota // placed and durable
	Duplicate                // already held: normal traffic, not an error
	Held                     // predecessor missing; applied when it arrives
	Forked                   // a second op at a placed seq: kept as evidence, device flagged
	Rejected                 // refused; Err says why
)

func (o Outcome) String() string {
	return [...]string{"applied", "duplicate", "held", "forked", "rejected"}[o]
}

// Result reports one op of an ApplyBatch.
type Result struct {
	Op      *Op // nil when the bytes did not decode
	Outcome Outcome
	// NeedHistory is set when the op's prev matches none of the ops this
	// replica holds at seq-1: the sender knows a branch this replica lacks
	// and should send the device's whole history (mesh: a history request).
	NeedHistory bool
	Err         error
}

// Apply applies one remote op; see ApplyBatch.
func (l *Ledger) Apply(ctx context.Context, raw []byte) (Result, error) {
	rs, err := l.ApplyBatch(ctx, [][]byte{raw})
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// ApplyBatch verifies and applies ops received from peers, in one durable
// commit. Each op's author, certificate, role, store and chain are
// checked; a bad op is rejected (counted, logged) without affecting the
// others. The returned error is only for the ledger itself (closed, storage
// failure); nothing is acknowledged then.
//
// Signatures cost one ed25519 verification per device run, not per op
// (see authenticate): a catch-up of thousands of ops is bound by storage
// and decoding, not by signature checks.
func (l *Ledger) ApplyBatch(ctx context.Context, raws [][]byte) ([]Result, error) {
	res := make([]Result, len(raws))
	pubs := make([]ed25519.PublicKey, len(raws))
	for i, raw := range raws {
		o, cert, err := l.precheck(raw)
		res[i] = Result{Op: o, Err: err}
		if err == nil {
			pubs[i] = cert.PubKey
		}
	}
	checks := l.authenticate(res, pubs)
	checked := make([]pendingOp, len(raws))
	for i := range res {
		checked[i].op = res[i].Op
		if res[i].Err == nil {
			checked[i].body, res[i].Err = decodeBody(res[i].Op)
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.SigChecks += checks
	if err := l.writable(); err != nil {
		return nil, err
	}
	size := 0
	for _, raw := range raws {
		size += len(raw)
	}
	if err := l.roomFor(size); err != nil {
		return nil, err
	}
	req := &commitReq{}
	for i := range res {
		if res[i].Err != nil {
			res[i].Outcome = Rejected
			l.countReject(res[i].Op, res[i].Err)
			continue
		}
		l.placeRemote(checked[i], &res[i], req)
	}
	if len(req.puts) == 0 {
		return res, nil
	}
	if err := l.commit(req); err != nil {
		return nil, err
	}
	return res, nil
}

// precheck does every check of a remote op that needs neither its
// signature nor chain state: form, fleet, scope, and a certificate of the
// author that allows it.
func (l *Ledger) precheck(raw []byte) (*Op, *Certificate, error) {
	o, err := DecodeOp(raw)
	if err != nil {
		return nil, nil, err
	}
	if o.Fleet != l.fleetID {
		return o, nil, reject(ReasonFleet, "op of fleet %s", o.Fleet)
	}
	if !l.HoldsScope(o.Store) {
		return o, nil, reject(ReasonScope, "store %s", o.Store)
	}
	cert, err := l.certFor(o)
	if err != nil {
		return o, nil, err
	}
	return o, cert, nil
}

// authenticate establishes that the author signed each op of res that
// passed precheck (pubs[i] is op i's author key); an op that fails gets
// ReasonBadSignature in its Err. It returns the number of ed25519
// verifications it made.
//
// An op needs no ed25519 verification of its own when this replica already
// holds it, when the SigCache knows it, or when the next op of the same
// device and store in this batch names it as prev and is itself
// authenticated. prev is the SHA-256 of the whole signed encoding, so the
// device's signature on the later op covers every byte of the earlier one,
// its signature included: a run of n ops of one device costs one
// verification, of its newest op. A tampered op breaks the link (the later
// op's prev no longer matches its hash) and is then verified on its own and
// refused; a forged newest op fails its own verification and leaves the
// rest to be verified one by one. The outcome for every op is the one a
// signature check of each would give; only the cost differs.
func (l *Ledger) authenticate(res []Result, pubs []ed25519.PublicKey) (checks uint64) {
	idx := make([]int, 0, len(res))
	for i := range res {
		if res[i].Err == nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return 0
	}
	held := make(map[int]bool)
	l.mu.Lock()
	for _, i := range idx {
		o := res[i].Op
		if c := l.chains[chainKey{o.Store, o.Device}]; c != nil && o.Seq <= c.length() && c.has(o.Seq, o.hash) {
			held[i] = true
		}
	}
	l.mu.Unlock()
	// Newest first, so each op is settled before the op it links to.
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(res[b].Op.Seq, res[a].Op.Seq) })
	type link struct {
		store, device string
		hash          Hash
	}
	vouched := map[link]bool{}
	for _, i := range idx {
		o, pub := res[i].Op, pubs[i]
		switch {
		case held[i] || l.cfg.SigCache.known(o, pub):
		case vouched[link{o.Store, o.Device, o.hash}]:
			l.cfg.SigCache.add(o, pub)
		default:
			checks++
			if err := o.verifySig(pub); err != nil {
				res[i].Err = err
				continue
			}
			l.cfg.SigCache.add(o, pub)
		}
		if o.Seq > 1 {
			vouched[link{o.Store, o.Device, o.prevHash()}] = true
		}
	}
	return checks
}

// certFor finds a certificate of o's author that allows o.
func (l *Ledger) certFor(o *Op) (*Certificate, error) {
	l.mu.Lock()
	certs := l.certs[ChainOwner(o.Device)]
	l.mu.Unlock()
	return pickCert(certs, o)
}

// placeRemote places a verified op, or holds it, and releases any held ops
// it unblocks. Called under l.mu.
func (l *Ledger) placeRemote(p pendingOp, r *Result, req *commitReq) {
	o := p.op
	if err := l.admitRemote(p); err != nil {
		r.Outcome, r.Err = Rejected, err
		l.countReject(o, r.Err)
		return
	}
	c := l.chainOf(o.Store, o.Device)
	switch pl := c.classify(o); pl {
	case placeDuplicate:
		r.Outcome = Duplicate
		l.stats.Duplicate++
	case placeGap, placeOrphan:
		if l.held.has(o) {
			r.Outcome = Held
			r.NeedHistory = pl == placeOrphan
			return
		}
		if !l.held.add(p, l.cfg.Now()) {
			r.Outcome, r.Err = Rejected, ErrTooManyHeld
			return
		}
		r.Outcome = Held
		r.NeedHistory = pl == placeOrphan
	case placeNext, placeFork:
		l.placeOne(c, p, pl, req)
		r.Outcome = Applied
		if pl == placeFork {
			r.Outcome = Forked
		}
		l.release(c, o.Store, o.Device, o.Seq+1, req)
	}
}

func (l *Ledger) placeOne(c *chain, p pendingOp, pl placement, req *commitReq) {
	o := p.op
	l.placeIn(c, o, pl)
	if ChainOwner(o.Device) == l.selfDevice() {
		l.clock.Restore(o.HLC)
	} else if err := l.clock.Update(o.HLC); err != nil {
		l.log.Debug("remote clock ahead", "op", o.String(), "err", err)
	}
	if pl == placeFork {
		l.stats.Forks++
		l.log.Warn("equivocation: two ops at one seq; device flagged", "device", o.Device, "store", o.Store, "seq", o.Seq, "op", o.hash.Short())
	}
	l.stats.Applied++
	req.puts = append(req.puts, putKV{opKey(o), o.raw})
	req.ops = append(req.ops, p)
}

// release places held ops at seq (and onwards) that now link.
func (l *Ledger) release(c *chain, scope, device string, seq uint64, req *commitReq) {
	ck := chainKey{scope, device}
	for {
		cands := l.held.take(ck, seq)
		if len(cands) == 0 {
			return
		}
		var keep []heldOp
		placed := false
		for _, x := range cands {
			if err := l.admitRemote(x.p); err != nil {
				l.countReject(x.p.op, err) // revoked while it was held
				continue
			}
			switch pl := c.classify(x.p.op); pl {
			case placeNext, placeFork:
				l.placeOne(c, x.p, pl, req)
				placed = true
			case placeDuplicate:
			default:
				keep = append(keep, x)
			}
		}
		l.held.putBack(ck, seq, keep)
		if !placed {
			return
		}
		seq++
	}
}

func (l *Ledger) selfDevice() string {
	if l.cfg.Self == nil {
		return ""
	}
	return l.cfg.Self.Device
}

// AddCertificate verifies a device certificate against the fleet key and
// stores it, so the device's ops can be checked. Expired certificates are
// kept: they still vouch for the ops made while they were valid.
func (l *Ledger) AddCertificate(ctx context.Context, raw []byte) (*Certificate, error) {
	c, err := DecodeCertificate(raw)
	if err != nil {
		l.mu.Lock()
		l.countReject(nil, err)
		l.mu.Unlock()
		return nil, err
	}
	if have := l.heldCert(c, raw); have != nil {
		return have, nil // verified when it was added; peers resend until acked
	}
	if err := c.Verify(l.cfg.Fleet, time.Time{}); err != nil {
		l.mu.Lock()
		l.countReject(nil, err)
		l.mu.Unlock()
		return nil, err
	}
	return c, l.addCert(ctx, c)
}

// heldCert returns the held certificate whose encoding is exactly raw.
func (l *Ledger) heldCert(c *Certificate, raw []byte) *Certificate {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, have := range l.certs[c.Device] {
		if bytes.Equal(have.Sig, c.Sig) && bytes.Equal(have.Encode(), raw) {
			return have
		}
	}
	return nil
}

func (l *Ledger) addCert(ctx context.Context, c *Certificate) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, have := range l.certs[c.Device] {
		if string(have.Sig) == string(c.Sig) {
			return nil
		}
		if string(have.PubKey) != string(c.PubKey) {
			err := reject(ReasonCertInvalid, "certificate for %s with a different key", c.Device)
			l.countReject(nil, err)
			return err
		}
	}
	if err := l.writable(); err != nil {
		return err
	}
	if err := l.roomFor(len(c.Encode())); err != nil {
		return err
	}
	return l.commit(&commitReq{
		puts:  []putKV{{certKey(c), c.Encode()}},
		after: func() { l.certs[c.Device] = append(l.certs[c.Device], c); l.names = nil },
	})
}

// SigCache remembers (op, key) pairs whose authorship was established (the
// op's own signature verified, or a later op of its chain that linked to it
// did), so a replica set in one process (the simulator) verifies each op
// once. Safe for
// concurrent use; a nil *SigCache remembers nothing.
type SigCache struct {
	mu sync.Mutex
	m  map[sigCacheKey]struct{}
}

type sigCacheKey struct {
	op  Hash
	pub [ed25519.PublicKeySize]byte
}

// NewSigCache returns an empty cache.
func NewSigCache() *SigCache { return &SigCache{m: map[sigCacheKey]struct{}{}} }

func sigKey(o *Op, pub ed25519.PublicKey) sigCacheKey {
	k := sigCacheKey{op: o.hash}
	copy(k.pub[:], pub)
	return k
}

func (s *SigCache) known(o *Op, pub ed25519.PublicKey) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[sigKey(o, pub)]
	return ok
}

func (s *SigCache) add(o *Op, pub ed25519.PublicKey) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.m[sigKey(o, pub)] = struct{}{}
	s.mu.Unlock()
}
