package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// allotShop: terminals A ("till-1"), B ("till-2"), manager M and anchor H
// of store s1, each with its own ledger knowing every certificate.
type allotShop struct {
	f              *ledgertest.Fleet
	a, b, m, h     *ledgertest.Device
	la, lb, lm, lh *ledger.Ledger
}

func newAllotShop(t testing.TB, seed uint64) *allotShop {
	t.Helper()
	ctx := context.Background()
	s := &allotShop{f: ledgertest.NewFleet(seed)}
	s.a = s.f.Enroll("s1", ledger.RoleTerminal, named("till-1"))
	s.b = s.f.Enroll("s1", ledger.RoleTerminal, named("till-2"))
	s.m = s.f.Enroll("s1", ledger.RoleManager, named("office"))
	s.h = s.f.Enroll(ledger.FleetScope, ledger.RoleAnchor, named("hq"))
	all := []*ledgertest.Device{s.a, s.b, s.m, s.h}
	open := func(d *ledgertest.Device) *ledger.Ledger {
		var certs []*ledger.Certificate
		for _, o := range all {
			if o != d {
				certs = append(certs, o.Cert)
			}
		}
		return ok(s.f.Open(ctx, ledgertest.MemStore(), d, certs...))(t)
	}
	s.la, s.lb, s.lm, s.lh = open(s.a), open(s.b), open(s.m), open(s.h)
	return s
}

// pull applies to `to` every op of s1 that from holds and to lacks
// (duplicates are fine).
func pull(t testing.TB, from, to *ledger.Ledger) {
	t.Helper()
	ctx := context.Background()
	err := from.Ops(ctx, "s1", to.VersionVector("s1"), 1<<20, func(batch []ledger.RawOp) error {
		raws := make([][]byte, len(batch))
		for i, r := range batch {
			raws[i] = r.Bytes
		}
		rs, err := to.ApplyBatch(ctx, raws)
		for _, r := range rs {
			if r.Outcome == ledger.Rejected {
				t.Errorf("apply: %v", r.Err)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mesh(t testing.TB, ls ...*ledger.Ledger) {
	t.Helper()
	for range 2 {
		for _, a := range ls {
			for _, b := range ls {
				if a != b {
					pull(t, a, b)
				}
			}
		}
	}
}

func allotment(t testing.TB, l *ledger.Ledger, sku string) ledger.AllotStatus {
	t.Helper()
	st, isAllotted := l.Allotment("s1", sku)
	if !isAllotted {
		t.Fatalf("%s not allotted", sku)
	}
	return st
}

func TestAllotSaleRefusedBeyondHoldings(t *testing.T) {
	s := newAllotShop(t, 1)
	appendOp(t, s.lh, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 5})
	set := appendOp(t, s.lh, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	mesh(t, s.la, s.lb, s.lh)
	st := allotment(t, s.la, "SCARF")
	if st.Epoch != set.ID() || st.Total != 5 || st.Rights(s.h.ID()) != 5 || st.Rights(s.a.ID()) != 0 {
		t.Fatalf("after conversion: %+v", st)
	}

	_, err := s.la.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
	var ae *ledger.AllotmentError
	if !errors.Is(err, ledger.ErrAllotmentExhausted) || !errors.As(err, &ae) || !strings.Contains(err.Error(), "5 at HQ") {
		t.Fatalf("sale without units: %v", err)
	}
	// An ordinary SKU still sells freely.
	appendOp(t, s.la, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))

	// HQ hands 2 to till-1 and 2 to till-2; each sells what it holds.
	appendOp(t, s.lh, "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: st.Epoch, To: s.a.ID(), Qty: 2})
	appendOp(t, s.lh, "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: st.Epoch, To: s.b.ID(), Qty: 2})
	if _, err := s.lh.Append(context.Background(), "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: st.Epoch, To: s.b.ID(), Qty: 2}); !errors.Is(err, ledger.ErrAllotmentExhausted) {
		t.Fatalf("transfer beyond rights: %v", err)
	}
	mesh(t, s.la, s.lb, s.lh)
	appendOp(t, s.la, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 2, 900))
	_, err = s.la.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
	if !errors.Is(err, ledger.ErrAllotmentExhausted) || !strings.Contains(err.Error(), "2 at till-2, 1 at HQ") {
		t.Fatalf("third sale at till-1: %v", err)
	}
	appendOp(t, s.lb, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
	mesh(t, s.la, s.lb, s.lh)
	for _, l := range []*ledger.Ledger{s.la, s.lb, s.lh} {
		st := allotment(t, l, "SCARF")
		if st.Total != 2 || l.OnHand("s1", "SCARF") != 2 || st.Rights(s.b.ID()) != 1 || st.Rights(s.h.ID()) != 1 || len(st.Overspent) != 0 {
			t.Fatalf("end state: %+v on_hand %d", st, l.OnHand("s1", "SCARF"))
		}
		for _, c := range l.Conflicts("s1") {
			if c.SKU == "SCARF" {
				t.Fatalf("an allotted SKU oversold: %+v", c)
			}
		}
	}
	if s.la.Digest("s1") != s.lh.Digest("s1") {
		t.Fatal("digests differ")
	}
}

func TestAllotRulesAtAppend(t *testing.T) {
	s := newAllotShop(t, 2)
	ctx := context.Background()
	if _, err := s.la.Append(ctx, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true}); ledger.RejectReason(err) != ledger.ReasonRole {
		t.Fatalf("terminal marking allotted: %v", err)
	}
	if _, err := s.la.Append(ctx, "s1", ledger.KindAllotRequest, &ledger.AllotRequest{SKU: "SCARF", Epoch: "x", Want: 1}); !errors.Is(err, ledger.ErrBadInput) {
		t.Fatalf("request for an ordinary SKU: %v", err)
	}
	set := appendOp(t, s.lm, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	if _, err := s.lm.Append(ctx, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true}); !errors.Is(err, ledger.ErrBadInput) {
		t.Fatalf("marking twice: %v", err)
	}
	if _, err := s.lm.Append(ctx, "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: "stale", To: s.a.ID(), Qty: 1}); !errors.Is(err, ledger.ErrBadInput) {
		t.Fatalf("transfer in a stale epoch: %v", err)
	}
	if _, err := s.lm.Append(ctx, "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: set.ID(), To: s.m.ID(), Qty: 1}); !errors.Is(err, ledger.ErrBadInput) {
		t.Fatalf("transfer to oneself: %v", err)
	}
	// Received stock of an allotted SKU belongs to the receiving device.
	appendOp(t, s.lm, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 3})
	if st := allotment(t, s.lm, "SCARF"); st.Rights(s.m.ID()) != 3 || st.Total != 3 {
		t.Fatalf("after receipt: %+v", st)
	}
	// Turned off, the SKU is ordinary again: on_hand is untouched.
	appendOp(t, s.lm, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: false})
	if s.lm.Allotted("s1", "SCARF") || s.lm.OnHand("s1", "SCARF") != 3 {
		t.Fatal("turning allotment off")
	}
	appendOp(t, s.lm, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 3, 900))
}

// TestAllotConcurrentSalesNeverOverspend: group commit makes concurrent
// Appends share a commit; units a sale in flight spends are reserved, so
// of 12 concurrent one-unit sales exactly the 4 held succeed.
func TestAllotConcurrentSalesNeverOverspend(t *testing.T) {
	s := newAllotShop(t, 3)
	appendOp(t, s.lm, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	mesh(t, s.la, s.lm)
	appendOp(t, s.la, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 4})
	var wg sync.WaitGroup
	var mu sync.Mutex
	okN, refused := 0, 0
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.la.Append(context.Background(), "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				okN++
			case errors.Is(err, ledger.ErrAllotmentExhausted):
				refused++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if okN != 4 || refused != 8 || s.la.OnHand("s1", "SCARF") != 0 {
		t.Fatalf("%d sold, %d refused, on_hand %d", okN, refused, s.la.OnHand("s1", "SCARF"))
	}
}

// TestAllotConversionKeepsTotalsExact: stock moves at several devices,
// some of them unseen by the manager when it marks the SKU allotted. On
// every replica holding every op, in any order, the counter's total is
// on_hand; a sale made under ordinary rules by a device that had not
// heard of the conversion shows as that device's overspend.
func TestAllotConversionKeepsTotalsExact(t *testing.T) {
	s := newAllotShop(t, 4)
	appendOp(t, s.la, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 6})
	appendOp(t, s.lb, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 2})
	mesh(t, s.la, s.lb, s.lm)
	appendOp(t, s.la, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))                               // seen by M
	appendOp(t, s.la, "s1", ledger.KindStockCounted, &ledger.StockCounted{SKU: "SCARF", OnHand: 6, Seen: 7}) // seen by M
	pull(t, s.la, s.lm)
	appendOp(t, s.lb, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900)) // not seen by M
	appendOp(t, s.lm, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	mesh(t, s.la, s.lb, s.lm)
	for _, l := range []*ledger.Ledger{s.la, s.lb, s.lm} {
		st := allotment(t, l, "SCARF")
		if st.Total != l.OnHand("s1", "SCARF") || st.Total != 5 {
			t.Fatalf("total %d, on_hand %d", st.Total, l.OnHand("s1", "SCARF"))
		}
		if st.Rights(s.m.ID()) != 6 || st.Rights(s.b.ID()) != -1 || len(st.Overspent) != 1 || st.Overspent[0].Device != s.b.ID() {
			t.Fatalf("rights after conversion: %+v", st)
		}
	}
	if s.la.AllotOverspends() == 0 {
		t.Fatal("the overspend was not counted")
	}
}

// TestAllotWriteoff: units stranded on a lost till are reclaimed by HQ;
// the till, back, cannot sell them; what it sold offline meanwhile shows
// as its overspend on every replica.
func TestAllotWriteoff(t *testing.T) {
	s := newAllotShop(t, 5)
	ctx := context.Background()
	appendOp(t, s.lh, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	mesh(t, s.la, s.lh)
	appendOp(t, s.la, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 3})
	mesh(t, s.la, s.lh)
	st := allotment(t, s.lh, "SCARF")
	if _, err := s.la.Append(ctx, "s1", ledger.KindAllotWriteoff, &ledger.AllotWriteoff{SKU: "SCARF", Epoch: st.Epoch, Device: s.b.ID(), Units: 1}); ledger.RejectReason(err) != ledger.ReasonRole {
		t.Fatalf("a terminal writing off: %v", err)
	}
	if _, err := s.lh.Append(ctx, "s1", ledger.KindAllotWriteoff, &ledger.AllotWriteoff{SKU: "SCARF", Epoch: st.Epoch, Device: s.a.ID(), Units: 4}); !errors.Is(err, ledger.ErrBadInput) {
		t.Fatalf("writing off more than held: %v", err)
	}
	// till-1 goes silent and sells one offline; HQ writes off the 3 it saw.
	appendOp(t, s.la, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
	appendOp(t, s.lh, "s1", ledger.KindAllotWriteoff, &ledger.AllotWriteoff{SKU: "SCARF", Epoch: st.Epoch, Device: s.a.ID(), Units: 3, Chain: s.a.ID(), Seq: s.lh.Seq("s1", s.a.ID()), Reason: "lost"})
	mesh(t, s.la, s.lh)
	for _, l := range []*ledger.Ledger{s.la, s.lh} {
		st := allotment(t, l, "SCARF")
		if st.Rights(s.h.ID()) != 3 || st.Rights(s.a.ID()) != -1 || st.Total != 2 || len(st.Overspent) != 1 {
			t.Fatalf("after write-off: %+v", st)
		}
	}
	if _, err := s.la.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900)); !errors.Is(err, ledger.ErrAllotmentExhausted) {
		t.Fatalf("till back after write-off sold: %v", err)
	}
}

// TestAllotOrderFree applies one random history to fresh replicas in
// random orders (batches of arbitrary ops, duplicates included): each
// ends with the same allotment status, total equal to on_hand.
func TestAllotOrderFree(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(6) {
		s := newAllotShop(t, 100+seed)
		r := rand.New(rand.NewPCG(seed, 7))
		ls := []*ledger.Ledger{s.la, s.lb, s.lm, s.lh}
		devs := []*ledgertest.Device{s.a, s.b, s.m, s.h}
		appendOp(t, s.lm, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 4})
		for step := range 60 {
			i := r.IntN(4)
			l := ls[i]
			switch r.IntN(6) {
			case 0:
				_, _ = l.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 1 + r.Int64N(3)})
			case 1, 2:
				_, _ = l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
			case 3:
				if st, isA := l.Allotment("s1", "SCARF"); isA {
					to := devs[r.IntN(4)].ID()
					_, _ = l.Append(ctx, "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: st.Epoch, To: to, Qty: 1})
				} else if i >= 2 && step > 10 {
					_, _ = l.Append(ctx, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
				}
			default:
				pull(t, ls[r.IntN(4)], l)
			}
		}
		mesh(t, ls...)
		// Fresh replicas of the anchor's view, fed in random batch orders.
		var raws [][]byte
		err := s.lh.Ops(ctx, "s1", nil, 1<<20, func(b []ledger.RawOp) error {
			for _, o := range b {
				raws = append(raws, o.Bytes)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%+v", statusOf(s.lh))
		for trial := range 4 {
			obs := ok(s.f.Open(ctx, ledgertest.MemStore(), nil, s.a.Cert, s.b.Cert, s.m.Cert, s.h.Cert))(t)
			perm := r.Perm(len(raws))
			for len(perm) > 0 {
				n := min(len(perm), 1+r.IntN(5))
				var batch [][]byte
				for _, k := range perm[:n] {
					batch = append(batch, raws[k])
				}
				if r.IntN(3) == 0 {
					batch = append(batch, raws[r.IntN(len(raws))])
				}
				perm = perm[n:]
				if _, err := obs.ApplyBatch(ctx, batch); err != nil {
					t.Fatal(err)
				}
			}
			if got := fmt.Sprintf("%+v", statusOf(obs)); got != want {
				t.Fatalf("seed %d trial %d: %s\nwant %s", seed, trial, got, want)
			}
			if st, isA := obs.Allotment("s1", "SCARF"); isA && st.Total != obs.OnHand("s1", "SCARF") {
				t.Fatalf("seed %d: total %d, on_hand %d", seed, st.Total, obs.OnHand("s1", "SCARF"))
			}
		}
	}
}

func statusOf(l *ledger.Ledger) []ledger.AllotStatus {
	out := l.Allotments("s1")
	for i := range out {
		out[i].Received = nil
	}
	return out
}

// TestAllotReactorMovesUnits: till-1 sells out; its reactor asks; HQ (the
// bank) answers; then HQ is empty and till-2 gives half of its surplus.
// Every unit is sold exactly once and nothing is oversold.
func TestAllotReactorMovesUnits(t *testing.T) {
	s := newAllotShop(t, 6)
	ctx := context.Background()
	ls := []*ledger.Ledger{s.la, s.lb, s.lh}
	rs := make([]*ledger.AllotReactor, len(ls))
	for i := range rs {
		rs[i] = ok(ledger.NewAllotReactor(ledger.ReactorConfig{Stagger: 1}))(t)
	}
	appendOp(t, s.lh, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 3})
	appendOp(t, s.lh, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	mesh(t, ls...)
	appendOp(t, s.lb, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 4})
	now := int64(0)
	settle := func() {
		for range 10 {
			now += 1e9
			wrote := 0
			for i, l := range ls {
				n, err := l.React(ctx, rs[i], now)
				if err != nil {
					t.Fatal(err)
				}
				wrote += n
			}
			mesh(t, ls...)
			if wrote == 0 {
				return
			}
		}
		t.Fatal("reactors never settled")
	}
	sold := 0
	for range 20 {
		settle()
		if _, err := s.la.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900)); err == nil {
			sold++
		} else if !errors.Is(err, ledger.ErrAllotmentExhausted) {
			t.Fatal(err)
		}
	}
	settle()
	st := allotment(t, s.lh, "SCARF")
	// HQ gives all 3 it holds; till-2 keeps giving half of what it holds
	// while it holds 2 or more: 4 → 2 → 1.
	if sold != 6 || st.Total != 1 || st.Rights(s.b.ID()) != 1 || len(st.Overspent) != 0 {
		t.Fatalf("sold %d; %+v", sold, st)
	}
}

// TestAllotDoubleRefundNeverOverspends: two partitioned devices refund
// the same line of an allotted SKU. The refunded unit is credited to the
// sale's side, not to either refunder, so neither can sell a unit that
// only one of the refunds brought back: after the heal one over_refund
// conflict stands, total = on_hand, and nobody overspent.
func TestAllotDoubleRefundNeverOverspends(t *testing.T) {
	s := newAllotShop(t, 7)
	ctx := context.Background()
	appendOp(t, s.lh, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "SCARF", Qty: 2})
	set := appendOp(t, s.lh, "s1", ledger.KindAllotSet, &ledger.AllotSet{SKU: "SCARF", Allotted: true})
	appendOp(t, s.lh, "s1", ledger.KindAllotTransfer, &ledger.AllotTransfer{SKU: "SCARF", Epoch: set.ID(), To: s.a.ID(), Qty: 2})
	mesh(t, s.la, s.lb, s.lm, s.lh)
	sale := appendOp(t, s.la, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900))
	mesh(t, s.la, s.lb, s.lm, s.lh)

	// Partitioned: till-2 and the office each take the scarf back.
	refund := &ledger.Refund{Sale: sale.ID(), Lines: []ledger.RefundLine{{SKU: "SCARF", Qty: 1}}, Amount: 900}
	appendOp(t, s.lb, "s1", ledger.KindRefund, refund)
	appendOp(t, s.lm, "s1", ledger.KindRefund, refund)
	for _, l := range []*ledger.Ledger{s.lb, s.lm} {
		if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 1, 900)); !errors.Is(err, ledger.ErrAllotmentExhausted) {
			t.Fatalf("a refunder sold the refunded unit: %v", err)
		}
	}
	mesh(t, s.la, s.lb, s.lm, s.lh)
	for _, l := range []*ledger.Ledger{s.la, s.lb, s.lm, s.lh} {
		st := allotment(t, l, "SCARF")
		if oh := l.OnHand("s1", "SCARF"); st.Total != oh || oh != 2 || st.Rights(s.a.ID()) != 2 || len(st.Overspent) != 0 {
			t.Fatalf("after the heal: %+v, on_hand %d", st, oh)
		}
		var over int
		for _, c := range l.Conflicts("s1") {
			switch c.Kind {
			case ledger.ConflictOverRefund:
				over++
			default:
				t.Fatalf("unexpected conflict %+v", c)
			}
		}
		if over != 1 {
			t.Fatalf("%d over_refund conflicts, want 1", over)
		}
	}
	// The seller holds the returned unit and sells it again.
	appendOp(t, s.la, "s1", ledger.KindSale, ledgertest.Sale("SCARF", 2, 900))
}
