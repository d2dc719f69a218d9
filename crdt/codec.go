package crdt

import (
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"
)

// Decoder limits. Every decoder in storemesh reads bytes that may come from
// a peer, so nesting and collection sizes are bounded before allocation.
const (
	// MaxNesting bounds CBOR nesting; our deepest structure (a sync message
	// carrying ops carrying sale lines) is under 8 levels.
	MaxNesting = 16
	// MaxElements bounds any single array or map; a version vector for a
	// 1,000-device store and a 64 KiB batch of ops both fit with room.
	MaxElements = 1 << 17
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(fmt.Sprintf("crdt: cbor encoder options: %v", err)) // programming error, caught by any test
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   MaxNesting,
		MaxArrayElements:  MaxElements,
		MaxMapPairs:       MaxElements,
		IntDec:            cbor.IntDecConvertNone,
		UTF8:              cbor.UTF8RejectInvalid,
		DefaultMapType:    nil,
		ExtraReturnErrors: cbor.ExtraDecErrorNone,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("crdt: cbor decoder options: %v", err))
	}
}

// ErrDecode wraps every decoding failure of bytes that came from outside.
var ErrDecode = errors.New("crdt: malformed encoding")

// Marshal encodes v in CBOR core deterministic encoding.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// NewEncoder returns an encoder that writes CBOR items to w one at a time,
// each exactly as Marshal would give it: an RFC 8742 CBOR sequence.
func NewEncoder(w io.Writer) *cbor.Encoder { return encMode.NewEncoder(w) }

// NewDecoder returns a decoder that reads the items of a CBOR sequence from
// r one at a time with storemesh's limits. It reads ahead of the item it
// returns (Buffered gives those bytes back) and as far as an item's length
// claims, so a caller reading from a peer bounds r. Its errors are the
// decoder's and r's own, unwrapped.
func NewDecoder(r io.Reader) *cbor.Decoder { return decMode.NewDecoder(r) }

// Unmarshal decodes one CBOR item from b into v with storemesh's limits.
// Trailing bytes are an error. Failures wrap ErrDecode.
func Unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrDecode, err)
	}
	return nil
}

// UnmarshalCanonical decodes b into v and then checks that re-encoding v
// gives exactly b, so every value has one accepted byte form. Use it where
// bytes are hashed or signed.
func UnmarshalCanonical(b []byte, v any) error {
	if err := Unmarshal(b, v); err != nil {
		return err
	}
	again, err := Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: re-encode: %v", ErrDecode, err)
	}
	if string(again) != string(b) {
		return fmt.Errorf("%w: not in canonical form", ErrDecode)
	}
	return nil
}
