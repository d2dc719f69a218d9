package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
)

// The durable record of this device's own chains.
//
// Badger can lose the tail of its write-ahead log without an error (it
// truncates the WAL at the first entry whose CRC fails) and an SST block
// that fails its checksum silently ends an iteration: a replica can open
// holding fewer of its own ops than it acknowledged. Reusing those seqs
// would fork its own chain on every peer that has the lost ops. So the
// ledger keeps, outside the datastore, how far each of its own chains has
// gone (Config.OwnRecord), and on open raises the own floor
// (RaiseOwnFloor, source "durable record") to it: local writes then wait
// (ErrOwnHistoryBehind) until sync has refilled the chain from peers.
//
// The record is written by a goroutine after commits that made own ops
// durable, concurrently with later commits (it adds no latency to
// Append), at most every ownRecordEvery, and exactly at Close. It never
// claims more than is durable in the datastore, so a crash cannot make a
// false alarm; after a SIGKILL it may lag by the ops of the last 50 ms or
// so of commits, and a loss of only those is not detected.

// OwnChain names one chain of this device: its scope and chain id (the
// device id, or an epoch of it).
type OwnChain struct {
	Scope string
	Chain string
}

// OwnRecord stores the durable record. Save must be durable when it
// returns. The node implements it with OwnRecordFile; the simulator
// leaves Config.OwnRecord nil.
type OwnRecord interface {
	Load() (map[OwnChain]uint64, error)
	Save(map[OwnChain]uint64) error
}

// ownRecorder writes the record in the background.
type ownRecorder struct {
	rec    OwnRecord
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex // serialises Save
	saved  map[OwnChain]uint64
	loaded map[OwnChain]uint64 // what the record said at open
	err    error               // the last Save error
	writes uint64
}

// openOwnRecord loads the record, raises the own floor where it reaches
// further than the replayed chains, and starts the recorder. Called by
// Open after replay.
func (l *Ledger) openOwnRecord() error {
	if l.cfg.OwnRecord == nil || l.cfg.Self == nil || l.cfg.Key == nil {
		return nil
	}
	loaded, err := l.cfg.OwnRecord.Load()
	if err != nil {
		return err
	}
	self := l.cfg.Self.Device
	for k, seq := range loaded {
		if ChainOwner(k.Chain) != self {
			continue
		}
		if held := l.vv[k.Scope][k.Chain]; seq > held {
			l.log.Error("own chain shorter than its durable record: ops were lost from storage (or the data folder is an older copy); local writes wait for peers to refill them, then move to a new chain",
				"scope", k.Scope, "chain", k.Chain, "held", held, "recorded", seq, "missing", seq-held)
			l.RaiseOwnFloor(k.Scope, k.Chain, seq, "durable record")
		}
	}
	r := &ownRecorder{
		rec: l.cfg.OwnRecord, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		saved: loaded, loaded: loaded,
	}
	l.own = r
	go l.recordLoop(r)
	return nil
}

// ownProgress is what the record should say now: every own chain's
// durable contiguous length, never less than what it said (a chain that
// is behind its record stays recorded at the record). Called under l.mu.
func (l *Ledger) ownProgress(r *ownRecorder) map[OwnChain]uint64 {
	self := l.cfg.Self.Device
	m := make(map[OwnChain]uint64, len(r.loaded)+1)
	for k, v := range r.loaded {
		m[k] = v
	}
	for scope, vv := range l.vv {
		for dev, seq := range vv {
			if ChainOwner(dev) != self || seq == 0 {
				continue
			}
			k := OwnChain{scope, dev}
			m[k] = max(m[k], seq)
		}
	}
	return m
}

func (l *Ledger) recordLoop(r *ownRecorder) {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case <-r.kick:
		}
		l.mu.Lock()
		m := l.ownProgress(r)
		l.mu.Unlock()
		r.save(l, m)
		// At most one record write per ownRecordEvery: each is an
		// fdatasync beside badger's, which a single writer's Append would
		// otherwise pay on every commit. Close writes the exact record.
		select {
		case <-r.stop:
			return
		case <-time.After(ownRecordEvery):
		}
	}
}

// ownRecordEvery bounds how often the background recorder writes.
const ownRecordEvery = 50 * time.Millisecond

func (r *ownRecorder) save(l *Ledger, m map[OwnChain]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if equalRecords(m, r.saved) {
		return
	}
	if err := r.rec.Save(m); err != nil {
		if r.err == nil {
			l.log.Error("durable own-chain record not written", "err", err)
		}
		r.err = err
		return
	}
	r.saved, r.err = m, nil
	r.writes++
}

func equalRecords(a, b map[OwnChain]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// recordOwn wakes the recorder after a commit that made own ops durable.
// Called under l.mu.
func (l *Ledger) recordOwn(durable []*Op) {
	if l.own == nil {
		return
	}
	self := l.cfg.Self.Device
	for _, o := range durable {
		if ChainOwner(o.Device) == self {
			select {
			case l.own.kick <- struct{}{}:
			default:
			}
			return
		}
	}
}

// closeOwnRecord stops the recorder and writes the exact record. Called
// under l.mu by Close, once no commit is under way.
func (l *Ledger) closeOwnRecord() error {
	r := l.own
	if r == nil {
		return nil
	}
	l.own = nil
	close(r.stop)
	l.mu.Unlock()
	<-r.done
	l.mu.Lock()
	m := l.ownProgress(r)
	r.save(l, m)
	return r.err
}

// FlushOwnRecord writes the durable own-chain record now, with what is
// durable in the datastore, and returns once it is on disk (nil without a
// record). The record is kept up to date in the background; this is for
// a caller that needs it exact at a point (a test before a kill).
func (l *Ledger) FlushOwnRecord() error {
	l.mu.Lock()
	r := l.own
	if r == nil {
		l.mu.Unlock()
		return nil
	}
	m := l.ownProgress(r)
	l.mu.Unlock()
	r.save(l, m)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// OwnChainState is what status shows of one of this device's own chains.
type OwnChainState struct {
	Scope    string
	Chain    string // the chain id: the device id, or an epoch of it
	Current  bool   // the chain Append writes in Scope now
	Held     uint64 // contiguous seqs this replica holds
	Recorded uint64 // how far the chain is known to reach (durable record, peers)
	Source   string // who said so ("durable record", "peer ...")
	Missing  uint64 // Recorded − Held when positive: lost, waiting for sync
	// Wait is, while Missing > 0 on the current chain, how long Append
	// still waits for sync before it writes a new epoch.
	Wait time.Duration
}

// OwnChains reports this device's chains in every scope it wrote to or
// has a floor in, sorted by scope and chain. Empty when read-only.
func (l *Ledger) OwnChains() []OwnChainState {
	l.mu.Lock()
	defer l.mu.Unlock()
	self := l.selfDevice()
	if self == "" {
		return nil
	}
	keys := map[chainKey]bool{}
	for scope, vv := range l.vv {
		for d, n := range vv {
			if n > 0 && ChainOwner(d) == self {
				keys[chainKey{scope, d}] = true
			}
		}
	}
	for k := range l.floor {
		keys[k] = true
	}
	out := make([]OwnChainState, 0, len(keys))
	for k := range keys {
		s := OwnChainState{Scope: k.scope, Chain: k.device, Held: l.vv[k.scope][k.device]}
		s.Current = l.currentOwn(k.scope) == k.device
		f := l.floor[k]
		s.Recorded, s.Source = max(f.seq, s.Held), f.source
		s.Missing = s.Recorded - s.Held
		if s.Missing > 0 && s.Current {
			s.Wait = max(0, time.Duration(f.since+int64(l.cfg.OwnWait)-l.cfg.Now()))
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Scope != out[j].Scope {
			return out[i].Scope < out[j].Scope
		}
		return out[i].Chain < out[j].Chain
	})
	return out
}

// RecordWrites counts the durable record's writes (for metrics and the
// benchmark); 0 without a record.
func (l *Ledger) RecordWrites() uint64 {
	l.mu.Lock()
	r := l.own
	l.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// OwnRecordFile is an OwnRecord in one small file. Format version 1: two
// slots of equal size; each save writes the slot after the last one
// written, in place, and fdatasyncs it, so a torn write leaves the other
// slot intact. A slot is
//
//	"SMOR" | version (1 byte) | counter (8, BE) | payload length (4, BE) | payload | CRC-32C of all before (4, BE)
//
// and the payload is entries of uvarint-prefixed scope, uvarint-prefixed
// chain id and a uvarint seq. Load takes the valid slot with the higher
// counter; a file whose both slots are damaged is ErrCorrupt.
type OwnRecordFile struct {
	path    string
	mu      sync.Mutex
	f       *os.File
	slot    int64
	counter uint64
	next    int // slot to write next
}

const (
	ownRecordMagic   = "SMOR"
	ownRecordVersion = 1
	ownRecordSlot    = 4096
	ownRecordHeader  = 4 + 1 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenOwnRecordFile opens (or creates) the record file at path.
func OpenOwnRecordFile(path string) (*OwnRecordFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
	}
	r := &OwnRecordFile{path: path, f: f, slot: fi.Size() / 2}
	if fi.Size() == 0 {
		r.slot = ownRecordSlot
		// Allocate both slots now: a later save writes in place and never
		// needs new space on a full disk.
		err := f.Truncate(2 * r.slot)
		if err == nil {
			_, err = f.WriteAt(make([]byte, 2*r.slot), 0)
			if err == nil {
				err = f.Sync()
			}
		}
		if err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
		}
	}
	return r, nil
}

// Close closes the file.
func (r *OwnRecordFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}

// Load implements OwnRecord.
func (r *OwnRecordFile) Load() (map[OwnChain]uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	buf := make([]byte, 2*r.slot)
	if _, err := r.f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: own-chain record %s: %v", ErrStorage, r.path, err)
	}
	m, counter, slot, err := parseOwnRecord(buf, r.slot)
	if err != nil {
		return nil, &CorruptError{Key: r.path, Err: fmt.Errorf("the durable own-chain record is damaged (%v); if this device's data was restored on purpose, remove the file to start without it", err)}
	}
	if slot >= 0 {
		r.counter, r.next = counter, 1-slot
	}
	return m, nil
}

// parseOwnRecord reads the two slots of a record file's bytes: the
// record of the valid slot with the higher counter, and which slot; slot
// −1 and an empty record when both are empty (a new file).
func parseOwnRecord(buf []byte, slotSize int64) (map[OwnChain]uint64, uint64, int, error) {
	best, bestSlot := map[OwnChain]uint64(nil), -1
	var bestCounter uint64
	var errs []error
	empty := 0
	for i := range 2 {
		b := buf[int64(i)*slotSize : int64(i+1)*slotSize]
		if bytes.Count(b, []byte{0}) == len(b) {
			empty++
			continue
		}
		counter, m, err := decodeOwnSlot(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
			continue
		}
		if bestSlot < 0 || counter > bestCounter {
			best, bestSlot, bestCounter = m, i, counter
		}
	}
	if bestSlot < 0 {
		if empty == 2 {
			return map[OwnChain]uint64{}, 0, -1, nil
		}
		return nil, 0, -1, errors.Join(errs...)
	}
	return best, bestCounter, bestSlot, nil
}

func decodeOwnSlot(b []byte) (uint64, map[OwnChain]uint64, error) {
	if len(b) < ownRecordHeader+4 {
		return 0, nil, fmt.Errorf("slot of %d bytes", len(b))
	}
	if string(b[:4]) != ownRecordMagic {
		return 0, nil, errors.New("bad magic")
	}
	if b[4] != ownRecordVersion {
		return 0, nil, fmt.Errorf("record format version %d, this build reads %d", b[4], ownRecordVersion)
	}
	counter := binary.BigEndian.Uint64(b[5:])
	n := int(binary.BigEndian.Uint32(b[13:]))
	if n > len(b)-ownRecordHeader-4 {
		return 0, nil, errors.New("bad length")
	}
	end := ownRecordHeader + n
	if crc32.Checksum(b[:end], castagnoli) != binary.BigEndian.Uint32(b[end:]) {
		return 0, nil, errors.New("checksum mismatch")
	}
	p := b[ownRecordHeader:end]
	m := map[OwnChain]uint64{}
	str := func() (string, bool) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return "", false
		}
		s := string(p[k : k+int(l)])
		p = p[k+int(l):]
		return s, true
	}
	for len(p) > 0 {
		scope, ok1 := str()
		chain, ok2 := str()
		seq, k := binary.Uvarint(p)
		if !ok1 || !ok2 || k <= 0 {
			return 0, nil, errors.New("bad entry")
		}
		p = p[k:]
		m[OwnChain{scope, chain}] = seq
	}
	return counter, m, nil
}

// Save implements OwnRecord.
func (r *OwnRecordFile) Save(m map[OwnChain]uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	buf := encodeOwnSlot(m, r.counter+1)
	if int64(len(buf)) > r.slot {
		return r.grow(buf)
	}
	if _, err := r.f.WriteAt(buf, int64(r.next)*r.slot); err != nil {
		return fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
	}
	if err := fdatasync(r.f); err != nil {
		return fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
	}
	r.counter++
	r.next = 1 - r.next
	return nil
}

// encodeOwnSlot encodes one slot holding m with counter.
func encodeOwnSlot(m map[OwnChain]uint64, counter uint64) []byte {
	keys := make([]OwnChain, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Scope != keys[j].Scope {
			return keys[i].Scope < keys[j].Scope
		}
		return keys[i].Chain < keys[j].Chain
	})
	var p []byte
	for _, k := range keys {
		p = binary.AppendUvarint(p, uint64(len(k.Scope)))
		p = append(p, k.Scope...)
		p = binary.AppendUvarint(p, uint64(len(k.Chain)))
		p = append(p, k.Chain...)
		p = binary.AppendUvarint(p, m[k])
	}
	buf := make([]byte, 0, ownRecordHeader+len(p)+4)
	buf = append(buf, ownRecordMagic...)
	buf = append(buf, ownRecordVersion)
	buf = binary.BigEndian.AppendUint64(buf, counter)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(p)))
	buf = append(buf, p...)
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

// grow replaces the file with one whose slots fit buf (more chains than
// the slots held: an anchor writing to many stores): a new file with buf
// in its first slot, fsynced, renamed over the old one. Called under r.mu.
func (r *OwnRecordFile) grow(buf []byte) error {
	slot := r.slot
	for slot < int64(len(buf)) {
		slot *= 2
	}
	tmp := r.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
	}
	whole := make([]byte, 2*slot)
	copy(whole, buf)
	if _, err = f.WriteAt(whole, 0); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, r.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(r.path))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("%w: own-chain record: %v", ErrStorage, err)
	}
	r.f.Close()
	r.f, r.slot, r.next = f, slot, 1
	r.counter++
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// MemOwnRecord is an OwnRecord in memory, for tests and simulations that
// model a record surviving a crash.
type MemOwnRecord struct {
	mu sync.Mutex
	m  map[OwnChain]uint64
}

// Load implements OwnRecord.
func (r *MemOwnRecord) Load() (map[OwnChain]uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[OwnChain]uint64{}
	for k, v := range r.m {
		out[k] = v
	}
	return out, nil
}

// Save implements OwnRecord.
func (r *MemOwnRecord) Save(m map[OwnChain]uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m = map[OwnChain]uint64{}
	for k, v := range m {
		r.m[k] = v
	}
	return nil
}

// Data format of the datastore: formatKey holds the version, written when
// a writable ledger first opens a store. A store without it is version 1
// (every store written before the key existed).
const (
	// FormatVersion is the storage format this build writes and reads.
	FormatVersion = 1
	formatKey     = "/m/format"
)

// ErrFormat refuses a datastore written by a newer build.
var ErrFormat = errors.New("ledger: the datastore's format is newer than this build reads")

func (l *Ledger) checkFormat(ctx context.Context) error {
	v, err := l.ds.Get(ctx, ds.NewKey(formatKey))
	switch {
	case errors.Is(err, ds.ErrNotFound):
		if l.cfg.Key == nil {
			return nil // read-only: version 1, nothing written
		}
		return l.ds.Put(ctx, ds.NewKey(formatKey), []byte(fmt.Sprint(FormatVersion)))
	case err != nil:
		return fmt.Errorf("%w: read %s: %v", ErrStorage, formatKey, err)
	}
	var n int
	if _, err := fmt.Sscan(string(v), &n); err != nil || n < 1 {
		return &CorruptError{Key: formatKey, Err: fmt.Errorf("format version %q", v)}
	}
	if n > FormatVersion {
		return fmt.Errorf("%w: version %d, this build reads up to %d: run a newer storemesh", ErrFormat, n, FormatVersion)
	}
	return nil
}
