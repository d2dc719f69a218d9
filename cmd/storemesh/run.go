package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"storemesh/ledger"
	"storemesh/node"
)

func runNode(c *cli, args []string) error { return runPeer(c, args, false) }

func runAnchor(c *cli, args []string) error { return runPeer(c, args, true) }

// runPeer runs a terminal (node) or an anchor until SIGINT or SIGTERM.
func runPeer(c *cli, args []string, anchor bool) error {
	name, usage, summary := "node",
		"storemesh node --device DEV --data DIR --http 127.0.0.1:PORT --listen MULTIADDR [--peer MULTIADDR]... [--anchor MULTIADDR]... [--mdns=true|false] [--mdns-iface IF]",
		"Runs a terminal: keeps selling offline, syncs with the terminals of its store (found by mDNS or\n"+
			"--peer) and, when one is reachable, with the anchor. The terminal page is at http://ADDR/."
	mdnsDefault := true
	if anchor {
		name, usage, summary = "anchor",
			"storemesh anchor --device DEV --data DIR --http ADDR --listen MULTIADDR [--peer MULTIADDR]... [--postgres URL] [--mqtt tcp://HOST:1883 [--mqtt-prefix P]]",
			"Runs a cloud anchor: a peer that replicates every store and that terminals reach as their uplink."
		mdnsDefault = false
	}
	fs := newFlags(name, usage, summary)
	device := fs.String("device", "", "device directory made by storemesh enroll (required)")
	data := fs.String("data", "", "data directory; made if missing (required)")
	httpAddr := fs.String("http", "127.0.0.1:8080", "HTTP address of the API and the page; not loopback needs --token")
	token := fs.String("token", "", "bearer token required on the API (prefer env STOREMESH_TOKEN)")
	listen := listFlag(fs, "listen", "libp2p listen multiaddr, repeatable", "/ip4/0.0.0.0/tcp/4001")
	peers := listFlag(fs, "peer", "static peer multiaddr ending /p2p/ID, repeatable (for LANs that block multicast)")
	anchors := listFlag(fs, "anchor", "anchor multiaddr ending /p2p/ID, repeatable")
	mdns := fs.Bool("mdns", mdnsDefault, "discover peers on the LAN with mDNS")
	mdnsIface := fs.String("mdns-iface", "", "network interface for mDNS (default: the first up multicast interface with IPv4)")
	offlineAfter := fs.Duration("offline-after", 60*time.Second, "no anchor contact for this long = offline (the store's offline policy applies)")
	ownWait := fs.Duration("own-wait", 10*time.Second, "after a restore or a lost tail, how long sales wait for peers to refill this device's chain before it writes a new chain")
	readyFile := fs.String("ready-file", "", "write {\"device\",\"http\",\"addrs\"} as JSON here once serving (for scripts and tests)")
	var pgURL, mqttURL, mqttPrefix *string
	if anchor {
		pgURL = fs.String("postgres", "", "feed every op to this PostgreSQL database (postgres://USER@HOST:5432/DB; prefer env STOREMESH_POSTGRES); see docs/postgres.md")
		mqttURL = fs.String("mqtt", "", "publish events to this MQTT broker (tcp://HOST:1883); see docs/mqtt.md")
		mqttPrefix = fs.String("mqtt-prefix", "", "topic prefix for --mqtt (P → P/store/S/pos/sale.created)")
	}
	logs := addLogFlags(fs, "info")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if *device == "" || *data == "" {
		return usagef("%s: --device and --data are required", name)
	}
	if err := node.CheckHTTPAddr(*httpAddr, *token); err != nil {
		return usagef("%s: %v", name, err)
	}
	log, err := logs.logger(c.stderr)
	if err != nil {
		return err
	}
	dev, err := node.LoadDevice(*device)
	if err != nil {
		return fmt.Errorf("load device: %w", err)
	}
	if isAnchor := dev.Cert.Role == ledger.RoleAnchor; isAnchor != anchor {
		want := map[bool]string{true: "storemesh anchor", false: "storemesh node"}[isAnchor]
		return usagef("%s: %s is a %s device: run it with %s", name, *device, dev.Cert.Role, want)
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "mdns" })
	if *mdns && *mdnsIface == "" {
		iface, err := multicastInterface()
		switch {
		case err == nil:
			*mdnsIface = iface
			log.Info("mDNS on the first multicast interface; set --mdns-iface to choose", "iface", iface)
		case explicit:
			return fmt.Errorf("--mdns: %w; name one with --mdns-iface", err)
		default:
			log.Warn("mDNS off: no interface for it; use --peer or --mdns-iface", "err", err)
			*mdns = false
		}
	}

	cfg := node.DefaultConfig()
	cfg.Key, cfg.Cert, cfg.Fleet = dev.Key, dev.Cert, dev.Fleet
	cfg.DataDir, cfg.HTTPAddr, cfg.Token = *data, *httpAddr, *token
	cfg.DeviceDir, cfg.OwnWait = *device, *ownWait
	cfg.Listen, cfg.Peers, cfg.Anchors = listen.vals, peers.vals, anchors.vals
	cfg.MDNS, cfg.MDNSInterface = *mdns, *mdnsIface
	cfg.OfflineAfter = *offlineAfter
	cfg.Logger = log
	if anchor {
		cfg.Postgres, cfg.MQTT, cfg.MQTTPrefix = *pgURL, *mqttURL, *mqttPrefix
		if cfg.Postgres == "" {
			cfg.Postgres = os.Getenv("STOREMESH_POSTGRES") // a URL may carry a password: keep it out of ps
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(ctx, cfg)
	if err != nil {
		return err
	}
	if *readyFile != "" {
		b, _ := json.Marshal(map[string]any{"device": n.ID(), "http": n.HTTPAddr(), "addrs": n.Addrs()})
		err := os.WriteFile(*readyFile+".tmp", b, 0o644)
		if err == nil {
			err = os.Rename(*readyFile+".tmp", *readyFile)
		}
		if err != nil {
			n.Close()
			return fmt.Errorf("--ready-file: %w", err)
		}
	}
	fmt.Fprintf(c.stdout, "%s %s (%s) serving %s\n", dev.Cert.Role, dev.Cert.Name, n.ID(), n.URL())
	return n.Run(ctx)
}

// multicastInterface picks the first interface that is up, not loopback,
// multicast-capable and has an IPv4 address.
func multicastInterface() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagMulticast == 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return i.Name, nil
			}
		}
	}
	return "", errors.New("no up multicast interface with an IPv4 address")
}
