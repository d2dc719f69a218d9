package ledger

import "testing"

// FuzzParseOwnRecord: whatever bytes the durable own-chain record file
// holds, parsing gives a record or an error, never a panic, and a record
// it returns encodes and parses back unchanged. (OwnRecordFile.Load is
// this over the file's bytes; the file round trip is tested by
// TestOwnChainBehindRecord and the crash tests.)
func FuzzParseOwnRecord(f *testing.F) {
	seed := encodeOwnSlot(map[OwnChain]uint64{{Scope: "s1", Chain: "12D3KooWdev"}: 42, {Scope: "*", Chain: "12D3KooWdev~2"}: 7}, 3)
	f.Add(append(pad(seed, 256), make([]byte, 256)...))
	f.Add(append(make([]byte, 256), pad(seed, 256)...))
	f.Add([]byte("SMOR\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		slot := int64(len(b) / 2)
		m, counter, _, err := parseOwnRecord(b[:2*slot], slot)
		if err != nil {
			return
		}
		enc := encodeOwnSlot(m, counter)
		back, c2, _, err := parseOwnRecord(pad(enc, 2*len(enc)), int64(len(enc)))
		if err != nil || c2 != counter || len(back) != len(m) {
			t.Fatalf("%v (counter %d) parsed back as %v (%d): %v", m, counter, back, c2, err)
		}
		for k, v := range m {
			if back[k] != v {
				t.Fatalf("%v parsed back as %v", m, back)
			}
		}
	})
}

func pad(b []byte, n int) []byte { return append(append([]byte(nil), b...), make([]byte, n-len(b))...) }
