package p2p

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// Clone detection: two processes running one device key (its device
// folder copied to a second machine). libp2p lets both connect to a peer
// under the same peer id, and the sync session goes to one of them, so
// the other's sales never sync. Each process names itself in its
// identify agent string with a random instance id made at start
// ("storemesh/1 inst/<hex>"); a peer that sees two live connections of
// one peer id with different instance ids has met a clone. It is counted,
// logged and listed in Status (Clones) for CloneMemory, so every page of
// a node that met it shows it.

// CloneMemory is how long a clone stays listed after it was last seen.
const CloneMemory = 10 * time.Minute

const agentPrefix = "storemesh/1"

// staleSession: a session that received nothing for this long gives way
// to a stream of another process of the same device.
const staleSession = 15 * time.Second

// Clone is a device seen running in more than one process at once.
type Clone struct {
	Device    string    `json:"device"`
	Instances int       `json:"instances"` // most distinct processes seen at once
	First     time.Time `json:"first_seen"`
	Last      time.Time `json:"last_seen"`
}

type cloneWatch struct {
	self  string // our instance id
	now   func() time.Time
	log   *slog.Logger
	mu    sync.Mutex
	conns map[peer.ID]map[network.Conn]string // live identified conns → instance
	seen  map[peer.ID]*Clone
	warn  map[peer.ID]time.Time
	count uint64 // detections (a second instance appearing)
}

func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func newCloneWatch(now func() time.Time, log *slog.Logger) *cloneWatch {
	return &cloneWatch{self: newInstanceID(), now: now, log: log,
		conns: map[peer.ID]map[network.Conn]string{}, seen: map[peer.ID]*Clone{}, warn: map[peer.ID]time.Time{}}
}

func (w *cloneWatch) agent() string { return agentPrefix + " inst/" + w.self }

// instanceOf returns the instance id of a storemesh agent string ("" for
// none: another program, or a storemesh before instance ids).
func instanceOf(agent string) string {
	rest, ok := strings.CutPrefix(agent, agentPrefix+" inst/")
	if !ok || len(rest) == 0 || len(rest) > 32 {
		return ""
	}
	return rest
}

// identified records the instance behind one identified connection.
func (w *cloneWatch) identified(e event.EvtPeerIdentificationCompleted) {
	inst := instanceOf(e.AgentVersion)
	if inst == "" || e.Conn == nil || e.Conn.IsClosed() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.conns[e.Peer]
	if m == nil {
		m = map[network.Conn]string{}
		w.conns[e.Peer] = m
	}
	m[e.Conn] = inst
	distinct := map[string]bool{}
	for c, i := range m {
		if c.IsClosed() {
			delete(m, c)
			continue
		}
		distinct[i] = true
	}
	if len(distinct) < 2 {
		return
	}
	now := w.now()
	c := w.seen[e.Peer]
	if c == nil || now.Sub(c.Last) > CloneMemory {
		c = &Clone{Device: e.Peer.String(), First: now}
		w.seen[e.Peer] = c
	}
	c.Last, c.Instances = now, max(c.Instances, len(distinct))
	w.count++
	if now.Sub(w.warn[e.Peer]) >= time.Minute {
		w.warn[e.Peer] = now
		w.log.Warn("two processes are running as one device (its device folder was copied): only one of them can sync; stop the other",
			"peer", e.Peer.String(), "instances", len(distinct))
	}
}

// closed forgets a connection.
func (w *cloneWatch) closed(c network.Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m := w.conns[c.RemotePeer()]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(w.conns, c.RemotePeer())
		}
	}
}

// list returns the clones seen within CloneMemory, sorted by device.
func (w *cloneWatch) list() []Clone {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	var out []Clone
	for p, c := range w.seen {
		if now.Sub(c.Last) > CloneMemory {
			delete(w.seen, p)
			continue
		}
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Clone) int { return strings.Compare(a.Device, b.Device) })
	return out
}

// watchIdentify feeds w from the host's identify events until sub closes.
func watchIdentify(sub event.Subscription, w *cloneWatch) {
	for e := range sub.Out() {
		if ev, ok := e.(event.EvtPeerIdentificationCompleted); ok {
			w.identified(ev)
		}
	}
}

// instance returns the instance id identify reported for c ("" unknown).
func (w *cloneWatch) instance(c network.Conn) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conns[c.RemotePeer()][c]
}

// secondInstance reports whether s comes from another process than the
// one the peer's established session runs with (a clone): the session in
// place keeps syncing and s is refused, so the two never take the session
// from each other in turn. A new stream of the same process (a redial, a
// simultaneous dial) still replaces the old session, and so does any
// stream once the session in place has been silent for staleSession.
func (m *Mesh) secondInstance(s network.Stream) bool {
	m.mu.Lock()
	old := m.sessions[s.Conn().RemotePeer()]
	m.mu.Unlock()
	if old == nil || !old.established.Load() {
		return false
	}
	oc := old.stream.Conn()
	if oc == s.Conn() || oc.IsClosed() {
		return false
	}
	if last := old.snapshot().stats.LastSync; m.cfg.Now().Sub(time.Unix(0, last)) > staleSession {
		// The session in place has been silent: its process may be gone
		// without closing its connection (a power cut). The newcomer
		// takes over, as a redial would.
		return false
	}
	if ider, ok := m.h.(interface{ IDService() identify.IDService }); ok {
		for _, c := range []network.Conn{oc, s.Conn()} {
			select {
			case <-ider.IDService().IdentifyWait(c):
			case <-time.After(2 * time.Second):
			case <-m.ctx.Done():
				return false
			}
		}
	}
	a, b := m.clones.instance(oc), m.clones.instance(s.Conn())
	for i := 0; i < 50 && (a == "" || b == ""); i++ { // the identify event may trail IdentifyWait
		time.Sleep(10 * time.Millisecond)
		a, b = m.clones.instance(oc), m.clones.instance(s.Conn())
	}
	return a != "" && b != "" && a != b
}
