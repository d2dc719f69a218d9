package node

import (
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"storemesh/ledger"
)

// anchorFile keeps the last anchor contact across restarts, so a terminal
// restarted in a dead zone still knows how long it has been offline.
const anchorFile = "last_anchor_contact"

// anchorClock is the last time a frame came from an anchor: the mesh's
// own reading while it runs, the persisted one from earlier runs.
type anchorClock struct {
	mu        sync.Mutex
	path      string
	last      time.Time // the latest known contact
	persisted time.Time
	refreshed time.Time // when an offline reading last asked the mesh
}

// stale reports whether an offline reading should ask the mesh again: at
// most every 100 ms, so a busy offline terminal does not pay for a mesh
// status per sale.
func (a *anchorClock) stale(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.refreshed) < 100*time.Millisecond {
		return false
	}
	a.refreshed = now
	return true
}

func (a *anchorClock) load(path string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.path = path
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b))); err == nil {
		a.last, a.persisted = t, t
	}
}

func (a *anchorClock) observe(t time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.After(a.last) {
		a.last = t
	}
	return a.last
}

// lastAnchorContact is the last frame from an anchor, this run or an
// earlier one; zero when never.
func (n *Node) lastAnchorContact() time.Time {
	return n.anchor.observe(n.mesh().Status().LastAnchorContact)
}

// persistAnchorContact writes the last contact when it moved by more than
// a few seconds (a summary arrives every 5 s; no need to write each one).
func (n *Node) persistAnchorContact() {
	last := n.lastAnchorContact()
	a := &n.anchor
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path == "" || last.IsZero() || last.Sub(a.persisted) < 10*time.Second {
		return
	}
	if err := writeFile(a.path, []byte(last.UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		n.log.Warn("persist last anchor contact", "err", err)
		return
	}
	a.persisted = last
}

// offline reports whether the node is offline (no anchor contact within
// OfflineAfter) and for how long it has gone without one. An anchor is
// never offline. A device that never reached an anchor counts from its
// start.
func (n *Node) offline(now time.Time) (bool, time.Duration) {
	if n.isAnchor() {
		return false, 0
	}
	// The status loop refreshes the clock every StatusEvery; the mesh is
	// asked directly only when that reading says offline (reading its
	// status on every online sale would cost more than it tells).
	last := n.anchor.observe(time.Time{})
	if (last.IsZero() || now.Sub(last) > n.cfg.OfflineAfter) && n.anchor.stale(now) {
		last = n.lastAnchorContact()
	}
	if last.IsZero() {
		return true, now.Sub(n.started)
	}
	age := now.Sub(last)
	return age > n.cfg.OfflineAfter, age
}

// checkOfflinePolicy applies the store's offline policy (docs/design.md §5) to a
// sale of total paid by method. It returns whether the sale is offline.
// Policy semantics: an empty method list allows every method; a zero
// limit is no limit; "card" payments are every method but cash.
func (n *Node) checkOfflinePolicy(store, method string, total int64) (bool, error) {
	off, age := n.offline(n.cfg.Now())
	if !off {
		return false, nil
	}
	p, ok := n.l.Policy(store)
	if !ok {
		return true, nil
	}
	if len(p.OfflineMethods) > 0 && !slices.Contains(p.OfflineMethods, method) {
		return true, apiErr(CodeOfflineMethod, "no anchor reached for %s: the store's offline policy allows only %s while offline",
			age.Round(time.Second), strings.Join(p.OfflineMethods, ", "))
	}
	if p.MaxOfflineSale > 0 && total > p.MaxOfflineSale {
		return true, apiErr(CodeOfflineTooLarge, "offline sales are limited to %d (minor units); this one is %d", p.MaxOfflineSale, total)
	}
	if p.MaxOfflineAge > 0 && method != "cash" && age > time.Duration(p.MaxOfflineAge)*time.Second {
		return true, apiErr(CodeOfflineTooLong, "no anchor reached for %s (limit %ds): only cash until the terminal syncs with HQ",
			age.Round(time.Second), p.MaxOfflineAge)
	}
	return true, nil
}

// policyView is the JSON of GET/PUT /v1/policy.
type policyView struct {
	Store   string        `json:"store"`
	Set     bool          `json:"set"`
	Policy  ledger.Policy `json:"policy"`
	Offline bool          `json:"offline"`
}
