package sim

import (
	"bytes"
	"crypto/ed25519"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"storemesh/ledger"
	"storemesh/mesh"
)

// Scenario is a simulation script (docs/scenarios.md): the fleet, the
// network, the workload and the faults. The seed given to Run decides
// everything the scenario leaves to chance.
type Scenario struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Tick        Duration `json:"tick,omitempty"`   // session tick interval; default 1s (mesh's TickInterval)
	Check       Duration `json:"check,omitempty"`  // convergence sampling after the quiet point; default 1s
	Settle      Duration `json:"settle,omitempty"` // how long after the quiet point replicas may take to converge; default 10m
	// Push is the driver's push policy: "relay" (default) pushes local ops
	// and hands each session's TakeRelay to the node's other sessions, as
	// mesh/p2p does; "durable" pushes every op that becomes durable, local
	// or received, to every session: the flooding alternative, for
	// comparison.
	Push     string         `json:"push,omitempty"`
	Currency string         `json:"currency,omitempty"` // default EUR
	Catalog  []CatalogEntry `json:"catalog"`
	Anchors  int            `json:"anchors,omitempty"`
	Stores   []StoreSpec    `json:"stores"`
	LAN      LinkSpec       `json:"lan"`                // links between the devices of one store
	Uplink   LinkSpec       `json:"uplink"`             // links from a store's uplink devices to every anchor
	Backbone LinkSpec       `json:"backbone,omitempty"` // links between anchors
	Links    []ExtraLink    `json:"links,omitempty"`    // more links between named nodes
	Session  SessionTuning  `json:"session,omitempty"`
	Workload Workload       `json:"workload"`
	Events   []Event        `json:"events,omitempty"`

	nodes []nodeSpec // expanded by Validate
}

// CatalogEntry is one SKU: its list price and the units each store
// receives at the start.
type CatalogEntry struct {
	SKU    string `json:"sku"`
	Name   string `json:"name,omitempty"`
	Price  int64  `json:"price"`            // minor units
	Stock  int64  `json:"stock,omitempty"`  // units received per store at time 0
	Weight *int   `json:"weight,omitempty"` // how often random sales pick it; default 1, 0 = only scripted sales
	// Allotted marks the SKU allotted in every store (issue 14, sim/allot.go).
	Allotted bool `json:"allotted,omitempty"`
}

// StoreSpec is one store (ID) or Count stores named Prefix001, Prefix002...
type StoreSpec struct {
	ID        string `json:"id,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Count     int    `json:"count,omitempty"`
	Terminals int    `json:"terminals"`
	Managers  int    `json:"managers,omitempty"`
	Uplinks   int    `json:"uplinks,omitempty"`  // devices (managers first) linked to every anchor
	Topology  string `json:"topology,omitempty"` // LAN shape: mesh (default), star (first device is the hub), none
}

// LinkSpec describes a link's quality, the same in both directions.
type LinkSpec struct {
	Latency   Duration `json:"latency,omitempty"`
	Jitter    Duration `json:"jitter,omitempty"` // uniform extra delay in [0, jitter)
	Loss      float64  `json:"loss,omitempty"`   // probability a frame is lost
	Dup       float64  `json:"dup,omitempty"`    // probability a frame arrives twice
	Bandwidth Rate     `json:"bandwidth,omitempty"`
	Reorder   bool     `json:"reorder,omitempty"` // frames may overtake each other (default FIFO)
}

// ExtraLink is a link between two named nodes.
type ExtraLink struct {
	A string `json:"a"`
	B string `json:"b"`
	LinkSpec
}

// SessionTuning overrides mesh.SessionConfig defaults (0 keeps them).
type SessionTuning struct {
	BatchBytes     int    `json:"batch_bytes,omitempty"`
	MaxPull        uint64 `json:"max_pull,omitempty"`
	RetryTicks     int    `json:"retry_ticks,omitempty"`
	SummaryTicks   int    `json:"summary_ticks,omitempty"`
	KeepaliveTicks int    `json:"keepalive_ticks,omitempty"`
}

// Workload is the random trade of every selling device (terminals and
// managers) between Start and End.
type Workload struct {
	Start        Duration `json:"start,omitempty"`
	End          Duration `json:"end"`
	OpsPerMinute float64  `json:"ops_per_minute"`    // per selling device
	MaxOps       int      `json:"max_ops,omitempty"` // stop random ops after this many (setup and scripted ops not counted)
	Mix          Mix      `json:"mix,omitempty"`
	// PriceChangesPerHour is each manager's rate of price.set ops.
	PriceChangesPerHour float64 `json:"price_changes_per_hour,omitempty"`
	// TransfersPerHour is the fleet-wide rate of stock transfers between
	// two random stores, written by an anchor (or both stores' managers).
	TransfersPerHour float64 `json:"transfers_per_hour,omitempty"`
}

// Mix weighs the actions of a selling device. All zero: 90/3/4/2/1.
type Mix struct {
	Sale     int `json:"sale,omitempty"`
	Refund   int `json:"refund,omitempty"`
	Received int `json:"received,omitempty"`
	Counted  int `json:"counted,omitempty"`
	Resolve  int `json:"resolve,omitempty"`
}

// Event is one scheduled fault or scripted op. Exactly one action is set.
// Node arguments are glob patterns over node names (path.Match).
type Event struct {
	At  Duration `json:"at"`
	For Duration `json:"for,omitempty"` // cut, partition, crash: how long until it heals

	Cut       []string        `json:"cut,omitempty"`       // [A, B]: every link between a node matching A and one matching B
	Partition [][]string      `json:"partition,omitempty"` // groups: every link between nodes of different groups
	Crash     string          `json:"crash,omitempty"`     // nodes crash, restart after For
	Backup    *BackupEvent    `json:"backup,omitempty"`
	Restore   *RestoreEvent   `json:"restore,omitempty"`
	Clock     *ClockEvent     `json:"clock,omitempty"`
	Flap      *FlapEvent      `json:"flap,omitempty"`
	Sell      *ScriptedOp     `json:"sell,omitempty"`
	Receive   *ScriptedOp     `json:"receive,omitempty"`
	Resolve   *ResolveEvent   `json:"resolve,omitempty"`
	Transfer  *TransferScript `json:"transfer,omitempty"`
	Revoke    *RevokeEvent    `json:"revoke,omitempty"` // revoke.go
}

// BackupEvent copies a node's datastore under a name.
type BackupEvent struct {
	Node string `json:"node"`
	Name string `json:"name"`
}

// RestoreEvent replaces a node's datastore with a backup and restarts it,
// cut off from every peer for Offline.
type RestoreEvent struct {
	Node    string   `json:"node"`
	Backup  string   `json:"backup"`
	Offline Duration `json:"offline,omitempty"`
	// SellBeforeSync restores the device folder too: its own-chain record
	// is as old as the backup, so nothing tells the device it is behind
	// until a peer's summary does. It sells at once and forks its chain
	// (every replica flags it), then writes a new epoch. Without it the
	// device knows from its record, waits for peers to refill its chain
	// (ledger OwnWait) and writes a new epoch if they do not.
	SellBeforeSync bool `json:"sell_before_sync,omitempty"`
}

// ClockEvent jumps nodes' clocks by Offset and sets their drift.
type ClockEvent struct {
	Node     string   `json:"node"`
	Offset   Duration `json:"offset,omitempty"`
	DriftPPM *int64   `json:"drift_ppm,omitempty"` // absent: keep the drift
}

// FlapEvent cuts the links between A and B again and again until Until:
// up for an exponential time of mean Every, then down for a uniform time
// in [Down/2, 3·Down/2), clipped so the last cut heals at Until.
type FlapEvent struct {
	Between []string `json:"between"`
	Every   Duration `json:"every"`
	Down    Duration `json:"down"`
	Until   Duration `json:"until"`
}

// ScriptedOp is a sale or receipt of Qty units of SKU on Node.
type ScriptedOp struct {
	Node string `json:"node"`
	SKU  string `json:"sku"`
	Qty  int64  `json:"qty"`
}

// ResolveEvent makes Node close every open conflict it sees.
type ResolveEvent struct {
	Node   string `json:"node"`
	Action string `json:"action,omitempty"` // default backorder
}

// TransferScript moves Qty units of SKU from store From to store To.
type TransferScript struct {
	From string `json:"from"`
	To   string `json:"to"`
	SKU  string `json:"sku"`
	Qty  int64  `json:"qty"`
}

// Duration is a time.Duration written as a Go duration string ("90s").
type Duration time.Duration

// UnmarshalJSON reads "1m30s", "0" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration %s: want a string like \"90s\"", b)
		}
		*d = Duration(n * float64(time.Second))
		return nil
	}
	if s == "" || s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Rate is a bandwidth in bits per second, written "2Mbps", "512kbps".
type Rate int64

// UnmarshalJSON reads a rate with a bps, kbps, Mbps or Gbps suffix.
func (r *Rate) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("bandwidth %s: want a string like \"2Mbps\"", b)
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Gbps", 1e9}, {"Mbps", 1e6}, {"kbps", 1e3}, {"bps", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0 {
		return fmt.Errorf("bandwidth %s: want a string like \"2Mbps\"", b)
	}
	*r = Rate(v * float64(mult))
	return nil
}

// MarshalJSON writes the rate in bps.
func (r Rate) MarshalJSON() ([]byte, error) {
	return json.Marshal(strconv.FormatInt(int64(r), 10) + "bps")
}

//go:embed scenarios/*.json
var library embed.FS

// Library lists the names of the scenarios shipped in sim/scenarios.
func Library() []string {
	ents, _ := fs.ReadDir(library, "scenarios")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".json"))
	}
	return out
}

// LoadScenario reads a scenario file, or a library scenario by name
// ("market-day") when no such file exists.
func LoadScenario(file string) (*Scenario, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) && !strings.ContainsAny(file, "/\\") {
		b, err = library.ReadFile("scenarios/" + strings.TrimSuffix(file, ".json") + ".json")
	}
	if err != nil {
		return nil, fmt.Errorf("sim: scenario %s: %w", file, err)
	}
	sc, err := ParseScenario(b)
	if err != nil {
		return nil, fmt.Errorf("sim: scenario %s: %w", file, err)
	}
	return sc, nil
}

// ParseScenario decodes and validates a scenario. Unknown fields are
// errors, so a typo never silently means "default".
func ParseScenario(b []byte) (*Scenario, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var sc Scenario
	if err := dec.Decode(&sc); err != nil {
		return nil, err
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return &sc, nil
}

// nodeSpec is one simulated device after expansion.
type nodeSpec struct {
	name   string
	store  string // ledger.FleetScope for anchors
	role   ledger.Role
	uplink bool
	hub    bool   // first device of a star LAN
	topo   string // its store's LAN topology
}

// NodeCount is how many devices the scenario describes (before Validate).
func (sc *Scenario) NodeCount() int {
	n := sc.Anchors
	for _, s := range sc.Stores {
		n += max(s.Count, 1) * (s.Managers + s.Terminals)
	}
	return n
}

// Validate fills in defaults and returns every problem at once.
func (sc *Scenario) Validate() error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if sc.Tick == 0 {
		sc.Tick = Duration(time.Second)
	}
	if sc.Check == 0 {
		sc.Check = Duration(time.Second)
	}
	if sc.Settle == 0 {
		sc.Settle = Duration(10 * time.Minute)
	}
	if sc.Push == "" {
		sc.Push = "relay"
	}
	if sc.Currency == "" {
		sc.Currency = "EUR"
	}
	if sc.Name == "" {
		bad("name missing")
	}
	if sc.Tick < Duration(time.Millisecond) || sc.Check < Duration(time.Millisecond) {
		bad("tick and check must be at least 1ms")
	}
	if sc.Push != "relay" && sc.Push != "durable" {
		bad("push %q: want relay or durable", sc.Push)
	}
	if len(sc.Catalog) == 0 {
		bad("catalog is empty")
	}
	seenSKU := map[string]bool{}
	for _, c := range sc.Catalog {
		if !ledger.ValidSKU(c.SKU) || seenSKU[c.SKU] {
			bad("catalog: bad or repeated sku %q", c.SKU)
		}
		seenSKU[c.SKU] = true
		if c.Price < 0 || c.Stock < 0 || (c.Weight != nil && *c.Weight < 0) {
			bad("catalog %s: negative price, stock or weight", c.SKU)
		}
	}
	sc.nodes = nil
	stores := map[string]bool{}
	for i, s := range sc.Stores {
		ids := []string{s.ID}
		if s.Count > 0 {
			if s.ID != "" || s.Prefix == "" {
				bad("stores[%d]: count needs a prefix and no id", i)
				continue
			}
			ids = nil
			w := len(strconv.Itoa(s.Count))
			for k := 1; k <= s.Count; k++ {
				ids = append(ids, fmt.Sprintf("%s%0*d", s.Prefix, w, k))
			}
		}
		if s.Terminals+s.Managers < 1 || s.Uplinks < 0 || s.Uplinks > s.Terminals+s.Managers {
			bad("stores[%d]: needs a device, and uplinks ≤ devices", i)
			continue
		}
		if s.Topology == "" {
			s.Topology = "mesh"
		}
		if s.Topology != "mesh" && s.Topology != "star" && s.Topology != "none" {
			bad("stores[%d]: topology %q: want mesh, star or none", i, s.Topology)
		}
		for _, id := range ids {
			if !ledger.ValidStoreID(id) || stores[id] || strings.ContainsAny(id, "*?[") {
				bad("store id %q bad or repeated", id)
				continue
			}
			stores[id] = true
			k := 0
			add := func(role ledger.Role, tag string, n int) {
				for j := 1; j <= n; j++ {
					sc.nodes = append(sc.nodes, nodeSpec{name: fmt.Sprintf("%s.%s%d", id, tag, j), store: id, role: role,
						uplink: k < s.Uplinks, hub: k == 0 && s.Topology == "star", topo: s.Topology})
					k++
				}
			}
			add(ledger.RoleManager, "m", s.Managers)
			add(ledger.RoleTerminal, "t", s.Terminals)
		}
	}
	for j := 1; j <= sc.Anchors; j++ {
		sc.nodes = append(sc.nodes, nodeSpec{name: fmt.Sprintf("anchor%d", j), store: ledger.FleetScope, role: ledger.RoleAnchor})
	}
	if err := (mesh.SessionConfig{RemoteID: "any", RemotePub: make(ed25519.PublicKey, ed25519.PublicKeySize), Now: func() int64 { return 0 },
		BatchBytes: sc.Session.BatchBytes, MaxPull: sc.Session.MaxPull, RetryTicks: sc.Session.RetryTicks,
		SummaryTicks: sc.Session.SummaryTicks, KeepaliveTicks: sc.Session.KeepaliveTicks}).Validate(); err != nil {
		bad("session: %v", err)
	}
	if len(stores) == 0 {
		bad("no stores")
	}
	if sc.Anchors == 0 && !slices.ContainsFunc(sc.nodes, func(n nodeSpec) bool { return n.role == ledger.RoleManager }) {
		bad("no anchor and no manager: nobody may write the catalog")
	}
	for _, l := range append([]LinkSpec{sc.LAN, sc.Uplink, sc.Backbone}, linkSpecs(sc.Links)...) {
		if l.Loss < 0 || l.Loss >= 1 || l.Dup < 0 || l.Dup >= 1 || l.Latency < 0 || l.Jitter < 0 || l.Bandwidth < 0 {
			bad("link: loss and dup must be in [0,1), delays and bandwidth ≥ 0")
		}
	}
	for _, l := range sc.Links {
		errs = append(errs, sc.checkSel("links", l.A), sc.checkSel("links", l.B))
	}
	w := &sc.Workload
	if w.End < w.Start || w.OpsPerMinute < 0 || w.MaxOps < 0 || w.PriceChangesPerHour < 0 || w.TransfersPerHour < 0 {
		bad("workload: end before start or a negative rate")
	}
	if w.Mix == (Mix{}) {
		w.Mix = Mix{Sale: 90, Refund: 3, Received: 4, Counted: 2, Resolve: 1}
	}
	if w.Mix.Sale < 0 || w.Mix.Refund < 0 || w.Mix.Received < 0 || w.Mix.Counted < 0 || w.Mix.Resolve < 0 {
		bad("workload mix: negative weight")
	}
	if w.TransfersPerHour > 0 && len(stores) < 2 {
		bad("workload: transfers need two stores")
	}
	backups := map[string]bool{}
	for i, e := range sc.Events {
		errs = append(errs, sc.checkEvent(i, e, stores, seenSKU, backups))
	}
	return errors.Join(errs...)
}

func linkSpecs(ls []ExtraLink) []LinkSpec {
	out := make([]LinkSpec, len(ls))
	for i, l := range ls {
		out[i] = l.LinkSpec
	}
	return out
}

func (sc *Scenario) checkEvent(i int, e Event, stores, skus, backups map[string]bool) error {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf("events[%d]: "+f, append([]any{i}, a...)...)) }
	sel := func(p string) {
		if err := sc.checkSel(fmt.Sprintf("events[%d]", i), p); err != nil {
			errs = append(errs, err)
		}
	}
	n := 0
	for _, set := range []bool{e.Cut != nil, e.Partition != nil, e.Crash != "", e.Backup != nil, e.Restore != nil,
		e.Clock != nil, e.Flap != nil, e.Sell != nil, e.Receive != nil, e.Resolve != nil, e.Transfer != nil, e.Revoke != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		bad("want exactly one action, have %d", n)
		return errors.Join(errs...)
	}
	if e.At < 0 || e.For < 0 {
		bad("negative time")
	}
	needFor := func() {
		if e.For <= 0 {
			bad("needs \"for\": every fault must heal before the run ends")
		}
	}
	scripted := func(o *ScriptedOp) {
		sel(o.Node)
		if !skus[o.SKU] || o.Qty < 1 || o.Qty > ledger.MaxQty {
			bad("unknown sku %q or qty %d", o.SKU, o.Qty)
		}
	}
	switch {
	case e.Cut != nil:
		needFor()
		if len(e.Cut) != 2 {
			bad("cut wants [A, B]")
			break
		}
		sel(e.Cut[0])
		sel(e.Cut[1])
	case e.Partition != nil:
		needFor()
		if len(e.Partition) < 2 {
			bad("partition wants two groups or more")
		}
		for _, g := range e.Partition {
			for _, p := range g {
				sel(p)
			}
		}
	case e.Crash != "":
		needFor()
		sel(e.Crash)
	case e.Backup != nil:
		sel(e.Backup.Node)
		if e.Backup.Name == "" || backups[e.Backup.Name] {
			bad("backup needs a new name")
		}
		backups[e.Backup.Name] = true
	case e.Restore != nil:
		sel(e.Restore.Node)
		if !backups[e.Restore.Backup] {
			bad("restore of unknown backup %q (backups must come first)", e.Restore.Backup)
		}
		if e.Restore.Offline < 0 {
			bad("negative offline")
		}
	case e.Clock != nil:
		sel(e.Clock.Node)
		if p := e.Clock.DriftPPM; p != nil && (*p > 100_000 || *p < -100_000) {
			bad("drift_ppm beyond ±100000")
		}
	case e.Flap != nil:
		if len(e.Flap.Between) != 2 || e.Flap.Every <= 0 || e.Flap.Down <= 0 || e.Flap.Until <= e.At {
			bad("flap wants between [A, B], every > 0, down > 0 and until after at")
			break
		}
		sel(e.Flap.Between[0])
		sel(e.Flap.Between[1])
	case e.Sell != nil:
		scripted(e.Sell)
	case e.Receive != nil:
		scripted(e.Receive)
	case e.Resolve != nil:
		sel(e.Resolve.Node)
	case e.Transfer != nil:
		t := e.Transfer
		if !stores[t.From] || !stores[t.To] || t.From == t.To || !skus[t.SKU] || t.Qty < 1 {
			bad("transfer between unknown stores or of an unknown sku")
		}
	case e.Revoke != nil:
		errs = append(errs, sc.checkRevoke(fmt.Sprintf("events[%d]", i), e.Revoke)...)
	}
	return errors.Join(errs...)
}

// checkSel reports a node pattern that matches no node.
func (sc *Scenario) checkSel(where, pattern string) error {
	if len(sc.match(pattern)) == 0 {
		return fmt.Errorf("%s: %q matches no node", where, pattern)
	}
	return nil
}

// match returns the indices of nodes whose name matches the glob pattern.
func (sc *Scenario) match(pattern string) []int {
	var out []int
	for i, n := range sc.nodes {
		if ok, _ := path.Match(pattern, n.name); ok {
			out = append(out, i)
		}
	}
	return out
}

// quietPoint is when the last fault heals or the last op is made,
// whichever is later: from then on the fleet is left alone to converge.
func (sc *Scenario) quietPoint() time.Duration {
	q := time.Duration(sc.Workload.End)
	for _, e := range sc.Events {
		end := time.Duration(e.At + e.For)
		if e.Restore != nil {
			end = time.Duration(e.At + e.Restore.Offline)
		}
		if e.Flap != nil {
			end = time.Duration(e.Flap.Until) // flaps are clipped to heal by Until
		}
		q = max(q, end)
	}
	return q
}
