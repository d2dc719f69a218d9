package mesh

import (
	"sync"
	"time"
)

// Pulls coordinates catch-up between the sessions of one node: when several
// peers advertise the same missing ops, only one is asked for them, so
// bytes on the wire stay proportional to what is missing (docs/design.md §4). A
// request that is not answered within Timeout may be given to another
// peer. Safe for concurrent use; it holds no clock of its own.
type Pulls struct {
	// Timeout after which an unanswered pull may be re-requested. 3 s: a
	// LAN round trip is milliseconds; an uplink over 3G can take a second.
	Timeout time.Duration

	mu sync.Mutex
	m  map[pullKey]pull
}

type pullKey struct{ scope, device string }

type pull struct {
	through uint64
	at      int64  // Unix ns the request was made, or last made progress
	have    uint64 // what this node held then
}

// NewPulls returns an empty tracker with the default timeout.
func NewPulls() *Pulls { return &Pulls{Timeout: 3 * time.Second, m: map[pullKey]pull{}} }

// claim returns the range (from, through] of device's ops this caller
// should request, given that it holds up to have and the peer up to theirs,
// at most max ops; ok is false when another request already covers it.
func (p *Pulls) claim(scope, device string, have, theirs, max uint64, now int64) (from, through uint64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pullKey{scope, device}
	from = have
	if e, found := p.m[k]; found && e.through > have {
		if have > e.have { // the answer is arriving: a slow peer, not a lost request
			e.at, e.have = now, have
			p.m[k] = e
		}
		if now-e.at < int64(p.Timeout) {
			from = e.through
		}
	}
	if theirs <= from {
		return 0, 0, false
	}
	through = min(theirs, from+max)
	p.m[k] = pull{through: through, at: now, have: have}
	return from, through, true
}
