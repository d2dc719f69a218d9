package sim

import (
	"testing"

	"storemesh/crdt"
	"storemesh/ledger"
)

// honouredRefunds is the harness's reference for the ledger's refund
// rule: two terminals refunding the same line while partitioned count
// once, in (hlc, device, seq, hash) order, whatever order they are listed.
func TestHonouredRefundsReference(t *testing.T) {
	sale := &ackedOp{store: "s1", id: "sale1", kind: ledger.KindSale, deltas: []skuDelta{{"TEA", -2}, {"CAKE", -1}}}
	r := func(dev string, wall int64, sku string, q int64) *ackedOp {
		return &ackedOp{store: "s1", device: dev, seq: 1, kind: ledger.KindRefund, refundOf: "sale1",
			hlc: crdt.Timestamp{Wall: wall}, deltas: []skuDelta{{sku, q}}}
	}
	soldBy := map[string]*ackedOp{"sale1": sale}
	for _, refunds := range [][]*ackedOp{
		{r("a", 1, "CAKE", 1), r("b", 2, "CAKE", 1), r("c", 3, "TEA", 3), r("d", 4, "MUG", 1)},
		{r("d", 4, "MUG", 1), r("c", 3, "TEA", 3), r("b", 2, "CAKE", 1), r("a", 1, "CAKE", 1)},
	} {
		got := honouredRefunds(refunds, soldBy)
		if got["CAKE"] != 1 || got["TEA"] != 2 || got["MUG"] != 0 {
			t.Errorf("honoured %v, want CAKE 1 (twice refunded, once counted), TEA 2 of 3 asked, MUG 0", got)
		}
	}
	if got := honouredRefunds([]*ackedOp{r("a", 1, "CAKE", 1)}, nil); len(got) != 0 {
		t.Errorf("refund of a sale not held: %v", got)
	}
}
