package ledger_test

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// The crash test runs the ledger in a child process (this test binary,
// re-executed with -test.run=^TestCrashChild$) that appends sales as fast
// as it can, and kills it with SIGKILL at a random instant. docs/design.md §7: a
// process killed at any instant loses no acknowledged op and leaves a chain
// that verifies.
const (
	crashEnvRole  = "LEDGER_CRASH_CHILD" // "append" (until killed) or "fill" (until the disk is full)
	crashEnvDir   = "LEDGER_CRASH_DIR"
	crashEnvKey   = "LEDGER_CRASH_KEY"   // hex ed25519 private key
	crashEnvCert  = "LEDGER_CRASH_CERT"  // hex encoded certificate
	crashEnvFleet = "LEDGER_CRASH_FLEET" // hex fleet public key
	// crashEnvRecord, if set, is the path of the durable own-chain record
	// file (ledger.OwnRecordFile) the child keeps.
	crashEnvRecord = "LEDGER_CRASH_RECORD"
	crashStore     = "s1"
	crashSKU       = "TEA"
	crashRounds    = 24
	// crashSettleOps is how many sales the "settle" children write.
	crashSettleOps = 600
)

// TestCrashChild is the child side of TestCrashKill9; it returns at once in
// a normal test run.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashEnvRole) == "" {
		return
	}
	if err := crashChild(); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	os.Exit(0) // "append" never gets here: the parent kills it
}

func crashChild() error {
	hexEnv := func(name string) ([]byte, error) {
		b, err := hex.DecodeString(os.Getenv(name))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("env %s: %v", name, err)
		}
		return b, nil
	}
	key, err := hexEnv(crashEnvKey)
	if err != nil {
		return err
	}
	certRaw, err := hexEnv(crashEnvCert)
	if err != nil {
		return err
	}
	fleet, err := hexEnv(crashEnvFleet)
	if err != nil {
		return err
	}
	cert, err := ledger.DecodeCertificate(certRaw)
	if err != nil {
		return err
	}
	ctx := context.Background()
	role := os.Getenv(crashEnvRole)
	if role == "open" {
		return openChild(ctx, cert, key, fleet)
	}
	store, err := ledger.OpenBadger(os.Getenv(crashEnvDir))
	if err != nil {
		return err
	}
	cfg := ledger.DefaultConfig() // real clock: this is a real process
	cfg.Fleet, cfg.Self, cfg.Key = ed25519.PublicKey(fleet), cert, ed25519.PrivateKey(key)
	var rec *ledger.OwnRecordFile
	if p := os.Getenv(crashEnvRecord); p != "" {
		if rec, err = ledger.OpenOwnRecordFile(p); err != nil {
			return err
		}
		cfg.OwnRecord = rec
	}
	l, err := ledger.Open(ctx, store, cfg)
	if err != nil {
		return err
	}
	if role == "settle" || role == "settle-close" {
		return settleChild(ctx, l, store, rec, role == "settle-close")
	}
	// os.Stdout is unbuffered: each line is one write(2), made only after
	// Append returned, so every line the parent reads is an acknowledged op.
	ack := func(o *ledger.Op) { fmt.Fprintf(os.Stdout, "%d\n", o.Seq) }
	o, err := l.Append(ctx, crashStore, ledger.KindStockReceived, &ledger.StockReceived{SKU: crashSKU, Qty: 1000})
	if err != nil {
		return err
	}
	ack(o)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for {
				o, err := l.Append(ctx, crashStore, ledger.KindSale, ledgertest.Sale(crashSKU, 1, 350))
				if err != nil {
					errs <- err
					return
				}
				ack(o)
			}
		}()
	}
	err = <-errs
	if role != "fill" {
		return err
	}
	for range 7 {
		<-errs
	}
	// Filling a small disk: the first failure must be the guard's refusal
	// (a storage error that wrote nothing), and so is the next write.
	fmt.Fprintf(os.Stdout, "ERR storage=%t nospace=%t failed=%t %v\n", errors.Is(err, ledger.ErrStorage), errors.Is(err, ledger.ErrNoSpace), errors.Is(err, ledger.ErrFailed), err)
	_, err = l.Append(ctx, crashStore, ledger.KindSale, ledgertest.Sale(crashSKU, 1, 350))
	fmt.Fprintf(os.Stdout, "NEXT nospace=%t %v\n", errors.Is(err, ledger.ErrNoSpace), err)
	// The parent frees space and says so on stdin: writes resume.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	o, err = l.Append(ctx, crashStore, ledger.KindSale, ledgertest.Sale(crashSKU, 1, 350))
	if err != nil {
		fmt.Fprintf(os.Stdout, "RESUMED err %v\n", err)
		return nil
	}
	ack(o)
	fmt.Fprintf(os.Stdout, "RESUMED %d\n", o.Seq)
	l.Close()
	return store.Close()
}

// settleChild appends crashSettleOps sales, flushes the durable own-chain
// record so it holds all of them, says "SETTLED" and then waits to be
// killed, or (closeStore) closes everything and exits.
func settleChild(ctx context.Context, l *ledger.Ledger, store *ledger.Badger, rec *ledger.OwnRecordFile, closeStore bool) error {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < crashSettleOps; i += 8 {
				o, err := l.Append(ctx, crashStore, ledger.KindSale, ledgertest.Sale(crashSKU, 1, 350))
				if err != nil {
					errs <- err
					return
				}
				fmt.Fprintf(os.Stdout, "%d\n", o.Seq)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if closeStore {
		if err := l.Close(); err != nil {
			return err
		}
		if err := store.Close(); err != nil {
			return err
		}
		fmt.Fprintln(os.Stdout, "SETTLED")
		return nil
	}
	if err := l.FlushOwnRecord(); err != nil {
		return err
	}
	held := l.VersionVector(crashStore)[l.Self().Device]
	m, err := rec.Load()
	if err != nil {
		return err
	}
	if got := m[ledger.OwnChain{Scope: crashStore, Chain: l.Self().Device}]; got != held {
		return fmt.Errorf("the own-chain record says seq %d after a flush, the ledger holds %d", got, held)
	}
	fmt.Fprintln(os.Stdout, "SETTLED")
	select {} // killed by the parent
}

// openChild opens a (possibly damaged) data folder and reports what it
// found: "OPEN held=N floor=F source=S" and what an append got, or
// "OPENERR corrupt=B ...". It must never panic.
func openChild(ctx context.Context, cert *ledger.Certificate, key, fleet []byte) error {
	cfg := ledger.DefaultConfig()
	cfg.Fleet, cfg.Self, cfg.Key = ed25519.PublicKey(fleet), cert, ed25519.PrivateKey(key)
	store, err := ledger.OpenBadger(os.Getenv(crashEnvDir))
	if err != nil {
		fmt.Fprintf(os.Stdout, "OPENERR corrupt=%t %v\n", errors.Is(err, ledger.ErrCorrupt), err)
		return nil
	}
	defer store.Close()
	rec, err := ledger.OpenOwnRecordFile(os.Getenv(crashEnvRecord))
	if err != nil {
		return err
	}
	cfg.OwnRecord = rec
	l, err := ledger.Open(ctx, store, cfg)
	if err != nil {
		fmt.Fprintf(os.Stdout, "OPENERR corrupt=%t %v\n", errors.Is(err, ledger.ErrCorrupt), err)
		return nil
	}
	defer l.Close()
	floor, source := l.OwnFloor(crashStore, cert.Device)
	fmt.Fprintf(os.Stdout, "OPEN held=%d floor=%d source=%s\n", l.VersionVector(crashStore)[cert.Device], floor, source)
	_, err = l.Append(ctx, crashStore, ledger.KindSale, ledgertest.Sale(crashSKU, 1, 350))
	fmt.Fprintf(os.Stdout, "APPEND behind=%t %v\n", errors.Is(err, ledger.ErrOwnHistoryBehind), err)
	return nil
}

// TestCrashKill9 kills a writing child process at random instants and
// checks, after each kill, that every acknowledged op survived, that the
// chain verifies, and that the materialised stock matches the ops.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts real processes; skipped in -short")
	}
	f := ledgertest.NewFleet(7)
	dev := f.Enroll(crashStore, ledger.RoleTerminal, ledgertest.Expiring(ledgertest.Epoch.AddDate(50, 0, 0)))
	dir := t.TempDir()
	recPath := filepath.Join(t.TempDir(), "ownchain")
	rng := rand.New(rand.NewPCG(7, 9))
	env := append(os.Environ(),
		crashEnvRole+"=append",
		crashEnvDir+"="+dir,
		crashEnvRecord+"="+recPath,
		crashEnvKey+"="+hex.EncodeToString(dev.Key),
		crashEnvCert+"="+hex.EncodeToString(dev.Cert.Encode()),
		crashEnvFleet+"="+hex.EncodeToString(f.Key.Public()),
	)

	var maxAcked uint64
	var totalAcked int
	verified := map[ledger.Hash]bool{} // signatures already checked in an earlier round
	for round := range crashRounds {
		// Most rounds kill while the child is appending; every sixth kills
		// at a random instant from process start (open, replay, first op).
		early := round%6 == 5
		acked, stderr := runAndKill(t, env, rng, early)
		if len(acked) == 0 && !early {
			t.Fatalf("round %d: child acknowledged nothing; stderr: %s", round, stderr)
		}
		totalAcked += len(acked)
		for _, s := range acked {
			maxAcked = max(maxAcked, s)
		}
		// Rebuilding a replica from every op costs a signature check per op:
		// do it every sixth round and at the end.
		rebuild := round%6 == 3 || round == crashRounds-1
		n := checkCrashedStore(t, f, dev, dir, maxAcked, verified, rebuild)
		// The durable own-chain record never claims more than is stored
		// (that would stop the device selling for nothing).
		rec, err := ledger.OpenOwnRecordFile(recPath)
		if err != nil {
			t.Fatal(err)
		}
		m, err := rec.Load()
		rec.Close()
		if err != nil {
			t.Fatalf("round %d: own-chain record: %v", round, err)
		}
		recorded := m[ledger.OwnChain{Scope: crashStore, Chain: dev.ID()}]
		if recorded > uint64(n) {
			t.Fatalf("round %d: the own-chain record says seq %d, the store holds %d", round, recorded, n)
		}
		t.Logf("round %d: %d ops acknowledged before SIGKILL, %d ops stored, record at %d", round, len(acked), n, recorded)
	}
	if totalAcked < 100 {
		t.Fatalf("only %d ops acknowledged over %d rounds: the child did not get going", totalAcked, crashRounds)
	}
}

// runAndKill starts the child, waits for its first acknowledged op (unless
// early), lets it run for a random 20–300 ms and kills it with SIGKILL. It
// returns the seqs the child acknowledged.
func runAndKill(t *testing.T, env []string, rng *rand.Rand, early bool) ([]uint64, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	var acked []uint64
	readDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				continue // "PASS" or other test-framework output
			}
			acked = append(acked, s)
			if len(acked) == 1 {
				close(first)
			}
		}
		readDone <- sc.Err()
	}()
	exited := make(chan struct{})
	var waitErr error
	go func() {
		<-readDone // Wait closes the pipe: read everything first
		waitErr = cmd.Wait()
		close(exited)
	}()

	var delay time.Duration
	if early {
		delay = time.Duration(rng.IntN(60)) * time.Millisecond
	} else {
		delay = time.Duration(20+rng.IntN(281)) * time.Millisecond
		select {
		case <-first:
		case <-exited:
			t.Fatalf("child exited before its first op: %v; stderr: %s", waitErr, stderr.String())
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("child acknowledged nothing in 30 s; stderr: %s", stderr.String())
		}
	}
	select {
	case <-time.After(delay): // the fault: a kill at a random instant
	case <-exited:
		t.Fatalf("child exited on its own: %v; stderr: %s", waitErr, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, not SIGKILL; stderr: %s", cmd.ProcessState, stderr.String())
	}
	return acked, stderr.String()
}

// checkCrashedStore reopens the data folder after a kill and checks it; it
// returns the number of stored ops.
func checkCrashedStore(t *testing.T, f *ledgertest.Fleet, dev *ledgertest.Device, dir string, maxAcked uint64, verified map[ledger.Hash]bool, rebuild bool) int {
	t.Helper()
	ctx := context.Background()
	store, err := ledger.OpenBadger(dir)
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer store.Close()
	l, err := ledger.Open(ctx, store, f.Config(nil, nil)) // read-only inspector
	if err != nil {
		t.Fatalf("ledger open after kill: %v", err)
	}
	defer l.Close()

	if got := l.VersionVector(crashStore)[dev.ID()]; got < maxAcked {
		t.Fatalf("lost acknowledged ops: child acknowledged seq %d, version vector holds %d", maxAcked, got)
	}
	ops := verifyStoredChains(t, store, map[string]ed25519.PublicKey{dev.ID(): dev.Cert.PubKey}, verified)
	chain := ops[[2]string{crashStore, dev.ID()}]
	if uint64(len(chain)) != l.VersionVector(crashStore)[dev.ID()] {
		t.Fatalf("%d ops stored, version vector says %d", len(chain), l.VersionVector(crashStore)[dev.ID()])
	}

	// Stock: received − sold, recomputed from the stored ops and from the
	// sale log, must equal the materialised counter.
	var received, soldOps int64
	for _, o := range chain {
		switch o.Kind {
		case ledger.KindStockReceived:
			var b ledger.StockReceived
			if err := crdt.UnmarshalCanonical(o.Body, &b); err != nil {
				t.Fatal(err)
			}
			received += b.Qty
		case ledger.KindSale:
			var b ledger.Sale
			if err := crdt.UnmarshalCanonical(o.Body, &b); err != nil {
				t.Fatal(err)
			}
			soldOps += b.Lines[0].Qty
		}
	}
	var soldLog int64
	for _, s := range l.Sales(crashStore) {
		for _, ln := range s.Lines {
			soldLog += ln.Qty
		}
	}
	if soldLog != soldOps {
		t.Fatalf("sale log holds %d units, stored ops %d", soldLog, soldOps)
	}
	if got, want := l.OnHand(crashStore, crashSKU), received-soldLog; got != want {
		t.Fatalf("on hand %d, recomputed %d (received %d, sold %d)", got, want, received, soldLog)
	}

	if !rebuild {
		return len(chain)
	}
	// A fresh replica that applies every stored op (verifying signatures,
	// certificates and chain links itself) reaches the same digest.
	r, err := ledger.Open(ctx, ledgertest.MemStore(), f.Config(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddCertificate(ctx, dev.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	raws := make([][]byte, len(chain))
	for i, o := range chain {
		raws[i] = o.Raw()
	}
	res, err := r.ApplyBatch(ctx, raws)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range res {
		if x.Outcome != ledger.Applied {
			t.Fatalf("replaying stored op %v: %v %v", x.Op, x.Outcome, x.Err)
		}
	}
	if r.Digest(crashStore) != l.Digest(crashStore) {
		t.Fatal("a replica rebuilt from the stored ops has a different digest")
	}
	// And the ledger's own audit of its store agrees.
	if err := l.VerifyStored(ctx); err != nil {
		t.Fatalf("VerifyStored after kill: %v", err)
	}
	return len(chain)
}

// verifyStoredChains reads every stored op under /o, checks that each
// device's ops in each store form an unbroken chain from seq 1 (seq, prev
// hash) and that every signature verifies with the author's key. It is an
// inspector's check written against the public encoding only. verified, if
// not nil, remembers ops whose signature was checked. It returns the ops by
// (store, device), in seq order; it fails on forks.
func verifyStoredChains(t *testing.T, d ds.Datastore, keys map[string]ed25519.PublicKey, verified map[ledger.Hash]bool) map[[2]string][]*ledger.Op {
	t.Helper()
	res, err := d.Query(context.Background(), dsq.Query{Prefix: "/o"})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string][]*ledger.Op{}
	for _, e := range all {
		o, err := ledger.DecodeOp(e.Value)
		if err != nil {
			t.Fatalf("stored op %s: %v", e.Key, err)
		}
		pub, ok := keys[o.Device]
		if !ok {
			t.Fatalf("stored op %s by unknown device %s", e.Key, o.Device)
		}
		if !verified[o.Hash()] {
			if !verifyOpSig(o, pub) {
				t.Fatalf("stored op %s: signature does not verify", e.Key)
			}
			if verified != nil {
				verified[o.Hash()] = true
			}
		}
		k := [2]string{o.Store, o.Device}
		out[k] = append(out[k], o)
	}
	for k, ops := range out {
		slices.SortFunc(ops, func(a, b *ledger.Op) int { return cmp.Compare(a.Seq, b.Seq) })
		for i, o := range ops {
			if o.Seq != uint64(i+1) {
				t.Fatalf("chain %v: op %d has seq %d (gap or fork)", k, i+1, o.Seq)
			}
			if i == 0 {
				if len(o.Prev) != 0 {
					t.Fatalf("chain %v: seq 1 has a prev hash", k)
				}
				continue
			}
			if h := ops[i-1].Hash(); string(o.Prev) != string(h[:]) {
				t.Fatalf("chain %v: seq %d does not link to seq %d", k, o.Seq, o.Seq-1)
			}
		}
	}
	return out
}

// verifyOpSig checks an op's signature from its public fields: the signed
// message is a domain tag and the canonical encoding without the signature.
func verifyOpSig(o *ledger.Op, pub ed25519.PublicKey) bool {
	u := *o
	u.Sig = nil
	b, err := crdt.Marshal(&u)
	if err != nil {
		return false
	}
	return ed25519.Verify(pub, append([]byte("storemesh-op-v1\x00"), b...), o.Sig)
}

// lockedBuffer is an io.Writer safe for the exec package's copy goroutine
// and the test reading it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

var _ io.Writer = (*lockedBuffer)(nil)
