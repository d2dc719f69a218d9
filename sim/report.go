package sim

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"storemesh/ledger"
)

// Report is what a run did and whether its invariants held. Everything
// but Wall is a function of the scenario and the seed: two runs print
// byte-identical text and JSON.
type Report struct {
	Scenario       string    `json:"scenario"`
	Seed           uint64    `json:"seed"`
	Push           string    `json:"push"`
	Nodes          int       `json:"nodes"`
	Stores         int       `json:"stores"`
	Anchors        int       `json:"anchors"`
	Links          int       `json:"links"`
	Lanes          int       `json:"lanes"`     // partitions of the nodes run in parallel between windows
	WindowMS       float64   `json:"window_ms"` // the lookahead: the least latency of a link between lanes
	Ops            OpStats   `json:"ops"`
	Wire           WireStats `json:"wire"`
	VirtualS       float64   `json:"virtual_s"`         // simulated time the run covered
	WorkloadS      float64   `json:"workload_s"`        // length of the random workload
	OpsPerVirtualS float64   `json:"ops_per_virtual_s"` // acknowledged ops per second of workload
	LastHealS      float64   `json:"last_heal_s"`       // the last partition heal or restart
	CaughtUp       bool      `json:"caught_up"`         // every replica came to hold every op acknowledged before the last heal
	CatchUpS       float64   `json:"catch_up_s"`        // how long that took after the last heal
	QuietS         float64   `json:"quiet_s"`           // faults over, workload over: convergence is timed from here
	Converged      bool      `json:"converged"`
	ConvergedAtS   float64   `json:"converged_at_s"`
	ConvergenceS   float64   `json:"convergence_s"` // converged_at − quiet
	// HQAckedS is how long after convergence every store device knew what
	// HQ holds of its store (nothing left counted as queued for HQ); -1
	// when that had not happened when the run gave up waiting.
	HQAckedS  float64       `json:"hq_acked_s"`
	Conflicts ConflictStats `json:"conflicts"`
	Forks     []string      `json:"forks,omitempty"`    // store/device flagged for equivocation
	Restored  []string      `json:"restored,omitempty"` // devices restored from a backup
	Revoked   *RevokedStats `json:"revoked,omitempty"`  // revoke events (revoke.go)
	HeldAtEnd int           `json:"held_at_end"`        // ops still waiting for a predecessor
	TraceHash string        `json:"trace_hash"`         // SHA-256 over every frame and op event, in order
	Failures  []Failure     `json:"failures"`
	Notes     []string      `json:"notes,omitempty"`

	Samples []Sample      `json:"-"` // the graphs of WriteSVG
	Marks   []Mark        `json:"-"` // faults, shaded in the SVG
	Wall    time.Duration `json:"-"` // wall-clock time of the run: never compared, never in the text or JSON
	// WallBuild, WallSim and WallCheck split Wall: enrolling and opening
	// the nodes, simulating, checking the invariants.
	WallBuild, WallSim, WallCheck time.Duration `json:"-"`

	err error
}

// OpStats counts the ops devices made.
type OpStats struct {
	Total   int            `json:"total"` // acknowledged (Append returned)
	ByKind  map[string]int `json:"by_kind"`
	Refused map[string]int `json:"refused,omitempty"` // Append refused, by reason
	Exempt  int            `json:"exempt"`            // acknowledged, then lost with a restored device's disk
}

// WireStats counts what crossed the simulated network.
type WireStats struct {
	Sessions         int    `json:"sessions"` // session pairs started
	FramesSent       uint64 `json:"frames_sent"`
	FramesDelivered  uint64 `json:"frames_delivered"`
	FramesLost       uint64 `json:"frames_lost"`    // link loss
	FramesDropped    uint64 `json:"frames_dropped"` // arrived after their session closed
	FramesDuplicated uint64 `json:"frames_duplicated"`
	BytesSent        uint64 `json:"bytes_sent"`
	BytesDelivered   uint64 `json:"bytes_delivered"`
	// OpBytes is the encoded size of every acknowledged op; IdealBytes is
	// what sending each op once to each other replica of its scope costs.
	OpBytes       uint64         `json:"op_bytes"`
	IdealBytes    uint64         `json:"ideal_bytes"`
	SessionErrors map[string]int `json:"session_errors,omitempty"`
}

// ConflictStats counts the oversells the replicas report (anchor's view,
// or each store's first device when there is no anchor).
type ConflictStats struct {
	Open     int `json:"open"`
	Resolved int `json:"resolved"`
}

// Sample is one point of the graphs.
type Sample struct {
	T        float64 // virtual seconds
	UpToDate float64 // fraction of (node, scope) replicas holding all their scope's freshest replica holds
	InFlight int     // frames on the wire
	Held     int     // ops held for a missing predecessor, over all nodes
}

// Mark is a fault interval.
type Mark struct {
	From, To float64
	What     string
}

func newReport(sc *Scenario, seed uint64) *Report {
	r := &Report{Scenario: sc.Name, Seed: seed, Push: sc.Push, Anchors: sc.Anchors, Nodes: len(sc.nodes),
		WorkloadS: secs(int64(sc.Workload.End - sc.Workload.Start))}
	stores := map[string]bool{}
	for _, n := range sc.nodes {
		if n.role != ledger.RoleAnchor {
			stores[n.store] = true
		}
	}
	r.Stores = len(stores)
	return r
}

// Failed reports whether an invariant broke.
func (r *Report) Failed() bool { return len(r.Failures) > 0 }

// finish fills in the report and runs the checks.
func (w *world) finish() {
	w.merged()
	r := w.rep
	r.VirtualS, r.QuietS, r.LastHealS = secs(w.now), secs(w.quiet), secs(w.lastHeal)
	if w.caughtUpAt >= 0 && w.lastHeal > 0 {
		r.CaughtUp, r.CatchUpS = true, secs(w.caughtUpAt-w.lastHeal)
	}
	if w.converged {
		r.Converged, r.ConvergedAtS, r.ConvergenceS = true, secs(w.convergedAt), secs(w.convergedAt-w.quiet)
		r.HQAckedS = secs(w.hqAt - w.convergedAt)
		if len(w.hqQueued) > 0 {
			r.HQAckedS = -1
		}
	}
	if r.WorkloadS > 0 {
		r.OpsPerVirtualS = float64(r.Ops.Total) / r.WorkloadS
	}
	for _, a := range w.acked {
		if a.exempt {
			r.Ops.Exempt++
		}
	}
	forks := map[string]bool{}
	for _, n := range w.nodes {
		if !n.alive {
			continue
		}
		r.HeldAtEnd += n.l.Stats().Held
		for _, f := range n.l.Forks() {
			forks[f.Store+"/"+f.Device] = true
		}
	}
	for f := range forks {
		r.Forks = append(r.Forks, f)
	}
	slices.Sort(r.Forks)
	w.countConflicts()
	w.countRevoked()
	r.TraceHash = hex.EncodeToString(w.traceSum())
	w.checkAll()
	if r.Failures == nil {
		r.Failures = []Failure{}
	}
}

func (w *world) countConflicts() {
	var views []func() []ledger.Conflict
	if len(w.anchors) > 0 && w.nodes[w.anchors[0]].alive {
		l := w.nodes[w.anchors[0]].l
		views = append(views, func() []ledger.Conflict { return l.Conflicts("") })
	} else {
		for _, st := range w.stores {
			if n := w.nodes[w.byStore[st][0]]; n.alive {
				views = append(views, func() []ledger.Conflict { return n.l.Conflicts(st) })
			}
		}
	}
	for _, v := range views {
		for _, c := range v() {
			if c.Resolution == nil {
				w.rep.Conflicts.Open++
			} else {
				w.rep.Conflicts.Resolved++
			}
		}
	}
}

// WriteJSON writes the report as indented JSON (no wall-clock field).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people. It holds no wall-clock time:
// see WriteRunTook.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	p("scenario  %s  seed %d  push %s", r.Scenario, r.Seed, r.Push)
	p("fleet     %d nodes: %d stores, %d anchors; %d links, %d session pairs started", r.Nodes, r.Stores, r.Anchors, r.Links, r.Wire.Sessions)
	p("lanes     %d, window %.0f ms", r.Lanes, r.WindowMS)
	p("ops       %d acknowledged in %.1f s of workload (%.2f ops/s virtual): %s", r.Ops.Total, r.WorkloadS, r.OpsPerVirtualS, kv(r.Ops.ByKind))
	if len(r.Ops.Refused) > 0 {
		p("refused   %s", kv(r.Ops.Refused))
	}
	if r.Ops.Exempt > 0 || len(r.Restored) > 0 {
		p("restored  %s; %d acknowledged ops lost with the replaced disk (exempt)", strings.Join(r.Restored, ", "), r.Ops.Exempt)
	}
	if rv := r.Revoked; rv != nil {
		p("revoked   %s; %d acknowledged ops past their cut-offs, dropped on every replica; replicas refused %d on arrival",
			strings.Join(rv.Devices, ", "), rv.Dropped, rv.RefusedOnArrival)
	}
	ws := r.Wire
	p("frames    %d sent, %d delivered, %d lost, %d dropped with their session, %d duplicated",
		ws.FramesSent, ws.FramesDelivered, ws.FramesLost, ws.FramesDropped, ws.FramesDuplicated)
	ratio := 0.0
	if ws.IdealBytes > 0 {
		ratio = float64(ws.BytesDelivered) / float64(ws.IdealBytes)
	}
	p("bytes     %d sent, %d delivered; ops %d bytes, ideal %d (each op once to each other replica): %.2fx",
		ws.BytesSent, ws.BytesDelivered, ws.OpBytes, ws.IdealBytes, ratio)
	if len(ws.SessionErrors) > 0 {
		p("sessions  closed on error: %s", kv(ws.SessionErrors))
	}
	p("time      last heal %.1f s, quiet from %.1f s, run ended %.1f s", r.LastHealS, r.QuietS, r.VirtualS)
	if r.CaughtUp {
		p("caught up %.1f s after the last heal: every replica held every op acknowledged before it", r.CatchUpS)
	} else if r.LastHealS > 0 {
		p("caught up NO: some replica never got every op acknowledged before the last heal")
	}
	if r.Converged {
		p("converged at %.1f s: %.1f s after the quiet point", r.ConvergedAtS, r.ConvergenceS)
		if r.HQAckedS >= 0 {
			p("hq        every store device knew what HQ holds %.1f s after that", r.HQAckedS)
		} else {
			p("hq        some store device still counted ops as queued for HQ when the run ended")
		}
	} else {
		p("converged NO (gave up at %.1f s)", r.VirtualS)
	}
	p("conflicts %d open, %d resolved; forks flagged: %s; ops held at end: %d", r.Conflicts.Open, r.Conflicts.Resolved, orNone(r.Forks), r.HeldAtEnd)
	p("trace     sha256:%s", r.TraceHash)
	for _, n := range r.Notes {
		p("note      %s", n)
	}
	if r.Failed() {
		p("result    FAIL: %d invariant failures (seed %d)", len(r.Failures), r.Seed)
		for _, f := range r.Failures {
			p("  %s", f)
		}
	} else {
		extra := ""
		if r.Revoked != nil {
			extra = ", revoked dropped"
		}
		p("result    PASS: convergence, no lost ack, counted once, stock conserved, same conflicts, forks flagged, HQ acknowledged%s", extra)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteRunTook writes the one line with wall-clock time in it.
func (r *Report) WriteRunTook(w io.Writer) error {
	rate := 0.0
	if s := r.Wall.Seconds(); s > 0 {
		rate = float64(r.Ops.Total) / s
	}
	_, err := fmt.Fprintf(w, "run took %.2fs wall (%.0f ops/s): build %.2fs, simulate %.2fs, check %.2fs\n",
		r.Wall.Seconds(), rate, r.WallBuild.Seconds(), r.WallSim.Seconds(), r.WallCheck.Seconds())
	return err
}

func kv(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func notef(f string, a ...any) string { return fmt.Sprintf(f, a...) }
