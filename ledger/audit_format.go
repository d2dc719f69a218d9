package ledger

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
)

// formatError is a bundle the reader cannot go on parsing.
type formatError struct {
	code ProblemCode
	msg  string
}

func (e *formatError) Error() string { return string(e.code) + ": " + e.msg }

// CBOR major types the bundle uses.
const (
	cborBytes = 2
	cborArray = 4
)

// bundleReader reads the hashed part of a bundle: CBOR heads and byte
// strings, in the minimal (canonical) encoding only.
type bundleReader struct {
	r     *bufio.Reader
	h     hash.Hash
	n     int64 // bytes read
	limit int64
	buf   [9]byte
}

// fail turns a read error into a format problem when the bundle simply
// ends (or passes the size limit); other errors are the reader's own.
func (br *bundleReader) fail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &formatError{ProblemDecode, "bundle is truncated"}
	}
	return err
}

func (br *bundleReader) read(p []byte) error {
	if br.n+int64(len(p)) > br.limit {
		return &formatError{ProblemSize, fmt.Sprintf("bundle is larger than %d bytes", br.limit)}
	}
	if _, err := io.ReadFull(br.r, p); err != nil {
		return br.fail(err)
	}
	br.h.Write(p)
	br.n += int64(len(p))
	return nil
}

// head reads a CBOR head of the given major type and returns its argument.
func (br *bundleReader) head(major byte) (uint64, error) {
	b := br.buf[:1]
	if err := br.read(b); err != nil {
		return 0, err
	}
	if b[0]>>5 != major {
		return 0, &formatError{ProblemDecode, fmt.Sprintf("CBOR major type %d at byte %d, want %d", b[0]>>5, br.n-1, major)}
	}
	ai := b[0] & 0x1f
	if ai < 24 {
		return uint64(ai), nil
	}
	if ai > 27 {
		return 0, &formatError{ProblemDecode, fmt.Sprintf("indefinite or reserved CBOR length at byte %d", br.n-1)}
	}
	arg := br.buf[1 : 1+1<<(ai-24)] // 1, 2, 4 or 8 big-endian bytes
	if err := br.read(arg); err != nil {
		return 0, err
	}
	var n uint64
	for _, x := range arg {
		n = n<<8 | uint64(x)
	}
	// Canonical CBOR uses the shortest form that holds n.
	minimal := [...]uint64{24, 1 << 8, 1 << 16, 1 << 32}[ai-24]
	if n < minimal {
		return 0, &formatError{ProblemDecode, fmt.Sprintf("non-canonical CBOR length at byte %d", br.n)}
	}
	// Every element takes at least a byte: a longer claim cannot be met
	// within the size limit, so it is refused before anything is allocated.
	if n > uint64(br.limit-br.n) {
		return 0, &formatError{ProblemSize, fmt.Sprintf("a CBOR item claims %d elements or bytes; the bundle may not exceed %d bytes", n, br.limit)}
	}
	return n, nil
}

// bytes reads a CBOR byte string of at most maxLen bytes.
func (br *bundleReader) bytes(maxLen int) ([]byte, error) {
	n, err := br.head(cborBytes)
	if err != nil {
		return nil, err
	}
	if n > uint64(maxLen) {
		return nil, &formatError{ProblemSize, fmt.Sprintf("an element of %d bytes at byte %d (max %d)", n, br.n, maxLen)}
	}
	// Grow with what arrives rather than trusting the claim up front.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, br.r, int64(n)); err != nil {
		return nil, br.fail(err)
	}
	br.h.Write(buf.Bytes())
	br.n += int64(n)
	return buf.Bytes(), nil
}

// appendHead appends a CBOR head in its minimal encoding.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|27), n)
	}
}

func writeBytes(w *bufio.Writer, b []byte) error {
	w.Write(appendHead(nil, cborBytes, uint64(len(b))))
	_, err := w.Write(b)
	return err
}
