package ledger_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

// TestFlippedByteEachFile writes crashSettleOps sales in a child process,
// which is then either killed with SIGKILL (once the durable own-chain
// record was flushed) or closes cleanly; then, for each file badger
// left (.mem, .sst, .vlog, MANIFEST, KEYREGISTRY, DISCARD), it flips one
// byte in a copy of the folder and opens it in another child process.
//
// What was found before: a flipped byte in the WAL (.mem) of a killed node
// made badger truncate its log at the bad CRC, silently: the node started
// and served fewer sales, and would have reused the lost seqs; a flipped
// byte in an SST gave a Go panic on start. Now: never a panic, and never a
// silent short chain: either a clear start error (ErrCorrupt naming the
// file), or the ledger opens with every sale, or it opens with the loss
// reported (own floor from the durable record) and refuses to append
// (ErrOwnHistoryBehind) so no seq is reused.
func TestFlippedByteEachFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	f := ledgertest.NewFleet(11)
	dev := f.Enroll(crashStore, ledger.RoleTerminal, ledgertest.Expiring(ledgertest.Epoch.AddDate(50, 0, 0)))
	env := func(role, dir string) []string {
		return append(os.Environ(),
			crashEnvRole+"="+role,
			crashEnvDir+"="+filepath.Join(dir, "badger"),
			crashEnvRecord+"="+filepath.Join(dir, "ownchain"),
			crashEnvKey+"="+hex.EncodeToString(dev.Key),
			crashEnvCert+"="+hex.EncodeToString(dev.Cert.Encode()),
			crashEnvFleet+"="+hex.EncodeToString(f.Key.Public()),
		)
	}
	kinds := map[string]bool{}
	for _, ending := range []string{"settle", "settle-close"} {
		t.Run(ending, func(t *testing.T) {
			src := t.TempDir()
			acked := settle(t, env(ending, src), ending == "settle")
			files, err := os.ReadDir(filepath.Join(src, "badger"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range files {
				name := e.Name()
				kind := fileKind(name)
				if kind == "" || !e.Type().IsRegular() {
					continue
				}
				t.Run(name, func(t *testing.T) {
					dst := t.TempDir()
					if err := os.Mkdir(filepath.Join(dst, "badger"), 0o700); err != nil {
						t.Fatal(err)
					}
					if err := copySparseDir(filepath.Join(src, "badger"), filepath.Join(dst, "badger")); err != nil {
						t.Fatal(err)
					}
					if err := copySparse(filepath.Join(src, "ownchain"), filepath.Join(dst, "ownchain")); err != nil {
						t.Fatal(err)
					}
					off, ok := flipByte(t, filepath.Join(dst, "badger", name))
					if !ok {
						t.Skipf("%s holds no data to damage", name)
					}
					kinds[kind] = true
					out, stderr, err := runOpen(env("open", dst))
					if err != nil || strings.Contains(stderr, "panic") || strings.Contains(stderr, "fatal error") {
						t.Fatalf("byte %d of %s flipped: the child died (%v); stderr: %.3000s", off, name, err, stderr)
					}
					judgeOpen(t, name, off, out, acked)
				})
			}
		})
	}
	for _, k := range []string{"mem", "sst", "MANIFEST", "KEYREGISTRY"} {
		if !kinds[k] {
			t.Errorf("no %s file was damaged: badger's files changed?", k)
		}
	}
}

func fileKind(name string) string {
	switch ext := filepath.Ext(name); {
	case ext == ".mem", ext == ".sst", ext == ".vlog":
		return ext[1:]
	case name == "MANIFEST", name == "KEYREGISTRY", name == "DISCARD":
		return name
	}
	return ""
}

// settle runs a settle child and returns the highest seq it acknowledged;
// kill: SIGKILL it once it says SETTLED.
func settle(t *testing.T, env []string, kill bool) uint64 {
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
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "SETTLED" {
			break
		}
	}
	if kill {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for sc.Scan() { // Wait closes the pipe: read everything first
		lines = append(lines, sc.Text())
	}
	err = cmd.Wait()
	if !slices.Contains(lines, "SETTLED") || (!kill && err != nil) {
		t.Fatalf("settle child: %v; stderr: %.2000s", err, stderr.String())
	}
	var maxSeq uint64
	for _, line := range lines {
		if s, err := strconv.ParseUint(line, 10, 64); err == nil {
			maxSeq = max(maxSeq, s)
		}
	}
	if maxSeq != crashSettleOps {
		t.Fatalf("settle child acknowledged up to seq %d, want %d", maxSeq, crashSettleOps)
	}
	return maxSeq
}

func runOpen(env []string) (string, string, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// flipByte flips the byte in the middle of the file's non-zero bytes
// (badger's files are sparse and zero-padded).
func flipByte(t *testing.T, path string) (int, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var nz []int
	for i, c := range b {
		if c != 0 {
			nz = append(nz, i)
		}
	}
	if len(nz) == 0 {
		return 0, false
	}
	sort.Ints(nz)
	off := nz[len(nz)/2]
	b[off] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return off, true
}

var (
	openRe   = regexp.MustCompile(`OPEN held=(\d+) floor=(\d+) source=(.*)`)
	appendRe = regexp.MustCompile(`APPEND behind=(true|false)`)
)

func judgeOpen(t *testing.T, name string, off int, out string, acked uint64) {
	t.Helper()
	if i := strings.Index(out, "OPENERR "); i >= 0 {
		line := strings.SplitN(out[i:], "\n", 2)[0]
		if !strings.Contains(line, "corrupt=true") {
			t.Errorf("byte %d of %s flipped: a start error that is not ErrCorrupt: %s", off, name, line)
		}
		t.Logf("byte %d of %s flipped: start refused: %s", off, name, line)
		return
	}
	m := openRe.FindStringSubmatch(out)
	a := appendRe.FindStringSubmatch(out)
	if m == nil || a == nil {
		t.Fatalf("byte %d of %s flipped: child said %q", off, name, out)
	}
	held, _ := strconv.ParseUint(m[1], 10, 64)
	floor, _ := strconv.ParseUint(m[2], 10, 64)
	switch {
	case held >= acked:
		t.Logf("byte %d of %s flipped: opened with every sale (%d)", off, name, held)
	case floor >= acked && a[1] == "true":
		t.Logf("byte %d of %s flipped: opened holding %d of %d sales, the loss reported (floor %d from %s), appends wait", off, name, held, acked, floor, m[3])
	default:
		t.Errorf("byte %d of %s flipped: SILENT SHORT CHAIN: holds %d of %d acknowledged sales, floor %d, append behind=%s", off, name, held, acked, floor, a[1])
	}
}
