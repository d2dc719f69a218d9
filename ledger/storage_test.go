package ledger_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// docs/design.md §7: a full disk or a corrupt value gives a clear error and stops
// writes; it never loses or corrupts what was already acknowledged.

// storageKind opens a fresh datastore (badger in a temp dir, or memory)
// and returns a function that reopens it after a close.
type storageKind struct {
	name string
	open func(t *testing.T) (ds.Batching, func() ds.Batching)
}

var storageKinds = []storageKind{
	{"badger", func(t *testing.T) (ds.Batching, func() ds.Batching) {
		dir := t.TempDir()
		reopen := func() ds.Batching {
			st, err := ledger.OpenBadger(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return reopen(), reopen
	}},
	{"memory", func(t *testing.T) (ds.Batching, func() ds.Batching) {
		st := ledgertest.MemStore()
		return st, func() ds.Batching { return st }
	}},
}

// opKeys lists the stored op keys in key order.
func opKeys(t *testing.T, st ds.Datastore) []string {
	t.Helper()
	res, err := st.Query(context.Background(), dsq.Query{Prefix: "/o", KeysOnly: true, Orders: []dsq.Order{dsq.OrderByKey{}}})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range all {
		keys = append(keys, e.Key)
	}
	return keys
}

func TestCorruptValueIsAClearError(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// corrupt damages the store; it returns the key the error must name.
		corrupt func(t *testing.T, st ds.Batching, keys []string) string
	}{
		{"garbage", func(t *testing.T, st ds.Batching, keys []string) string {
			return putRaw(t, st, keys[2], []byte("\xde\xad\xbe\xef garbage"))
		}},
		{"truncated", func(t *testing.T, st ds.Batching, keys []string) string {
			v := getRaw(t, st, keys[2])
			return putRaw(t, st, keys[2], v[:len(v)/2])
		}},
		{"one bit flipped", func(t *testing.T, st ds.Batching, keys []string) string {
			v := getRaw(t, st, keys[2])
			v[len(v)/2] ^= 0x10
			return putRaw(t, st, keys[2], v)
		}},
		{"another op's bytes", func(t *testing.T, st ds.Batching, keys []string) string {
			return putRaw(t, st, keys[2], getRaw(t, st, keys[3]))
		}},
		{"op missing from the middle", func(t *testing.T, st ds.Batching, keys []string) string {
			if err := st.Delete(ctx, ds.NewKey(keys[2])); err != nil {
				t.Fatal(err)
			}
			return keys[3] // the next op no longer links
		}},
		{"corrupt certificate", func(t *testing.T, st ds.Batching, keys []string) string {
			res, err := st.Query(ctx, dsq.Query{Prefix: "/c", KeysOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			all, _ := res.Rest()
			return putRaw(t, st, all[0].Key, []byte{0xa0})
		}},
	}
	for _, sk := range storageKinds {
		for _, c := range cases {
			t.Run(sk.name+"/"+c.name, func(t *testing.T) {
				f := ledgertest.NewFleet(31)
				d := f.Enroll("s1", ledger.RoleTerminal)
				st, reopen := sk.open(t)
				l, err := f.Open(ctx, st, d)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 6 {
					if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", int64(i+1), 350)); err != nil {
						t.Fatal(err)
					}
				}
				l.Close()
				keys := opKeys(t, st)
				bad := c.corrupt(t, st, keys)
				if sk.name == "badger" {
					if err := st.Close(); err != nil {
						t.Fatal(err)
					}
					st = reopen()
				}
				_, err = ledger.Open(ctx, st, f.Config(d, nil))
				if !errors.Is(err, ledger.ErrCorrupt) {
					t.Fatalf("open over a corrupt store: %v, want ErrCorrupt", err)
				}
				var ce *ledger.CorruptError
				if !errors.As(err, &ce) || ce.Key != bad {
					t.Fatalf("error %v does not name the key %s", err, bad)
				}
				if !strings.Contains(err.Error(), bad) {
					t.Fatalf("message %q does not name the key", err)
				}
			})
		}
	}
}

func putRaw(t *testing.T, st ds.Batching, key string, v []byte) string {
	t.Helper()
	if err := st.Put(context.Background(), ds.NewKey(key), v); err != nil {
		t.Fatal(err)
	}
	return key
}

func getRaw(t *testing.T, st ds.Batching, key string) []byte {
	t.Helper()
	v, err := st.Get(context.Background(), ds.NewKey(key))
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), v...)
}

// fullDisk wraps a datastore whose batch commits start failing with
// ENOSPC, and commit nothing when they fail.
type fullDisk struct {
	ds.Batching
	commits atomic.Int64 // commits attempted
	failAt  int64        // the first commit (1-based) that fails
	once    bool         // only that commit fails (space freed afterwards)
	onFail  func()       // runs inside the failing commit, before it returns
}

type fullDiskBatch struct {
	ds.Batch
	d *fullDisk
}

func (d *fullDisk) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := d.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &fullDiskBatch{b, d}, nil
}

func (b *fullDiskBatch) Commit(ctx context.Context) error {
	n := b.d.commits.Add(1)
	if n == b.d.failAt || (n > b.d.failAt && !b.d.once) {
		if n == b.d.failAt && b.d.onFail != nil {
			b.d.onFail()
		}
		return &os.PathError{Op: "write", Path: "000001.vlog", Err: syscall.ENOSPC}
	}
	return b.Batch.Commit(ctx)
}

// checkAcked reopens the underlying store and checks that it holds exactly
// the acknowledged sales of device d.
func checkAcked(t *testing.T, f *ledgertest.Fleet, d *ledgertest.Device, st ds.Batching, acked map[string]uint64) {
	t.Helper()
	l, err := ledger.Open(context.Background(), st, f.Config(d, nil))
	if err != nil {
		t.Fatalf("reopen after the storage failure: %v", err)
	}
	defer l.Close()
	var maxSeq uint64
	for id, seq := range acked {
		if _, ok := l.Sale(id); !ok {
			t.Fatalf("acknowledged sale %s (seq %d) lost", id, seq)
		}
		maxSeq = max(maxSeq, seq)
	}
	if got := l.VersionVector("s1")[d.ID()]; got != maxSeq || uint64(len(acked)) != maxSeq {
		t.Fatalf("store holds seqs 1..%d; %d sales acknowledged, highest seq %d", got, len(acked), maxSeq)
	}
	verifyStoredChains(t, st, map[string]ed25519.PublicKey{d.ID(): d.Cert.PubKey}, nil)
}

func TestFullDiskStopsWrites(t *testing.T) {
	ctx := context.Background()
	for _, writers := range []int{1, 8} {
		t.Run(fmt.Sprintf("writers=%d", writers), func(t *testing.T) {
			f := ledgertest.NewFleet(37)
			d := f.Enroll("s1", ledger.RoleTerminal)
			disk := &fullDisk{Batching: ledgertest.MemStore(), failAt: 40}
			l, err := f.Open(ctx, disk, d)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var (
				mu    sync.Mutex
				acked = map[string]uint64{}
				errs  []error
				wg    sync.WaitGroup
			)
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
						mu.Lock()
						if err != nil {
							errs = append(errs, err)
							mu.Unlock()
							return
						}
						acked[o.ID()] = o.Seq
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			storageErrs := 0
			for _, err := range errs {
				switch {
				case errors.Is(err, ledger.ErrStorage):
					storageErrs++
					if !strings.Contains(err.Error(), "no space left on device") {
						t.Errorf("storage error does not say why: %v", err)
					}
				case errors.Is(err, ledger.ErrFailed):
				default:
					t.Errorf("append: %v, want ErrStorage or ErrFailed", err)
				}
			}
			if storageErrs == 0 {
				t.Fatalf("no append saw the storage error: %v", errs)
			}
			// Every later write is refused, local or remote.
			if _, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350)); !errors.Is(err, ledger.ErrFailed) {
				t.Fatalf("append after the failure: %v, want ErrFailed", err)
			}
			if _, err := l.ApplyBatch(ctx, [][]byte{[]byte("x")}); !errors.Is(err, ledger.ErrFailed) {
				t.Fatalf("apply after the failure: %v, want ErrFailed", err)
			}
			if _, err := l.AddCertificate(ctx, f.Enroll("s1", ledger.RoleTerminal).Cert.Encode()); !errors.Is(err, ledger.ErrFailed) {
				t.Fatalf("add certificate after the failure: %v, want ErrFailed", err)
			}
			checkAcked(t, f, d, disk.Batching, acked)
		})
	}
}

// TestStorageFailureWritesNothingAfter: a commit fails while another
// append is already queued behind it. The queued op links to the op that
// failed, so it must not be written, even if the disk has room again by
// then: a stored op whose predecessor is missing makes the store corrupt
// (and acknowledging it would be a lie).
func TestStorageFailureWritesNothingAfter(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(41)
	d := f.Enroll("s1", ledger.RoleTerminal)
	disk := &fullDisk{Batching: ledgertest.MemStore(), failAt: 6, once: true}
	clock := ledgertest.NewClock()
	var readClock atomic.Pointer[chan struct{}]
	cfg := f.Config(d, clock)
	cfg.Now = func() int64 {
		if ch := readClock.Load(); ch != nil {
			*ch <- struct{}{} // Append reads the clock under the ledger's lock, just before queueing
			readClock.Store(nil)
		}
		return clock.Now()
	}
	l, err := ledger.Open(ctx, disk, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		o   *ledger.Op
		err error
	}
	queued := make(chan result, 1)
	disk.onFail = func() {
		ch := make(chan struct{}, 1)
		readClock.Store(&ch)
		go func() {
			o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 9, 350))
			queued <- result{o, err}
		}()
		<-ch
		l.VersionVector("s1") // returns once the other Append released the lock: it is queued
	}
	acked := map[string]uint64{}
	for {
		o, err := l.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		if err != nil {
			if !errors.Is(err, ledger.ErrStorage) {
				t.Fatalf("append: %v, want ErrStorage", err)
			}
			break
		}
		acked[o.ID()] = o.Seq
	}
	r := <-queued
	if r.err == nil {
		t.Errorf("the append queued behind the failed commit was acknowledged (seq %d)", r.o.Seq)
	}
	if n := disk.commits.Load(); n != disk.failAt {
		t.Errorf("%d commits attempted; nothing may be written after the failure at commit %d", n, disk.failAt)
	}
	checkAcked(t, f, d, disk.Batching, acked)
}

// TestFullTmpfs fills a real small tmpfs with a badger ledger, in a child
// process (the crash child, role "fill"), and checks that the disk filling
// up is a refusal, not a death.
//
// What was found before the free-space guard: badger writes its WAL (the
// .mem file) and its tables through mmap over files it sized with
// ftruncate, so a full disk is not an ENOSPC from write(2) but a SIGBUS on
// a page fault, and the Go runtime kills the process. Now the ledger asks
// the datastore's guard before every write and refuses with ErrNoSpace
// (an ErrStorage: HTTP storage_failed) while less than BadgerReserve is
// free. The refusal wrote nothing, so once space is freed the next write
// succeeds, with no restart; every acknowledged op is there after a
// restart.
func TestFullTmpfs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	size := ledger.BadgerReserve() + 24<<20
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("TMPFS UNAVAILABLE: cannot mount a tmpfs (%v): run as root to test a really full disk", err)
		}
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	// Leave the ledger the reserve and 1.5 MiB: a few thousand sales.
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 24<<20-(3<<19)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := ledgertest.NewFleet(7)
	dev := f.Enroll(crashStore, ledger.RoleTerminal, ledgertest.Expiring(ledgertest.Epoch.AddDate(50, 0, 0)))
	data := filepath.Join(dir, "badger")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashEnvRole+"=fill",
		crashEnvDir+"="+data,
		crashEnvRecord+"="+filepath.Join(dir, "ownchain"),
		crashEnvKey+"="+hex.EncodeToString(dev.Key),
		crashEnvCert+"="+hex.EncodeToString(dev.Cert.Encode()),
		crashEnvFleet+"="+hex.EncodeToString(f.Key.Public()),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var maxAcked uint64
	var acked int
	var errLine, nextLine, resumed string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "ERR "):
			errLine = line
		case strings.HasPrefix(line, "NEXT "):
			nextLine = line
			// The disk is full and the child still runs: free the space.
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(stdin, "freed\n"); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "RESUMED "):
			resumed = line
		default:
			if s, err := strconv.ParseUint(line, 10, 64); err == nil {
				acked++
				maxAcked = max(maxAcked, s)
			}
		}
	}
	runErr := cmd.Wait()
	if runErr != nil {
		t.Fatalf("child ended with %v (a signal is the bug this test is for); stderr: %.2000s", runErr, stderr.String())
	}
	if acked < 100 {
		t.Fatalf("child acknowledged only %d ops before the disk was full; stderr: %.2000s", acked, stderr.String())
	}
	t.Logf("full disk: %s / %s / %s", errLine, nextLine, resumed)
	if !strings.Contains(errLine, "storage=true nospace=true failed=false") || !strings.Contains(nextLine, "nospace=true") {
		t.Fatalf("full disk: want ErrNoSpace (an ErrStorage) twice, got %q, %q", errLine, nextLine)
	}
	if !strings.HasPrefix(resumed, "RESUMED ") || strings.Contains(resumed, "err") {
		t.Fatalf("writes did not resume once space was freed: %q", resumed)
	}
	// Restart over the same folder: every acknowledged op is there, the
	// chain verifies, the stock adds up.
	n := checkCrashedStore(t, f, dev, data, maxAcked, map[ledger.Hash]bool{}, true)
	t.Logf("%d ops acknowledged, %d stored", acked, n)
}

// copySparseDir copies the regular files of src into dst, skipping runs of
// zeros so badger's preallocated files stay sparse.
func copySparseDir(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copySparse(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if bytes.ContainsFunc(buf[:n], func(r rune) bool { return r != 0 }) {
				if _, err := out.WriteAt(buf[:n], off); err != nil {
					out.Close()
					return err
				}
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
