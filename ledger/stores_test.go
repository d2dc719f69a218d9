package ledger_test

import (
	"context"
	"testing"

	"storemesh/ledger"
)

// TestStoreRecords: certified stores exist undeclared; a manager declares
// its own store, not another's; an anchor declares any; the records
// replicate and a bad zone is refused.
func TestStoreRecords(t *testing.T) {
	rf := newRevFleet(t, 13, map[string][2]string{"mgr": {"s1", "manager"}, "hq": {"*", "anchor"}, "t2": {"s2", "terminal"}})
	mgr, hq := rf.ledgers["mgr"], rf.ledgers["hq"]
	ctx := context.Background()
	st := mgr.Stores()
	if len(st) != 2 || st[0].ID != "s1" || st[0].Declared || st[0].Name != "s1" || st[0].TimeZone != "UTC" || st[1].ID != "s2" {
		t.Fatalf("undeclared: %+v", st)
	}
	revAppend(t, mgr, "s1", ledger.KindStoreSet, &ledger.StoreRecord{Name: "Market stall", Currency: "EUR", TimeZone: "Europe/Paris"})
	if _, err := mgr.Append(ctx, "s2", ledger.KindStoreSet, &ledger.StoreRecord{Name: "x", Currency: "EUR", TimeZone: "UTC"}); err == nil {
		t.Fatal("a manager of s1 declared s2")
	}
	if _, err := hq.Append(ctx, "s3", ledger.KindStoreSet, &ledger.StoreRecord{Name: "x", Currency: "EUR", TimeZone: "Mars/Olympus"}); err == nil {
		t.Fatal("a bad zone was accepted")
	}
	revAppend(t, hq, "s3", ledger.KindStoreSet, &ledger.StoreRecord{Name: "Pop-up", Currency: "GBP", TimeZone: "Europe/London"})
	syncInto(t, mgr, hq, "s1")
	st = hq.Stores()
	if len(st) != 3 || !st[0].Declared || st[0].Name != "Market stall" || st[0].TimeZone != "Europe/Paris" || st[0].Devices != 1 ||
		st[2].ID != "s3" || st[2].Currency != "GBP" || !hq.KnownStore("s3") || hq.KnownStore("s9") {
		t.Fatalf("declared: %+v", st)
	}
}
