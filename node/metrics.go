package node

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the node's Prometheus registry: its own, not the global one,
// so several nodes in one process (the demo, tests) do not collide.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	sseDropped prometheus.Counter
	handler    http.Handler
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storemesh_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "storemesh_http_errors_total", Help: "HTTP error responses by route and stable error code.",
		}, []string{"route", "error"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "storemesh_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		sseDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "storemesh_events_resync_total", Help: "Event-stream clients that fell behind and were told to resync.",
		}),
	}
	m.reg.MustRegister(m.requests, m.errors, m.latency, m.sseDropped, &nodeCollector{n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
	return m
}

func (m *metrics) observe(route, method string, status int, code string, d time.Duration) {
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	if code != "" {
		m.errors.WithLabelValues(route, code).Inc()
	}
	if route != "/v1/events" { // a stream's duration is how long the page stayed open
		m.latency.WithLabelValues(route).Observe(d.Seconds())
	}
}

func (n *Node) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	n.met.handler.ServeHTTP(w, r)
	return nil
}

// nodeCollector reads the ledger's and the mesh's counters at scrape time.
type nodeCollector struct{ n *Node }

var (
	descAppended   = prometheus.NewDesc("storemesh_ops_appended_total", "Ops this device wrote.", nil, nil)
	descApplied    = prometheus.NewDesc("storemesh_ops_applied_total", "Ops received from peers and applied.", nil, nil)
	descDuplicate  = prometheus.NewDesc("storemesh_ops_duplicate_total", "Ops received that were already held (normal traffic).", nil, nil)
	descRejected   = prometheus.NewDesc("storemesh_ops_rejected_total", "Ops and certificates refused, by reason.", []string{"reason"}, nil)
	descHeld       = prometheus.NewDesc("storemesh_ops_held", "Ops held in memory waiting for a predecessor.", nil, nil)
	descForks      = prometheus.NewDesc("storemesh_forks_total", "Equivocations seen (two ops at one device seq).", nil, nil)
	descEpochs     = prometheus.NewDesc("storemesh_own_epochs_total", "New chains this device started (its chain forked, or a shortfall peers did not refill in --own-wait).", nil, nil)
	descCopied     = prometheus.NewDesc("storemesh_own_chain_copied", "1 when another process wrote ops as this device (a chain of it is forked).", nil, nil)
	descClones     = prometheus.NewDesc("storemesh_clones", "Devices seen running in two processes at once in the last 10 minutes.", nil, nil)
	descCloneSeen  = prometheus.NewDesc("storemesh_clone_detections_total", "Sightings of a second process of one device.", nil, nil)
	descCommits    = prometheus.NewDesc("storemesh_commits_total", "Durable storage commits (fsyncs).", nil, nil)
	descQueued     = prometheus.NewDesc("storemesh_queued_for_anchor", "Ops of this store not yet acknowledged by an anchor.", nil, nil)
	descAnchorAge  = prometheus.NewDesc("storemesh_anchor_contact_age_seconds", "Seconds since the last frame from an anchor (since start when never).", nil, nil)
	descOffline    = prometheus.NewDesc("storemesh_offline", "1 while no anchor was reached within the offline threshold.", nil, nil)
	descPeers      = prometheus.NewDesc("storemesh_peers", "Peers by state.", []string{"state"}, nil)
	descPeerLag    = prometheus.NewDesc("storemesh_peer_sync_age_seconds", "Seconds since the last sync frame from each peer (sync lag).", []string{"peer", "found"}, nil)
	descSyncBytes  = prometheus.NewDesc("storemesh_sync_bytes_total", "Sync bytes by direction, all peers.", []string{"direction"}, nil)
	descSyncOps    = prometheus.NewDesc("storemesh_sync_ops_total", "Ops sent and received by sync, all peers.", []string{"direction"}, nil)
	descSyncRej    = prometheus.NewDesc("storemesh_sync_rejected_total", "Frames, ops and claims of peers ignored or refused by the sync sessions, by reason (scope_not_shared, unknown_device, want_repeated, ...).", []string{"reason"}, nil)
	descProtoErr   = prometheus.NewDesc("storemesh_sync_sessions_closed_total", "Sync sessions closed by a protocol error, by code.", []string{"code"}, nil)
	descConflicts  = prometheus.NewDesc("storemesh_conflicts", "Conflicts by state.", []string{"state"}, nil)
	descEventConns = prometheus.NewDesc("storemesh_event_streams", "Open /v1/events streams.", nil, nil)
	descGate       = prometheus.NewDesc("storemesh_gate_refused_total", "Connections refused at the connection gate, by reason (revoked, or a ban's code).", []string{"reason"}, nil)
	descRevoked    = prometheus.NewDesc("storemesh_revoked_devices", "Devices revoked by an effective revocation.", nil, nil)
	descOwnMissing = prometheus.NewDesc("storemesh_own_chain_missing", "Ops of this device's own chain it is known to have written but no longer holds (lost from storage; writes wait for sync), by scope.", []string{"scope"}, nil)
	descOwnHeld    = prometheus.NewDesc("storemesh_own_chain_held", "Length of this device's own chain held, by scope.", []string{"scope"}, nil)
	descNoSpace    = prometheus.NewDesc("storemesh_storage_no_space_total", "Writes refused by the free-space guard (disk full; nothing written).", nil, nil)
	descOverspent  = prometheus.NewDesc("storemesh_allotment_overspends_total", "Devices found spending units of an allotted SKU they did not hold (per store and SKU).", nil, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAppended, descApplied, descDuplicate, descRejected, descHeld, descForks,
		descEpochs, descCopied, descClones, descCloneSeen,
		descCommits, descQueued, descAnchorAge, descOffline, descPeers, descPeerLag, descSyncBytes, descSyncOps,
		descProtoErr, descSyncRej, descConflicts, descEventConns, descSinkBacklog, descSinkWritten, descSinkFailures, descSinkUp,
		descOwnMissing, descOwnHeld, descNoSpace,
		descGate, descRevoked, descOverspent} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := n.l.Stats()
	counter(descAppended, float64(st.Appended))
	counter(descApplied, float64(st.Applied))
	counter(descDuplicate, float64(st.Duplicate))
	for r, v := range st.Rejected {
		counter(descRejected, float64(v), string(r))
	}
	gauge(descHeld, float64(st.Held))
	counter(descForks, float64(st.Forks))
	counter(descEpochs, float64(st.Epochs))
	gauge(descCopied, b2f(n.copied()))
	counter(descCommits, float64(st.Commits))
	counter(descNoSpace, float64(st.NoSpace))
	for _, oc := range n.l.OwnChains() {
		if !oc.Current {
			continue // one series per scope: the chain it writes
		}
		gauge(descOwnMissing, float64(oc.Missing), oc.Scope)
		gauge(descOwnHeld, float64(oc.Held), oc.Scope)
	}
	counter(descOverspent, float64(n.l.AllotOverspends()))

	now := n.cfg.Now()
	m := n.mesh()
	ms := m.Status()
	gauge(descQueued, float64(ms.QueuedForAnchor))
	gauge(descClones, float64(len(ms.Clones)))
	counter(descCloneSeen, float64(ms.CloneDetections))
	last := n.anchor.observe(ms.LastAnchorContact)
	if last.IsZero() {
		last = n.started
	}
	if !n.isAnchor() {
		gauge(descAnchorAge, now.Sub(last).Seconds())
	}
	off, _ := n.offline(now)
	gauge(descOffline, b2f(off))
	var known, connected, established float64
	var bin, bout, oin, oout uint64
	syncRej := map[string]uint64{}
	for _, p := range m.Peers() {
		for r, v := range p.Stats.Rejected {
			syncRej[r] += v
		}
		known++
		connected += b2f(p.Connected)
		established += b2f(p.Established)
		bin, bout, oin, oout = bin+p.Stats.BytesIn, bout+p.Stats.BytesOut, oin+p.Stats.OpsIn, oout+p.Stats.OpsOut
		if !p.LastSync.IsZero() {
			gauge(descPeerLag, now.Sub(p.LastSync).Seconds(), p.ID, p.Found)
		}
	}
	gauge(descPeers, known, "known")
	gauge(descPeers, connected, "connected")
	gauge(descPeers, established, "established")
	counter(descSyncBytes, float64(bin), "in")
	counter(descSyncBytes, float64(bout), "out")
	counter(descSyncOps, float64(oin), "in")
	counter(descSyncOps, float64(oout), "out")
	for code, v := range ms.ProtocolErrors {
		counter(descProtoErr, float64(v), code)
	}
	for reason, v := range ms.RefusedBy {
		counter(descGate, float64(v), reason)
	}
	gauge(descRevoked, float64(len(n.l.Revocations())))
	for r, v := range syncRej {
		counter(descSyncRej, float64(v), r)
	}
	open, resolved := n.l.OpenConflicts(n.conflictScope())
	gauge(descConflicts, float64(open), "open")
	gauge(descConflicts, float64(resolved), "resolved")
	gauge(descEventConns, float64(n.hub.count()))
	n.collectSinks(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var _ prometheus.Collector = (*nodeCollector)(nil)
