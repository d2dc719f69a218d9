package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"storemesh/sink"
	"storemesh/sink/mqtt"
	"storemesh/sink/pg"
)

// startSinks starts the anchor's PostgreSQL and MQTT sinks (Config.Postgres,
// Config.MQTT). An unreachable database or broker is not fatal: the sink
// counts its backlog and retries with backoff (sync never waits for it).
// What is fatal is a URL that does not parse and a database whose schema
// is newer than this build.
func (n *Node) startSinks(ctx context.Context) error {
	if n.cfg.Postgres == "" && n.cfg.MQTT == "" {
		return nil
	}
	if !n.isAnchor() {
		return errors.New("node: --postgres and --mqtt are for anchors")
	}
	sc := sink.DefaultConfig()
	sc.Now = n.cfg.Now
	if n.cfg.SinkTuning != nil {
		n.cfg.SinkTuning(&sc)
	}
	var targets []sink.Target
	if n.cfg.Postgres != "" {
		t, err := pg.New(pg.Config{URL: n.cfg.Postgres, Anchor: n.self.Device, Ledger: n.l,
			Logger: n.log.With("component", "sink", "sink", "postgres")})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = t.Check(cctx)
		cancel()
		switch {
		case errors.Is(err, pg.ErrSchemaTooNew):
			return fmt.Errorf("node: --postgres: %w", err)
		case err != nil:
			n.log.Warn("postgres unreachable at start; the sink keeps the anchor's ops and retries", "err", err)
		}
		targets = append(targets, t)
	}
	if n.cfg.MQTT != "" {
		t, err := mqtt.New(mqtt.Config{URL: n.cfg.MQTT, Prefix: n.cfg.MQTTPrefix, ClientID: "storemesh-" + n.self.Device,
			Dir: n.cfg.DataDir, Ledger: n.l, LastContact: n.peerContacts, Now: n.cfg.Now,
			Logger: n.log.With("component", "sink", "sink", "mqtt")})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		c := sc
		c.Logger = n.log.With("component", "sink")
		r, err := sink.Start(n.l, t, c)
		if err != nil {
			n.stopSinks()
			return fmt.Errorf("node: %w", err)
		}
		n.sinks = append(n.sinks, r)
	}
	return nil
}

func (n *Node) stopSinks() {
	for _, r := range n.sinks {
		if err := r.Close(); err != nil {
			n.log.Warn("closing sink", "sink", r.Name(), "err", err)
		}
	}
	n.sinks = nil
}

// sinkStatus is the "sinks" list of GET /v1/status.
func (n *Node) sinkStatus() []sink.Status {
	var out []sink.Status
	for _, r := range n.sinks {
		out = append(out, r.Status())
	}
	return out
}

// peerContacts is when the anchor last heard from each peer it syncs with.
func (n *Node) peerContacts() map[string]time.Time {
	out := map[string]time.Time{}
	for _, p := range n.mesh().Peers() {
		if !p.LastSync.IsZero() {
			out[p.ID] = p.LastSync
		}
	}
	return out
}

var (
	descSinkBacklog  = prometheus.NewDesc("storemesh_sink_backlog_ops", "Ops the anchor holds that a sink has not written yet.", []string{"sink"}, nil)
	descSinkWritten  = prometheus.NewDesc("storemesh_sink_written_ops_total", "Ops a sink wrote (a retried batch counts again).", []string{"sink"}, nil)
	descSinkFailures = prometheus.NewDesc("storemesh_sink_failures_total", "Failed sink writes and connection attempts.", []string{"sink"}, nil)
	descSinkUp       = prometheus.NewDesc("storemesh_sink_up", "1 while a sink's last attempt succeeded.", []string{"sink"}, nil)
)

func (n *Node) collectSinks(ch chan<- prometheus.Metric) {
	for _, st := range n.sinkStatus() {
		ch <- prometheus.MustNewConstMetric(descSinkBacklog, prometheus.GaugeValue, float64(st.Backlog), st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkWritten, prometheus.CounterValue, float64(st.Written), st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkFailures, prometheus.CounterValue, float64(st.Failures), st.Name)
		ch <- prometheus.MustNewConstMetric(descSinkUp, prometheus.GaugeValue, b2f(st.LastError == "" && st.LastOK != nil), st.Name)
	}
}
