package crdt

import (
	"errors"
	"maps"
	"slices"
)

// ErrInsufficientRights refuses a bounded-counter operation its device's
// rights do not cover.
var ErrInsufficientRights = errors.New("crdt: rights do not cover the operation")

// BCounter is a bounded counter (an escrow), after Balegas et al., SRDS
// 2015, as in AntidoteDB's counter_b and Concordant's BCounter: a
// non-negative quantity split into rights, each held by one device, so a
// device may decrement on its own state, offline, without ever taking the
// total below zero.
//
// The state is three families of running totals, each entry written only
// by one device (its owner):
//
//	R[i][i]  units i minted (received stock)          owner i
//	R[i][j]  units i handed to j                      owner i
//	U[i]     units i used (sold)                      owner i
//	X[i][j]  units i reclaimed from j (a write-off)   owner i
//
// Rights(i) = Σ_k R[k][i] − Σ_{j≠i} R[i][j] − U[i] + Σ_j X[i][j] − Σ_k X[k][i]
// Value     = Σ_i R[i][i] − Σ_i U[i]
//
// Entries only grow, so Merge is a per-entry maximum: commutative,
// associative, idempotent. The checked operations (Transfer, Use, Reclaim)
// succeed only when the acting device's rights, in this replica's view,
// cover them. Because a device's own outgoing entries are exact in its own
// view and what it receives can only be more than it has heard of, no
// sequence of checked local operations and merges makes a device's rights
// or the value negative — with one exception, by design: a Reclaim takes
// rights from a device that may not know yet; it is meant for a device
// that is gone (revoked, lost, long silent), by a replica that has heard
// the device's last entries. If the device acted on rights the reclaimer
// had not heard of, or acts again afterwards, its Rights go negative: the
// overspend is visible, never hidden.
//
// The Add* methods apply an entry change without a check, as a replica
// applying another device's operation does.
type BCounter struct {
	_ struct{}                     `cbor:",toarray"`
	R map[string]map[string]uint64 // R[i][j]: minted (j == i) or handed from i to j
	U map[string]uint64            // U[i]: units used by i
	X map[string]map[string]uint64 // X[i][j]: units i reclaimed from j
}

// Mint adds n units to i's rights (stock received at i). It never fails.
func (c *BCounter) Mint(i string, n uint64) { c.AddTransfer(i, i, n) }

// Transfer hands n of from's rights to to; it fails when from's rights do
// not cover n, or from == to.
func (c *BCounter) Transfer(from, to string, n uint64) error {
	if from == to {
		return errors.New("crdt: transfer to oneself")
	}
	if !c.covers(from, n) {
		return ErrInsufficientRights
	}
	c.AddTransfer(from, to, n)
	return nil
}

// Use spends n of i's rights (a sale); it fails when they do not cover n.
func (c *BCounter) Use(i string, n uint64) error {
	if !c.covers(i, n) {
		return ErrInsufficientRights
	}
	c.AddUse(i, n)
	return nil
}

// Reclaim moves n of from's rights to by (a write-off of units stranded on
// a gone device, credited to by); it fails when from's rights, as this
// replica knows them, do not cover n, or by == from.
func (c *BCounter) Reclaim(by, from string, n uint64) error {
	if by == from {
		return errors.New("crdt: reclaim from oneself")
	}
	if !c.covers(from, n) {
		return ErrInsufficientRights
	}
	c.AddReclaim(by, from, n)
	return nil
}

func (c *BCounter) covers(i string, n uint64) bool {
	r := c.Rights(i)
	return r >= 0 && uint64(r) >= n
}

// AddTransfer adds n to R[from][to] without a check (from == to mints).
func (c *BCounter) AddTransfer(from, to string, n uint64) { c.R = add2(c.R, from, to, n) }

// AddUse adds n to U[i] without a check.
func (c *BCounter) AddUse(i string, n uint64) {
	if c.U == nil {
		c.U = map[string]uint64{}
	}
	c.U[i] += n
}

// AddReclaim adds n to X[by][from] without a check.
func (c *BCounter) AddReclaim(by, from string, n uint64) { c.X = add2(c.X, by, from, n) }

func add2(m map[string]map[string]uint64, i, j string, n uint64) map[string]map[string]uint64 {
	if m == nil {
		m = map[string]map[string]uint64{}
	}
	row := m[i]
	if row == nil {
		row = map[string]uint64{}
		m[i] = row
	}
	row[j] += n
	return m
}

// Rights returns the units i may still use or hand on. It is negative only
// after an overspend (an unchecked Add, or a device acting after a
// Reclaim it had not heard of).
func (c *BCounter) Rights(i string) int64 {
	var r int64
	for k, row := range c.R {
		if n := row[i]; n > 0 {
			r += int64(n)
		}
		if k == i {
			for j, n := range row {
				if j != i {
					r -= int64(n)
				}
			}
		}
	}
	r -= int64(c.U[i])
	for k, row := range c.X {
		if k == i {
			for _, n := range row {
				r += int64(n)
			}
		}
		r -= int64(row[i])
	}
	return r
}

// Received is Σ_k R[k][i] + Σ_j X[i][j]: every unit that ever reached i
// (minted, handed to it or reclaimed by it). It only grows, so a request
// for units can name the value it saw and know when it was answered.
func (c *BCounter) Received(i string) uint64 {
	var n uint64
	for _, row := range c.R {
		n += row[i]
	}
	for _, v := range c.X[i] {
		n += v
	}
	return n
}

// Used returns U[i].
func (c *BCounter) Used(i string) uint64 { return c.U[i] }

// Value is Σ_i R[i][i] − Σ_i U[i]: the units that exist. It equals the sum
// of every device's Rights.
func (c *BCounter) Value() int64 {
	var v int64
	for i, row := range c.R {
		v += int64(row[i])
	}
	for _, n := range c.U {
		v -= int64(n)
	}
	return v
}

// Devices lists every device named in any entry, sorted.
func (c *BCounter) Devices() []string {
	seen := map[string]bool{}
	for _, m := range []map[string]map[string]uint64{c.R, c.X} {
		for i, row := range m {
			seen[i] = true
			for j := range row {
				seen[j] = true
			}
		}
	}
	for i := range c.U {
		seen[i] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

// Merge folds o into c: a per-entry maximum.
func (c *BCounter) Merge(o BCounter) {
	c.R = merge2(c.R, o.R)
	c.U = mergeMax(c.U, o.U)
	c.X = merge2(c.X, o.X)
}

func merge2(dst, src map[string]map[string]uint64) map[string]map[string]uint64 {
	if len(src) > 0 && dst == nil {
		dst = make(map[string]map[string]uint64, len(src))
	}
	for i, row := range src {
		dst[i] = mergeMax(dst[i], row)
	}
	return dst
}

// Equal reports whether c and o hold the same entries (zero entries are
// the same as absent ones).
func (c *BCounter) Equal(o BCounter) bool {
	return equal2(c.R, o.R) && maps.Equal(nonZero(c.U), nonZero(o.U)) && equal2(c.X, o.X)
}

func equal2(a, b map[string]map[string]uint64) bool {
	flat := func(m map[string]map[string]uint64) map[[2]string]uint64 {
		out := map[[2]string]uint64{}
		for i, row := range m {
			for j, n := range row {
				if n != 0 {
					out[[2]string{i, j}] = n
				}
			}
		}
		return out
	}
	return maps.Equal(flat(a), flat(b))
}

// Clone returns an independent copy.
func (c *BCounter) Clone() BCounter {
	clone2 := func(m map[string]map[string]uint64) map[string]map[string]uint64 {
		if m == nil {
			return nil
		}
		out := make(map[string]map[string]uint64, len(m))
		for i, row := range m {
			out[i] = maps.Clone(row)
		}
		return out
	}
	return BCounter{R: clone2(c.R), U: maps.Clone(c.U), X: clone2(c.X)}
}
