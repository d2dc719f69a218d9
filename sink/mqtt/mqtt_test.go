package mqtt_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
	"storemesh/sink"
	"storemesh/sink/mqtt"
	"storemesh/sink/sinktest"
)

func anchorLedger(t testing.TB) (*ledger.Ledger, *ledgertest.Fleet) {
	t.Helper()
	f := ledgertest.NewFleet(9)
	a := f.Enroll(ledger.FleetScope, ledger.RoleAnchor, ledgertest.Expiring(time.Now().Add(24*time.Hour)))
	bs, err := ledger.OpenBadger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.Config(a, nil)
	cfg.Now = func() int64 { return time.Now().UnixNano() }
	l, err := ledger.Open(context.Background(), bs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); bs.Close() })
	return l, f
}

// workload appends sales (no stock received for JAM: oversells), refunds
// and stock moves; it returns the ids of the ops that have a topic.
func workload(t testing.TB, l *ledger.Ledger, from, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	app := func(store string, k ledger.Kind, b any) *ledger.Op {
		o, err := l.Append(ctx, store, k, b)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID())
		return o
	}
	for i := from; i < from+n; i++ {
		store := []string{"s1", "s2"}[i%2]
		sku := []string{"TEA", "JAM"}[i%2]
		o := app(store, ledger.KindSale, ledgertest.Sale(sku, 2, 300))
		if i%3 == 0 {
			app(store, ledger.KindRefund, &ledger.Refund{Sale: o.ID(), Lines: []ledger.RefundLine{{SKU: sku, Qty: 1}}, Amount: 300})
		}
		if i%4 == 0 {
			app(store, ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: 5})
		}
	}
	return ids
}

func start(t testing.TB, l *ledger.Ledger, url, prefix, dir string, contact map[string]time.Time) *sink.Runner {
	t.Helper()
	tg, err := mqtt.New(mqtt.Config{URL: url, Prefix: prefix, ClientID: sinktest.Unique("anchor"), Dir: dir, Ledger: l,
		Timeout: 3 * time.Second, LastContact: func() map[string]time.Time { return contact }})
	if err != nil {
		t.Fatal(err)
	}
	cfg := sink.DefaultConfig()
	cfg.BatchOps = 40
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.Tick = 100 * time.Millisecond
	r, err := sink.Start(l, tg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func waitAll(t testing.TB, s *sinktest.Subscriber, ids []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		missing := 0
		for _, id := range ids {
			if s.Deliveries(id) == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			var at []int
			for i, id := range ids {
				if s.Deliveries(id) == 0 {
					at = append(at, i)
				}
			}
			t.Fatalf("%d of %d ops never published: %v", missing, len(ids), at)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMQTTEvents(t *testing.T) {
	url := sinktest.SharedBroker(t)
	prefix := sinktest.Unique("test")
	sub := sinktest.Subscribe(t, url, prefix+"/#")
	l, f := anchorLedger(t)
	term := f.Enroll("s1", ledger.RoleTerminal, ledgertest.Expiring(time.Now().Add(24*time.Hour)))
	if _, err := l.AddCertificate(context.Background(), term.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	contact := map[string]time.Time{term.ID(): time.Now()}
	dir := t.TempDir()
	ids := workload(t, l, 0, 60)
	r := start(t, l, url, prefix, dir, contact)
	waitAll(t, sub, ids)

	// A restart resumes from the outbox: the earlier ops are not sent again.
	eventually(t, "the backlog drained", func() bool { return r.Status().Backlog == 0 })
	for _, id := range ids {
		if n := sub.Deliveries(id); n != 1 {
			t.Fatalf("op %s delivered %d times in a run without failures, want 1; sink %+v", id, n, r.Status())
		}
	}
	r.Close()
	more := workload(t, l, 60, 30)
	start(t, l, url, prefix, dir, contact)
	waitAll(t, sub, more)
	for _, id := range ids {
		if n := sub.Deliveries(id); n != 1 {
			t.Fatalf("op %s delivered %d times across a clean restart, want 1", id, n)
		}
	}

	topics := map[string]int{}
	var health *sinktest.Message
	eventually(t, "a conflict and the terminal's health", func() bool {
		clear(topics)
		for _, m := range sub.Messages() {
			topics[strings.TrimPrefix(m.Topic, prefix+"/")]++
			if strings.HasSuffix(m.Topic, "/health.status") {
				health = &m
			}
		}
		return topics["store/s2/conflict/opened"] > 0 && health != nil
	})
	for _, want := range []string{"store/s1/pos/sale.created", "store/s2/pos/sale.created", "store/s1/pos/refund.created",
		"store/s1/inventory/adjusted", "fleet/" + term.ID() + "/health.status"} {
		if topics[want] == 0 {
			t.Errorf("nothing on %s; topics: %v", want, topics)
		}
	}
	for _, m := range sub.Messages() {
		if strings.HasSuffix(m.Topic, "/pos/sale.created") {
			p := m.Payload
			if p["v"] != 1.0 || p["op_id"] == "" || p["store"] == "" || p["total"] != 600.0 || p["currency"] != "EUR" || p["receipt_no"] == nil {
				t.Errorf("sale payload %v", p)
			}
			break
		}
	}
	if health.Payload["device"] != term.ID() || health.Payload["last_contact"] == nil || health.Payload["store"] != "s1" {
		t.Errorf("health payload %v", health.Payload)
	}
}

// TestMQTTBrokerRestart: the broker goes away mid-run and comes back;
// the anchor keeps its ops, shows a backlog, and publishes every op.
func TestMQTTBrokerRestart(t *testing.T) {
	b := sinktest.OwnBroker(t)
	sub := sinktest.Subscribe(t, b.URL(), "#")
	l, _ := anchorLedger(t)
	r := start(t, l, b.URL(), "", t.TempDir(), nil)
	ids := workload(t, l, 0, 50)
	b.Stop()
	ids = append(ids, workload(t, l, 50, 50)...)
	eventually(t, "a failure and a backlog while the broker is down", func() bool {
		st := r.Status()
		return st.Failures > 0 && st.Backlog > 0 && st.LastError != ""
	})
	b.Start()
	ids = append(ids, workload(t, l, 100, 20)...)
	eventually(t, "the backlog drained", func() bool { return r.Status().Backlog == 0 })
	t.Logf("sink %+v", r.Status())
	waitAll(t, sub, ids)
}

func TestMQTTConfig(t *testing.T) {
	l, _ := anchorLedger(t)
	for _, c := range []mqtt.Config{
		{URL: "http://x:1883", ClientID: "a", Dir: "d", Ledger: l},
		{URL: "tcp://", ClientID: "a", Dir: "d", Ledger: l},
		{URL: "tcp://x:1883", Prefix: "a/#", ClientID: "a", Dir: "d", Ledger: l},
		{URL: "tcp://x:1883", Prefix: "/a", ClientID: "a", Dir: "d", Ledger: l},
	} {
		if _, err := mqtt.New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
