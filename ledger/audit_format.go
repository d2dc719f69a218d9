package ledger

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/fxamacker/cbor/v2"

	"storemesh/crdt"
)

// formatError is a bundle the reader cannot go on parsing.
type formatError struct {
	code ProblemCode
	msg  string
}

func (e *formatError) Error() string { return string(e.code) + ": " + e.msg }

// maxHead is the longest CBOR head: a byte string of n bytes takes at most
// n+maxHead bytes.
const maxHead = 9

// errItemTooLarge is itemReader refusing to hand on more of an item than
// its bound allows.
var errItemTooLarge = errors.New("ledger: bundle item passes its size bound")

// itemReader stands between the bundle and the CBOR decoder. It counts the
// bytes it hands on and hands on none past end, so however long an item
// claims to be, the decoder never buffers more than the item's bound. It
// keeps the underlying reader's own failure apart from a malformed bundle.
type itemReader struct {
	r   *bufio.Reader
	n   int64 // bytes handed on
	end int64 // n may not pass end
	err error // the underlying reader's failure, other than EOF
}

func (ir *itemReader) Read(p []byte) (int, error) {
	if ir.n >= ir.end {
		return 0, errItemTooLarge
	}
	if int64(len(p)) > ir.end-ir.n {
		p = p[:ir.end-ir.n]
	}
	k, err := ir.r.Read(p)
	ir.n += int64(k)
	if err != nil && err != io.EOF {
		ir.err = err
	}
	return k, err
}

// bundleReader reads a bundle part by part: the magic line, the items of
// the CBOR sequence through crdt's decoder, and the trailer. It hashes
// exactly the bytes of the magic line and of each item.
type bundleReader struct {
	in    itemReader
	dec   *cbor.Decoder
	h     hash.Hash
	pos   int64 // bytes of the bundle parsed: the next part starts here
	limit int64
	raw   cbor.RawMessage // the last item, reused
}

// newBundleReader reads r, which may hold at most limit bytes.
func newBundleReader(r io.Reader, limit int64) *bundleReader {
	// The reader stops one byte past the limit, so a longer bundle is
	// noticed.
	br := &bundleReader{h: sha256.New(), limit: limit}
	br.in.r = bufio.NewReaderSize(io.LimitReader(r, limit+1), 64<<10)
	br.dec = crdt.NewDecoder(&br.in)
	return br
}

// fail turns a read error into a format problem when the bundle simply
// ends, passes the size limit or is malformed; the reader's own errors
// come back as they are.
func (br *bundleReader) fail(err error) error {
	switch {
	case br.in.err != nil:
		return br.in.err
	case br.in.n > br.limit:
		return &formatError{ProblemSize, fmt.Sprintf("bundle is larger than %d bytes", br.limit)}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return &formatError{ProblemDecode, "bundle is truncated"}
	default:
		return &formatError{ProblemDecode, fmt.Sprintf("byte %d: %v", br.pos, err)}
	}
}

// magic reads and checks the magic line.
func (br *bundleReader) magic() error {
	b := make([]byte, len(bundleMagic))
	br.in.end = int64(len(b))
	if _, err := io.ReadFull(&br.in, b); err != nil {
		return br.fail(err)
	}
	br.h.Write(b)
	br.pos = int64(len(b))
	switch m := string(b); {
	case m == bundleMagic:
		return nil
	case strings.HasPrefix(m, bundleMagicPrefix):
		return &formatError{ProblemVersion, fmt.Sprintf("bundle format %q, this build reads %q", strings.TrimSpace(m), strings.TrimSpace(bundleMagic))}
	default:
		return &formatError{ProblemDecode, "not a storemesh audit bundle"}
	}
}

// item reads the next item of the sequence, which must be a canonical
// CBOR byte string of at most maxLen bytes, and returns its content.
func (br *bundleReader) item(maxLen int) ([]byte, error) {
	at := br.pos
	br.in.end = at + int64(maxLen) + maxHead
	if err := br.dec.Decode(&br.raw); err != nil {
		if errors.Is(err, errItemTooLarge) {
			return nil, &formatError{ProblemSize, fmt.Sprintf("the item at byte %d is longer than %d bytes", at, maxLen)}
		}
		return nil, br.fail(err)
	}
	br.h.Write(br.raw)
	br.pos += int64(len(br.raw))
	var b []byte
	if err := crdt.UnmarshalCanonical(br.raw, &b); err != nil {
		return nil, &formatError{ProblemDecode, fmt.Sprintf("the item at byte %d: %v", at, err)}
	}
	if b == nil { // null decodes to a nil slice and re-encodes as itself
		return nil, &formatError{ProblemDecode, fmt.Sprintf("the item at byte %d is null, not a byte string", at)}
	}
	if len(b) > maxLen {
		return nil, &formatError{ProblemSize, fmt.Sprintf("an item of %d bytes at byte %d (max %d)", len(b), at, maxLen)}
	}
	return b, nil
}

// trailerNext reports whether exactly a trailer's worth of bytes is left.
// Asked where the manifest promises another item, yes means the bundle
// holds fewer items than its manifest says.
func (br *bundleReader) trailerNext() (bool, error) {
	buffered := br.in.n - br.pos // read by the decoder, not yet returned
	if buffered > sha256.Size {
		return false, nil
	}
	want := int(sha256.Size + 1 - buffered)
	p, err := br.in.r.Peek(want)
	switch {
	case err == nil || errors.Is(err, bufio.ErrBufferFull):
		return false, nil
	case err == io.EOF:
		return len(p) == want-1, nil
	default:
		br.in.err = err // Peek hands the error over once
		return false, err
	}
}

// trailer reads the trailer and reports whether it matches what was
// hashed and whether bytes follow it.
func (br *bundleReader) trailer() (match, extra bool, err error) {
	sum := br.h.Sum(nil)
	br.in.end = br.pos + sha256.Size + 1
	b := make([]byte, sha256.Size+1)
	n, err := io.ReadFull(io.MultiReader(br.dec.Buffered(), &br.in), b)
	if n < sha256.Size {
		return false, false, br.fail(err)
	}
	if br.in.err != nil {
		return false, false, br.in.err
	}
	if br.in.n > br.limit {
		return false, false, br.fail(nil)
	}
	return bytes.Equal(sum, b[:sha256.Size]), n > sha256.Size, nil
}
