package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"storemesh/ledger"
	"storemesh/mesh/p2p"
	"storemesh/node"
)

// The demo: in one process, a fleet of two stores with a few terminals
// each and one anchor, real libp2p on 127.0.0.1 with static peers only
// (never mDNS: see TESTING.md), real badger in a temp directory, the real
// HTTP API. It rings up sales, cuts one store off from HQ, sells on both
// sides, heals, and reports what converged.

type demoNode struct {
	n       *node.Node
	name    string
	store   string // "*" for the anchor
	carried uint64 // sync bytes sent by meshes SetAnchors replaced
}

type demo struct {
	c        *cli
	log      *slog.Logger
	dir      string
	rng      *mrand.Rand
	client   *http.Client
	hq       *demoNode
	stores   []string
	byStore  map[string][]*demoNode
	all      []*demoNode // hq first
	step     int
	steps    int
	tty      bool
	catalog  []demoItem
	cutStore string
	rep      demoReport
}

type demoItem struct {
	SKU, Name string
	Price     int64
	Stock     int64
}

func runDemo(c *cli, args []string) error {
	fs := newFlags("demo", "storemesh demo [--exit] [--terminals N] [--sales N] [--seed N] [--keep]",
		"The newcomer's tour: two stores with a few terminals each and one anchor on 127.0.0.1 (static\n"+
			"peers, real libp2p, real badger in a temp dir). It sells, cuts one store off from HQ, sells on\n"+
			"both sides, heals, waits for convergence and reports. The terminal pages stay up until Ctrl-C.")
	exit := fs.Bool("exit", false, "print the report and exit: 0 only if every replica converged")
	terminals := fs.Int("terminals", 3, "terminals per store (1..8)")
	sales := fs.Int("sales", 8, "sales per terminal in each phase (0..200)")
	seed := fs.Uint64("seed", 1, "seed for the sales rung up")
	keep := fs.Bool("keep", false, "keep the data directory after exit")
	timeout := fs.Duration("timeout", 20*time.Second, "how long to wait for convergence after the heal")
	logs := addLogFlags(fs, "warn")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if *terminals < 1 || *terminals > 8 || *sales < 0 || *sales > 200 {
		return usagef("demo: --terminals 1..8 and --sales 0..200")
	}
	log, err := logs.logger(c.stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "storemesh-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	st, _ := os.Stderr.Stat()
	d := &demo{
		c: c, log: log, dir: dir, rng: mrand.New(mrand.NewPCG(*seed, 0x5eed)),
		client:   &http.Client{Timeout: 10 * time.Second},
		stores:   []string{"north", "south"},
		byStore:  map[string][]*demoNode{},
		steps:    8,
		tty:      c.stderr == io.Writer(os.Stderr) && st != nil && st.Mode()&os.ModeCharDevice != 0,
		cutStore: "south",
		catalog: []demoItem{
			{"TEA", "Mint tea", 350, 500}, {"COFFEE", "Coffee", 420, 500}, {"CAKE", "Lemon cake", 500, 300},
			{"SCARF", "Hand-knit scarf", 4500, 3},
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer d.closeAll()
	start := time.Now()
	if err := d.run(ctx, *terminals, *sales, *timeout); err != nil {
		d.progressDone()
		return fmt.Errorf("demo: %w", err)
	}
	d.progressDone()
	d.rep.Elapsed = time.Since(start)
	d.printReport(c.stdout, dir, *keep || !*exit)
	if *exit {
		if !d.rep.Converged {
			return exitError(exitFailure)
		}
		return nil
	}
	fmt.Fprintln(c.stdout, "\nThe fleet stays up: open a terminal page above, ring up a sale, watch the others. Ctrl-C to stop.")
	<-ctx.Done()
	fmt.Fprintln(c.stdout, "stopping")
	return nil
}

func (d *demo) progress(msg string) {
	d.step++
	if d.tty {
		fmt.Fprintf(d.c.stderr, "\r\033[K[%d/%d] %s…", d.step, d.steps, msg)
		return
	}
	fmt.Fprintf(d.c.stderr, "[%d/%d] %s\n", d.step, d.steps, msg)
}

func (d *demo) progressDone() {
	if d.tty {
		fmt.Fprint(d.c.stderr, "\r\033[K")
	}
}

func (d *demo) run(ctx context.Context, terminals, sales int, timeout time.Duration) error {
	d.progress("making a fleet key and enrolling devices")
	fleetDir := filepath.Join(d.dir, "fleet")
	fk, err := node.InitFleet(fleetDir, rand.Reader)
	if err != nil {
		return err
	}
	d.rep.Fleet = fk.ID()
	devs := map[string]*node.Device{}
	enroll := func(name, store string, role ledger.Role) error {
		dev, err := node.Enroll(fk, node.EnrollRequest{Store: store, Role: role, Name: name, Valid: 30 * 24 * time.Hour}, rand.Reader)
		if err == nil {
			devs[name] = dev
			err = node.WriteDevice(filepath.Join(d.dir, "devices", name), dev)
		}
		return err
	}
	if err := enroll("hq", "", ledger.RoleAnchor); err != nil {
		return err
	}
	for _, s := range d.stores {
		for i := 1; i <= terminals; i++ {
			role := ledger.RoleTerminal
			if i == 1 {
				role = ledger.RoleManager
			}
			if err := enroll(fmt.Sprintf("%s-%d", s, i), s, role); err != nil {
				return err
			}
		}
	}

	d.progress(fmt.Sprintf("starting HQ and %d terminals on 127.0.0.1", len(d.stores)*terminals))
	if d.hq, err = d.start(ctx, "hq", devs["hq"], nil); err != nil {
		return err
	}
	anchorAddr := d.hq.n.Addrs()[0]
	for _, s := range d.stores {
		for i := 1; i <= terminals; i++ {
			name := fmt.Sprintf("%s-%d", s, i)
			dn, err := d.start(ctx, name, devs[name], []string{anchorAddr})
			if err != nil {
				return err
			}
			for _, peer := range d.byStore[s] { // static peers: each terminal keeps the others of its store
				if err := dn.n.AddPeer(peer.n.Addrs()[0]); err != nil {
					return err
				}
			}
			d.byStore[s] = append(d.byStore[s], dn)
		}
	}
	if err := d.waitMesh(ctx, 15*time.Second); err != nil {
		return err
	}

	d.progress("HQ sets the catalog and the offline policy; managers receive stock")
	for _, it := range d.catalog {
		if err := d.call(d.hq, "PUT", "/v1/catalog/"+it.SKU, map[string]any{"name": it.Name, "unit_price": it.Price, "currency": "EUR"}, "", nil); err != nil {
			return err
		}
	}
	for _, s := range d.stores {
		pol := map[string]any{"store": s, "offline_methods": []string{"cash", "card"}, "max_offline_sale": 20000, "max_offline_age_s": 3600}
		if err := d.call(d.hq, "PUT", "/v1/policy", pol, "", nil); err != nil {
			return err
		}
	}
	if err := d.converge(ctx, 10*time.Second); err != nil { // managers need the catalog before they receive stock
		return err
	}
	for _, s := range d.stores {
		for _, it := range d.catalog {
			if err := d.call(d.byStore[s][0], "POST", "/v1/stock/received", map[string]any{"sku": it.SKU, "qty": it.Stock}, "recv-"+it.SKU, nil); err != nil {
				return err
			}
		}
	}

	d.progress(fmt.Sprintf("ringing up %d sales on every terminal", sales))
	if err := d.sellRound(sales, "a"); err != nil {
		return err
	}
	if err := d.converge(ctx, 10*time.Second); err != nil {
		return err
	}

	d.progress(fmt.Sprintf("cutting store %s off from HQ", d.cutStore))
	cutAt := time.Now()
	for _, dn := range d.byStore[d.cutStore] {
		if err := d.setAnchors(ctx, dn, nil); err != nil {
			return err
		}
	}
	if err := d.waitCut(ctx, 10*time.Second); err != nil {
		return err
	}

	d.progress("selling on both sides of the cut (and the last scarves twice)")
	if err := d.sellRound(sales, "b"); err != nil {
		return err
	}
	// The store sells two of its three scarves offline while HQ sells two
	// from the same shelf online: one unit is oversold, a conflict every
	// replica will show once they meet again.
	cut := d.byStore[d.cutStore][0]
	if err := d.call(cut, "POST", "/v1/sales", demoSale("SCARF", 2, "cash"), "scarf-stall", nil); err != nil {
		return err
	}
	web := demoSale("SCARF", 2, "card")
	web["store"] = d.cutStore
	if err := d.call(d.hq, "POST", "/v1/sales", web, "scarf-web", nil); err != nil {
		return err
	}
	d.rep.CutFor = time.Since(cutAt)

	d.progress(fmt.Sprintf("healing: store %s reaches HQ again; waiting for convergence", d.cutStore))
	healAt := time.Now()
	before := d.bytesSynced()
	for _, dn := range d.byStore[d.cutStore] {
		if err := d.setAnchors(ctx, dn, []string{anchorAddr}); err != nil {
			return err
		}
	}
	err = d.converge(ctx, timeout)
	d.rep.ConvergedIn = time.Since(healAt)
	d.rep.Converged = err == nil
	d.rep.ConvergeErr = err
	d.rep.HealBytes = d.bytesSynced() - before
	if err == nil {
		d.rep.AckedIn, d.rep.Acked = d.waitAcked(ctx, 10*time.Second, healAt)
	}

	d.progress("collecting the report")
	d.collect()
	return nil
}

func (d *demo) start(ctx context.Context, name string, dev *node.Device, anchors []string) (*demoNode, error) {
	cfg := node.DefaultConfig()
	cfg.Key, cfg.Cert, cfg.Fleet = dev.Key, dev.Cert, dev.Fleet
	cfg.DataDir = filepath.Join(d.dir, "data", name)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Anchors = anchors
	cfg.MDNS = false                   // never outside a network namespace
	cfg.OfflineAfter = 3 * time.Second // > the 1.25 s between anchor summaries at this tick
	cfg.StatusEvery = 200 * time.Millisecond
	cfg.Logger = d.log.With("node", name)
	cfg.MeshTuning = func(mc *p2p.Config) {
		mc.TickInterval = 250 * time.Millisecond
		mc.DialBackoffMin = 50 * time.Millisecond
		mc.DialBackoffMax = time.Second
	}
	n, err := node.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	dn := &demoNode{n: n, name: name, store: dev.Cert.Store}
	d.all = append(d.all, dn)
	return dn, nil
}

func (d *demo) closeAll() {
	for i := len(d.all) - 1; i >= 0; i-- {
		if err := d.all[i].n.Close(); err != nil {
			d.log.Warn("close", "node", d.all[i].name, "err", err)
		}
	}
	d.all = nil
}

func (d *demo) setAnchors(ctx context.Context, dn *demoNode, anchors []string) error {
	dn.carried += sentBytes(dn.n.Mesh())
	return dn.n.SetAnchors(ctx, anchors)
}

func sentBytes(m *p2p.Mesh) uint64 {
	var b uint64
	for _, p := range m.Peers() {
		b += p.Stats.BytesOut
	}
	return b
}

func (d *demo) bytesSynced() uint64 {
	var b uint64
	for _, dn := range d.all {
		b += dn.carried + sentBytes(dn.n.Mesh())
	}
	return b
}

// waitMesh waits until every terminal has a sync session with each
// terminal of its store and with HQ.
func (d *demo) waitMesh(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for _, s := range d.stores {
		for _, dn := range d.byStore[s] {
			want := len(d.byStore[s])
			if err := dn.n.Mesh().WaitFor(ctx, func() bool { return dn.n.Mesh().Status().Established >= want }); err != nil {
				return fmt.Errorf("%s did not reach its %d peers: %w", dn.name, want, err)
			}
		}
	}
	return nil
}

// waitCut waits until HQ has no session with the cut store and its
// terminals count themselves offline.
func (d *demo) waitCut(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cut := map[string]bool{}
	for _, dn := range d.byStore[d.cutStore] {
		cut[dn.n.ID()] = true
	}
	m := d.hq.n.Mesh()
	if err := m.WaitFor(ctx, func() bool {
		for _, p := range m.Peers() {
			if cut[p.ID] && p.Connected {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("HQ still connected to store %s: %w", d.cutStore, err)
	}
	for _, dn := range d.byStore[d.cutStore] {
		for {
			var st struct{ Offline bool }
			if err := d.call(dn, "GET", "/v1/status", nil, "", &st); err != nil {
				return err
			}
			if st.Offline {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s never went offline: %w", dn.name, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// converge waits until every replica holding a scope shows its digest.
func (d *demo) converge(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for scope, ls := range d.replicas() {
		if err := p2p.WaitConverged(ctx, scope, ls...); err != nil {
			return err
		}
	}
	return nil
}

// replicas maps each scope to the ledgers that hold it.
func (d *demo) replicas() map[string][]*ledger.Ledger {
	out := map[string][]*ledger.Ledger{}
	for _, dn := range d.all {
		out[ledger.FleetScope] = append(out[ledger.FleetScope], dn.n.Ledger())
	}
	for _, s := range d.stores {
		out[s] = append(out[s], d.hq.n.Ledger())
		for _, dn := range d.byStore[s] {
			out[s] = append(out[s], dn.n.Ledger())
		}
	}
	return out
}

// waitAcked waits until no terminal has sales queued for HQ.
func (d *demo) waitAcked(ctx context.Context, limit time.Duration, since time.Time) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for _, s := range d.stores {
		for _, dn := range d.byStore[s] {
			m := dn.n.Mesh()
			if m.WaitFor(ctx, func() bool { return m.Status().QueuedForAnchor == 0 }) != nil {
				return time.Since(since), false
			}
		}
	}
	return time.Since(since), true
}

func demoSale(sku string, qty int, method string) map[string]any {
	return map[string]any{"lines": []map[string]any{{"sku": sku, "qty": qty}}, "payment": map[string]any{"method": method}}
}

// sellRound rings up n sales on every terminal reachable from its page.
func (d *demo) sellRound(n int, round string) error {
	common := d.catalog[:3]
	for i := 0; i < n; i++ {
		for _, s := range d.stores {
			for _, dn := range d.byStore[s] {
				var lines []map[string]any
				for _, it := range common {
					if d.rng.IntN(2) == 0 || len(lines) == 0 && it.SKU == common[len(common)-1].SKU {
						lines = append(lines, map[string]any{"sku": it.SKU, "qty": 1 + d.rng.IntN(3)})
					}
				}
				method := []string{"cash", "card"}[d.rng.IntN(2)]
				body := map[string]any{"lines": lines, "payment": map[string]any{"method": method}}
				key := fmt.Sprintf("%s-%s-%d", round, dn.name, i)
				if err := d.call(dn, "POST", "/v1/sales", body, key, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// call sends one API request to dn and decodes the answer into out.
func (d *demo) call(dn *demoNode, method, path string, body any, key string, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+dn.n.HTTPAddr()+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, dn.name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s on %s: %s: %s", method, path, dn.name, res.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
