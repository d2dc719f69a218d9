package ledger

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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

// RaiseOwnFloor records that this device's own chain (scope, chain) is
// known to reach seq: its durable record of what it wrote says so, or a
// peer holds that much of it. Local writes to that chain wait
// (ErrOwnHistoryBehind) until this replica holds it (sync refills it), for
// at most Config.OwnWait from the first rise; then Append moves to a new
// epoch (see ownChainLocked), so the device never reuses a seq it may
// already have used. source says who said so, for status. The floor only
// rises. Chains of other devices are ignored.
func (l *Ledger) RaiseOwnFloor(scope, chain string, seq uint64, source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raiseFloorLocked(scope, chain, seq, source)
}

// raiseFloorLocked is RaiseOwnFloor under l.mu.
func (l *Ledger) raiseFloorLocked(scope, chain string, seq uint64, source string) {
	if ChainOwner(chain) != l.selfDevice() || !validChainID(chain) {
		return
	}
	if l.floor == nil {
		l.floor = map[chainKey]ownFloor{}
	}
	k := chainKey{scope, chain}
	f := l.floor[k]
	if seq <= f.seq {
		return
	}
	held := l.vv[scope][chain]
	if f.since == 0 || f.seq <= held {
		f.since = l.cfg.Now() // a new shortfall starts its wait now
	}
	if seq > held {
		l.log.Warn("own chain behind what is known of it: local writes wait for sync to refill it",
			"scope", scope, "chain", chain, "held", held, "known", seq, "source", source, "wait", l.cfg.OwnWait)
	}
	f.seq, f.source = seq, source
	l.floor[k] = f
}

// OwnFloor returns what RaiseOwnFloor learned of this device's own chain
// (scope, chain), and from whom (0 and "" when nothing).
func (l *Ledger) OwnFloor(scope, chain string) (seq uint64, source string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.floor[chainKey{scope, chain}]
	return f.seq, f.source
}

type ownFloor struct {
	seq    uint64
	source string
	since  int64 // Now when the chain was first seen short of the floor
}

// belowFloor reports whether the chain c (scope, chain) of this device is
// shorter than its floor. Called under l.mu.
func (l *Ledger) belowFloor(scope, chain string, c *chain) bool {
	return c.length() < l.floor[chainKey{scope, chain}].seq
}

// BehindError is ErrOwnHistoryBehind with how long Append will wait at
// most before it moves to a new epoch.
type BehindError struct {
	Scope, Chain string
	Held, Known  uint64
	Source       string        // who said the chain reaches Known
	Wait         time.Duration // at most this long; then writes go to a new epoch
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("%v: chain %s holds %d of %d known ops; at most %s more, then this device writes a new chain",
		ErrOwnHistoryBehind, e.Chain, e.Held, e.Known, e.Wait.Round(time.Second))
}

func (e *BehindError) Unwrap() error { return ErrOwnHistoryBehind }

// ownChainLocked returns the chain id this device writes in scope now:
// the one it wrote last, unless that one is unsafe to extend.
//   - forked (a copy of this device, a clone or a restored backup, wrote
//     other ops at its seqs): a new epoch at once;
//   - short of what is known of it (its floor) or with own ops held for a
//     gap: wait up to OwnWait for sync to refill it, then a new epoch. A
//     new epoch is a fresh chain from seq 1, so no seq of it can collide
//     with one a lost tail or a copy used; the lost ops still count
//     wherever they are held.
//
// Called under l.mu.
func (l *Ledger) ownChainLocked(scope string) (string, *chain, error) {
	dev := l.currentOwn(scope)
	c := l.chainOf(scope, dev)
	switch {
	case c.forked():
		dev = l.newEpochLocked(scope, dev, "own chain forked: a copy of this device wrote other ops at its seqs")
	case l.heldFor(scope, dev) || l.belowFloor(scope, dev, c):
		k := chainKey{scope, dev}
		if l.floor[k].seq <= c.length() {
			l.raiseFloorLocked(scope, dev, c.length()+1, "own ops held for a gap")
		}
		f := l.floor[k]
		if wait := time.Duration(f.since + int64(l.cfg.OwnWait) - l.cfg.Now()); wait > 0 {
			return "", nil, &BehindError{Scope: scope, Chain: dev, Held: c.length(), Known: f.seq, Source: f.source, Wait: wait}
		}
		dev = l.newEpochLocked(scope, dev, fmt.Sprintf("own chain still short of what is known of it after %s (%d of %d, %s)",
			l.cfg.OwnWait, c.length(), f.seq, f.source))
	default:
		return dev, c, nil
	}
	return dev, l.chainOf(scope, dev), nil
}

// currentOwn is the chain this device last wrote in scope: remembered, or
// on first use the own chain whose newest op is newest (epoch 0 when none).
func (l *Ledger) currentOwn(scope string) string {
	if d, ok := l.cur[scope]; ok {
		return d
	}
	self := l.selfDevice()
	best, at := self, int64(-1)
	for k, c := range l.chains {
		if k.scope != scope || ChainOwner(k.device) != self || c.length() == 0 {
			continue
		}
		if c.lastWall > at || (c.lastWall == at && k.device > best) {
			best, at = k.device, c.lastWall
		}
	}
	if l.cur == nil {
		l.cur = map[string]string{}
	}
	l.cur[scope] = best
	return best
}

// newEpochLocked moves this device's writes in scope to a new epoch:
// above every epoch of it this replica knows (chains, floors, the durable
// record), plus an offset from Config.Instance so that two processes
// running one device (a clone) rarely pick the same one.
func (l *Ledger) newEpochLocked(scope, from, why string) string {
	self := l.selfDevice()
	var top uint64
	for k := range l.chains {
		if ChainOwner(k.device) == self {
			top = max(top, ChainEpoch(k.device))
		}
	}
	for k := range l.floor {
		top = max(top, ChainEpoch(k.device))
	}
	if l.own != nil {
		for k := range l.own.loaded {
			if ChainOwner(k.Chain) == self {
				top = max(top, ChainEpoch(k.Chain))
			}
		}
	}
	next := ChainID(self, top+1+l.cfg.Instance%100)
	l.cur[scope] = next
	l.stats.Epochs++
	l.log.Warn("this device now writes a new chain epoch, so no seq can collide with ops a copy of it or a lost tail may hold",
		"scope", scope, "from", from, "to", next, "why", why)
	return next
}
