package ledger

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/crdt"
)

// Config says whose ledger this is and how it behaves.
type Config struct {
	// Fleet is the fleet public key every certificate must be signed by.
	Fleet ed25519.PublicKey
	// Self is this device's certificate. Nil opens the ledger read-only
	// over every scope (audit export, inspection).
	Self *Certificate
	// Key is this device's private key; nil opens read-only.
	Key ed25519.PrivateKey
	// Now is the physical clock for the HLC. Default: time.Now.
	Now crdt.PhysicalClock
	// MaxClockOffset bounds how far a remote op's timestamp may drag this
	// device's HLC ahead of its own clock. Default 5 minutes: terminal
	// clocks are set by hand and drift; a larger skew is logged, and the op
	// still applies.
	MaxClockOffset time.Duration
	// MaxHeld bounds the count of out-of-order ops kept in memory waiting
	// for their predecessors (held.go). Default 65,536; the byte bound
	// below is the one that matters.
	MaxHeld int
	// MaxHeldBytes bounds the bytes of held ops (each counted as its
	// encoding plus 256 for its decoded form). Default 32 MiB: a catch-up
	// step (SessionConfig.MaxPull, about 600 KiB) from each of dozens of
	// peers; past it the author holding the most gives way, or the op is
	// refused with ErrTooManyHeld and its sender sends it again later.
	MaxHeldBytes int
	// MaxHeldPerAuthor bounds the held bytes of one author (ChainOwner),
	// so one device's gap ops never crowd out another's. Default 4 MiB.
	MaxHeldPerAuthor int
	// HeldTTL is how long a held op waits for its gap to fill, by Now.
	// Default 2 minutes: anti-entropy repairs a lost frame within seconds;
	// an op still unlinked after that is sent again by its holder.
	HeldTTL time.Duration
	// SigCache, if set, remembers verified signatures; the simulator shares
	// one between its replicas. Default: none.
	SigCache *SigCache
	// Logger receives rejections, forks and storage failures. Default: discard.
	Logger *slog.Logger
	// OwnRecord, if set, is the durable record of how far this device's own
	// chains have gone, kept outside the datastore (ownrecord.go): on open
	// a chain shorter than its record raises the own floor, so the lost
	// seqs are never reused. Default: none (the simulator).
	OwnRecord OwnRecord
	// OwnWait bounds how long Append waits (ErrOwnHistoryBehind) for sync
	// to refill an own chain that is short of what is known of it before
	// it writes a new epoch instead. Default 10 s.
	OwnWait time.Duration
	// Instance tells this process apart from another running the same
	// device (a clone) when both pick a new epoch; the node sets it at
	// random, the simulator from its seed. Default 0.
	Instance uint64
}

// DefaultConfig returns a Config with every default filled in; the caller
// adds Fleet, Self and Key.
func DefaultConfig() Config {
	return Config{
		Now:              func() int64 { return time.Now().UnixNano() },
		MaxClockOffset:   5 * time.Minute,
		MaxHeld:          1 << 16,
		MaxHeldBytes:     32 << 20,
		MaxHeldPerAuthor: 4 << 20,
		HeldTTL:          2 * time.Minute,
		OwnWait:          10 * time.Second,
		Logger:           slog.New(slog.DiscardHandler),
	}
}

// Validate returns every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Fleet) != ed25519.PublicKeySize {
		errs = append(errs, errors.New("fleet public key missing"))
	}
	if c.Self != nil {
		if err := c.Self.Verify(c.Fleet, time.Time{}); err != nil {
			errs = append(errs, fmt.Errorf("own certificate: %w", err))
		}
		if c.Key != nil && string(c.Key.Public().(ed25519.PublicKey)) != string(c.Self.PubKey) {
			errs = append(errs, errors.New("device key does not match the certificate"))
		}
	}
	if c.Key != nil && c.Self == nil {
		errs = append(errs, errors.New("device key given without a certificate"))
	}
	if c.Now == nil {
		errs = append(errs, errors.New("no physical clock"))
	}
	if c.MaxHeld <= 0 {
		errs = append(errs, errors.New("MaxHeld must be positive"))
	}
	if c.MaxHeldBytes <= 0 || c.MaxHeldPerAuthor <= 0 || c.MaxHeldPerAuthor > c.MaxHeldBytes {
		errs = append(errs, errors.New("MaxHeldBytes and MaxHeldPerAuthor must be positive, the second at most the first"))
	}
	if c.HeldTTL <= 0 {
		errs = append(errs, errors.New("HeldTTL must be positive"))
	}
	if c.OwnWait <= 0 {
		errs = append(errs, errors.New("OwnWait must be positive"))
	}
	return errors.Join(errs...)
}

type chainKey struct{ scope, device string }

type heldKey struct {
	chainKey
	seq uint64
}

type pendingOp struct {
	op   *Op
	body body
}

type commitReq struct {
	puts  []putKV
	ops   []pendingOp
	done  chan error
	after func() // runs after a successful commit, under l.mu
}

type putKV struct {
	key ds.Key
	val []byte
}

// Ledger is one node's durable, signed op log and the state derived from
// it. It is safe for concurrent use.
type Ledger struct {
	cfg     Config
	ds      ds.Batching
	log     *slog.Logger
	fleetID string
	all     bool // replicates every scope (anchor, read-only)

	mu         sync.Mutex
	clock      *crdt.Clock
	chains     map[chainKey]*chain
	forked     map[string]int // scope → chains in it with more than one op at some seq
	held       *heldSet
	certs      map[string][]*Certificate
	names      map[string]string // device → the name on its receipts; nil when certs changed (receipts.go)
	st         *state
	vv         map[string]crdt.VersionVector // durable contiguous seqs per scope
	queue      []*commitReq
	committing bool
	idle       *sync.Cond // signalled when a commit leader finishes
	failed     error
	closed     bool
	floor      map[chainKey]ownFloor // own chain → what it is known to reach (RaiseOwnFloor)
	cur        map[string]string     // scope → the own chain Append writes (ownChainLocked)
	rv         revState              // revocations and cut-offs (revoke.go)
	subs       map[int]func([]*Op)
	allotHeld  allotInFlight // own allotment spends placed, not yet durable (allot_write.go)
	nextSub    int
	stats      Stats
	space      SpaceChecker // the datastore's free-space guard, if it has one
	own        *ownRecorder // the durable record of this device's own chains, if configured
}

// Stats are running counters for metrics.
type Stats struct {
	Appended  uint64
	Applied   uint64
	Duplicate uint64
	Held      int
	// HeldBytes is what the held ops cost (held.go); HeldExpired,
	// HeldEvicted and HeldRefused count ops dropped by age, given way to
	// a smaller author, and refused (ErrTooManyHeld).
	HeldBytes                             int
	HeldExpired, HeldEvicted, HeldRefused uint64
	Forks                                 uint64
	// Epochs counts the new chain epochs this device started (a fork of
	// its own chain, or a shortfall sync did not refill in OwnWait).
	Epochs  uint64
	Commits uint64 // durable batch commits (fsyncs with badger)
	// SigChecks counts ed25519 verifications of remote ops: at most one
	// per device run of a batch (ApplyBatch), so far below Applied in a
	// catch-up.
	SigChecks uint64
	// NoSpace counts writes refused by the free-space guard (ErrNoSpace):
	// nothing was written, and writes resume once space is freed.
	NoSpace uint64
	// DiskFull is set while the last write was refused by the guard.
	DiskFull bool
	Rejected map[Reason]uint64
}

// Open replays the ops stored in d, rebuilds the state and returns the
// ledger. d must be durable on Commit for the durability promise to hold
// (OpenBadger makes such a store).
func Open(ctx context.Context, d ds.Batching, cfg Config) (_ *Ledger, err error) {
	def := DefaultConfig()
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if cfg.MaxClockOffset == 0 {
		cfg.MaxClockOffset = def.MaxClockOffset
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = def.MaxHeld
	}
	if cfg.MaxHeldBytes == 0 {
		cfg.MaxHeldBytes = def.MaxHeldBytes
	}
	if cfg.MaxHeldPerAuthor == 0 {
		cfg.MaxHeldPerAuthor = min(def.MaxHeldPerAuthor, cfg.MaxHeldBytes)
	}
	if cfg.HeldTTL == 0 {
		cfg.HeldTTL = def.HeldTTL
	}
	if cfg.OwnWait == 0 {
		cfg.OwnWait = def.OwnWait
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ledger: config: %w", err)
	}
	l := &Ledger{
		cfg:     cfg,
		ds:      d,
		log:     cfg.Logger,
		fleetID: FleetID(cfg.Fleet),
		all:     cfg.Self == nil || cfg.Self.Store == FleetScope,
		clock:   crdt.NewClock(cfg.Now, cfg.MaxClockOffset),
		chains:  map[chainKey]*chain{},
		forked:  map[string]int{},
		certs:   map[string][]*Certificate{},
		st:      newState(),
		vv:      map[string]crdt.VersionVector{},
		subs:    map[int]func([]*Op){},
		stats:   Stats{Rejected: map[Reason]uint64{}},
	}
	l.idle = sync.NewCond(&l.mu)
	l.held = newHeldSet(cfg, l.selfDevice(), func(scope, chain string, seq uint64) {
		l.raiseFloorLocked(scope, chain, seq, "held op expired")
	})
	if sc, ok := d.(SpaceChecker); ok {
		l.space = sc
	}
	if err := l.checkFormat(ctx); err != nil {
		return nil, err
	}
	if perr := catchPanic(func() { err = l.replay(ctx) }); perr != nil {
		return nil, &CorruptError{Key: "datastore", Err: fmt.Errorf("reading it panicked: %v", perr)}
	}
	if err != nil {
		return nil, err
	}
	if err := l.openOwnRecord(); err != nil {
		return nil, err
	}
	if cfg.Self != nil {
		if err := l.addCert(ctx, cfg.Self); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// FleetID is the id of the fleet this ledger belongs to.
func (l *Ledger) FleetID() string { return l.fleetID }

// Now is this node's best knowledge of the time, in Unix ns: the physical
// clock, but never earlier than the newest timestamp of its own history,
// so a clock reset backwards (a dead clock battery) does not make valid
// certificates look not yet valid. Certificate checks use it.
func (l *Ledger) Now() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.cfg.Now(), l.clock.Last().Wall)
}

// Self is this device's certificate (nil when read-only).
func (l *Ledger) Self() *Certificate { return l.cfg.Self }

// HoldsScope reports whether this replica keeps the ops of store scope.
func (l *Ledger) HoldsScope(scope string) bool {
	return l.all || scope == FleetScope || scope == l.cfg.Self.Store
}

// Close stops the ledger. It waits for a commit under way; it does not
// close the datastore, which the caller opened.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for l.committing {
		l.idle.Wait()
	}
	return l.closeOwnRecord()
}

// Subscribe calls fn with every batch of ops that becomes durable, local or
// remote, in commit order. fn runs on the committing goroutine: it must not
// block or call back into the ledger's write methods. The returned func
// cancels the subscription.
func (l *Ledger) Subscribe(fn func([]*Op)) (cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := l.nextSub
	l.nextSub++
	l.subs[id] = fn
	return func() {
		l.mu.Lock()
		delete(l.subs, id)
		l.mu.Unlock()
	}
}

// Stats returns a copy of the counters.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Held, s.HeldBytes = l.held.count, l.held.bytes
	s.HeldExpired, s.HeldEvicted, s.HeldRefused = l.held.expired, l.held.evicted, l.held.refused
	s.Rejected = make(map[Reason]uint64, len(l.stats.Rejected))
	for r, n := range l.stats.Rejected {
		s.Rejected[r] = n
	}
	return s
}

func (l *Ledger) writable() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.failed != nil:
		return fmt.Errorf("%w: %v", ErrFailed, l.failed)
	}
	return nil
}

// roomFor asks the datastore's free-space guard whether a commit of n
// bytes can be written. Called under l.mu before anything of the write
// is placed, so a refusal changes nothing and the next write may succeed.
func (l *Ledger) roomFor(n int) error {
	if l.space == nil {
		return nil
	}
	if err := l.space.CheckSpace(n); err != nil {
		l.stats.NoSpace++
		l.stats.DiskFull = true
		if l.stats.NoSpace == 1 || l.stats.NoSpace%1000 == 0 {
			l.log.Error("write refused: disk full", "err", err, "refused", l.stats.NoSpace)
		}
		return err
	}
	l.stats.DiskFull = false
	return nil
}

// commit hands req to the group committer and waits until it is durable.
// Called with l.mu held; returns with l.mu held. Whoever finds no commit
// under way becomes the leader and commits everything queued, its own
// request and any that arrive meanwhile, one batch (one fsync) at a time.
func (l *Ledger) commit(req *commitReq) error {
	req.done = make(chan error, 1)
	l.queue = append(l.queue, req)
	if l.committing {
		l.mu.Unlock()
		err := <-req.done
		l.mu.Lock()
		return err
	}
	l.committing = true
	for len(l.queue) > 0 {
		batch := l.queue
		l.queue = nil
		if l.failed != nil {
			// A batch before this one failed, and these ops may link to
			// ops that never reached storage: writing them would store a
			// chain with a hole (Corrupt on reopen) and acknowledge it.
			err := fmt.Errorf("%w: %v", ErrFailed, l.failed)
			for _, r := range batch {
				r.done <- err
			}
			continue
		}
		l.mu.Unlock()
		err := l.write(batch)
		l.mu.Lock()
		var durable []*Op
		if err != nil {
			l.failed = err
			l.log.Error("ledger storage failure; writes stopped", "err", err)
			err = fmt.Errorf("%w: %w", ErrStorage, err)
		} else {
			l.stats.Commits++
			for _, r := range batch {
				for _, p := range r.ops {
					l.materialise(p)
					durable = append(durable, p.op)
				}
				if r.after != nil {
					r.after()
				}
			}
			l.settleRevocations()
			l.recordOwn(durable)
		}
		subs := make([]func([]*Op), 0, len(l.subs))
		for _, fn := range l.subs {
			subs = append(subs, fn)
		}
		for _, r := range batch {
			r.done <- err
		}
		if len(durable) > 0 && len(subs) > 0 {
			l.mu.Unlock()
			for _, fn := range subs {
				fn(durable)
			}
			l.mu.Lock()
		}
	}
	l.committing = false
	l.idle.Broadcast()
	return <-req.done
}

func (l *Ledger) write(batch []*commitReq) error {
	ctx := context.Background()
	b, err := l.ds.Batch(ctx)
	if err != nil {
		return err
	}
	for _, r := range batch {
		for _, kv := range r.puts {
			if err := b.Put(ctx, kv.key, kv.val); err != nil {
				return err
			}
		}
	}
	return b.Commit(ctx)
}

// materialise folds a durable op into the state and the durable version
// vector. Called under l.mu in commit order.
func (l *Ledger) materialise(p pendingOp) {
	o := p.op
	if !l.includeDurable(p) {
		return // past its revoked device's cut-off: stored, not materialised
	}
	vv := l.vv[o.Store]
	if vv == nil {
		vv = crdt.VersionVector{}
		l.vv[o.Store] = vv
	}
	if o.Seq == vv[o.Device]+1 {
		vv[o.Device] = o.Seq
	}
	l.st.apply(o, p.body)
	l.allotLanded(p)
}

func opKey(o *Op) ds.Key {
	return opKeyOf(o.Store, o.Device, o.Seq, o.hash)
}

func certKey(c *Certificate) ds.Key {
	return ds.KeyWithNamespaces([]string{"c", c.Device, fmt.Sprintf("%016x", c.Expiry)})
}

// placeIn places a remote or replayed op in its chain, keeping count of
// forked chains per scope. Called under l.mu (or before Open returns).
func (l *Ledger) placeIn(c *chain, o *Op, pl placement) {
	if pl == placeFork && !c.forked() {
		l.forked[o.Store]++
	}
	c.place(o, pl)
}

func (l *Ledger) chainOf(scope, device string) *chain {
	k := chainKey{scope, device}
	c := l.chains[k]
	if c == nil {
		c = &chain{}
		l.chains[k] = c
	}
	return c
}

func (l *Ledger) countReject(o *Op, err error) {
	r := RejectReason(err)
	if r == "" {
		return
	}
	l.stats.Rejected[r]++
	attrs := []any{"reason", r, "err", err}
	if o != nil {
		attrs = append(attrs, "op", o.String(), "device", o.Device)
	}
	l.log.Warn("op rejected", attrs...)
}

// opKeyOf is /o/SCOPE/DEVICE/SEQ(16 hex digits)/HASH(first 8 bytes, hex).
// Scope and device are plain path segments in practice (store ids and
// peer ids): the key is then built directly, without the clean-up pass
// of ds.NewKey, which leaves such a path as it is. Anything else takes the
// general path, so both give the same key for every input.
func opKeyOf(scope, device string, seq uint64, h Hash) ds.Key {
	if !plainSegment(scope) || !plainSegment(device) {
		return ds.KeyWithNamespaces([]string{"o", scope, device, fmt.Sprintf("%016x", seq), h.Short()})
	}
	b := make([]byte, 0, len("/o///")+len(scope)+len(device)+16+1+16)
	b = append(b, "/o/"...)
	b = append(b, scope...)
	b = append(b, '/')
	b = append(b, device...)
	b = append(b, '/')
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	b = hex.AppendEncode(b, n[:])
	b = append(b, '/')
	b = hex.AppendEncode(b, h[:8])
	return ds.RawKey(string(b))
}

func plainSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsRune(s, '/')
}
