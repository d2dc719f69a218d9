package ledger_test

import (
	"context"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

func TestSmokeAppendApplyReopen(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(1)
	a := f.Enroll("s1", ledger.RoleTerminal)
	b := f.Enroll("s1", ledger.RoleTerminal)
	storeA := ledgertest.MemStore()
	la, err := f.Open(ctx, storeA, a)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := f.Open(ctx, ledgertest.MemStore(), b, a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := la.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 10}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := la.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 2, 350)); err != nil {
			t.Fatal(err)
		}
	}
	err = la.Ops(ctx, "s1", lb.VersionVector("s1"), 1<<16, func(batch []ledger.RawOp) error {
		raws := make([][]byte, len(batch))
		for i, r := range batch {
			raws[i] = r.Bytes
		}
		rs, err := lb.ApplyBatch(ctx, raws)
		for _, r := range rs {
			if r.Outcome != ledger.Applied {
				t.Errorf("outcome %v err %v", r.Outcome, r.Err)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := lb.OnHand("s1", "TEA"); got != 4 {
		t.Fatalf("b on hand %d", got)
	}
	if la.Digest("s1") != lb.Digest("s1") {
		t.Fatal("digests differ")
	}
	d := la.Digest("s1")
	la.Close()
	la2, err := ledger.Open(ctx, storeA, f.Config(a, nil))
	if err != nil {
		t.Fatal(err)
	}
	if la2.Digest("s1") != d || la2.OnHand("s1", "TEA") != 4 || len(la2.Sales("s1")) != 3 {
		t.Fatal("reopen differs")
	}
	if _, err := la2.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 5, 350)); err != nil {
		t.Fatal(err)
	}
	if c := la2.Conflicts("s1"); len(c) != 1 || c[0].Oversold != 1 {
		t.Fatalf("conflicts %+v", c)
	}
}
