package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestFlagPrecedence: flag > env STOREMESH_<FLAG> > --config > default.
func TestFlagPrecedence(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(cfgFile, []byte(`{"http":"127.0.0.1:1","data":"from-config","peer":["p1","p2"],"mdns":false,"days":7,"mdns-iface":"cfg0"}`), 0o644)
	env := map[string]string{"STOREMESH_DATA": "from-env", "STOREMESH_MDNS_IFACE": "env0", "STOREMESH_CONFIG": cfgFile}
	c := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(k string) string { return env[k] }}
	fs := newFlags("t", "t", "t")
	httpAddr := fs.String("http", "def", "")
	data := fs.String("data", "def", "")
	iface := fs.String("mdns-iface", "def", "")
	mdns := fs.Bool("mdns", true, "")
	days := fs.Int("days", 365, "")
	token := fs.String("token", "def", "")
	peers := listFlag(fs, "peer", "", "default-peer")
	pos, err := c.parse(fs, []string{"FILE", "--http", "127.0.0.1:9", "EXTRA"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pos, []string{"FILE", "EXTRA"}) {
		t.Errorf("positional %v", pos)
	}
	for name, got := range map[string]any{"http": *httpAddr, "data": *data, "mdns-iface": *iface, "mdns": *mdns, "days": *days, "token": *token} {
		want := map[string]any{"http": "127.0.0.1:9", "data": "from-env", "mdns-iface": "env0", "mdns": false, "days": 7, "token": "def"}[name]
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !slices.Equal(peers.vals, []string{"p1", "p2"}) {
		t.Errorf("peer = %v, want the config's list replacing the default", peers.vals)
	}

	env["STOREMESH_PEER"] = "e1, e2"
	fs = newFlags("t", "t", "t")
	peers = listFlag(fs, "peer", "", "default-peer")
	fs.String("http", "", "")
	fs.String("data", "", "")
	fs.String("mdns-iface", "", "")
	fs.Bool("mdns", true, "")
	fs.Int("days", 1, "")
	if _, err := c.parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(peers.vals, []string{"e1", "e2"}) {
		t.Errorf("peer = %v, want the env's comma-separated list", peers.vals)
	}

	os.WriteFile(cfgFile, []byte(`{"htp":"x"}`), 0o644)
	if _, err := c.parse(newFlags("t", "t", "t"), nil); c.exitCode(err) != exitUsage {
		t.Errorf("a config with an unknown flag: %v, want a usage error", err)
	}
}
