package ledger

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
	badger "github.com/ipfs/go-ds-badger4"
)

// ErrNoSpace is the free-space guard's refusal: the filesystem holding the
// datastore has less free space than the guard keeps in reserve. Nothing
// was written (it wraps ErrStorage); writes resume by themselves once
// space is freed.
var ErrNoSpace = fmt.Errorf("%w: not enough free disk space", ErrStorage)

// SpaceChecker is a datastore that can tell, before a commit, whether the
// commit can be written safely. Open uses it when the datastore implements
// it (OpenBadger's does).
type SpaceChecker interface {
	// CheckSpace returns nil when a commit of about n bytes can be
	// written, or an error wrapping ErrNoSpace.
	CheckSpace(n int) error
}

// Badger is the badger datastore OpenBadger opens, with its free-space
// guard.
type Badger struct {
	*badger.Datastore
	guard *SpaceGuard
}

// CheckSpace implements SpaceChecker.
func (b *Badger) CheckSpace(n int) error { return b.guard.Check(n) }

// Guard is the datastore's free-space guard.
func (b *Badger) Guard() *SpaceGuard { return b.guard }

// badgerOptions are the settings a ledger needs: every commit fsynced
// (SyncWrites), block and table checksums verified on every read, and
// memory sized for a small terminal rather than a server.
func badgerOptions() badger.Options {
	opts := badger.DefaultOptions
	opts.GcInterval = 0 // the op log only grows; no value-log GC goroutine
	opts.Options = opts.Options.
		WithSyncWrites(true).           // a sale is acknowledged only once on disk (docs/design.md §7)
		WithMemTableSize(8 << 20).      // 64 MiB default would alone break the 64 MiB idle budget
		WithNumMemtables(2).            // one filling, one flushing
		WithBlockCacheSize(8 << 20).    // reads are rare: replay at start, sync catch-up
		WithIndexCacheSize(4 << 20).    //
		WithValueLogFileSize(64 << 20). // ops are small and live in the LSM tree
		WithNumCompactors(2).           // the minimum badger allows; terminals have few cores
		WithNumLevelZeroTables(3).      //
		WithNumLevelZeroTablesStall(8). //
		// Badger verifies no checksum by default: a flipped bit in an SST
		// is decoded as if it were data (a panic, or a silently different
		// value). Reads are rare (replay, catch-up): verify every block
		// read. Whole tables are verified by OpenBadger before badger
		// opens them (verifyTables): badger's own check at open
		// (OnTableRead) dereferences nil on a bad block in a goroutine of
		// its own, and skips a table whose checksum fails, silently.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithLogger(nil) // badger's own logger prints to stderr; errors reach us as values
	return opts
}

// BadgerReserve is the free space the guard keeps on the datastore's
// filesystem, computed from the badger options. Badger writes its
// write-ahead log (the memtable's .mem file) and every new SST through
// mmap over files it sized with ftruncate: on a full filesystem that is
// not an ENOSPC but a SIGBUS that kills the process. What badger can
// write after a commit without another commit (which the guard would
// see) is bounded by:
//
//   - the rest of the current memtable's WAL: MemTableSize;
//   - flushing every memtable to an L0 table: NumMemtables × MemTableSize
//     (a table holds about what its memtable held);
//   - one L0 → base-level compaction, which writes its output before it
//     deletes its inputs: (NumLevelZeroTables + 1) × MemTableSize of L0
//     tables and the base level's BaseLevelSize;
//   - the DISCARD file (1 MiB) and the MANIFEST growth, ~1 MiB.
//
// For the options above that is 8 + 16 + 32 + 10 + 2 = 68 MiB.
func BadgerReserve() uint64 {
	o := badgerOptions().Options
	mt := uint64(o.MemTableSize)
	return mt + uint64(o.NumMemtables)*mt + uint64(o.NumLevelZeroTables+1)*mt + uint64(o.BaseLevelSize) + 2<<20
}

// OpenBadger opens (or creates) the badger datastore in dir with the
// settings a ledger needs, and its free-space guard (reserve
// BadgerReserve). A store badger cannot open (a corrupt MANIFEST, SST or
// key registry) is an ErrCorrupt naming the file, never a panic.
func OpenBadger(dir string) (_ *Badger, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: open badger at %s: %v", ErrStorage, dir, err)
	}
	guard := NewSpaceGuard(dir, BadgerReserve())
	// Opening writes (a new WAL, the MANIFEST): refuse on a full disk
	// rather than fault.
	if err := guard.Check(0); err != nil {
		return nil, fmt.Errorf("open badger at %s: %w", dir, err)
	}
	if err := verifyTables(dir); err != nil {
		return nil, err
	}
	opts := badgerOptions()
	var ds *badger.Datastore
	if perr := catchPanic(func() { ds, err = badger.NewDatastore(dir, &opts) }); perr != nil {
		return nil, &CorruptError{Key: dir, Err: fmt.Errorf("badger panicked opening it: %v", perr)}
	}
	if err != nil {
		if cerr := badgerCorruption(dir, err); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("%w: open badger at %s: %v", ErrStorage, dir, err)
	}
	return &Badger{Datastore: ds, guard: guard}, nil
}

// badgerCorruption turns badger's open errors that mean a damaged file
// into a CorruptError naming the file; nil for other errors (a lock held
// by another process, permissions).
func badgerCorruption(dir string, err error) error {
	msg := err.Error()
	lower := strings.ToLower(msg)
	for _, sign := range []string{"checksum", "corrupt", "invalid", "bad magic", "unexpected eof", "mismatch", "encryption key", "manifest", "truncate"} {
		if !strings.Contains(lower, sign) {
			continue
		}
		file := dir
		switch {
		case strings.Contains(lower, "manifest"):
			file = filepath.Join(dir, "MANIFEST")
		case strings.Contains(lower, "registry"):
			file = filepath.Join(dir, "KEYREGISTRY")
		}
		for _, f := range strings.Fields(msg) {
			f = strings.Trim(f, `"':,()`)
			if ext := filepath.Ext(f); ext == ".sst" || ext == ".mem" || ext == ".vlog" || strings.HasSuffix(f, "MANIFEST") || strings.HasSuffix(f, "KEYREGISTRY") || strings.HasSuffix(f, "DISCARD") {
				file = f
				break
			}
		}
		return &CorruptError{Key: file, Err: err}
	}
	return nil
}

// verifyTables checks the block checksums of every SST in dir, in this
// goroutine and under recover: a damaged table is an ErrCorrupt naming
// the file.
func verifyTables(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return fmt.Errorf("%w: list tables in %s: %v", ErrStorage, dir, err)
	}
	o := badgerOptions().Options
	topt := table.Options{
		ReadOnly: true, TableSize: uint64(o.BaseTableSize), BlockSize: o.BlockSize,
		BloomFalsePositive: o.BloomFalsePositive, ChkMode: options.OnTableRead,
		Compression: o.Compression, ZSTDCompressionLevel: o.ZSTDCompressionLevel,
	}
	for _, f := range files {
		mf, err := z.OpenMmapFile(f, os.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("%w: open table %s: %v", ErrStorage, f, err)
		}
		var t *table.Table
		if p := catchPanic(func() { t, err = table.OpenTable(mf, topt) }); p != nil {
			mf.Close(-1)
			return &CorruptError{Key: f, Err: fmt.Errorf("table checksum verification failed: %v", p)}
		}
		if err != nil { // OpenTable closed mf
			return &CorruptError{Key: f, Err: fmt.Errorf("table checksum verification failed: %v", err)}
		}
		t.MmapFile.Close(-1) // not t.DecrRef: that deletes the file
	}
	return nil
}

// catchPanic runs fn and returns what it panicked with, if it did. Badger
// asserts on some corrupt inputs (y.Check, y.AssertTrue) instead of
// returning an error.
func catchPanic(fn func()) (p any) {
	defer func() { p = recover() }()
	fn()
	return nil
}

// SpaceGuard refuses writes while the filesystem holding dir has less
// free space than its reserve. It calls statfs(2) at most every
// spaceRecheck, or sooner once the bytes written since the last call
// could have eaten a quarter of the headroom it saw: a check costs a
// clock read on most commits.
type SpaceGuard struct {
	dir     string
	reserve uint64

	mu      sync.Mutex
	checked time.Time
	free    uint64 // at checked
	spent   uint64 // bytes let through since checked
	refused uint64
	statfs  func(dir string) (uint64, error)
}

const spaceRecheck = time.Second

// NewSpaceGuard guards the filesystem of dir with reserve bytes.
func NewSpaceGuard(dir string, reserve uint64) *SpaceGuard {
	return &SpaceGuard{dir: dir, reserve: reserve, statfs: freeBytes}
}

// Reserve is the free space the guard keeps.
func (g *SpaceGuard) Reserve() uint64 { return g.reserve }

// Refused counts the commits the guard refused.
func (g *SpaceGuard) Refused() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refused
}

// Free is the free space on the filesystem at the last check.
func (g *SpaceGuard) Free() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.free
}

// Check returns nil when n more bytes (and what badger writes for them:
// the WAL entry now, the table later) leave the reserve free.
func (g *SpaceGuard) Check(n int) error {
	if g == nil {
		return nil
	}
	cost := 2*uint64(n) + 512 // WAL entry + table entry, headers
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	headroom := int64(g.free) - int64(g.reserve)
	if g.checked.IsZero() || now.Sub(g.checked) >= spaceRecheck || int64(g.spent+cost) >= headroom/4 {
		free, err := g.statfs(g.dir)
		if err != nil {
			return fmt.Errorf("%w: statfs %s: %v", ErrStorage, g.dir, err)
		}
		g.checked, g.free, g.spent = now, free, 0
		headroom = int64(free) - int64(g.reserve)
	}
	if int64(g.spent+cost) > headroom {
		g.refused++
		return fmt.Errorf("%w: %s has %d MiB free, the datastore keeps %d MiB in reserve (badger would die of SIGBUS writing its memory-mapped files on a full disk); free some space", ErrNoSpace, g.dir, g.free>>20, g.reserve>>20)
	}
	g.spent += cost
	return nil
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
