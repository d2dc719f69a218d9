package ledger

import (
	"fmt"

	badger "github.com/ipfs/go-ds-badger4"
)

// OpenBadger opens (or creates) the badger datastore in dir with the
// settings a ledger needs: every commit fsynced (SyncWrites), and memory
// sized for a small terminal rather than a server.
func OpenBadger(dir string) (*badger.Datastore, error) {
	opts := badger.DefaultOptions
	opts.GcInterval = 0 // the op log only grows; no value-log GC goroutine
	opts.Options = opts.Options.
		WithSyncWrites(true).           // a sale is acknowledged only once on disk (DESIGN §7)
		WithMemTableSize(8 << 20).      // 64 MiB default would alone break the 64 MiB idle budget
		WithNumMemtables(2).            // one filling, one flushing
		WithBlockCacheSize(8 << 20).    // reads are rare: replay at start, sync catch-up
		WithIndexCacheSize(4 << 20).    //
		WithValueLogFileSize(64 << 20). // ops are small and live in the LSM tree
		WithNumCompactors(2).           // the minimum badger allows; terminals have few cores
		WithNumLevelZeroTables(3).      //
		WithNumLevelZeroTablesStall(8). //
		WithLogger(nil)                 // badger's own logger prints to stderr; errors reach us as values
	ds, err := badger.NewDatastore(dir, &opts)
	if err != nil {
		return nil, fmt.Errorf("%w: open badger at %s: %v", ErrStorage, dir, err)
	}
	return ds, nil
}
