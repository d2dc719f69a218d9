package main

// Black-box tests: TestMain builds the real binary once; tests run it as
// separate processes on loopback with static peers only (--mdns=false:
// never mDNS outside a network namespace, TESTING.md).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "storemesh-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "storemesh")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// storemesh runs the binary to completion and returns stdout, stderr and
// the exit code.
func storemesh(t testing.TB, timeout time.Duration, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("storemesh %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("storemesh %v: timed out after %v\nstdout: %s\nstderr: %s", args, timeout, out.String(), errb.String())
	}
	return out.String(), errb.String(), code
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := storemesh(t, 30*time.Second, nil, args...)
	if code != 0 {
		t.Fatalf("storemesh %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

// proc is a running storemesh node or anchor.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	log    string
	http   string
	addrs  []string
	exited chan struct{} // closed when the process is gone; err is then set
	err    error
}

// startNode runs "storemesh node|anchor" with args plus a free HTTP port,
// a loopback listen address and no mDNS, and waits until it serves.
func startProc(t testing.TB, sub string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready.json")
	full := append([]string{sub, "--http", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false",
		"--ready-file", ready, "--log-level", "debug"}, args...)
	p := &proc{t: t, log: filepath.Join(dir, "log"), exited: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(binPath, full...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphans if the test binary dies
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); logf.Close(); close(p.exited) }()
	t.Cleanup(func() { p.stop(false) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil {
			var r struct {
				HTTP  string   `json:"http"`
				Addrs []string `json:"addrs"`
			}
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("ready file: %v", err)
			}
			p.http, p.addrs = r.HTTP, r.Addrs
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("storemesh %v exited before serving: %v\n%s", full, p.err, p.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("storemesh %v did not start\n%s", full, p.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// stop ends the process: SIGTERM (a clean shutdown, which must exit 0),
// or SIGKILL when kill is set. It returns once the process is gone.
func (p *proc) stop(kill bool) {
	select {
	case <-p.exited:
		return
	default:
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		if !kill && p.err != nil {
			p.t.Errorf("storemesh did not shut down cleanly: %v\n%s", p.err, p.logText())
		}
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("storemesh did not stop within 15 s of SIGTERM\n%s", p.logText())
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// do sends a JSON request to p and decodes the answer into out.
func (p *proc) do(method, path string, body any, out any, headers ...string) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+p.http+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return res.StatusCode, nil
}

func (p *proc) must(want int, method, path string, body any, out any, headers ...string) {
	p.t.Helper()
	var raw json.RawMessage
	code, err := p.do(method, path, body, &raw, headers...)
	if err != nil || code != want {
		p.t.Fatalf("%s %s: %d %v, want %d: %s", method, path, code, err, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			p.t.Fatal(err)
		}
	}
}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// newFleet makes a fleet with the CLI and enrolls devices: name → store/role.
func newFleet(t testing.TB) (fleet string, enroll func(name, store, role string) string) {
	dir := t.TempDir()
	fleet = filepath.Join(dir, "fleet")
	out := mustRun(t, "fleet", "init", "--dir", fleet)
	if !strings.HasPrefix(out, "fleet f") {
		t.Fatalf("fleet init printed %q, want the fleet id", out)
	}
	checkMode(t, filepath.Join(fleet, "fleet.key"), 0o600)
	return fleet, func(name, store, role string) string {
		dev := filepath.Join(dir, "dev-"+name)
		out := mustRun(t, "enroll", "--fleet", fleet, "--store", store, "--role", role, "--name", name, "--out", dev, "--days", "2")
		if !strings.HasPrefix(out, "device 12D3KooW") {
			t.Fatalf("enroll printed %q, want the device id", out)
		}
		checkMode(t, filepath.Join(dev, "device.key"), 0o600)
		return dev
	}
}

func checkMode(t testing.TB, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
	}
}
