package node

import (
	"sync"
	"sync/atomic"
)

// eventBuffer is how many events a slow page may fall behind before it
// gets "resync" instead: a page refetches what an event names, so a burst
// of sales needs one refetch, not one per sale.
const eventBuffer = 64

type event struct{ name string }

// hub fans events out to the pages watching /v1/events. publish never
// blocks (it runs on the ledger's committing goroutine): a client whose
// buffer is full loses the event and is told to resync.
type hub struct {
	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
}

type client struct {
	ch       chan event
	overflow atomic.Bool
}

func newHub() *hub { return &hub{clients: map[*client]struct{}{}} }

func (h *hub) subscribe() *client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	c := &client{ch: make(chan event, eventBuffer)}
	h.clients[c] = struct{}{}
	return c
}

func (h *hub) unsubscribe(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(c.ch)
	}
}

func (h *hub) publish(e event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.ch <- e:
		default:
			c.overflow.Store(true)
		}
	}
}

// close ends every stream and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.clients {
		delete(h.clients, c)
		close(c.ch)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}
