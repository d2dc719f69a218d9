package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

const benchClients = 8

// BenchmarkHTTPSales: sales per second through POST /v1/sales on one node
// (real badger, every sale fsynced by group commit), 8 keep-alive clients,
// with p50/p99 latency. BenchmarkLedgerSales is the same load straight into
// the ledger: the ratio is what HTTP, JSON and validation cost.
func BenchmarkHTTPSales(b *testing.B) {
	n := startNode(b, newTestFleet(b, 20).enroll(b, "s1", ledger.RoleManager, "bench"))
	setItem(b, n, "TEA", "Tea", 350)
	body, _ := json.Marshal(sale("TEA", 1, "cash"))
	tr := &http.Transport{MaxIdleConnsPerHost: benchClients}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	url := "http://" + n.HTTPAddr() + "/v1/sales"
	runClients(b, func() error {
		res, err := cl.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			b.Errorf("status %d", res.StatusCode)
		}
		return nil
	})
}

func BenchmarkLedgerSales(b *testing.B) {
	n := startNode(b, newTestFleet(b, 21).enroll(b, "s1", ledger.RoleManager, "bench"))
	ctx := context.Background()
	runClients(b, func() error {
		_, err := n.l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		return err
	})
}

// runClients calls op b.N times from benchClients goroutines and reports
// throughput and latency percentiles.
func runClients(b *testing.B, op func() error) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := 0; c < benchClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sales/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op") // throughput with concurrent clients, not time per op
}

// BenchmarkStatusConflicts is GET /v1/status's view (status()) on a
// terminal whose store holds 10,000 open oversell conflicts among 50,000
// sale lines (another till's sales, synced in): what the page's 500 ms
// status tick and every status request pay.
func BenchmarkStatusConflicts(b *testing.B) {
	f := newTestFleet(b, 22)
	n := startNode(b, f.enroll(b, "s1", ledger.RoleManager, "bench"))
	setItem(b, n, "TEA", "Tea", 350)
	other := f.enroll(b, "s1", ledger.RoleTerminal, "other")
	ctx := context.Background()
	cfg := ledger.DefaultConfig()
	cfg.Fleet, cfg.Self, cfg.Key = other.Fleet, other.Cert, other.Key
	src, err := ledger.Open(ctx, ledgertest.MemStore(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	if _, err := n.l.AddCertificate(ctx, other.Cert.Encode()); err != nil {
		b.Fatal(err)
	}
	const skus, history, conflicts = 100, 40_000, 10_000
	var raws [][]byte
	for i := range skus {
		o, err := src.Append(ctx, "s1", ledger.KindStockReceived, &ledger.StockReceived{SKU: fmt.Sprintf("SKU%03d", i), Qty: history / skus})
		if err != nil {
			b.Fatal(err)
		}
		raws = append(raws, o.Raw())
	}
	for i := range history + conflicts {
		o, err := src.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale(fmt.Sprintf("SKU%03d", i%skus), 1, 350))
		if err != nil {
			b.Fatal(err)
		}
		raws = append(raws, o.Raw())
	}
	for len(raws) > 0 {
		k := min(len(raws), 2048)
		if _, err := n.l.ApplyBatch(ctx, raws[:k]); err != nil {
			b.Fatal(err)
		}
		raws = raws[k:]
	}
	if got := n.status().Conflicts; got != conflicts {
		b.Fatalf("%d open conflicts, want %d", got, conflicts)
	}
	for b.Loop() {
		n.status()
	}
}
