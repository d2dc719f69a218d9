package p2p

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/mesh"
)

// PeerStatus is what the status page shows of one peer.
type PeerStatus struct {
	ID          string      `json:"id"`
	Name        string      `json:"name,omitempty"` // from its certificate, once verified
	Store       string      `json:"store,omitempty"`
	Role        ledger.Role `json:"role,omitempty"`
	Found       string      `json:"found"` // mdns, static, anchor, inbound
	Connected   bool        `json:"connected"`
	Established bool        `json:"established"`        // a verified sync session is running
	Gone        bool        `json:"gone,omitempty"`     // stopped answering mDNS
	Banned      string      `json:"banned,omitempty"`   // mesh.ProtocolError code, while banned
	LastSync    time.Time   `json:"last_sync,omitzero"` // last frame received after the hello
	// Stats add up every session with the peer since the mesh started.
	Stats mesh.SessionStats `json:"stats"`
}

// Status is the mesh's summary for the status page.
type Status struct {
	ID string `json:"id"`
	// Paths in use: how the peers with an established session were found
	// (mdns, static, anchor, inbound), sorted.
	Paths       []string `json:"paths"`
	Connected   int      `json:"connected"`
	Established int      `json:"established"`
	// QueuedForAnchor counts ops of this device's store held here and not
	// yet acknowledged by any anchor, directly or as relayed by peers.
	QueuedForAnchor uint64 `json:"queued_for_anchor"`
	// LastAnchorContact is when an anchor was last heard from, directly or
	// through a peer that reaches one (zero: never).
	LastAnchorContact time.Time         `json:"last_anchor_contact,omitzero"`
	ProtocolErrors    map[string]uint64 `json:"protocol_errors,omitempty"` // sessions closed, by code
	Banned            int               `json:"banned"`
	Refused           uint64            `json:"refused"`              // connections the gater refused (banned, revoked)
	RefusedBy         map[string]uint64 `json:"refused_by,omitempty"` // the same, by reason: "revoked" or the ban's code
	// Clones lists devices seen running in two processes at once within
	// CloneMemory (clones.go); CloneDetections counts the sightings.
	Clones          []Clone `json:"clones,omitempty"`
	CloneDetections uint64  `json:"clone_detections"`
}

// Peers lists configured, discovered and synced peers, sorted by id.
// Hosts that connected and never presented a certificate are left out.
func (m *Mesh) Peers() []PeerStatus {
	type row struct {
		p  peer.ID
		pi peerInfo
		d  *driver
	}
	m.mu.Lock()
	rows := make([]row, 0, len(m.peers))
	for p, pi := range m.peers {
		rows = append(rows, row{p, *pi, m.sessions[p]})
	}
	m.mu.Unlock()

	out := make([]PeerStatus, 0, len(rows))
	for _, r := range rows {
		ps := PeerStatus{
			ID:        r.p.String(),
			Found:     r.pi.found(),
			Connected: m.h.Network().Connectedness(r.p) == network.Connected,
			Gone:      r.pi.gone,
			Banned:    m.gater.Banned(r.p),
		}
		addStats(&ps.Stats, r.pi.total)
		cert := r.pi.cert
		if r.d != nil {
			snap := r.d.snapshot()
			ps.Established = snap.established
			addStats(&ps.Stats, snap.stats)
			if snap.cert != nil {
				cert = snap.cert
			}
		}
		if cert == nil && !r.pi.static && !r.pi.anchor && !r.pi.mdns {
			continue
		}
		if cert != nil {
			ps.Name, ps.Store, ps.Role = cert.Name, cert.Store, cert.Role
		}
		if ps.Stats.LastSync != 0 {
			ps.LastSync = time.Unix(0, ps.Stats.LastSync)
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Status summarises the mesh: paths in use, what HQ still lacks, errors.
func (m *Mesh) Status() Status {
	m.mu.Lock()
	ds := slices.Collect(maps.Values(m.sessions))
	found := map[peer.ID]string{}
	acked := crdt.VersionVector{}
	for p, pi := range m.peers {
		found[p] = pi.found()
		if pi.anchorAcked != nil {
			acked.Merge(pi.anchorAcked)
		}
	}
	st := Status{ID: m.ID(), ProtocolErrors: maps.Clone(m.protoErr)}
	m.mu.Unlock()

	paths := map[string]bool{}
	for _, d := range ds {
		if !d.established.Load() {
			continue
		}
		st.Established++
		paths[found[d.peer]] = true
		if d.anchor.Load() {
			if a := d.snapshot().acked; a != nil {
				acked.Merge(a)
			}
		}
	}
	st.Paths = slices.Sorted(maps.Keys(paths))
	st.Connected = len(m.h.Network().Peers())
	st.Banned = m.gater.Bans()
	st.Refused = m.gater.refused.Load()
	st.RefusedBy = m.gater.RefusedBy()
	st.Clones = m.clones.list()
	m.clones.mu.Lock()
	st.CloneDetections = m.clones.count
	m.clones.mu.Unlock()
	if ns := max(m.lastAnchor.Load(), m.anchors.Seen()); ns != 0 {
		st.LastAnchorContact = time.Unix(0, ns)
	}
	if self := m.l.Self(); self.Store != ledger.FleetScope {
		acked.Merge(m.anchors.Acked(self.Store)) // relayed by peers
		st.QueuedForAnchor = m.l.VersionVector(self.Store).Beyond(acked)
	}
	return st
}

// WaitFor returns once cond is true, re-checking it whenever the mesh's
// state changes (connections, sessions, durable ops) and at least every
// 50 ms; or ctx's error at its deadline.
func (m *Mesh) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		ch := m.changedCh()
		if cond() {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// WaitConverged returns once every ledger shows the same Digest of scope,
// re-checking after each durable commit on any of them; or ctx's error
// (naming the distinct digests) at its deadline.
func WaitConverged(ctx context.Context, scope string, ledgers ...*ledger.Ledger) error {
	wake := make(chan struct{}, 1)
	for _, l := range ledgers {
		cancel := l.Subscribe(func([]*ledger.Op) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		defer cancel()
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		digests := map[string]int{}
		for _, l := range ledgers {
			digests[l.Digest(scope)]++
		}
		if len(digests) == 1 {
			return nil
		}
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			var parts []string
			for d, n := range digests {
				parts = append(parts, fmt.Sprintf("%s×%d", d[:12], n))
			}
			slices.Sort(parts)
			return fmt.Errorf("mesh: scope %s not converged (%s): %w", scope, strings.Join(parts, ", "), ctx.Err())
		}
	}
}
