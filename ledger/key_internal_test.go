package ledger

import (
	"fmt"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// opKeyOf builds plain keys directly; it must give exactly the key the
// general path (ds.KeyWithNamespaces, which cleans the path) gives, for
// every scope and device, odd ones included.
func TestOpKeyMatchesGeneralPath(t *testing.T) {
	var h Hash
	for i := range h {
		h[i] = byte(i * 7)
	}
	names := []string{"s1", "*", "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
		"d0011223344556677", "a/b", "..", ".", "a//b", "/x", "x/", "", "é", "a b"}
	for _, scope := range names {
		for _, device := range names {
			for _, seq := range []uint64{1, 255, 1 << 40, ^uint64(0)} {
				want := ds.KeyWithNamespaces([]string{"o", scope, device, fmt.Sprintf("%016x", seq), h.Short()})
				if got := opKeyOf(scope, device, seq, h); got != want {
					t.Errorf("opKeyOf(%q, %q, %d) = %q, want %q", scope, device, seq, got, want)
				}
			}
		}
	}
}
