// Package sinktest gives tests of the sinks the real services they need:
// a PostgreSQL database of their own on 127.0.0.1:5432 (dropped at the
// end), the shared Mosquitto on 127.0.0.1:1883, or a Mosquitto of their
// own on a free loopback port that the test may stop and start.
//
// A test that cannot reach a service skips with the marker
// "SINK SERVICE UNAVAILABLE", which CI greps and fails on: a sink test
// never passes silently without its service.
//
// Imports: pgx, the standard library. Only tests import it.
package sinktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Marker is what a skipped sink test prints; CI fails on it.
const Marker = "SINK SERVICE UNAVAILABLE"

// AdminURL is the machine's PostgreSQL (trust auth, database test).
// STOREMESH_TEST_PG overrides it.
func AdminURL() string {
	if u := os.Getenv("STOREMESH_TEST_PG"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// Unique returns a fresh lower-case name with prefix.
func Unique(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Database creates a database of the test's own and returns its URL; it
// is dropped (its connections closed first) when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Skipf("%s: PostgreSQL at %s: %v", Marker, AdminURL(), err)
	}
	defer admin.Close(context.Background())
	name := Unique("sinktest_")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cc, err := pgx.ParseConfig(AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cc.User, cc.Host, cc.Port, name)
}

// Connect opens a connection to url for the test's own queries.
func Connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// KillConnections terminates every backend of database db whose
// application_name is app (all of the database's when app is empty) and
// returns how many it killed.
func KillConnections(t testing.TB, db, app string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("admin connect: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	err = c.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND ($2 = '' OR application_name = $2) AND pid <> pg_backend_pid()`, db, app).Scan(&n)
	if err != nil {
		t.Fatalf("pg_terminate_backend: %v", err)
	}
	return n
}

// DBName is the database named by url.
func DBName(url string) string {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return ""
	}
	return cc.Database
}

// SharedBroker is the machine's Mosquitto. STOREMESH_TEST_MQTT overrides it.
// The test skips with the marker when it does not answer.
func SharedBroker(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("STOREMESH_TEST_MQTT")
	if addr == "" {
		addr = "127.0.0.1:1883"
	}
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Skipf("%s: Mosquitto at %s: %v", Marker, addr, err)
	}
	c.Close()
	return "tcp://" + addr
}

// Broker is a Mosquitto of the test's own on a loopback port.
type Broker struct {
	t    testing.TB
	bin  string
	conf string
	Addr string // host:port
	cmd  *exec.Cmd
	done chan struct{}
}

// URL is the broker's tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr }

// OwnBroker starts a Mosquitto on a free loopback port; Stop and Start
// restart it on the same port. It is stopped when the test ends.
func OwnBroker(t testing.TB) *Broker {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if p, err2 := exec.LookPath("mosquitto"); err2 == nil {
			bin = p
		} else {
			t.Skipf("%s: no mosquitto binary: %v", Marker, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	body := strings.Join([]string{
		"listener " + port + " 127.0.0.1",
		"allow_anonymous true",
		// Persistent, saved on every change: the test's own subscriber
		// keeps its session and queued messages across a restart.
		"persistence true",
		"persistence_location " + dir + "/",
		"autosave_on_changes true",
		"autosave_interval 1",
		"log_dest file " + filepath.Join(dir, "mosquitto.log"),
		// No cap on what waits for a slow subscriber: by default
		// Mosquitto drops QoS 1 messages past 1,000 queued for a client
		// ("Outgoing messages are being dropped"), which a test's own
		// subscriber under -race hits when the sink catches up a backlog.
		"max_queued_messages 0",
		"",
	}, "\n")
	if os.Geteuid() == 0 { // else mosquitto drops to its own user, who cannot write the test's folder
		body += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Broker{t: t, bin: bin, conf: conf, Addr: addr}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start runs the broker and waits until it accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		b.t.Skipf("%s: start mosquitto: %v", Marker, err)
	}
	b.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(b.cmd, b.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-b.done:
			b.t.Fatalf("mosquitto -c %s exited at start", b.conf)
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto on %s did not start", b.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the broker (SIGTERM, as a service restart does) and waits.
func (b *Broker) Stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
}
