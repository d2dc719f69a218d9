package node

import (
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"storemesh/ledger"
)

// TestSalesReportRoute: a terminal and a manager sell and refund; the
// manager's report by payment (JSON) adds up to its sale log, and the
// CSV answer carries the same rows under a header.
func TestSalesReportRoute(t *testing.T) {
	f := newTestFleet(t, 42)
	mgr := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "office"))
	term := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-1"), func(c *Config) { c.Peers = []string{tcpAddr(t, mgr)} })
	setItem(t, mgr, "TEA", "Tea", 350)
	waitFor(t, 15*time.Second, "the catalog on the terminal", func() bool { return len(term.l.Catalog()) == 1 })
	var s saleResult
	must(t, term, 201, "POST", "/v1/sales", sale("TEA", 2, "card")).decode(t, &s)
	must(t, term, 201, "POST", "/v1/sales", sale("TEA", 1, "cash"))
	must(t, mgr, 201, "POST", "/v1/sales", sale("TEA", 3, "cash"))
	waitFor(t, 15*time.Second, "the manager to hold the terminal's sales", func() bool { return len(salesOf(t, mgr)) == 3 })
	must(t, mgr, 201, "POST", "/v1/refunds", map[string]any{"sale_id": s.SaleID, "lines": []map[string]any{{"sku": "TEA", "qty": 1}}})

	var rep struct {
		By   string
		Rows []ledger.ReportRow
	}
	must(t, mgr, 200, "GET", "/v1/reports/sales?by=payment", nil).decode(t, &rep)
	if rep.By != "payment" || len(rep.Rows) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	byKey := map[string]ledger.ReportRow{}
	var gross, refunds int64
	for _, r := range rep.Rows {
		byKey[r.Key] = r
		gross += r.Gross
		refunds += r.Refunds
	}
	var logGross, logRefunded int64
	for _, x := range salesOf(t, mgr) {
		logGross += x.Total
		logRefunded += x.Refunded
	}
	if c := byKey["card"]; c.Sales != 1 || c.Units != 2 || c.Gross != 700 || c.Refunds != 350 || c.Net != 350 || c.Currency != "EUR" {
		t.Errorf("card row %+v", c)
	}
	if c := byKey["cash"]; c.Sales != 2 || c.Units != 4 || c.Gross != 1400 || c.Refunds != 0 {
		t.Errorf("cash row %+v", c)
	}
	if gross != logGross || refunds != logRefunded {
		t.Errorf("report gross %d refunds %d; the sale log %d and %d", gross, refunds, logGross, logRefunded)
	}

	today := time.Now().UTC().Format(time.DateOnly)
	r := call(t, mgr, "GET", "/v1/reports/sales?from="+today+"&to="+today, nil, "Accept", "text/csv")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("CSV: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	recs, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || strings.Join(recs[0], ",") != "store,day,currency,sales,units,gross,refunds,refund_count,refund_units,net" ||
		strings.Join(recs[1], ",") != "s1,"+today+",EUR,3,6,2100,350,1,1,1750" {
		t.Fatalf("CSV rows: %q", recs)
	}
	// GET /v1/refunds lists the refund with what is honoured of it.
	var rl struct {
		Refunds []ledger.RefundRecord
		Next    string
	}
	must(t, mgr, 200, "GET", "/v1/refunds?limit=5&from="+today, nil).decode(t, &rl)
	if len(rl.Refunds) != 1 || rl.Next != "" || rl.Refunds[0].Sale != s.SaleID || rl.Refunds[0].Paid != 350 || rl.Refunds[0].Conflict {
		t.Fatalf("refunds: %+v", rl)
	}
	must(t, mgr, 200, "GET", "/v1/refunds?cursor="+rl.Refunds[0].ID, nil).decode(t, &rl)
	if len(rl.Refunds) != 0 {
		t.Fatalf("after the last refund: %+v", rl.Refunds)
	}
	// The terminal answers for its own store, from what it holds.
	var own struct{ Rows []ledger.ReportRow }
	must(t, term, 200, "GET", "/v1/reports/sales?by=device&store=s1", nil).decode(t, &own)
	if len(own.Rows) == 0 {
		t.Fatalf("terminal report: %+v", own)
	}
}

// TestSalesListPages: GET /v1/sales pages by cursor, filters by device
// and day, and lists newest first on request.
func TestSalesListPages(t *testing.T) {
	f := newTestFleet(t, 43)
	mgr := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "office"))
	term := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-1"), func(c *Config) { c.Peers = []string{tcpAddr(t, mgr)} })
	setItem(t, mgr, "TEA", "Tea", 350)
	waitFor(t, 15*time.Second, "the catalog on the terminal", func() bool { return len(term.l.Catalog()) == 1 })
	for i := range 7 {
		must(t, term, 201, "POST", "/v1/sales", sale("TEA", i+1, "cash"))
	}
	must(t, mgr, 201, "POST", "/v1/sales", sale("TEA", 1, "card"))
	waitFor(t, 15*time.Second, "the manager to hold every sale", func() bool { return len(mgr.l.SaleIDs("s1")) == 8 })

	type page struct {
		Sales []ledger.SaleRecord
		Next  string
	}
	var seen []string
	path := "/v1/sales?limit=3&device=" + term.self.Device
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		var p page
		must(t, mgr, 200, "GET", path, nil).decode(t, &p)
		for _, s := range p.Sales {
			if s.Device != term.self.Device {
				t.Fatalf("device filter let through %+v", s)
			}
			seen = append(seen, s.Receipt)
		}
		if p.Next == "" {
			break
		}
		if len(p.Sales) != 3 {
			t.Fatalf("a page of %d with more to follow", len(p.Sales))
		}
		path = "/v1/sales?limit=3&device=" + term.self.Device + "&cursor=" + p.Next
	}
	if len(seen) != 7 || seen[0] != "till-1·0001" || seen[6] != "till-1·0007" {
		t.Fatalf("paged receipts %v", seen)
	}
	var newest page
	must(t, mgr, 200, "GET", "/v1/sales?order=desc&limit=1", nil).decode(t, &newest)
	all := salesOf(t, mgr)
	if len(all) != 8 || len(newest.Sales) != 1 || newest.Sales[0].ID != all[7].ID || newest.Next == "" {
		t.Fatalf("newest %+v; all %d", newest, len(all))
	}
	today := time.Now().UTC().Format(time.DateOnly)
	var none page
	must(t, mgr, 200, "GET", "/v1/sales?to=2000-01-01", nil).decode(t, &none)
	var day page
	must(t, mgr, 200, "GET", "/v1/sales?from="+today, nil).decode(t, &day)
	if len(none.Sales) != 0 || len(day.Sales) != 8 {
		t.Fatalf("date filters: %d before 2000, %d today", len(none.Sales), len(day.Sales))
	}

	// GET /v1/devices: both devices, with what the manager holds of each.
	var devs struct{ Devices []deviceView }
	must(t, mgr, 200, "GET", "/v1/devices", nil).decode(t, &devs)
	byID := map[string]deviceView{}
	for _, d := range devs.Devices {
		byID[d.Device] = d
	}
	tv, mv := byID[term.self.Device], byID[mgr.self.Device]
	if len(devs.Devices) != 2 || tv.Name != "till-1" || tv.Ops != 7 || tv.Forked || tv.Revoked != nil || tv.LastContact == nil ||
		mv.Name != "office" || mv.Ops < 2 {
		t.Fatalf("devices: %+v", devs.Devices)
	}
	var none2 struct{ Devices []deviceView }
	must(t, mgr, 200, "GET", "/v1/devices?store=s9", nil).decode(t, &none2)
	if len(none2.Devices) != 0 {
		t.Fatalf("store filter: %+v", none2.Devices)
	}
}

// TestStoreRoutes: an enrolled store is listed undeclared; its manager
// declares it; the anchor sees the record and is refused a sale for a
// store nobody named, until it declares it.
func TestStoreRoutes(t *testing.T) {
	f := newTestFleet(t, 44)
	hq := startNode(t, f.enroll(t, ledger.FleetScope, ledger.RoleAnchor, "hq"))
	mgr := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "office"), func(c *Config) { c.Peers = []string{tcpAddr(t, hq)} })
	var list struct{ Stores []ledger.StoreInfo }
	must(t, mgr, 200, "GET", "/v1/stores", nil).decode(t, &list)
	if len(list.Stores) != 1 || list.Stores[0].ID != "s1" || list.Stores[0].Declared || list.Stores[0].TimeZone != "UTC" {
		t.Fatalf("before: %+v", list.Stores)
	}
	var st ledger.StoreInfo
	must(t, mgr, 200, "PUT", "/v1/stores/s1", map[string]any{"name": "Market stall", "currency": "EUR", "time_zone": "Europe/Paris"}).decode(t, &st)
	if !st.Declared || st.Name != "Market stall" || st.TimeZone != "Europe/Paris" {
		t.Fatalf("declared: %+v", st)
	}
	if r := call(t, mgr, "PUT", "/v1/stores/s2", map[string]any{"name": "x", "currency": "EUR", "time_zone": "UTC"}); r.code() != CodeRoleNotAllowed {
		t.Fatalf("a manager declaring another store: %d %s", r.status, r.body)
	}
	waitFor(t, 15*time.Second, "the record at HQ", func() bool {
		for _, s := range hq.l.Stores() {
			if s.ID == "s1" && s.Declared && s.Name == "Market stall" {
				return true
			}
		}
		return false
	})
	setItem(t, hq, "TEA", "Tea", 350)
	typo := map[string]any{"store": "s9", "lines": []map[string]any{{"sku": "TEA", "qty": 1}}, "payment": map[string]any{"method": "cash"}}
	if r := call(t, hq, "POST", "/v1/sales", typo); r.code() != CodeUnknownStore {
		t.Fatalf("a sale for an unknown store: %d %s", r.status, r.body)
	}
	must(t, hq, 200, "PUT", "/v1/stores/s9", map[string]any{"name": "Web shop", "currency": "EUR", "time_zone": "UTC"})
	must(t, hq, 201, "POST", "/v1/sales", typo)
	must(t, hq, 200, "GET", "/v1/stores", nil).decode(t, &list)
	if len(list.Stores) != 2 || list.Stores[1].ID != "s9" || !list.Stores[1].Declared {
		t.Fatalf("after: %+v", list.Stores)
	}
}
