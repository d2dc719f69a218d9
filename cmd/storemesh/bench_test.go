package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkIdleNodeRSS measures docs/design.md §10's "idle node under 64 MiB RSS"
// on the real binary: a terminal (badger on disk, libp2p on loopback, the
// HTTP API) with a catalog and sales in its log. It reports the resident
// set size (VmRSS) in MiB of the node that took the sales, once it has
// been idle past its trim (MiB-after-sales), and of the node restarted
// over that log (it replays it) after idleFor (MiB-restarted), with its
// peak (VmHWM), for logs of 0 and 20,000 sales (a busy stall's month).
// Run with
//
//	go test -run '^$' -bench IdleNodeRSS -benchtime 1x ./cmd/storemesh
func BenchmarkIdleNodeRSS(b *testing.B) {
	for _, sales := range []int{0, 20_000} {
		b.Run(fmt.Sprintf("sales=%d", sales), func(b *testing.B) {
			var after, rss, hwm float64
			for b.Loop() {
				after, rss, hwm = idleRSS(b, sales)
			}
			b.ReportMetric(after, "MiB-after-sales")
			b.ReportMetric(rss, "MiB-restarted")
			b.ReportMetric(hwm, "MiB-restarted-peak")
		})
	}
}

const idleFor = 10 * time.Second

func idleRSS(b *testing.B, sales int) (after, rss, hwm float64) {
	_, enroll := newFleet(b)
	dev := enroll("till", "stall", "manager")
	data := filepath.Join(b.TempDir(), "data")
	p := startProc(b, "node", "--device", dev, "--data", data)
	p.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)
	p.must(201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": sales + 1}, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < sales; i += 8 {
				p.must(201, "POST", "/v1/sales", sale("TEA", 1, "cash"), nil)
			}
		})
	}
	wg.Wait()
	time.Sleep(35 * time.Second) // past the node's idle trim (30 s)
	after, _ = procMemMiB(b, p.cmd.Process.Pid)
	p.stop(false)
	p = startProc(b, "node", "--device", dev, "--data", data)
	time.Sleep(idleFor)
	rss, hwm = procMemMiB(b, p.cmd.Process.Pid)
	if got := len(p.sales()); got != sales { // after the reading: listing 20,000 sales takes memory
		b.Fatalf("the restarted node holds %d sales, want %d", got, sales)
	}
	p.stop(false)
	return after, rss, hwm
}

// procMemMiB reads VmRSS and VmHWM of pid from /proc.
func procMemMiB(b testing.TB, pid int) (rss, hwm float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			b.Fatalf("%s: %q", k, v)
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	if rss == 0 {
		b.Fatal("no VmRSS in /proc status")
	}
	return rss, hwm
}
