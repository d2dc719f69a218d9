package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ReactorConfig tunes how a node moves allotted units (AllotReactor).
type ReactorConfig struct {
	// LowWater: a device that sells and holds fewer units than this asks
	// its store's peers for more. Default 1 (it asks when it ran out).
	LowWater int64
	// Ask is how many units it asks for in all. Default 2.
	Ask int64
	// Stagger: of the devices that could answer a request, the one holding
	// most answers at once, the k-th after k×Stagger, and only if the
	// request is still open, so one request rarely gets two answers.
	// Default 150 ms.
	Stagger time.Duration
}

// DefaultReactorConfig returns the defaults.
func DefaultReactorConfig() ReactorConfig {
	return ReactorConfig{LowWater: 1, Ask: 2, Stagger: 150 * time.Millisecond}
}

// Validate reports a config that cannot work.
func (c ReactorConfig) Validate() error {
	var errs []error
	if c.LowWater < 1 {
		errs = append(errs, errors.New("the low-water mark must be at least 1"))
	}
	if c.Ask < c.LowWater {
		errs = append(errs, errors.New("the units asked for must be at least the low-water mark"))
	}
	if c.Stagger < 0 {
		errs = append(errs, errors.New("negative Stagger"))
	}
	return errors.Join(errs...)
}

// AllotReactor decides the allotment ops a node writes so units reach the
// devices that sell them, with no coordinator: a selling device below the
// low-water mark writes an allot.request; a device of the store holding
// surplus answers an open request with an allot.transfer on its own
// rights — a terminal never more than half of what it holds and never
// below the low-water mark, an anchor (the store's bank, which does not
// sell) up to all it holds. A request stays open, visible to every peer
// that syncs the store, until its author has received more units than it
// had when it asked; a peer that reconnects later answers it then.
//
// Step is a pure function of the allotment state, the time and what the
// reactor remembers (when it first saw each request): the node and the
// simulator drive the same code.
type AllotReactor struct {
	cfg  ReactorConfig
	seen map[string]int64 // epoch + request id → first seen (ns)
}

// NewAllotReactor returns a reactor; a zero field of cfg takes its default.
func NewAllotReactor(cfg ReactorConfig) (*AllotReactor, error) {
	def := DefaultReactorConfig()
	if cfg.LowWater == 0 {
		cfg.LowWater = def.LowWater
	}
	if cfg.Ask == 0 {
		cfg.Ask = max(def.Ask, cfg.LowWater)
	}
	if cfg.Stagger == 0 {
		cfg.Stagger = def.Stagger
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("allot reactor: %w", err)
	}
	return &AllotReactor{cfg: cfg, seen: map[string]int64{}}, nil
}

// AllotIntent is an op the reactor wants written.
type AllotIntent struct {
	Store string
	Kind  Kind
	Body  any // *AllotRequest or *AllotTransfer
}

// Step returns the ops self (its certificate) should write now, given the
// allotment statuses it holds and the time now (Unix ns).
func (r *AllotReactor) Step(self *Certificate, sts []AllotStatus, now int64) []AllotIntent {
	me := ChainOwner(self.Device)
	var out []AllotIntent
	open := map[string]bool{}
	for _, st := range sts {
		if !st.Allotted {
			continue
		}
		mine := st.Rights(me)
		if self.Role != RoleAnchor && mine < r.cfg.LowWater && st.Total-mine > 0 && !hasRequest(st, me) {
			out = append(out, AllotIntent{Store: st.Store, Kind: KindAllotRequest, Body: &AllotRequest{
				SKU: st.SKU, Epoch: st.Epoch, Want: r.cfg.Ask - max(mine, 0), Received: st.Received[me]}})
		}
		for _, q := range st.Requests {
			key := st.Epoch + "/" + q.ID
			open[key] = true
			if q.Device == me {
				continue
			}
			first, ok := r.seen[key]
			if !ok {
				first = now
				r.seen[key] = now
			}
			give := min(q.Want, r.spare(self.Role, mine))
			if give < 1 {
				continue
			}
			if now-first < int64(r.rank(st, me, q.Device))*int64(r.cfg.Stagger) {
				continue
			}
			mine -= give
			out = append(out, AllotIntent{Store: st.Store, Kind: KindAllotTransfer, Body: &AllotTransfer{
				SKU: st.SKU, Epoch: st.Epoch, To: q.Device, Qty: give}})
		}
	}
	for k := range r.seen {
		if !open[k] {
			delete(r.seen, k)
		}
	}
	return out
}

// spare is what a holder of role with units may give away: an anchor all
// of them, a selling device at most half and never below the low-water
// mark.
func (r *AllotReactor) spare(role Role, units int64) int64 {
	if role == RoleAnchor {
		return units
	}
	return min(units/2, units-r.cfg.LowWater)
}

// rank is me's place among the devices that could answer a request of
// requester (most units first, then by id, as st.Holders is sorted).
func (r *AllotReactor) rank(st AllotStatus, me, requester string) int {
	k := 0
	for _, h := range st.Holders {
		if h.Device == requester || r.spare(h.Role, h.Units) < 1 {
			continue
		}
		if h.Device == me {
			return k
		}
		k++
	}
	return k
}

func hasRequest(st AllotStatus, device string) bool {
	for _, q := range st.Requests {
		if q.Device == device {
			return true
		}
	}
	return false
}

// React runs one reactor step over this ledger's allotments (an anchor's
// over every store) and appends the ops it asks for. It returns how many
// were written. An op the state no longer allows by the time it is
// appended (units spent meanwhile, the epoch changed) is skipped.
func (l *Ledger) React(ctx context.Context, r *AllotReactor, now int64) (int, error) {
	self := l.cfg.Self
	if self == nil || l.cfg.Key == nil {
		return 0, ErrNoKey
	}
	scope := self.Store
	if self.Store == FleetScope {
		scope = ""
	}
	n := 0
	for _, in := range r.Step(self, l.Allotments(scope), now) {
		_, err := l.Append(ctx, in.Store, in.Kind, in.Body)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrAllotmentExhausted) || errors.Is(err, ErrBadInput):
			l.log.Debug("allotment op skipped", "kind", in.Kind, "err", err)
		default:
			return n, err
		}
	}
	return n, nil
}
