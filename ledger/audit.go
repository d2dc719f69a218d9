package ledger

// Audit export and offline verification (docs/design.md §6 "Audit").
//
// Bundle format, version 2. A bundle is three parts, back to back:
//
//  1. the magic line "storemesh-audit-v2\n";
//  2. an RFC 8742 CBOR sequence: CBOR items back to back, with no framing
//     of their own. Every item is a byte string in core deterministic
//     encoding — exactly what crdt.Marshal gives for a []byte:
//
//     manifest                     // crdt.Marshal(Manifest), a canonical CBOR array
//     Manifest.Certs × certificate // Certificate.Encode() of every stored certificate, in storage-key order
//     Manifest.Ops × op            // the canonical bytes of every stored op, in storage-key order
//
//     The manifest's counts say where the sequence ends. Storage-key
//     order is the ledger's own: ops by (store, device, seq, hash) as the
//     keys /o/STORE/DEVICE/SEQ/HASH sort byte-wise, so a chain's ops are
//     adjacent and in seq order; certificates by /c/DEVICE/EXPIRY. Every
//     item is length-prefixed and bounded (manifest 1 MiB, certificate
//     4 KiB, op MaxOpBytes), so verifying streams the bundle and needs
//     memory for one item plus a little per chain, not for the whole
//     bundle;
//  3. a trailer: the 32-byte SHA-256 of parts 1 and 2.
//
// A bundle that ends with exactly a trailer left where its manifest
// promises another item holds fewer items than the manifest says: the
// reader reports that as a manifest problem and checks the trailer.
// A bundle of another version fails with a version problem, version 1
// (one CBOR array [manifest, [* cert], [* op]] in place of the sequence)
// included.
//
// Any changed byte is detected: the trailer no longer matches, and the
// strict decoder refuses anything but the one canonical form. A forger who
// also recomputes the trailer is caught by the semantic checks: every
// certificate must be signed by the fleet key, every op by a certificate
// valid at the op's time whose role and store allow it, every chain must
// run from seq 1 with correct prev links, and the manifest must say what
// the ops say. Only the fleet key is trusted: an inspector who passes the
// expected key in VerifyOptions.Fleet also rules out a bundle re-signed
// wholesale by another fleet.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"storemesh/crdt"
)

const (
	bundleMagic       = "storemesh-audit-v2\n"
	bundleMagicPrefix = "storemesh-audit-v" // followed by the version and "\n"
	// manifestFormat is the manifest's own version, apart from the bundle's.
	manifestFormat = 1

	// MaxBundleBytes is the default bound on a bundle's size: about ten
	// million sales, far beyond one fleet's yearly log. Larger claims are
	// refused before anything is allocated.
	MaxBundleBytes int64 = 4 << 30
	// maxManifestBytes bounds the manifest: about 10,000 chains at
	// 70-100 bytes each.
	maxManifestBytes = 1 << 20
	// maxCertBytes matches DecodeCertificate's own limit.
	maxCertBytes = 4096
	// maxProblems bounds the problems an AuditError lists; the rest are
	// counted in Omitted, so a bundle of a million bad ops stays readable.
	maxProblems = 200
)

// ErrAuditFailed is the sentinel every *AuditError matches with errors.Is.
var ErrAuditFailed = errors.New("ledger: audit failed")

// ProblemCode classifies an audit problem. The codes are a stable contract
// (scripts match them): add new ones, never rename.
type ProblemCode string

const (
	ProblemChecksum    ProblemCode = "checksum"    // the trailer does not match the content
	ProblemDecode      ProblemCode = "decode"      // not a bundle, or malformed or non-canonical bytes
	ProblemSize        ProblemCode = "size"        // over a size limit
	ProblemVersion     ProblemCode = "version"     // a format version this build does not know
	ProblemFleet       ProblemCode = "fleet"       // another fleet's key or id
	ProblemCertificate ProblemCode = "certificate" // a bad certificate, or an op with no certificate valid at its time
	ProblemPermission  ProblemCode = "permission"  // the author's role or store does not allow the op
	ProblemSignature   ProblemCode = "signature"   // an op's signature does not verify
	ProblemBody        ProblemCode = "body"        // an op body that does not decode or validate
	ProblemOrder       ProblemCode = "order"       // not in storage-key order, or stored under the wrong key
	ProblemChain       ProblemCode = "chain"       // a missing seq or a prev link to no op
	ProblemManifest    ProblemCode = "manifest"    // the manifest disagrees with the ops
	ProblemTotal       ProblemCode = "total"       // a sales total overflows
)

// Problem is one thing wrong with a bundle or a store.
type Problem struct {
	Code   ProblemCode `json:"code"`
	Where  string      `json:"where"` // "bundle", "manifest", "certificate D", "op STORE/DEVICE/SEQ(KIND) HASH", "chain STORE/DEVICE"
	Detail string      `json:"detail"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.Code, p.Where, p.Detail) }

// AuditError lists every problem an audit found (up to a bound).
type AuditError struct {
	Problems []Problem
	Omitted  int // problems found past the bound and not listed
}

func (e *AuditError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ledger: audit failed: %d problem(s)", len(e.Problems)+e.Omitted)
	for i, p := range e.Problems {
		if i == 3 {
			b.WriteString("; ...")
			break
		}
		fmt.Fprintf(&b, "; %s", p)
	}
	return b.String()
}

func (e *AuditError) Unwrap() error { return ErrAuditFailed }

// Has reports whether some listed problem has code c.
func (e *AuditError) Has(c ProblemCode) bool {
	return slices.ContainsFunc(e.Problems, func(p Problem) bool { return p.Code == c })
}

// Manifest describes a bundle's content. It is part of the format: fields
// are added at the end, with a new format version.
type Manifest struct {
	_        struct{}       `cbor:",toarray"`
	V        uint8          `json:"v"`
	Fleet    string         `json:"fleet"`     // fleet id
	FleetKey []byte         `json:"fleet_key"` // ed25519 public key the certificates are signed by
	Exported crdt.Timestamp `json:"exported"`  // HLC of the exporting ledger
	Device   string         `json:"device"`    // exporting device; "" for a read-only ledger
	Chains   []ChainSummary `json:"chains"`    // in storage-key order
	Ops      uint64         `json:"ops"`
	Certs    uint64         `json:"certs"`
}

// ChainSummary describes one device's ops in one store.
type ChainSummary struct {
	_      struct{} `cbor:",toarray"`
	Store  string   `json:"store"`
	Device string   `json:"device"`
	Ops    uint64   `json:"ops"`
	MaxSeq uint64   `json:"max_seq"`
	// Heads are the ops no other op of the chain links to, sorted: the
	// last op, or the tip of every branch when the chain is forked.
	Heads  []Hash `json:"heads"`
	Forked bool   `json:"forked"`
}

func (c *ChainSummary) equal(d *ChainSummary) bool {
	return c.Store == d.Store && c.Device == d.Device && c.Ops == d.Ops &&
		c.MaxSeq == d.MaxSeq && c.Forked == d.Forked && slices.Equal(c.Heads, d.Heads)
}

// SalesTotal is the sum of the valid sales of one store in one currency.
// Both branches of a forked chain count, as in the ledger's sale log: a
// terminal restored from an old backup really did sell twice at one seq.
type SalesTotal struct {
	Store    string `json:"store"`
	Currency string `json:"currency"`
	Sales    int    `json:"sales"`
	Total    int64  `json:"total"` // minor units
}

// RefundTotal is the sum of the valid refunds of one store, counted with
// the ledger's rule (refunds.go): Amount is what their sales honour, each
// unit and each cent of a sale refunded once.
type RefundTotal struct {
	Store   string `json:"store"`
	Refunds int    `json:"refunds"`
	Amount  int64  `json:"amount"` // minor units honoured
	// Conflicts counts refunds that asked more than their sale had left
	// (over_refund conflicts, listed in Report.RefundConflicts).
	Conflicts int `json:"conflicts,omitempty"`
	// Unmatched counts refunds whose sale is not in the ops (honoured 0).
	Unmatched int `json:"unmatched,omitempty"`
}

// Revocation is a device.revoked op found in the ops.
type Revocation struct {
	Device string         `json:"device"`
	At     crdt.Timestamp `json:"at"`
	By     string         `json:"by"`
}

// Report is what an audit found. Chains, Forks and the totals are computed
// from the ops, not taken from the manifest.
type Report struct {
	Manifest Manifest       `json:"manifest"` // as read from the bundle
	Certs    int            `json:"certs"`
	Ops      int            `json:"ops"`
	Chains   []ChainSummary `json:"chains"`
	Forks    []Fork         `json:"forks"`
	Sales    []SalesTotal   `json:"sales"`
	Refunds  []RefundTotal  `json:"refunds"`
	// RefundConflicts are the over_refund conflicts the ops hold, as the
	// ledger lists them: a double refund is reported, never passed.
	RefundConflicts []Conflict   `json:"refund_conflicts"`
	Revocations     []Revocation `json:"revocations"`
	// Excluded counts sales, refunds and resolutions past their revoked
	// device's cut-off: stored as evidence, counted in no total, as on
	// every replica.
	Excluded int            `json:"excluded_by_revocation"`
	First    crdt.Timestamp `json:"first"` // earliest op HLC
	Last     crdt.Timestamp `json:"last"`  // latest op HLC
}

// VerifyOptions configures VerifyBundle.
type VerifyOptions struct {
	// Fleet is the fleet public key the inspector trusts. When set, a
	// bundle of another fleet fails and certificates are checked against
	// this key; when nil, the bundle's own key is used, which proves the
	// bundle consistent but not whose it is.
	Fleet ed25519.PublicKey
	// MaxBytes bounds the bundle's size. Default MaxBundleBytes.
	MaxBytes int64
}

// Export writes a bundle (see the format above) of every op and
// certificate in the ledger's storage and returns its manifest. Writes go
// on while it runs; the bundle holds the ops that were stored when it
// started (and every certificate they need). On error what was written is
// incomplete and must be discarded.
func (l *Ledger) Export(ctx context.Context, w io.Writer) (Manifest, error) {
	l.mu.Lock()
	now := l.clock.Now()
	l.mu.Unlock()
	m := Manifest{V: manifestFormat, Fleet: l.fleetID, FleetKey: append([]byte(nil), l.cfg.Fleet...),
		Exported: now, Device: l.selfDevice()}

	// Pass 1 summarises the ops; certificates are read after it, so every
	// certificate those ops need is included (a certificate is durable
	// before any op that needs it is applied).
	var first chainWalker
	if err := l.scanOps(ctx, func(_ string, o *Op) error {
		first.add(o)
		m.Ops++
		return nil
	}); err != nil {
		return Manifest{}, err
	}
	m.Chains, _ = first.finish()
	var certs [][]byte
	if err := l.scan(ctx, "/c", func(_ string, val []byte) error {
		certs = append(certs, val)
		return nil
	}); err != nil {
		return Manifest{}, err
	}
	m.Certs = uint64(len(certs))
	mb, err := crdt.Marshal(&m)
	if err != nil {
		return Manifest{}, fmt.Errorf("ledger: encode manifest: %w", err)
	}

	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	enc := crdt.NewEncoder(bw)
	item := func(b []byte) error {
		if err := enc.Encode(b); err != nil {
			return fmt.Errorf("ledger: export: write: %w", err)
		}
		return nil
	}
	bw.WriteString(bundleMagic)
	if err := item(mb); err != nil {
		return Manifest{}, err
	}
	for _, c := range certs {
		if err := item(c); err != nil {
			return Manifest{}, err
		}
	}

	// Pass 2 writes the ops pass 1 saw: chains it knew, up to the seq it
	// knew. Only a fork op stored in between could slip in; the second
	// summary catches that.
	known := make(map[chainKey]uint64, len(m.Chains))
	for _, c := range m.Chains {
		known[chainKey{c.Store, c.Device}] = c.MaxSeq
	}
	var second chainWalker
	if err := l.scanOps(ctx, func(_ string, o *Op) error {
		if last, ok := known[chainKey{o.Store, o.Device}]; !ok || o.Seq > last {
			return nil
		}
		second.add(o)
		return item(o.raw)
	}); err != nil {
		return Manifest{}, err
	}
	again, _ := second.finish()
	if !slices.EqualFunc(m.Chains, again, func(a, b ChainSummary) bool { return a.equal(&b) }) {
		return Manifest{}, fmt.Errorf("ledger: export: an op was stored inside an exported chain while exporting; export again")
	}
	if err := bw.Flush(); err != nil {
		return Manifest{}, fmt.Errorf("ledger: export: write: %w", err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return Manifest{}, fmt.Errorf("ledger: export: write: %w", err)
	}
	return m, nil
}

// scanOps decodes every stored op in key order.
func (l *Ledger) scanOps(ctx context.Context, fn func(key string, o *Op) error) error {
	return l.scan(ctx, "/o", func(key string, val []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		o, err := DecodeOp(val)
		if err != nil {
			return &CorruptError{Key: key, Err: err}
		}
		return fn(key, o)
	})
}

// VerifyStored re-reads every stored certificate and op and checks them as
// VerifyBundle checks a bundle: certificates against the fleet key, each
// op's form, body, author's certificate and rights, and signature, each
// op's storage key, and every chain from seq 1 with correct prev links.
// Problems come back as an *AuditError (errors.Is ErrAuditFailed); a
// storage failure as ErrStorage.
func (l *Ledger) VerifyStored(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		v := newVerifier(l.cfg.Fleet)
		nCerts := 0
		if err := l.scan(ctx, "/c", func(key string, val []byte) error {
			nCerts++
			v.cert(val, key)
			return nil
		}); err != nil {
			return err
		}
		if err := l.scan(ctx, "/o", func(key string, val []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			v.op(val, key)
			return nil
		}); err != nil {
			return err
		}
		v.finish(nil)
		if v.problems.empty() {
			return nil
		}
		// An op applied while we read may need a certificate stored after
		// the certificates were read: if any arrived, look again once.
		n := 0
		if err := l.scan(ctx, "/c", func(string, []byte) error { n++; return nil }); err != nil {
			return err
		}
		if attempt > 0 || n == nCerts {
			return v.problems.err()
		}
	}
}

// VerifyBundle checks a bundle offline: its magic, trailer and canonical
// encoding, every certificate against the fleet key, every op's form,
// body, author's certificate and rights at the op's time, and signature,
// every chain from seq 1 with correct prev links (forks are reported, not
// failed), and the manifest against the ops. It returns the report and an
// *AuditError listing every problem (errors.Is ErrAuditFailed), or a
// plain error when r itself fails to read; the report is nil only then.
func VerifyBundle(r io.Reader, opts VerifyOptions) (*Report, error) {
	if opts.Fleet != nil && len(opts.Fleet) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: expected fleet key is %d bytes", ErrBadInput, len(opts.Fleet))
	}
	limit := min(opts.MaxBytes, math.MaxInt64-1)
	if limit <= 0 {
		limit = MaxBundleBytes
	}
	br := newBundleReader(r, limit)
	v := newVerifier(opts.Fleet)
	if err := v.readBundle(br, opts); err != nil {
		var fe *formatError
		if !errors.As(err, &fe) {
			return nil, fmt.Errorf("ledger: read audit bundle: %w", err)
		}
		v.problem(fe.code, "bundle", fe.msg)
		v.finish(nil) // report what was read before the bundle broke off
	}
	return v.rep, v.problems.err()
}

func (v *verifier) readBundle(br *bundleReader, opts VerifyOptions) error {
	if err := br.magic(); err != nil {
		return err
	}
	mb, err := br.item(maxManifestBytes)
	if err != nil {
		return err
	}
	if err := v.manifest(mb, opts.Fleet); err != nil {
		return err
	}
	// The counts come from the bundle: a false one costs a loop that ends
	// with the bundle, never an allocation.
	m := &v.rep.Manifest
	for _, part := range []struct {
		n      uint64
		maxLen int
		check  func(b []byte)
	}{
		{m.Certs, maxCertBytes, func(b []byte) { v.cert(b, "") }},
		{m.Ops, MaxOpBytes, func(b []byte) { v.op(b, "") }},
	} {
		for range part.n {
			if end, err := br.trailerNext(); err != nil {
				return err
			} else if end {
				break // the manifest check reports the shortfall
			}
			b, err := br.item(part.maxLen)
			if err != nil {
				return err
			}
			part.check(b)
		}
	}
	match, extra, err := br.trailer()
	if err != nil {
		return err
	}
	if !match {
		v.problem(ProblemChecksum, "bundle", "SHA-256 trailer does not match the content")
	}
	if extra {
		v.problem(ProblemDecode, "bundle", "bytes after the trailer")
	}
	v.finish(m)
	return nil
}

// manifest decodes and checks the manifest and settles the trusted key.
func (v *verifier) manifest(b []byte, expect ed25519.PublicKey) error {
	m := &v.rep.Manifest
	if err := crdt.UnmarshalCanonical(b, m); err != nil {
		return &formatError{ProblemDecode, fmt.Sprintf("manifest: %v", err)}
	}
	if m.V != manifestFormat {
		return &formatError{ProblemVersion, fmt.Sprintf("manifest version %d, this build reads %d", m.V, manifestFormat)}
	}
	if len(m.FleetKey) != ed25519.PublicKeySize {
		return &formatError{ProblemManifest, fmt.Sprintf("fleet key is %d bytes", len(m.FleetKey))}
	}
	if m.Fleet != FleetID(m.FleetKey) {
		v.problem(ProblemManifest, "manifest", fmt.Sprintf("fleet id %s is not the id of its fleet key (%s)", m.Fleet, FleetID(m.FleetKey)))
	}
	if expect == nil {
		v.fleet = m.FleetKey
	} else if !bytes.Equal(expect, m.FleetKey) {
		v.problem(ProblemFleet, "manifest", fmt.Sprintf("bundle of fleet %s, expected fleet %s", FleetID(m.FleetKey), FleetID(expect)))
	}
	v.fleetID = FleetID(v.fleet)
	return nil
}

// verifier checks certificates and ops fed to it in storage-key order. It
// is shared by VerifyBundle and VerifyStored.
type verifier struct {
	fleet    ed25519.PublicKey
	fleetID  string
	certs    map[string][]*Certificate
	walker   chainWalker
	problems problemList
	rep      *Report
	lastCert string
	lastOp   string
	nCerts   int
	nOps     int
	sales    map[[2]string]*SalesTotal
	refunds  map[string]*RefundTotal
	st       *state // sales and refunds, to count refunds by the ledger's rule
	// held is every verified op that counts in a total, tallied in finish
	// once the revocations are judged: as in the ledger, an op past its
	// revoked device's cut-off counts in no total.
	held []heldTally
	revs []*revocation
}

type heldTally struct {
	o     *Op
	b     body
	where string
}

func newVerifier(fleet ed25519.PublicKey) *verifier {
	v := &verifier{
		fleet: fleet, certs: map[string][]*Certificate{}, rep: &Report{},
		sales: map[[2]string]*SalesTotal{}, refunds: map[string]*RefundTotal{}, st: newState(),
	}
	if fleet != nil {
		v.fleetID = FleetID(fleet)
	}
	v.walker.problem = v.problem
	return v
}

func (v *verifier) problem(code ProblemCode, where, detail string) {
	v.problems.add(Problem{Code: code, Where: where, Detail: detail})
}

// cert checks one certificate. storedKey is its storage key, or "" when
// it comes from a bundle.
func (v *verifier) cert(raw []byte, storedKey string) {
	v.nCerts++
	c, err := DecodeCertificate(raw)
	if err != nil {
		v.problem(ProblemCertificate, fmt.Sprintf("certificate #%d", v.nCerts), err.Error())
		return
	}
	where := "certificate " + c.Device
	key := certKey(c).String()
	v.checkKey(where, key, storedKey, &v.lastCert)
	if err := c.Verify(v.fleet, time.Time{}); err != nil {
		v.problem(ProblemCertificate, where, err.Error())
		return
	}
	for _, have := range v.certs[c.Device] {
		if !bytes.Equal(have.PubKey, c.PubKey) {
			v.problem(ProblemCertificate, where, "a second certificate for the device with a different key")
			return
		}
	}
	v.certs[c.Device] = append(v.certs[c.Device], c)
}

// checkKey checks that key follows *last in storage order and, for stored
// values, that the value sits under its own key.
func (v *verifier) checkKey(where, key, storedKey string, last *string) {
	if storedKey != "" && storedKey != key {
		v.problem(ProblemOrder, where, fmt.Sprintf("stored under %s, belongs under %s", storedKey, key))
	}
	if key <= *last {
		v.problem(ProblemOrder, where, fmt.Sprintf("%s does not follow %s in storage order", key, *last))
	}
	*last = key
}

// op checks one op. storedKey is its storage key, or "" in a bundle.
func (v *verifier) op(raw []byte, storedKey string) {
	v.nOps++
	o, err := DecodeOp(raw)
	if err != nil {
		code := ProblemDecode
		switch RejectReason(err) {
		case ReasonChain:
			code = ProblemChain
		case ReasonVersion:
			code = ProblemVersion
		}
		v.problem(code, fmt.Sprintf("op #%d", v.nOps), err.Error())
		return
	}
	where := fmt.Sprintf("op %s %s", o, o.hash.Short())
	v.checkKey(where, opKey(o).String(), storedKey, &v.lastOp)
	v.walker.add(o)
	if v.rep.First.IsZero() || o.HLC.Less(v.rep.First) {
		v.rep.First = o.HLC
	}
	if v.rep.Last.Less(o.HLC) {
		v.rep.Last = o.HLC
	}
	if o.Fleet != v.fleetID {
		v.problem(ProblemFleet, where, fmt.Sprintf("op of fleet %s, want %s", o.Fleet, v.fleetID))
		return
	}
	cert, err := pickCert(v.certs[ChainOwner(o.Device)], o)
	if err != nil {
		code := ProblemCertificate
		if r := RejectReason(err); r == ReasonRole || r == ReasonStore {
			code = ProblemPermission
		}
		v.problem(code, where, err.Error())
		return
	}
	if err := o.verifySig(cert.PubKey); err != nil {
		v.problem(ProblemSignature, where, err.Error())
		return
	}
	b, err := decodeBody(o)
	if err != nil {
		v.problem(ProblemBody, where, err.Error())
		return
	}
	switch b := b.(type) {
	case *Sale, *Refund, *ConflictResolved:
		v.held = append(v.held, heldTally{o, b, where})
	case *DeviceRevoked:
		v.rep.Revocations = append(v.rep.Revocations, Revocation{Device: b.Device, At: o.HLC, By: o.Device})
		if o.BodyV >= revokedVersion {
			if r := newRevocation(v.fleet, v.certs, o, b); r != nil {
				v.revs = append(v.revs, r)
			}
		}
	}
}

// tallyHeld judges the revocations the ops hold, as the ledger does, and
// adds every held op within its device's cut-off to the totals; the rest
// are counted in Report.Excluded.
func (v *verifier) tallyHeld() {
	devs := judgeRevocations(v.revs)
	for _, h := range v.held {
		if d := devs[ChainOwner(h.o.Device)]; d != nil && h.o.Seq > d.cuts[chainKey{h.o.Store, h.o.Device}] {
			v.rep.Excluded++
			continue
		}
		v.tally(h.o, h.b, h.where)
	}
	v.held = nil
}

// pickCert finds a certificate of o's author valid at o's time that allows
// o, as the ledger's certFor does when the op arrives.
func pickCert(certs []*Certificate, o *Op) (*Certificate, error) {
	if len(certs) == 0 {
		return nil, reject(ReasonUnknownDevice, "no valid certificate for %s", o.Device)
	}
	var first error
	for _, c := range certs {
		err := c.ValidAt(o.HLC.Wall / 1e6)
		if err == nil {
			err = c.MayWrite(o.Kind, o.Store)
		}
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// tally adds a verified op to the report's totals.
func (v *verifier) tally(o *Op, b body, where string) {
	switch b := b.(type) {
	case *Sale:
		k := [2]string{o.Store, b.Currency}
		t := v.sales[k]
		if t == nil {
			t = &SalesTotal{Store: o.Store, Currency: b.Currency}
			v.sales[k] = t
		}
		t.Sales++
		t.Total = v.add(t.Total, b.Total(), where)
		v.st.apply(o, b)
	case *Refund, *ConflictResolved:
		v.st.apply(o, b)
	}
}

// countRefunds totals the refunds the ops hold, honoured as the ledger
// honours them, and lists their conflicts.
func (v *verifier) countRefunds() {
	for sale, bk := range v.st.books {
		_, matched := v.st.sales[sale]
		for _, r := range bk.refunds {
			t := v.refunds[r.store]
			if t == nil {
				t = &RefundTotal{Store: r.store}
				v.refunds[r.store] = t
			}
			t.Refunds++
			t.Amount = v.add(t.Amount, r.paid, "refund "+r.id)
			if !matched {
				t.Unmatched++
			}
			if _, ok := v.st.refundConf[r.store]["overrefund:"+r.id]; ok {
				t.Conflicts++
			}
		}
	}
	v.rep.RefundConflicts = []Conflict{}
	for st := range v.st.refundConf {
		v.rep.RefundConflicts = append(v.rep.RefundConflicts, v.st.refundConflicts(st)...)
	}
	slices.SortFunc(v.rep.RefundConflicts, func(a, b Conflict) int { return cmp.Compare(a.ID, b.ID) })
	for i := range v.rep.RefundConflicts {
		if r := v.st.resolved[v.rep.RefundConflicts[i].ID]; r != nil {
			res := r.Value
			v.rep.RefundConflicts[i].Resolution = &res
		}
	}
}

func (v *verifier) add(a, b int64, where string) int64 {
	if (b > 0 && a > math.MaxInt64-b) || (b < 0 && a < math.MinInt64-b) {
		v.problem(ProblemTotal, where, "total overflows 64 bits")
		return a
	}
	return a + b
}

// finish closes the chains, fills in the report and, given a manifest,
// checks it against what the ops say.
func (v *verifier) finish(m *Manifest) {
	rep := v.rep
	rep.Chains, rep.Forks = v.walker.finish()
	rep.Ops, rep.Certs = v.nOps, v.nCerts
	v.tallyHeld()
	for _, t := range v.sales {
		rep.Sales = append(rep.Sales, *t)
	}
	slices.SortFunc(rep.Sales, func(a, b SalesTotal) int {
		return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.Currency, b.Currency))
	})
	v.countRefunds()
	for _, t := range v.refunds {
		rep.Refunds = append(rep.Refunds, *t)
	}
	slices.SortFunc(rep.Refunds, func(a, b RefundTotal) int { return cmp.Compare(a.Store, b.Store) })
	if m != nil {
		v.checkManifest(m)
	}
}

func (v *verifier) checkManifest(m *Manifest) {
	rep := v.rep
	if m.Ops != uint64(rep.Ops) {
		v.problem(ProblemManifest, "manifest", fmt.Sprintf("says %d ops, bundle holds %d", m.Ops, rep.Ops))
	}
	if m.Certs != uint64(rep.Certs) {
		v.problem(ProblemManifest, "manifest", fmt.Sprintf("says %d certificates, bundle holds %d", m.Certs, rep.Certs))
	}
	claimed := make(map[chainKey]*ChainSummary, len(m.Chains))
	for i := range m.Chains {
		c := &m.Chains[i]
		k := chainKey{c.Store, c.Device}
		if claimed[k] != nil {
			v.problem(ProblemManifest, "chain "+c.Store+"/"+c.Device, "listed twice in the manifest")
		}
		claimed[k] = c
	}
	for i := range rep.Chains {
		c := &rep.Chains[i]
		k := chainKey{c.Store, c.Device}
		where := "chain " + c.Store + "/" + c.Device
		mc := claimed[k]
		delete(claimed, k)
		switch {
		case mc == nil:
			v.problem(ProblemManifest, where, "not in the manifest")
		case !mc.equal(c):
			v.problem(ProblemManifest, where, fmt.Sprintf("manifest says %d ops to seq %d, forked %t, heads %s; ops say %d ops to seq %d, forked %t, heads %s",
				mc.Ops, mc.MaxSeq, mc.Forked, shortHashes(mc.Heads), c.Ops, c.MaxSeq, c.Forked, shortHashes(c.Heads)))
		}
	}
	for _, c := range m.Chains {
		if claimed[chainKey{c.Store, c.Device}] != nil {
			v.problem(ProblemManifest, "chain "+c.Store+"/"+c.Device, fmt.Sprintf("in the manifest with %d ops, none in the bundle", c.Ops))
		}
	}
}

func shortHashes(hs []Hash) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.Short()
	}
	return "[" + strings.Join(s, " ") + "]"
}

type problemList struct {
	list    []Problem
	omitted int
}

func (p *problemList) add(x Problem) {
	if len(p.list) < maxProblems {
		p.list = append(p.list, x)
	} else {
		p.omitted++
	}
}

func (p *problemList) empty() bool { return len(p.list) == 0 }

func (p *problemList) err() error {
	if p.empty() {
		return nil
	}
	return &AuditError{Problems: p.list, Omitted: p.omitted}
}
