package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLIForeignDataFolder: a data folder belongs to the device and fleet
// that first used it. Before, another fleet's device started on a copy of
// till-1's folder, served its sales, took a sale and overwrote fleet.pub.
func TestCLIForeignDataFolder(t *testing.T) {
	_, enroll := newFleet(t)
	_, enrollOther := newFleet(t)
	till1, till2 := enroll("till-1", "stall", "manager"), enroll("till-2", "stall", "terminal")
	foreign := enrollOther("till-x", "stall", "manager")
	data := filepath.Join(t.TempDir(), "till-1")
	p := startProc(t, "node", "--device", till1, "--data", data)
	p.must(200, "PUT", "/v1/catalog/TEA", map[string]any{"name": "Tea", "unit_price": 350, "currency": "EUR"}, nil)
	p.must(201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 5}, nil)
	p.must(201, "POST", "/v1/sales", sale("TEA", 1, "cash"), nil)
	p.stop(false)
	pub, err := os.ReadFile(filepath.Join(data, "fleet.pub"))
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ name, dev, want string }{
		{"another fleet's device", foreign, "belongs to device"},
		{"another device of the fleet", till2, "belongs to device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := storemesh(t, 30*time.Second, nil, "node", "--device", c.dev, "--data", data,
				"--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false")
			if code == 0 || !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "give each device its own --data folder") {
				t.Fatalf("exit %d, stderr %q: want a refusal saying %q", code, stderr, c.want)
			}
			if got, _ := os.ReadFile(filepath.Join(data, "fleet.pub")); !bytes.Equal(got, pub) {
				t.Fatal("fleet.pub was overwritten")
			}
		})
	}

	// A folder from before IDENTITY existed: a different fleet.pub is
	// still refused, never overwritten.
	t.Run("old folder of another fleet", func(t *testing.T) {
		old := filepath.Join(t.TempDir(), "old")
		if err := os.MkdirAll(old, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(old, "fleet.pub"), pub, 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := storemesh(t, 30*time.Second, nil, "node", "--device", foreign, "--data", old,
			"--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false")
		if code == 0 || !strings.Contains(stderr, "never overwritten") {
			t.Fatalf("exit %d, stderr %q: want fleet.pub refused", code, stderr)
		}
		if got, _ := os.ReadFile(filepath.Join(old, "fleet.pub")); !bytes.Equal(got, pub) {
			t.Fatal("fleet.pub was overwritten")
		}
	})

	// A folder of a newer format is refused.
	t.Run("newer format", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(data, "FORMAT"), []byte("storemesh data 99\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := storemesh(t, 30*time.Second, nil, "node", "--device", till1, "--data", data,
			"--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false")
		if code == 0 || !strings.Contains(stderr, "data format 99") {
			t.Fatalf("exit %d, stderr %q: want the newer format refused", code, stderr)
		}
	})

	// Its own device still starts on it, with its sale.
	if err := os.WriteFile(filepath.Join(data, "FORMAT"), []byte("storemesh data 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p = startProc(t, "node", "--device", till1, "--data", data)
	if n := len(p.sales()); n != 1 {
		t.Fatalf("till-1 restarted with %d sales, want 1", n)
	}
}

// TestCLIBusyPort: a --listen port already in use is a start-up error
// (libp2p's TCP transport used SO_REUSEPORT, so two processes listened on
// one port), and the failed start leaves no data folder behind.
func TestCLIBusyPort(t *testing.T) {
	_, enroll := newFleet(t)
	a := startProc(t, "node", "--device", enroll("till-a", "stall", "manager"), "--data", filepath.Join(t.TempDir(), "a"))
	var listen string
	for _, addr := range a.addrs {
		if strings.Contains(addr, "/tcp/") {
			listen = addr[:strings.Index(addr, "/p2p/")]
		}
	}
	if listen == "" {
		t.Fatalf("no tcp address in %v", a.addrs)
	}
	for _, c := range []struct{ name, flag, val, want string }{
		{"libp2p", "--listen", listen, "address already in use"},
		{"http", "--http", a.http, "address already in use"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "b")
			args := []string{"node", "--device", enroll("till-b-"+c.name, "stall", "terminal"), "--data", data, "--mdns=false",
				"--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"}
			args = append(args, c.flag, c.val) // the later flag wins
			_, stderr, code := storemesh(t, 30*time.Second, nil, args...)
			if code == 0 || !strings.Contains(stderr, c.want) {
				t.Fatalf("second node on %s %s: exit %d, stderr %q; want %q", c.flag, c.val, code, stderr, c.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				ents, _ := os.ReadDir(data)
				t.Fatalf("the failed start left its data folder behind (%v): %v", err, ents)
			}
		})
	}
}
