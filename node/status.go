package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"storemesh/ledger"
	"storemesh/sink"
)

// peerView is one peer in GET /v1/status.
type peerView struct {
	ID          string      `json:"id"`
	Name        string      `json:"name,omitempty"`
	Store       string      `json:"store,omitempty"`
	Role        ledger.Role `json:"role,omitempty"`
	Found       string      `json:"found"` // how it was found: mdns, static, anchor, inbound
	Connected   bool        `json:"connected"`
	Established bool        `json:"established"`
	Gone        bool        `json:"gone,omitempty"`
	Banned      string      `json:"banned,omitempty"`
	LastSync    *time.Time  `json:"last_sync"`
	OpsIn       uint64      `json:"ops_in"`
	OpsOut      uint64      `json:"ops_out"`
	BytesIn     uint64      `json:"bytes_in"`
	BytesOut    uint64      `json:"bytes_out"`
}

// statusView is GET /v1/status (docs/design.md §8a).
type statusView struct {
	Device            string                 `json:"device"`
	Name              string                 `json:"name"`
	Store             string                 `json:"store"`
	Role              string                 `json:"role"`
	Fleet             string                 `json:"fleet"`
	Addrs             []string               `json:"addrs"`
	Peers             []peerView             `json:"peers"`
	Paths             []string               `json:"paths"` // how the synced peers were found
	QueuedForAnchor   uint64                 `json:"queued_for_anchor"`
	LastAnchorContact *time.Time             `json:"last_anchor_contact"` // null: never
	Offline           bool                   `json:"offline"`
	Conflicts         int                    `json:"conflicts"` // open ones
	Forks             int                    `json:"forks"`
	HeldOps           int                    `json:"held_ops"`
	Sinks             []sink.Status          `json:"sinks,omitempty"` // an anchor's PostgreSQL and MQTT feeds
	Revoked           []ledger.RevokedDevice `json:"revoked"`         // devices.go: revoked devices and what is kept of each
	// OwnChain: this device's own chain against what it is known to reach
	// (its durable record, peers); missing > 0 means ops were lost from
	// storage and local writes wait until sync refills them (ownchain.go).
	OwnChain *ownChainView `json:"own_chain"`
	// Copied: a chain of this very device is forked, so another process
	// with this device's folder (a clone, or an older copy put back)
	// wrote ops as it. This device has moved to a new chain and sells;
	// the other machine must be stopped.
	Copied bool `json:"copied"`
	// Clones: devices this node saw running in two processes at once (a
	// copied device folder) in the last 10 minutes; only one of the two
	// can sync (mesh/p2p/clones.go).
	Clones []cloneView `json:"clones"`
	// DiskFull: the free-space guard refused the last write (it resumes
	// by itself once space is freed).
	DiskFull bool      `json:"disk_full"`
	Now      time.Time `json:"now"`
}

func (n *Node) status() statusView {
	m := n.mesh()
	ms := m.Status()
	last := n.anchor.observe(ms.LastAnchorContact)
	off, _ := n.offline(n.cfg.Now())
	v := statusView{
		Device: n.self.Device, Name: n.self.Name, Store: n.self.Store, Role: string(n.self.Role),
		Fleet: n.l.FleetID(), Addrs: m.Addrs(), Peers: []peerView{}, Paths: ms.Paths,
		QueuedForAnchor: ms.QueuedForAnchor, Offline: off, Conflicts: n.openConflicts(),
		Forks: len(n.l.Forks()), HeldOps: n.l.Stats().Held, Revoked: n.l.Revocations(), Now: n.cfg.Now().UTC(),
		Sinks:    n.sinkStatus(),
		OwnChain: n.ownChain(), DiskFull: n.diskFull(), Copied: n.copied(), Clones: n.clones(ms.Clones),
	}
	if v.Addrs == nil {
		v.Addrs = []string{}
	}
	if v.Paths == nil {
		v.Paths = []string{}
	}
	if !last.IsZero() && !n.isAnchor() {
		t := last.UTC()
		v.LastAnchorContact = &t
	}
	for _, p := range m.Peers() {
		pv := peerView{ID: p.ID, Name: p.Name, Store: p.Store, Role: p.Role, Found: p.Found, Connected: p.Connected,
			Established: p.Established, Gone: p.Gone, Banned: p.Banned,
			OpsIn: p.Stats.OpsIn, OpsOut: p.Stats.OpsOut, BytesIn: p.Stats.BytesIn, BytesOut: p.Stats.BytesOut}
		if !p.LastSync.IsZero() {
			t := p.LastSync.UTC()
			pv.LastSync = &t
		}
		v.Peers = append(v.Peers, pv)
	}
	return v
}

// statusFingerprint changes when something the sync panel shows changes.
func (n *Node) statusFingerprint() string {
	m := n.mesh()
	ms := m.Status()
	last := n.anchor.observe(ms.LastAnchorContact)
	off, _ := n.offline(n.cfg.Now())
	oc := n.ownChain()
	fp := fmt.Sprintf("%d/%d/%v/%d/%v/%d/%s/%d/%d/%v/%d", ms.Connected, ms.Established, ms.Paths, ms.QueuedForAnchor, off,
		n.openConflicts(), last.Truncate(10*time.Second), oc.Held, oc.Missing, n.diskFull(), len(n.l.Revocations()))
	for _, p := range m.Peers() {
		fp += fmt.Sprintf("|%s%v%v%v", p.ID, p.Connected, p.Established, p.Gone)
	}
	return fp
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, n.status())
	return nil
}

// conflictScope is the store whose conflicts this device shows: its own,
// every store for an anchor.
func (n *Node) conflictScope() string {
	if n.isAnchor() {
		return ""
	}
	return n.self.Store
}

func (n *Node) openConflicts() int {
	open, _ := n.l.OpenConflicts(n.conflictScope())
	return open
}

func (n *Node) handleListConflicts(w http.ResponseWriter, r *http.Request) error {
	cs := n.l.Conflicts(n.conflictScope())
	if cs == nil {
		cs = []ledger.Conflict{}
	}
	forks := []ledger.Fork{}
	for _, f := range n.l.Forks() {
		if n.conflictScope() == "" || f.Store == n.self.Store || f.Store == ledger.FleetScope {
			forks = append(forks, f)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"conflicts": cs, "forks": forks})
	return nil
}

type resolveReq struct {
	Action string `json:"action"`
	Note   string `json:"note"`
}

// handleResolve closes an oversell with a conflict.resolved op in the
// conflict's store; every replica then shows it resolved.
func (n *Node) handleResolve(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var conflict *ledger.Conflict
	for _, c := range n.l.Conflicts(n.conflictScope()) {
		if c.ID == id {
			conflict = &c
			break
		}
	}
	if conflict == nil {
		return apiErr(CodeNotFound, "no conflict %q on this replica", id)
	}
	var req resolveReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	switch req.Action {
	case "":
		return apiErr(CodeMissingField, "action is required: backorder, substitute, refund, recount or other")
	case "backorder", "substitute", "refund", "recount", "other":
	default:
		return apiErr(CodeBadAction, "action %q: one of backorder, substitute, refund, recount, other", req.Action)
	}
	if len(req.Note) > 1000 {
		return apiErr(CodeFieldTooLong, "note is %d bytes; the limit is 1000", len(req.Note))
	}
	body := &ledger.ConflictResolved{Conflict: id, Action: req.Action, Note: req.Note}
	if _, err := n.l.Append(context.WithoutCancel(r.Context()), conflict.Store, ledger.KindConflictResolved, body); err != nil {
		return err
	}
	for _, c := range n.l.Conflicts(conflict.Store) {
		if c.ID == id {
			conflict = &c
			break
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"conflict": conflict})
	return nil
}

func (n *Node) handleDigest(w http.ResponseWriter, r *http.Request) error {
	store := r.URL.Query().Get("store")
	if store == "" {
		store = n.self.Store
	}
	if (store != ledger.FleetScope && !ledger.ValidStoreID(store)) || !n.l.HoldsScope(store) {
		return apiErr(CodeNotFound, "this replica does not hold store %q", store)
	}
	writeJSON(w, http.StatusOK, map[string]string{"store": store, "digest": n.l.Digest(store)})
	return nil
}

// handleEvents streams server-sent events: "sales", "stock", "catalog",
// "policy", "conflicts", "status" when those change, "resync" when this
// client fell behind and events were dropped (refetch everything).
func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) error {
	f, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("events: %w", errNotFlusher)
	}
	c := n.hub.subscribe()
	if c == nil {
		return apiErr(CodeStorageFailed, "the node is shutting down")
	}
	defer n.hub.unsubscribe(c)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 2000\nevent: hello\ndata: %s\n\n", mustJSON(map[string]string{"device": n.self.Device}))
	f.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case e, ok := <-c.ch:
			if !ok {
				return nil
			}
			if c.overflow.Swap(false) {
				fmt.Fprint(w, "event: resync\ndata: {}\n\n")
				n.met.sseDropped.Inc()
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, mustJSON(map[string]any{"at": time.Now().UnixMilli()}))
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		}
		f.Flush()
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
