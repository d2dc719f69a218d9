package ledger

import (
	"strconv"
	"strings"
)

// A device's ops in one store form a chain keyed by the op's Device field.
// That field is the device's peer id, or, for a later epoch of the same
// device, the peer id, EpochSep and the epoch number (2, 3, ...): a fresh
// chain, from seq 1, that cannot collide with any seq of the device's
// earlier chains. A device starts one when it must sell without knowing
// whether seqs of its current chain were used by a copy of it (a restore
// from an old backup with no peer in reach, a clone). The certificate is
// the owner's: ChainOwner maps the field back to it.
const EpochSep = "~"

// ChainOwner returns the device (peer id) that authors the chain named by
// an op's Device field.
func ChainOwner(device string) string {
	if i := strings.LastIndex(device, EpochSep); i > 0 {
		return device[:i]
	}
	return device
}

// ChainEpoch returns the epoch of the chain named by an op's Device field:
// 0 for the device's first chain.
func ChainEpoch(device string) uint64 {
	i := strings.LastIndex(device, EpochSep)
	if i <= 0 {
		return 0
	}
	e, err := strconv.ParseUint(device[i+len(EpochSep):], 10, 32)
	if err != nil {
		return 0
	}
	return e
}

// ChainID names device's chain of epoch e (the device id itself for 0).
func ChainID(device string, e uint64) string {
	if e == 0 {
		return device
	}
	return device + EpochSep + strconv.FormatUint(e, 10)
}

// validChainID reports whether an op's Device field is a device id or a
// device id with a well-formed epoch (1 and up, no leading zero).
func validChainID(device string) bool {
	i := strings.LastIndex(device, EpochSep)
	if i < 0 {
		return true
	}
	n := device[i+len(EpochSep):]
	if i == 0 || n == "" || n[0] == '0' || len(n) > 9 {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// RaiseOwnFloor records that this device's own chain in scope is known to
// reach seq: its durable record of what it wrote says so, or a peer holds
// that much of it. Local writes to that chain are refused with
// ErrOwnHistoryBehind until this replica holds it (sync refills it), so the
// device never reuses a seq it may already have used. source says who
// said so, for status. The floor only rises.
func (l *Ledger) RaiseOwnFloor(scope string, seq uint64, source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raiseFloorLocked(scope, seq, source)
}

// raiseFloorLocked is RaiseOwnFloor under l.mu.
func (l *Ledger) raiseFloorLocked(scope string, seq uint64, source string) {
	if l.floor == nil {
		l.floor = map[string]ownFloor{}
	}
	if f := l.floor[scope]; seq > f.seq {
		l.floor[scope] = ownFloor{seq: seq, source: source}
	}
}

// OwnFloor returns what RaiseOwnFloor learned of this device's own chain
// in scope, and from whom (0 and "" when nothing).
func (l *Ledger) OwnFloor(scope string) (seq uint64, source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.floor[scope]
	return f.seq, f.source
}

type ownFloor struct {
	seq    uint64
	source string
}

// belowFloor reports whether the chain c of this device in scope is
// shorter than its floor. Called under l.mu.
func (l *Ledger) belowFloor(scope string, c *chain) bool {
	return c.length() < l.floor[scope].seq
}
