package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"

	"storemesh/ledger"
	"storemesh/mesh/p2p"
	"storemesh/sink"
)

// Node is one running peer: its ledger, its mesh and its HTTP API and
// terminal page. New starts it; Run waits for a signal to stop; Close
// stops it.
type Node struct {
	cfg     Config
	log     *slog.Logger
	self    *ledger.Certificate
	store   ds.Batching
	closeDS func() error
	// closeRec closes the durable own-chain record file (nil without a
	// data folder).
	closeRec func() error
	l        *ledger.Ledger
	started  time.Time

	meshMu  sync.RWMutex
	m       *p2p.Mesh
	listen  []string // pinned to the ports first bound, so peers' static addresses stay valid
	peers   []string
	anchors []string

	ln     net.Listener
	srv    *http.Server
	hub    *hub
	met    *metrics
	refs   *refIndex
	keys   keyLocks
	anchor anchorClock

	sinks     []*sink.Runner
	unsub     func()
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	serveErr  chan error
	closeOnce sync.Once
	closeErr  error

	connMu   sync.Mutex
	newConns map[net.Conn]bool // HTTP connections with no request yet
}

// New opens the node's storage and ledger, joins the mesh and starts
// serving HTTP. The node runs until Close (or Run's context ends).
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node: config: %w", err)
	}
	n := &Node{
		cfg: cfg, self: cfg.Cert, started: cfg.Now(),
		log:      cfg.Logger.With("device", cfg.Cert.Device, "store", cfg.Cert.Store, "role", cfg.Cert.Role),
		peers:    slices.Clone(cfg.Peers),
		anchors:  slices.Clone(cfg.Anchors),
		hub:      newHub(),
		serveErr: make(chan error, 1),
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			slices.Reverse(cleanup)
			for _, f := range cleanup {
				f()
			}
		}
	}()

	var ownRec *ledger.OwnRecordFile
	if cfg.DataDir != "" {
		created, err := prepareDataDir(cfg.DataDir, cfg.Cert, cfg.Fleet)
		if created {
			// A failed start leaves nothing behind: this runs last.
			dir := cfg.DataDir
			cleanup = append(cleanup, func() { os.RemoveAll(dir) })
		}
		if err != nil {
			return nil, err
		}
		n.anchor.load(filepath.Join(cfg.DataDir, anchorFile))
		ownRec, err = ledger.OpenOwnRecordFile(filepath.Join(cfg.DataDir, ownChainFile))
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		n.closeRec = ownRec.Close
		cleanup = append(cleanup, func() { ownRec.Close() })
	}
	var rec ledger.OwnRecord
	if ownRec != nil {
		rec = ownRec
		if cfg.DeviceDir != "" {
			devRec, err := ledger.OpenOwnRecordFile(filepath.Join(cfg.DeviceDir, ownChainFile))
			if err != nil {
				// A read-only or damaged device folder loses only the
				// restore check, never the node.
				n.log.Warn("device folder's own-chain record unusable: a data folder restored from an older copy will not be noticed at start", "dir", cfg.DeviceDir, "err", err)
			} else {
				rec = &pairRecord{data: ownRec, device: devRec, log: n.log}
				closeData := n.closeRec
				n.closeRec = func() error { return errors.Join(closeData(), devRec.Close()) }
				cleanup = append(cleanup, func() { devRec.Close() })
			}
		}
	}
	n.store = cfg.Datastore
	if n.store == nil {
		bs, err := ledger.OpenBadger(filepath.Join(cfg.DataDir, "badger"))
		switch {
		case errors.Is(err, ledger.ErrCorrupt), errors.Is(err, ledger.ErrNoSpace):
			return nil, fmt.Errorf("node: %w", err)
		case err != nil:
			return nil, fmt.Errorf("node: %w (is another storemesh process using %s?)", err, cfg.DataDir)
		}
		n.store, n.closeDS = bs, bs.Close
		cleanup = append(cleanup, func() { bs.Close() })
	}

	lc := ledger.DefaultConfig()
	lc.Fleet, lc.Self, lc.Key = cfg.Fleet, cfg.Cert, cfg.Key
	lc.Now = func() int64 { return cfg.Now().UnixNano() }
	lc.Logger = n.log.With("component", "ledger")
	lc.OwnRecord = rec
	lc.OwnWait = cfg.OwnWait
	lc.Instance = rand.Uint64()
	n.l, err = ledger.Open(ctx, n.store, lc)
	if err != nil {
		return nil, fmt.Errorf("node: open ledger: %w", err)
	}
	cleanup = append(cleanup, func() { n.l.Close() })

	n.refs, err = buildRefs(ctx, n.l, cfg.Cert.Device)
	if err != nil {
		return nil, fmt.Errorf("node: index idempotency keys: %w", err)
	}
	// Replaying the log read every op once: give that garbage back before
	// the node settles in (docs/design.md §10: an idle terminal under 64 MiB).
	debug.FreeOSMemory()
	n.met = newMetrics(n)
	n.unsub = n.l.Subscribe(n.onDurable)
	cleanup = append(cleanup, func() { n.unsub() })

	n.listen = slices.Clone(cfg.Listen)
	if err := n.startMesh(ctx); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { n.mesh().Close() })
	if err := n.startSinks(ctx); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, n.stopSinks)

	n.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("node: http listen: %w", err)
	}
	n.srv = &http.Server{
		Handler:           n.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
		ConnState:         n.trackConn,
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.serveErr <- err
		}
	}()
	go n.statusLoop(loopCtx)
	n.startAllot(loopCtx)
	n.log.Info("node started", "name", cfg.Cert.Name, "http", n.HTTPAddr(), "addrs", n.Addrs(), "fleet", n.l.FleetID())
	return n, nil
}

// Run blocks until ctx ends (a signal) or the HTTP server fails, then
// closes the node.
func (n *Node) Run(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
		n.log.Info("shutting down")
	case err = <-n.serveErr:
		n.log.Error("http server failed", "err", err)
	}
	return errors.Join(err, n.Close())
}

// Close stops the node: HTTP first (no new writes), then the mesh, the
// ledger and its storage. Safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		n.hub.close() // ends event streams, which Shutdown would wait for
		// Shutdown waits up to 5 s for a connection that has sent no
		// request yet (a client's spare connection) before it counts it as
		// idle: close those now, nothing is lost with them.
		n.closeNewConns()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		cancel()
		n.cancel()
		n.wg.Wait()
		n.persistAnchorContact()
		n.stopSinks()
		n.meshMu.Lock()
		if err := n.m.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mesh: %w", err))
		}
		n.meshMu.Unlock()
		n.unsub()
		if err := n.l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ledger: %w", err))
		}
		if n.closeDS != nil {
			if err := n.closeDS(); err != nil {
				errs = append(errs, fmt.Errorf("storage: %w", err))
			}
		}
		if n.closeRec != nil {
			if err := n.closeRec(); err != nil {
				errs = append(errs, fmt.Errorf("own-chain record: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.closeErr
}

// trackConn remembers the HTTP connections that have not sent a request.
func (n *Node) trackConn(c net.Conn, st http.ConnState) {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	if n.newConns == nil {
		n.newConns = map[net.Conn]bool{}
	}
	if st == http.StateNew {
		n.newConns[c] = true
	} else {
		delete(n.newConns, c)
	}
}

func (n *Node) closeNewConns() {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	for c := range n.newConns {
		c.Close()
	}
}

// HTTPAddr is the address the API listens on (host:port).
func (n *Node) HTTPAddr() string { return n.ln.Addr().String() }

// URL is the terminal page's address.
func (n *Node) URL() string { return "http://" + n.HTTPAddr() + "/" }

// ID is the device id (libp2p peer id).
func (n *Node) ID() string { return n.self.Device }

// Cert is the device certificate.
func (n *Node) Cert() *ledger.Certificate { return n.self }

// Ledger is the node's ledger (the demo compares digests across nodes).
func (n *Node) Ledger() *ledger.Ledger { return n.l }

// Mesh is the node's current mesh (it changes when SetAnchors rebuilds it).
func (n *Node) Mesh() *p2p.Mesh { return n.mesh() }

// Addrs are the multiaddrs peers can dial, each ending /p2p/ID.
func (n *Node) Addrs() []string { return n.mesh().Addrs() }

func (n *Node) mesh() *p2p.Mesh {
	n.meshMu.RLock()
	defer n.meshMu.RUnlock()
	return n.m
}

func (n *Node) isAnchor() bool { return n.self.Role == ledger.RoleAnchor }

// startMesh builds a mesh from the node's current peers and anchors.
// Called with meshMu held for writing, or before anyone else can see n.
func (n *Node) startMesh(ctx context.Context) error {
	mc := p2p.DefaultConfig()
	mc.Key, mc.Ledger = n.cfg.Key, n.l
	mc.Listen = n.listen
	mc.Peers, mc.Anchors = slices.Clone(n.peers), slices.Clone(n.anchors)
	mc.MDNS, mc.MDNSInterface = n.cfg.MDNS, n.cfg.MDNSInterface
	mc.Now = n.cfg.Now
	mc.Logger = n.log.With("component", "mesh")
	if n.cfg.MeshTuning != nil {
		n.cfg.MeshTuning(&mc)
	}
	m, err := p2p.New(ctx, mc)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.m = m
	// Pin the ports actually bound (":0" picks one), so a rebuilt mesh
	// listens where the other peers' static addresses point.
	n.listen = n.listen[:0]
	for _, a := range m.Host().Network().ListenAddresses() {
		n.listen = append(n.listen, a.String())
	}
	return nil
}

// AddPeer adds a static peer (multiaddr ending /p2p/ID) at run time; it
// is kept across SetAnchors.
func (n *Node) AddPeer(addr string) error {
	n.meshMu.Lock()
	defer n.meshMu.Unlock()
	if err := n.m.AddPeer(addr); err != nil {
		return err
	}
	n.peers = append(n.peers, addr)
	return nil
}

// SetAnchors replaces the anchor list. The mesh has no way to forget a
// peer, so this closes it and starts a new one on the same ports: every
// connection drops and is re-dialed (the demo uses it to cut a store off
// from HQ and to heal it). Sessions resume from version vectors, so no op
// is lost.
func (n *Node) SetAnchors(ctx context.Context, anchors []string) error {
	n.meshMu.Lock()
	defer n.meshMu.Unlock()
	if err := n.m.Close(); err != nil {
		n.log.Warn("closing mesh", "err", err)
	}
	n.anchors = slices.Clone(anchors)
	if err := n.startMesh(ctx); err != nil {
		return err
	}
	n.hub.publish(event{name: "status"})
	return nil
}

// onDurable runs on the ledger's committing goroutine for every durable
// batch: it must not block. It indexes our own idempotency keys and tells
// the page what changed.
func (n *Node) onDurable(ops []*ledger.Op) {
	changed := map[string]bool{}
	for _, o := range ops {
		if o.Device == n.self.Device {
			n.refs.add(o)
		}
		switch o.Kind {
		case ledger.KindSale, ledger.KindRefund:
			changed["sales"], changed["stock"], changed["conflicts"] = true, true, true
		case ledger.KindStockReceived, ledger.KindStockCounted, ledger.KindStockTransferred:
			changed["stock"], changed["conflicts"] = true, true
		case ledger.KindAllotSet, ledger.KindAllotTransfer, ledger.KindAllotRequest, ledger.KindAllotWriteoff:
			changed["stock"] = true
		case ledger.KindCatalogUpsert, ledger.KindPriceSet:
			changed["catalog"] = true
		case ledger.KindPolicySet:
			changed["policy"] = true
		case ledger.KindConflictResolved:
			changed["conflicts"] = true
		}
	}
	for _, name := range []string{"sales", "stock", "catalog", "policy", "conflicts"} {
		if changed[name] {
			n.hub.publish(event{name: name})
		}
	}
}

// idleTrimAfter is how long without new ops before an idle node gives
// its unused heap back to the OS.
const idleTrimAfter = 30 * time.Second

// statusLoop pushes status changes to the page, persists the last anchor
// contact, and trims the heap once the node has been idle.
func (n *Node) statusLoop(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.StatusEvery)
	defer t.Stop()
	last := ""
	var lastWork uint64
	quietSince, trimmed := time.Now(), true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fp := n.statusFingerprint()
		if fp != last {
			last = fp
			n.hub.publish(event{name: "status"})
		}
		n.persistAnchorContact()
		// Once the node has been idle for a while after work, return the
		// heap's headroom to the OS: between sales the heap may grow to
		// twice what is live, and an idle terminal should not keep that.
		if st := n.l.Stats(); st.Appended+st.Applied != lastWork {
			lastWork, quietSince, trimmed = st.Appended+st.Applied, time.Now(), false
		} else if !trimmed && time.Since(quietSince) >= idleTrimAfter {
			debug.FreeOSMemory()
			trimmed = true
		}
	}
}
