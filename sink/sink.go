package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"storemesh/crdt"
	"storemesh/ledger"
)

// Cursor is a sink's position: per scope, the version vector of the ops it
// has durably written. Ops a scope's vector lacks are what is left to write.
type Cursor map[string]crdt.VersionVector

// Clone returns a deep copy.
func (c Cursor) Clone() Cursor {
	out := make(Cursor, len(c))
	for s, v := range c {
		out[s] = v.Clone()
	}
	return out
}

// Target is where a sink writes: PostgreSQL, an MQTT broker. The Runner
// calls it from one goroutine only.
type Target interface {
	// Name labels the sink in metrics and status ("postgres", "mqtt").
	Name() string
	// Cursor connects if needed and returns the durable cursor. It is
	// called at start and again after every failed Write, so a target
	// that cannot tell whether its last write landed reloads the truth.
	Cursor(ctx context.Context) (Cursor, error)
	// Write stores ops (all of scope, each device's in seq order) and
	// then cursor, the scope's vector after them: in one transaction, or
	// ops first so a crash in between writes them again (at least once).
	Write(ctx context.Context, scope string, ops []Op, cursor crdt.VersionVector) error
	// Idle runs after a pass that left nothing to write, and at least
	// every Config.Tick: periodic work (MQTT's retained health topics).
	Idle(ctx context.Context) error
	// Close releases connections.
	Close() error
}

// Config tunes a Runner. Start from DefaultConfig.
type Config struct {
	// BatchOps bounds the ops per Write: 1,000 makes a PostgreSQL
	// transaction of a few hundred KiB, large enough to amortise its
	// round trips and commit, small enough to retry cheaply.
	BatchOps int
	// ReadBytes bounds one read from the ledger: 1 MiB.
	ReadBytes int
	// RetryMin and RetryMax bound the backoff after a failure: 200 ms,
	// doubling to 30 s, so a sink that is down costs a connection attempt
	// every 30 s and one that blinked resumes at once.
	RetryMin, RetryMax time.Duration
	// Tick is how often Idle runs without new ops: 5 s.
	Tick time.Duration
	// Now is the wall clock: time.Now.
	Now func() time.Time
	// Logger: default discard.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default.
func DefaultConfig() Config {
	return Config{
		BatchOps: 1000, ReadBytes: 1 << 20,
		RetryMin: 200 * time.Millisecond, RetryMax: 30 * time.Second,
		Tick: 5 * time.Second, Now: time.Now, Logger: slog.New(slog.DiscardHandler),
	}
}

// Validate returns every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if c.BatchOps < 1 || c.ReadBytes < 1 {
		errs = append(errs, errors.New("sink: BatchOps and ReadBytes must be positive"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("sink: need 0 < RetryMin <= RetryMax"))
	}
	if c.Tick <= 0 {
		errs = append(errs, errors.New("sink: Tick must be positive"))
	}
	if c.Now == nil || c.Logger == nil {
		errs = append(errs, errors.New("sink: Now and Logger are required"))
	}
	return errors.Join(errs...)
}

// Status is one sink's line in GET /v1/status.
type Status struct {
	Name      string     `json:"name"`
	Backlog   uint64     `json:"backlog"` // ops the anchor holds that the sink has not written
	Written   uint64     `json:"written"` // ops written since start (a retried batch counts again)
	Failures  uint64     `json:"failures"`
	LastError string     `json:"last_error,omitempty"`
	LastOK    *time.Time `json:"last_ok"` // the last successful write or empty pass; null: never
}

// Runner feeds one Target from a ledger on its own goroutine: it never
// blocks the ledger (the subscription only signals) and so never blocks
// sync.
type Runner struct {
	cfg   Config
	l     *ledger.Ledger
	t     Target
	log   *slog.Logger
	wake  chan struct{}
	unsub func()
	stop  context.CancelFunc
	done  chan struct{}

	mu       sync.Mutex
	known    Cursor // the last cursor known durable (kept while the target is down)
	written  uint64
	failures uint64
	lastErr  string
	lastOK   time.Time
}

// Start runs t from l until Close.
func Start(l *ledger.Ledger, t Target, cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runner{cfg: cfg, l: l, t: t, log: cfg.Logger.With("sink", t.Name()),
		wake: make(chan struct{}, 1), stop: cancel, done: make(chan struct{}), known: Cursor{}}
	r.unsub = l.Subscribe(func([]*ledger.Op) { r.signal() })
	go r.run(ctx)
	return r, nil
}

func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops the runner, waits for it and closes the target.
func (r *Runner) Close() error {
	r.unsub()
	r.stop()
	<-r.done
	return r.t.Close()
}

// Name is the target's name.
func (r *Runner) Name() string { return r.t.Name() }

// Status reports the backlog and the last outcome.
func (r *Runner) Status() Status {
	r.mu.Lock()
	known := r.known.Clone()
	st := Status{Name: r.t.Name(), Written: r.written, Failures: r.failures, LastError: r.lastErr}
	if !r.lastOK.IsZero() {
		t := r.lastOK.UTC()
		st.LastOK = &t
	}
	r.mu.Unlock()
	for _, scope := range r.l.Scopes() {
		st.Backlog += r.l.VersionVector(scope).Beyond(known[scope])
	}
	return st
}

func (r *Runner) run(ctx context.Context) {
	defer close(r.done)
	var cur Cursor
	delay := r.cfg.RetryMin
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	for ctx.Err() == nil {
		err := r.pass(ctx, &cur)
		if err == nil {
			err = r.t.Idle(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			cur = nil // the target tells the truth again after a failure
			r.fail(err)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(delay*2, r.cfg.RetryMax)
			continue
		}
		delay = r.cfg.RetryMin
		r.ok(0)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// pass writes everything the cursor lacks, scope by scope.
func (r *Runner) pass(ctx context.Context, cur *Cursor) error {
	if *cur == nil {
		c, err := r.t.Cursor(ctx)
		if err != nil {
			return fmt.Errorf("load cursor: %w", err)
		}
		if c == nil {
			c = Cursor{}
		}
		*cur = c
		r.mu.Lock()
		r.known = c.Clone()
		r.mu.Unlock()
	}
	for _, scope := range r.l.Scopes() {
		if err := r.scope(ctx, scope, *cur); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) scope(ctx context.Context, scope string, cur Cursor) error {
	vv := cur[scope].Clone()
	if vv == nil {
		vv = crdt.VersionVector{}
	}
	var pending []Op
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		next := vv.Clone()
		for _, o := range pending {
			next.Advance(o.Device, o.Seq)
		}
		if err := r.t.Write(ctx, scope, pending, next); err != nil {
			return fmt.Errorf("write %d ops of scope %s: %w", len(pending), scope, err)
		}
		vv = next
		cur[scope] = next
		r.mu.Lock()
		r.known[scope] = next.Clone()
		r.mu.Unlock()
		r.ok(uint64(len(pending)))
		pending = pending[:0:0]
		return nil
	}
	err := r.l.Ops(ctx, scope, vv, r.cfg.ReadBytes, func(batch []ledger.RawOp) error {
		for _, raw := range batch {
			o, err := ledger.DecodeOp(raw.Bytes)
			if err != nil { // stored ops were checked when placed: storage damage
				return fmt.Errorf("stored op %s/%d: %w", raw.Device, raw.Seq, err)
			}
			// Never split the ops at one (device, seq), both branches of a
			// fork, across two batches: the cursor between them would skip
			// the second.
			if len(pending) >= r.cfg.BatchOps {
				last := pending[len(pending)-1]
				if last.Device != o.Device || last.Seq != o.Seq {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			pending = append(pending, Decode(o))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

func (r *Runner) fail(err error) {
	r.mu.Lock()
	r.failures++
	first := r.lastErr == ""
	r.lastErr = err.Error()
	r.mu.Unlock()
	if first {
		r.log.Warn("sink failing; ops are kept and retried with backoff", "err", err)
	} else {
		r.log.Debug("sink still failing", "err", err)
	}
}

func (r *Runner) ok(n uint64) {
	r.mu.Lock()
	recovered := r.lastErr != ""
	r.written += n
	r.lastErr = ""
	r.lastOK = r.cfg.Now()
	r.mu.Unlock()
	if recovered {
		r.log.Info("sink recovered")
	}
}
