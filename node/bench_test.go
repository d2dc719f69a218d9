package node

import (
	"bytes"
	"context"
	"encoding/json"
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
