package crdt

import (
	"errors"
	"fmt"
	"time"
)

// Timestamp is a hybrid logical clock reading: physical nanoseconds since
// the Unix epoch, and a logical counter that orders events within the same
// nanosecond. The zero Timestamp is before every other.
type Timestamp struct {
	_       struct{} `cbor:",toarray"`
	Wall    int64
	Logical uint32
}

// Compare returns -1, 0 or +1 as t is before, equal to or after u.
func (t Timestamp) Compare(u Timestamp) int {
	switch {
	case t.Wall < u.Wall:
		return -1
	case t.Wall > u.Wall:
		return 1
	case t.Logical < u.Logical:
		return -1
	case t.Logical > u.Logical:
		return 1
	}
	return 0
}

// Less reports whether t is before u.
func (t Timestamp) Less(u Timestamp) bool { return t.Compare(u) < 0 }

// IsZero reports whether t is the zero Timestamp.
func (t Timestamp) IsZero() bool { return t.Wall == 0 && t.Logical == 0 }

// Time returns the physical part as a time.Time in UTC.
func (t Timestamp) Time() time.Time { return time.Unix(0, t.Wall).UTC() }

func (t Timestamp) String() string { return fmt.Sprintf("%d.%d", t.Wall, t.Logical) }

// PhysicalClock returns the current physical time in Unix nanoseconds.
// Production passes a function around time.Now; tests and the simulator pass
// virtual time.
type PhysicalClock func() int64

// Clock is a hybrid logical clock. Its readings never go backwards, even when
// the physical clock does, and a remote timestamp can drag it forward by at
// most MaxOffset past the local physical clock.
//
// A Clock is not safe for concurrent use; its owner serialises calls.
type Clock struct {
	phys      PhysicalClock
	maxOffset int64
	last      Timestamp
}

// ErrClockOffset is returned by Update when a remote timestamp lies further
// in the future than the clock's MaxOffset. Test with IsClockOffset.
var ErrClockOffset = errors.New("crdt: remote timestamp beyond max clock offset")

// IsClockOffset reports whether err is (or wraps) ErrClockOffset.
func IsClockOffset(err error) bool { return errors.Is(err, ErrClockOffset) }

// NewClock returns a clock reading phys. maxOffset bounds how far ahead of
// phys a remote timestamp may pull the clock; zero or less means no bound.
func NewClock(phys PhysicalClock, maxOffset time.Duration) *Clock {
	return &Clock{phys: phys, maxOffset: int64(maxOffset)}
}

// Last returns the most recent reading without advancing the clock.
func (c *Clock) Last() Timestamp { return c.last }

// Now returns a timestamp after every earlier reading and every accepted
// remote timestamp.
func (c *Clock) Now() Timestamp {
	pt := c.phys()
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt}
	} else {
		c.last.Logical++
		if c.last.Logical == 0 { // logical overflow: borrow a nanosecond
			c.last.Wall++
		}
	}
	return c.last
}

// Update folds a remote timestamp into the clock so that later readings
// order after it. A remote timestamp more than MaxOffset ahead of the
// physical clock is not followed (the clock keeps its reading) and
// ErrClockOffset is returned; the caller decides whether to log it. The
// clock never moves backwards either way.
func (c *Clock) Update(remote Timestamp) error {
	pt := c.phys()
	if c.maxOffset > 0 && remote.Wall-pt > c.maxOffset {
		return fmt.Errorf("%w: remote %s is %s ahead (max %s)", ErrClockOffset, remote,
			time.Duration(remote.Wall-pt), time.Duration(c.maxOffset))
	}
	if c.last.Less(remote) {
		c.last = remote
	}
	return nil
}

// Restore raises the clock to at least ts without the MaxOffset bound. Use
// it only for the owner's own history (timestamps this device issued before
// a restart), so a device never issues a timestamp below one it already
// used, even if its physical clock was set back.
func (c *Clock) Restore(ts Timestamp) {
	if c.last.Less(ts) {
		c.last = ts
	}
}
