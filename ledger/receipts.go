package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// Receipt numbers are short and human: the device's name (its
// certificate's Name), a middle dot and a number, gapless per device for
// sales ("till-1·0042") and, separately, for refunds ("till-1·R0007").
// Append puts the number in the signed body (Sale.Receipt, Refund.Receipt)
// from a per-chain counter across every scope the device writes, which
// replay and arriving ops of the device's own chain restore. A later epoch
// of a device (ChainEpoch > 0) counts afresh and carries its epoch
// ("till-1·2·0001"), so numbers never collide. Names are unique in a fleet
// when devices are enrolled through one fleet folder (storemesh enroll
// keeps a registry); should two devices' certificates share a name anyway,
// each gets a short suffix of its device id ("till-1#x7Qa·0042"). Ops
// written before receipt numbers fall back to ReceiptNo.

const receiptSep = "·"

type receiptKey struct {
	chain string
	n     uint64
}

// receiptBook holds, per chain (an op's Device field), the highest sale
// and refund receipt numbers held or reserved, and the sales by number.
type receiptBook struct {
	sales   map[string]uint64
	refunds map[string]uint64
	index   map[receiptKey]string
}

func newReceiptBook() receiptBook {
	return receiptBook{sales: map[string]uint64{}, refunds: map[string]uint64{}, index: map[receiptKey]string{}}
}

func (r *receiptBook) addSale(o *Op, n uint64, id string) {
	if n == 0 {
		return
	}
	r.sales[o.Device] = max(r.sales[o.Device], n)
	k := receiptKey{o.Device, n}
	if have, ok := r.index[k]; !ok || id < have { // a fork may reuse a number: the same pick everywhere
		r.index[k] = id
	}
}

func (r *receiptBook) addRefund(o *Op, n uint64) {
	if n > 0 {
		r.refunds[o.Device] = max(r.refunds[o.Device], n)
	}
}

// numberReceipt returns a copy of a sale or refund body carrying the next
// receipt number of chain; other bodies come back as they are. The number
// is taken by reserveReceipt once nothing can refuse the op any more.
// Called under l.mu.
func (s *state) numberReceipt(chain string, b body) body {
	switch v := b.(type) {
	case *Sale:
		c := *v
		c.ReceiptSeq = s.receipts.sales[chain] + 1
		return &c
	case *Refund:
		c := *v
		c.ReceiptSeq = s.receipts.refunds[chain] + 1
		return &c
	}
	return b
}

// reserveReceipt takes b's receipt number for chain, so a concurrent
// Append (waiting on the same group commit) gets the next one.
func (s *state) reserveReceipt(chain string, b body) {
	switch v := b.(type) {
	case *Sale:
		s.receipts.sales[chain] = max(s.receipts.sales[chain], v.ReceiptSeq)
	case *Refund:
		s.receipts.refunds[chain] = max(s.receipts.refunds[chain], v.ReceiptSeq)
	}
}

// receiptNames maps each device with a certificate to the name its
// receipts carry. Called under l.mu; rebuilt when certificates change.
func (l *Ledger) receiptNames() map[string]string {
	if l.names != nil {
		return l.names
	}
	byName := map[string][]string{}
	for d, cs := range l.certs {
		best := cs[0]
		for _, c := range cs[1:] {
			if c.Expiry > best.Expiry {
				best = c
			}
		}
		name := best.Name
		if name == "" {
			name = shortID(d)
		}
		byName[name] = append(byName[name], d)
	}
	l.names = map[string]string{}
	for name, ds := range byName {
		for _, d := range ds {
			if len(ds) > 1 {
				l.names[d] = name + "#" + shortID(d)
			} else {
				l.names[d] = name
			}
		}
	}
	return l.names
}

func shortID(d string) string {
	if len(d) > 4 {
		return d[len(d)-4:]
	}
	return d
}

func (l *Ledger) receiptPrefix(chain string) string {
	name, ok := l.receiptNames()[ChainOwner(chain)]
	if !ok {
		name = shortID(ChainOwner(chain))
	}
	if e := ChainEpoch(chain); e > 0 {
		name += receiptSep + strconv.FormatUint(e, 10)
	}
	return name + receiptSep
}

// saleReceipt is the receipt number of a sale of chain at seq with
// number n (0: written before receipt numbers).
func (l *Ledger) saleReceipt(chain string, seq, n uint64) string {
	if n == 0 {
		return ReceiptNo(chain, seq)
	}
	return fmt.Sprintf("%s%04d", l.receiptPrefix(chain), n)
}

func (l *Ledger) refundReceipt(chain string, seq, n uint64) string {
	if n == 0 {
		return ReceiptNo(chain, seq)
	}
	return fmt.Sprintf("%sR%04d", l.receiptPrefix(chain), n)
}

// saleByReceipt finds the sale whose receipt number is r. Called under
// l.mu.
func (l *Ledger) saleByReceipt(r string) (string, bool) {
	parts := strings.Split(r, receiptSep)
	if len(parts) < 2 {
		return "", false
	}
	n, err := strconv.ParseUint(parts[len(parts)-1], 10, 64)
	if err != nil || n == 0 {
		return "", false
	}
	name := strings.Join(parts[:len(parts)-1], receiptSep)
	var epoch uint64
	if len(parts) > 2 {
		if e, err := strconv.ParseUint(parts[len(parts)-2], 10, 32); err == nil && e > 0 {
			if id, ok := l.saleByReceiptOf(strings.Join(parts[:len(parts)-2], receiptSep), e, n); ok {
				return id, true
			}
		}
	}
	return l.saleByReceiptOf(name, epoch, n)
}

func (l *Ledger) saleByReceiptOf(name string, epoch, n uint64) (string, bool) {
	for d, dn := range l.receiptNames() {
		if dn != name {
			continue
		}
		if id, ok := l.st.receipts.index[receiptKey{ChainID(d, epoch), n}]; ok {
			return id, true
		}
	}
	return "", false
}

// SaleByReceipt returns the sale with receipt number r ("till-1·0042").
func (l *Ledger) SaleByReceipt(r string) (SaleRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.saleByReceipt(r)
	if !ok {
		return SaleRecord{}, false
	}
	rec, ok := l.st.sales[id]
	if !ok {
		return SaleRecord{}, false
	}
	out := *rec
	out.Receipt = l.saleReceipt(rec.Device, rec.Seq, rec.ReceiptSeq)
	return out, true
}
