package p2p

// Real processes in network namespaces (TESTING.md): three terminals on
// one bridge find each other by mDNS only, survive a cable pull, and relay
// to an anchor that only one of them can reach. Each node is this test
// binary re-executed inside its namespace (TestNetnsChild), driven over a
// line protocol on stdin/stdout.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

const (
	nsSeed      = 61
	nsAnchorIdx = 9
	nsReply     = "SM> "
)

func nsRun(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nsTeardown(names ...string) {
	for _, ns := range names {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

var nsLeftover = regexp.MustCompile(`^smt(\d+)_\w+`)

// nsCleanLeftovers removes namespaces of earlier runs whose test process
// is gone (a crashed run); a concurrent run's namespaces stay.
func nsCleanLeftovers() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		name := fields[0]
		m := nsLeftover.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if syscall.Kill(pid, 0) == nil {
			continue
		}
		nsTeardown(name)
	}
}

// nsProc is one node process and its control channel.
type nsProc struct {
	name  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	mu    sync.Mutex
	log   strings.Builder
}

func nsStart(t *testing.T, ns, name string, env map[string]string) *nsProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^TestNetnsChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SM_NETNS_CHILD=1", "SM_NAME="+name)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &nsProc{name: name, cmd: cmd, lines: make(chan string, 64)}
	if p.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nsLogWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), nsReply); ok {
				p.lines <- l
			}
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("---- log of %s ----\n%s", p.name, p.log.String())
			p.mu.Unlock()
		}
	})
	return p
}

type nsLogWriter struct{ p *nsProc }

func (w nsLogWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.log.Len() < 4<<20 {
		w.p.log.Write(b)
	}
	return len(b), nil
}

// call sends one command and returns its one-line answer.
func (p *nsProc) call(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		t.Fatalf("%s: %s: %v", p.name, cmd, err)
	}
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("%s exited during %q", p.name, cmd)
		}
		if strings.HasPrefix(l, "error ") {
			t.Fatalf("%s: %s: %s", p.name, cmd, l)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer to %q", p.name, cmd)
	}
	return ""
}

func (p *nsProc) status(t *testing.T) nsStatus {
	var st nsStatus
	if err := json.Unmarshal([]byte(p.call(t, "status")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

type nsStatus struct {
	Status Status       `json:"status"`
	Peers  []PeerStatus `json:"peers"`
}

// established counts peers with a session, found by how.
func (s nsStatus) established(found string) int {
	n := 0
	for _, p := range s.Peers {
		if p.Established && p.Found == found {
			n++
		}
	}
	return n
}

func nsEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond) // polling another process; the condition decides
	}
}

// TestNetnsMDNSPartitionAnchor is the LAN scenario of docs/design.md §4 with real
// processes: discovery by mDNS only, a cable pull with sales on both
// sides, a heal with exact totals, and an anchor reached through one
// terminal's uplink.
func TestNetnsMDNSPartitionAnchor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("NETNS UNAVAILABLE: not root; namespace tests need root (CI runs them as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("NETNS UNAVAILABLE: no ip command (apt-get install -y iproute2)")
	}
	nsCleanLeftovers()
	P := fmt.Sprintf("smt%d", os.Getpid())
	br, a, b, c, d := P+"_br", P+"_a", P+"_b", P+"_c", P+"_d"
	all := []string{a, b, c, d, br}
	nsTeardown(all...)
	if err := nsRun("netns", "add", br); err != nil {
		t.Skip("NETNS UNAVAILABLE: " + err.Error())
	}
	t.Cleanup(func() { nsTeardown(all...) })
	must := func(args ...string) {
		t.Helper()
		if err := nsRun(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("-n", br, "link", "set", "lo", "up")
	must("-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	must("-n", br, "link", "set", "br0", "up")
	for i, n := range []string{a, b, c} {
		v := "v" + string(rune('a'+i))
		must("netns", "add", n)
		must("-n", n, "link", "set", "lo", "up")
		must("-n", br, "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", n)
		must("-n", br, "link", "set", v, "master", "br0", "up")
		must("-n", n, "addr", "add", fmt.Sprintf("10.213.0.1%d/24", i+1), "dev", "eth0")
		must("-n", n, "link", "set", "eth0", "up")
		must("-n", n, "route", "add", "224.0.0.0/4", "dev", "eth0") // mDNS
	}
	// The anchor "in the cloud": its own namespace, joined to a only.
	must("netns", "add", d)
	must("-n", d, "link", "set", "lo", "up")
	must("-n", a, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", d)
	must("-n", a, "addr", "add", "10.214.0.1/24", "dev", "up0")
	must("-n", a, "link", "set", "up0", "up")
	must("-n", d, "addr", "add", "10.214.0.2/24", "dev", "eth0")
	must("-n", d, "link", "set", "eth0", "up")

	anchorID, err := DeviceID(lpKey(nsSeed, nsAnchorIdx))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := func(idx int, extra ...string) map[string]string {
		e := map[string]string{
			"SM_INDEX":  strconv.Itoa(idx),
			"SM_DATA":   fmt.Sprintf("%s/n%d", dir, idx),
			"SM_LISTEN": "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1",
		}
		for i := 0; i+1 < len(extra); i += 2 {
			e[extra[i]] = extra[i+1]
		}
		return e
	}
	hq := nsStart(t, d, "anchor", env(nsAnchorIdx, "SM_ROLE", "anchor"))
	ta := nsStart(t, a, "a", env(0, "SM_MDNS", "eth0", "SM_ANCHOR", "/ip4/10.214.0.2/tcp/4001/p2p/"+anchorID))
	tb := nsStart(t, b, "b", env(1, "SM_MDNS", "eth0"))
	tc := nsStart(t, c, "c", env(2, "SM_MDNS", "eth0"))
	terms := []*nsProc{ta, tb, tc}
	nodes := []*nsProc{ta, tb, tc, hq}
	for _, p := range nodes {
		p.call(t, "ping")
	}

	// Discovery by mDNS only: every terminal syncs with the other two.
	phase := time.Now()
	nsEventually(t, 20*time.Second, "mDNS discovery", func() bool {
		for _, p := range terms {
			if p.status(t).established(FoundMDNS) != 2 {
				return false
			}
		}
		return ta.status(t).established(FoundAnchor) == 1
	})

	t.Logf("mDNS discovery and sessions: %v", time.Since(phase))
	sold := map[*nsProc]int{}
	sell := func(p *nsProc, n int) {
		p.call(t, fmt.Sprintf("sell %d", n))
		sold[p] += n
	}
	total := func() int { return sold[ta] + sold[tb] + sold[tc] }
	// converged waits until nodes agree on the digest and hold want sales.
	converged := func(what string, want int, ps ...*nsProc) {
		t.Helper()
		nsEventually(t, 30*time.Second, what, func() bool {
			first := ""
			for i, p := range ps {
				d := p.call(t, "digest s1")
				if i == 0 {
					first = d
				} else if d != first {
					return false
				}
			}
			return true
		})
		for _, p := range ps {
			var sales, onHand int
			fmt.Sscan(p.call(t, "count"), &sales, &onHand)
			if sales != want || onHand != 1000-want {
				t.Fatalf("%s after %s: %d sales, %d on hand; want %d and %d", p.name, what, sales, onHand, want, 1000-want)
			}
		}
	}

	ta.call(t, "receive 1000")
	for _, p := range terms {
		sell(p, 10)
	}
	converged("first sync", total(), nodes...)

	// Cable pull: b is cut off; both sides keep selling.
	must("-n", br, "link", "set", "vb", "down")
	sell(ta, 15)
	sell(tb, 25)
	sell(tc, 5)
	converged("a and c while b is away", sold[ta]+sold[tc]+10, ta, tc, hq)
	var bs int
	fmt.Sscan(tb.call(t, "count"), &bs)
	if bs != sold[tb]+20 {
		t.Fatalf("b holds %d sales while cut off, want %d", bs, sold[tb]+20)
	}
	phase = time.Now()
	nsEventually(t, 20*time.Second, "a notices b is gone", func() bool {
		for _, p := range ta.status(t).Peers {
			if p.Name == "b" && !p.Connected {
				return true
			}
		}
		return false
	})

	t.Logf("a noticed b gone: %v after the sales", time.Since(phase))
	// Heal: everything converges, exact totals, on the anchor too.
	must("-n", br, "link", "set", "vb", "up")
	phase = time.Now()
	converged("heal", total(), nodes...)
	t.Logf("heal to convergence of 4 nodes: %v", time.Since(phase))
	// The anchor's acknowledgement reaches the terminal with the uplink.
	nsEventually(t, 15*time.Second, "a's queue to the anchor drains", func() bool {
		return ta.status(t).Status.QueuedForAnchor == 0
	})
	if st := tb.status(t); st.established(FoundAnchor) != 0 {
		t.Fatalf("b reached the anchor directly: %+v", st)
	}
	for _, p := range nodes {
		p.call(t, "quit")
	}
}

// TestNetnsChild is a node process of TestNetnsMDNSPartitionAnchor. It
// reads commands on stdin and answers one line each, prefixed "SM> ".
func TestNetnsChild(t *testing.T) {
	if os.Getenv("SM_NETNS_CHILD") == "" {
		t.Skip("helper process of TestNetnsMDNSPartitionAnchor")
	}
	ctx := context.Background()
	idx, _ := strconv.Atoi(os.Getenv("SM_INDEX"))
	name := os.Getenv("SM_NAME")
	f := ledgertest.NewFleet(nsSeed)
	store, role := "s1", ledger.RoleTerminal
	if os.Getenv("SM_ROLE") == "anchor" {
		store, role = ledger.FleetScope, ledger.RoleAnchor
	}
	dev := lpEnroll(f, nsSeed, idx, store, role, lpName(name))
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	bs, err := ledger.OpenBadger(os.Getenv("SM_DATA"))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	lcfg := f.Config(dev, nil)
	lcfg.Now = func() int64 { return lpNow().UnixNano() }
	lcfg.Logger = logger
	l, err := ledger.Open(ctx, bs, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := DefaultConfig()
	cfg.Key, cfg.Ledger, cfg.Now, cfg.Logger = dev.Key, l, lpNow, logger
	cfg.Listen = strings.Split(os.Getenv("SM_LISTEN"), ",")
	if a := os.Getenv("SM_ANCHOR"); a != "" {
		cfg.Anchors = []string{a}
	}
	if iface := os.Getenv("SM_MDNS"); iface != "" {
		cfg.MDNS, cfg.MDNSInterface = true, iface
	}
	m, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, args ...any) {
		fmt.Fprintf(out, nsReply+format+"\n", args...)
		out.Flush()
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) int {
			if len(f) <= i {
				return 0
			}
			n, _ := strconv.Atoi(f[i])
			return n
		}
		switch f[0] {
		case "ping":
			reply("pong %s", m.ID())
		case "sell":
			var err error
			for range arg(1) {
				if _, err = l.Append(ctx, store, ledger.KindSale, ledgertest.Sale("TEA", 1, 350)); err != nil {
					break
				}
			}
			if err != nil {
				reply("error %v", err)
			} else {
				reply("ok")
			}
		case "receive":
			if _, err := l.Append(ctx, store, ledger.KindStockReceived, &ledger.StockReceived{SKU: "TEA", Qty: int64(arg(1))}); err != nil {
				reply("error %v", err)
			} else {
				reply("ok")
			}
		case "digest":
			reply("%s", l.Digest(f[1]))
		case "count":
			reply("%d %d", len(l.Sales("s1")), l.OnHand("s1", "TEA"))
		case "status":
			b, _ := json.Marshal(nsStatus{Status: m.Status(), Peers: m.Peers()})
			reply("%s", b)
		case "quit":
			reply("bye")
			return
		default:
			reply("error unknown command %q", f[0])
		}
	}
}
