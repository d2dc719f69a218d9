package ledger_test

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	ds "github.com/ipfs/go-datastore"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// Benchmarks for docs/design.md §10, all on real badger (ledger.OpenBadger, every
// commit fsynced) in temp folders. Run them together, so the baseline and
// the measured thing share one machine state, and compare medians:
//
//	go test -run='^$' -bench=. -benchmem -count=5 ./ledger > /tmp/ledger-bench.txt
//	benchstat /tmp/ledger-bench.txt
//
// Results and their reading are in docs/benchmarks.md.

// BenchmarkBadgerSyncedWrite is the floor: one synced Put of a 300-byte
// value, no ledger.
func BenchmarkBadgerSyncedWrite(b *testing.B) {
	st, err := ledger.OpenBadger(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	val := make([]byte, 300)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range val {
		val[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if err := st.Put(ctx, ds.NewKey(fmt.Sprintf("/o/bench/d/%016x", i)), val); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkBadgerSyncedBatch is the same write through a one-entry
// go-datastore Batch (badger's WriteBatch), the path the ledger commits
// by: it separates badger's batch overhead from the ledger's own.
func BenchmarkBadgerSyncedBatch(b *testing.B) {
	st, err := ledger.OpenBadger(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	val := make([]byte, 300)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range val {
		val[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	i := 0
	for b.Loop() {
		bt, err := st.Batch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := bt.Put(ctx, ds.NewKey(fmt.Sprintf("/o/bench/d/%016x", i)), val); err != nil {
			b.Fatal(err)
		}
		if err := bt.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// benchLedger opens a terminal's ledger on badger in a temp folder;
// withRecord adds the durable own-chain record file, as a node has.
func benchLedger(b *testing.B, withRecord ...bool) (*ledger.Ledger, func()) {
	b.Helper()
	f := ledgertest.NewFleet(1)
	d := f.Enroll("s1", ledger.RoleTerminal)
	dir := b.TempDir()
	st, err := ledger.OpenBadger(filepath.Join(dir, "badger"))
	if err != nil {
		b.Fatal(err)
	}
	cfg := f.Config(d, nil)
	var rec *ledger.OwnRecordFile
	if len(withRecord) > 0 && withRecord[0] {
		if rec, err = ledger.OpenOwnRecordFile(filepath.Join(dir, "ownchain")); err != nil {
			b.Fatal(err)
		}
		cfg.OwnRecord = rec
	}
	l, err := ledger.Open(context.Background(), st, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return l, func() {
		l.Close()
		st.Close()
		if rec != nil {
			rec.Close()
		}
	}
}

// BenchmarkAppend is one durable sale at a time: what a single POS waits
// for. docs/design.md §10: within 2x of BenchmarkBadgerSyncedWrite.
func BenchmarkAppend(b *testing.B) {
	l, done := benchLedger(b)
	defer done()
	ctx := context.Background()
	sale := ledgertest.Sale("TEA", 1, 350)
	var size int
	for b.Loop() {
		o, err := l.Append(ctx, "s1", ledger.KindSale, sale)
		if err != nil {
			b.Fatal(err)
		}
		size = len(o.Raw())
	}
	b.ReportMetric(float64(size), "op-bytes")
}

// BenchmarkAppendOwnRecord is BenchmarkAppend with the durable own-chain
// record a node keeps (written in the background after each commit,
// concurrently with the next one); record-writes/op is how many of the
// commits it kept up with.
func BenchmarkAppendOwnRecord(b *testing.B) {
	l, done := benchLedger(b, true)
	defer done()
	ctx := context.Background()
	sale := ledgertest.Sale("TEA", 1, 350)
	for b.Loop() {
		if _, err := l.Append(ctx, "s1", ledger.KindSale, sale); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(l.RecordWrites())/float64(b.N), "record-writes/op")
}

// BenchmarkGroupCommit is many POS callers at once sharing fsyncs.
// docs/design.md §10: at least 10,000 sales/s.
func BenchmarkGroupCommit(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, done := benchLedger(b)
			defer done()
			ctx := context.Background()
			commits0 := l.Stats().Commits
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range writers {
				wg.Go(func() {
					sale := ledgertest.Sale("TEA", 1, 350)
					for next.Add(1) <= int64(b.N) {
						if _, err := l.Append(ctx, "s1", ledger.KindSale, sale); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sales/s")
			b.ReportMetric(float64(b.N)/float64(l.Stats().Commits-commits0), "sales/commit")
		})
	}
}

// remotePool is a set of signed ops from four terminals of one store,
// interleaved so that each device's ops come in seq order.
var remotePool struct {
	once  sync.Once
	fleet *ledgertest.Fleet
	certs [][]byte
	ops   [][]byte
}

func remoteOps(b *testing.B) ([][]byte, [][]byte, *ledgertest.Fleet) {
	remotePool.once.Do(func() {
		ctx := context.Background()
		f := ledgertest.NewFleet(5)
		const devices, perDevice = 4, 8192
		var byDev [devices][][]byte
		for i := range devices {
			d := f.Enroll("s1", ledger.RoleTerminal)
			remotePool.certs = append(remotePool.certs, d.Cert.Encode())
			l, err := f.Open(ctx, ledgertest.MemStore(), d)
			if err != nil {
				panic(err)
			}
			for j := range perDevice {
				o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1+int64(j%3), 350))
				if err != nil {
					panic(err)
				}
				byDev[i] = append(byDev[i], o.Raw())
			}
			l.Close()
		}
		for j := range perDevice {
			for i := range devices {
				remotePool.ops = append(remotePool.ops, byDev[i][j])
			}
		}
		remotePool.fleet = f
	})
	return remotePool.ops, remotePool.certs, remotePool.fleet
}

// BenchmarkApplyRemote applies signed ops from peers in batches of 256 to
// a fresh badger ledger: signature, certificate, role and chain checks,
// then one durable commit per batch. The unit is one op.
func BenchmarkApplyRemote(b *testing.B) {
	ops, certs, f := remoteOps(b)
	ctx := context.Background()
	var l *ledger.Ledger
	var done func()
	fresh := func() {
		if done != nil {
			done()
		}
		st, err := ledger.OpenBadger(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		l, err = ledger.Open(ctx, st, f.Config(f.Enroll("s1", ledger.RoleTerminal), nil))
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range certs {
			if _, err := l.AddCertificate(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
		done = func() { l.Close(); st.Close() }
	}
	fresh()
	b.ResetTimer()
	pos := 0
	for i := 0; i < b.N; {
		if pos == len(ops) { // every op applied: start again on a new ledger
			b.StopTimer()
			fresh()
			pos = 0
			b.StartTimer()
		}
		n := min(256, b.N-i, len(ops)-pos)
		rs, err := l.ApplyBatch(ctx, ops[pos:pos+n])
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range rs {
			if r.Outcome != ledger.Applied {
				b.Fatalf("%v: %v", r.Outcome, r.Err)
			}
		}
		pos += n
		i += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	done()
}

// BenchmarkDiskPerSale appends 20,000 one-line sales with group commit,
// closes the ledger and badger, and measures the data folder. docs/design.md §10:
// under 400 bytes on disk per sale. Time per op is not the point here.
func BenchmarkDiskPerSale(b *testing.B) {
	const sales, writers = 20_000, 64
	ctx := context.Background()
	var alloc, logical, opBytes int64
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		f := ledgertest.NewFleet(1)
		d := f.Enroll("s1", ledger.RoleTerminal)
		st, err := ledger.OpenBadger(dir)
		if err != nil {
			b.Fatal(err)
		}
		l, err := ledger.Open(ctx, st, f.Config(d, nil))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var next, size atomic.Int64
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				sale := ledgertest.Sale("TEA", 1, 350)
				for next.Add(1) <= sales {
					o, err := l.Append(ctx, "s1", ledger.KindSale, sale)
					if err != nil {
						b.Error(err)
						return
					}
					size.Add(int64(len(o.Raw())))
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		l.Close()
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		alloc, logical, err = dirUsage(dir)
		if err != nil {
			b.Fatal(err)
		}
		opBytes = size.Load()
		b.StartTimer()
	}
	b.ReportMetric(float64(alloc)/sales, "disk-B/sale")
	b.ReportMetric(float64(logical)/sales, "logical-B/sale")
	b.ReportMetric(float64(opBytes)/sales, "op-B/sale")
}

// dirUsage sums the allocated blocks (what the disk really spends, sparse
// files counted by what is written) and the logical sizes of dir's files.
func dirUsage(dir string) (alloc, logical int64, err error) {
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		logical += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc += st.Blocks * 512
		}
		return nil
	})
	return alloc, logical, err
}
