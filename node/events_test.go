package node

import "testing"

// TestHubNeverBlocks: a client that does not read loses events instead of
// stalling the publisher (the ledger's committing goroutine), and is told
// to resync.
func TestHubNeverBlocks(t *testing.T) {
	h := newHub()
	slow := h.subscribe()
	for i := 0; i < 10*eventBuffer; i++ {
		h.publish(event{name: "sales"})
	}
	if len(slow.ch) != eventBuffer || !slow.overflow.Load() {
		t.Fatalf("buffered %d, overflow %v; want %d and true", len(slow.ch), slow.overflow.Load(), eventBuffer)
	}
	h.unsubscribe(slow)
	h.close()
	if h.subscribe() != nil {
		t.Error("a closed hub took a subscriber")
	}
	h.publish(event{name: "sales"}) // no subscribers, no panic
}
