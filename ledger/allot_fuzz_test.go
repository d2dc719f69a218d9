package ledger

import (
	"testing"

	"storemesh/crdt"
)

// FuzzAllotBodies decodes peer bytes as each allotment body: an error or a
// valid body, never a panic, and a valid body re-encodes canonically.
func FuzzAllotBodies(f *testing.F) {
	for _, b := range []body{
		&AllotSet{SKU: "SCARF", Allotted: true, Seen: map[string]uint64{"d1": 3, "d2~2": 1}},
		&AllotTransfer{SKU: "SCARF", Epoch: "abc", To: "d2", Qty: 2},
		&AllotRequest{SKU: "SCARF", Epoch: "abc", Want: 2, Received: 5},
		&AllotWriteoff{SKU: "SCARF", Epoch: "abc", Device: "d3", Units: 1, Chain: "d3~2", Seq: 9, Reason: "lost"},
	} {
		enc, err := crdt.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{0xa0})
	kinds := []Kind{KindAllotSet, KindAllotTransfer, KindAllotRequest, KindAllotWriteoff}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, k := range kinds {
			b, err := decodeBody(&Op{Kind: k, BodyV: bodyVersion, Body: raw})
			if err != nil {
				if RejectReason(err) != ReasonBody {
					t.Fatalf("%s: error without the body reason: %v", k, err)
				}
				continue
			}
			if _, err := crdt.Marshal(b); err != nil {
				t.Fatalf("%s: valid body does not encode: %v", k, err)
			}
		}
	})
}
