package mesh

// Golden transcripts of the session, in the style of etcd-io/raft's
// testdata: each mesh/testdata/*.txt file is a script of commands, each
// followed by "----" and the output it must give (frames out, counters).
// Run them with
//
//	go test ./mesh -run TestTranscripts
//
// and rewrite every expected output from what the code does now with
//
//	go test ./mesh -run TestTranscripts -rewrite
//
// then read the diff: a change in what the session sends shows up there.
//
// File format: a command is one line, "name key=value key=value ...";
// then a line "----"; then the expected output up to a blank line. Lines
// starting with '#' between commands are comments. Device ids print as
// the names given to them (v, a, ...), so transcripts are stable.
//
// Commands (add more with a file of your own that puts entries in
// transcriptCmds from an init func; each gets the world and the args):
//
//	node name=N store=S role=terminal|manager|anchor
//	    a replica with its own ledger (sessions are made by session).
//	device name=N store=S role=R
//	    a certified device the script plays by hand (an attacker or a peer):
//	    it has a ledger to sign its ops and statements, and no session.
//	sell node=N [n=K] [qty=Q]
//	    K local sales of Q units (default 1) at N; pushed to N's established sessions.
//	session node=N peer=P
//	    opens N's session towards P (a node or a device); prints N's frames.
//	connect a=N b=M
//	    sessions both ways between two nodes, frames pumped until quiet.
//	hello from=P to=N
//	    P's hello (its real certificate) stepped into N's session with P.
//	hello-raw from=P to=N fleet=F
//	    a hello claiming fleet F (refusal paths).
//	want from=P to=N device=D [scope=S] [after=A] [through=T] [repeat=K]
//	    K wants (default 1) stepped into N's session with P.
//	gap-ops from=P to=N [n=K] [skip=J] [per=L]
//	    P makes K sales of its own and sends all but the first J (default 1),
//	    L per frame (default 50): ops N must hold.
//	summary from=P to=N [scope=S] [vv=D:SEQ,...] [anchor=D:SEQ,...] [statement=signer:D:SEQ,...]
//	    a partial summary from P; anchor= is an unsigned claim of what HQ
//	    holds; statement= a statement signed by device signer (seq 1).
//	tick node=N [n=K]
//	    K ticks of every session of N; prints its frames.
//	pump
//	    delivers queued frames between nodes (connect) until quiet.
//	stats node=N peer=P
//	    the session's rejections, window and wants; the ledger's held ops;
//	    what N counts as queued for HQ.
//
// Frames print one per line: "N->P type scope details", with ops as
// device:first-last runs, and a closed session's error after "error:".

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of mesh/testdata transcripts")

// tw is the world of one transcript.
type tw struct {
	t     *testing.T
	h     *harness
	names map[string]string // device id → name
	ids   map[string]string // name → device id
	nodes map[string]*simNode
	devs  map[string]*ledgertest.Device
	dls   map[string]*ledger.Ledger // a hand-played device's own ledger
	sess  map[[2]string]*Session    // (node, peer) → session
	out   *strings.Builder
	queue []twFrame
}

type twFrame struct {
	from, to string
	b        []byte
}

// transcriptCmds are the commands a transcript may use.
var transcriptCmds = map[string]func(w *tw, a twArgs) error{}

type twArgs map[string]string

func (a twArgs) str(k, def string) string {
	if v, ok := a[k]; ok {
		return v
	}
	return def
}

func (a twArgs) num(k string, def uint64) uint64 {
	if v, ok := a[k]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err == nil {
			return n
		}
	}
	return def
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runTranscript(t, f) })
	}
}

func runTranscript(t *testing.T, path string) {
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &tw{t: t, h: newHarness(t, 77), names: map[string]string{}, ids: map[string]string{},
		nodes: map[string]*simNode{}, devs: map[string]*ledgertest.Device{}, dls: map[string]*ledger.Ledger{},
		sess: map[[2]string]*Session{}}
	var rewritten bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			rewritten.WriteString(line + "\n")
			continue
		}
		cmdLine := line
		lineNo := i + 1
		i++
		if i >= len(lines) || lines[i] != "----" {
			t.Fatalf("%s:%d: command without ----", path, lineNo)
		}
		var want []string
		for i+1 < len(lines) && lines[i+1] != "" {
			i++
			want = append(want, lines[i])
		}
		got := w.run(cmdLine)
		rewritten.WriteString(cmdLine + "\n----\n")
		if got != "" {
			rewritten.WriteString(got + "\n")
		}
		if !*rewrite && got != strings.Join(want, "\n") {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, lineNo, cmdLine, got, strings.Join(want, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, rewritten.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (w *tw) run(line string) string {
	f := strings.Fields(line)
	a := twArgs{}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		a[k] = v
	}
	cmd, ok := transcriptCmds[f[0]]
	if !ok {
		w.t.Fatalf("unknown command %q", f[0])
	}
	w.out = &strings.Builder{}
	if err := cmd(w, a); err != nil {
		fmt.Fprintf(w.out, "error: %v\n", err)
	}
	return strings.TrimRight(w.out.String(), "\n")
}

// name prints a device id (or a chain id) as its transcript name.
func (w *tw) name(id string) string {
	if n, ok := w.names[id]; ok {
		return n
	}
	if o := ledger.ChainOwner(id); o != id {
		return w.name(o) + id[len(o):]
	}
	return "?" + id[:min(len(id), 6)]
}

func (w *tw) id(name string) string {
	if id, ok := w.ids[name]; ok {
		return id
	}
	return name // an unknown name is used as is (junk device ids)
}

func (w *tw) enroll(a twArgs) *ledgertest.Device {
	d := w.h.fleet.Enroll(a.str("store", "s1"), ledger.Role(a.str("role", "terminal")))
	w.names[d.ID()], w.ids[a["name"]] = a["name"], d.ID()
	w.devs[a["name"]] = d
	return d
}

// session returns node n's session with p.
func (w *tw) session(n, p string) *Session {
	s := w.sess[[2]string{n, p}]
	if s == nil {
		w.t.Fatalf("no session %s->%s", n, p)
	}
	return s
}

// flush prints (and, between nodes, queues) what n's session with p made.
func (w *tw) flush(n, p string) {
	s := w.session(n, p)
	for _, b := range s.Ready() {
		fmt.Fprintf(w.out, "%s->%s %s\n", n, p, w.describeFrame(b))
		if _, isNode := w.nodes[p]; isNode {
			w.queue = append(w.queue, twFrame{n, p, b})
		}
	}
	if relay := s.TakeRelay(); len(relay) > 0 {
		for k, o := range w.sess {
			if k[0] == n && k[1] != p && o.Established() {
				if err := o.Push(w.h.ctx, relay); err != nil {
					w.t.Fatal(err)
				}
			}
		}
	}
}

// step delivers b from p into n's session with p and prints the outcome.
func (w *tw) step(p, n string, b []byte) error {
	err := w.session(n, p).Step(w.h.ctx, b)
	w.flush(n, p)
	return err
}

func (w *tw) describeFrame(b []byte) string {
	t, msg, err := decodeFrame(b)
	if err != nil {
		return "undecodable: " + err.Error()
	}
	switch m := msg.(type) {
	case *helloMsg:
		c, _ := ledger.DecodeCertificate(m.Cert)
		who := "?"
		if c != nil {
			who = w.name(c.Device)
		}
		return fmt.Sprintf("hello cert=%s all=%t scopes=%v", who, m.All, m.Scopes)
	case *summaryMsg:
		var sb strings.Builder
		fmt.Fprintf(&sb, "summary %s", m.Scope)
		if m.Partial {
			sb.WriteString(" partial")
		}
		fmt.Fprintf(&sb, " vv=%s", w.vv(m.VV))
		if len(m.Heads) > 0 {
			fmt.Fprintf(&sb, " heads=%d", len(m.Heads))
		}
		if len(m.Forks) > 0 {
			fmt.Fprintf(&sb, " forks=%d", len(m.Forks))
		}
		if m.Unsynced {
			sb.WriteString(" unsynced")
		}
		if m.Neighbors != nil {
			names := make([]string, len(m.Neighbors))
			for i, d := range m.Neighbors {
				names[i] = w.name(d)
			}
			fmt.Fprintf(&sb, " neighbors=%v", names)
		}
		for _, raw := range m.Statements {
			if st, _, _, err := DecodeStatement(raw); err == nil {
				fmt.Fprintf(&sb, " statement=%s:%s:%s", w.name(st.Anchor), st.Scope, w.vv(st.VV))
			}
		}
		if len(m.AnchorCerts) > 0 {
			fmt.Fprintf(&sb, " anchor_certs=%d", len(m.AnchorCerts))
		}
		return sb.String()
	case *opsMsg:
		var runs []string
		var dev string
		var first, last uint64
		for _, raw := range m.Ops {
			o, err := ledger.DecodeOp(raw)
			if err != nil {
				runs = append(runs, "?")
				continue
			}
			if o.Device == dev && o.Seq == last+1 {
				last = o.Seq
				continue
			}
			if dev != "" {
				runs = append(runs, fmt.Sprintf("%s:%d-%d", w.name(dev), first, last))
			}
			dev, first, last = o.Device, o.Seq, o.Seq
		}
		if dev != "" {
			runs = append(runs, fmt.Sprintf("%s:%d-%d", w.name(dev), first, last))
		}
		fresh := ""
		if m.Fresh {
			fresh = " fresh"
		}
		return fmt.Sprintf("ops %s%s n=%d certs=%d %s", m.Scope, fresh, len(m.Ops), len(m.Certs), strings.Join(runs, ","))
	case *wantMsg:
		return fmt.Sprintf("want %s %s (%d,%d]", m.Scope, w.name(m.Device), m.After, m.Through)
	case *byeMsg:
		return fmt.Sprintf("bye %s", m.Code)
	}
	return fmt.Sprintf("type %d", t)
}

func (w *tw) vv(vv crdt.VersionVector) string {
	keys := slices.Sorted(maps.Keys(vv))
	parts := make([]string, len(keys))
	for i, d := range keys {
		parts[i] = fmt.Sprintf("%s:%d", w.name(d), vv[d])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func (w *tw) parseVV(s string) crdt.VersionVector {
	vv := crdt.VersionVector{}
	if s == "" {
		return vv
	}
	for _, p := range strings.Split(s, ",") {
		d, n, _ := strings.Cut(p, ":")
		seq, _ := strconv.ParseUint(n, 10, 64)
		vv[w.id(d)] = seq
	}
	return vv
}

// pump delivers queued frames between nodes, in order, until quiet.
func (w *tw) pump() error {
	for len(w.queue) > 0 {
		f := w.queue[0]
		w.queue = w.queue[1:]
		if err := w.step(f.from, f.to, f.b); err != nil {
			return err
		}
	}
	return nil
}

func (w *tw) ledgerOf(name string) *ledger.Ledger {
	if n, ok := w.nodes[name]; ok {
		return n.l
	}
	if l, ok := w.dls[name]; ok {
		return l
	}
	w.t.Fatalf("no node or device %s", name)
	return nil
}

func init() {
	transcriptCmds["node"] = func(w *tw, a twArgs) error {
		d := w.enroll(a)
		w.nodes[a["name"]] = w.h.open(d)
		return nil
	}
	transcriptCmds["device"] = func(w *tw, a twArgs) error {
		d := w.enroll(a)
		l, err := ledgerOf(w.t, w.h, d)
		if err != nil {
			return err
		}
		w.dls[a["name"]] = l
		return nil
	}
	transcriptCmds["sell"] = func(w *tw, a twArgs) error {
		name := a["node"]
		l := w.ledgerOf(name)
		var ops []*ledger.Op
		for range a.num("n", 1) {
			o, err := l.Append(w.h.ctx, l.Self().Store, ledger.KindSale, ledgertest.Sale("TEA", int64(a.num("qty", 1)), 100))
			if err != nil {
				return err
			}
			ops = append(ops, o)
		}
		for k, s := range w.sess {
			if k[0] == name && s.Established() {
				if err := s.Push(w.h.ctx, ops); err != nil {
					return err
				}
				w.flush(k[0], k[1])
			}
		}
		fmt.Fprintf(w.out, "%s holds %s\n", name, w.vv(l.VersionVector(l.Self().Store)))
		return nil
	}
	transcriptCmds["session"] = func(w *tw, a twArgs) error {
		n, p := w.nodes[a["node"]], a["peer"]
		d := w.devs[p]
		s := NewSession(n.l, SessionConfig{RemoteID: d.ID(), RemotePub: d.Cert.PubKey, Now: w.h.clock, Found: "sim",
			Pulls: n.pulls, Anchor: n.anchors, Neighbors: n.near})
		w.sess[[2]string{a["node"], p}] = s
		s.Start(w.h.ctx)
		w.flush(a["node"], p)
		return nil
	}
	transcriptCmds["connect"] = func(w *tw, a twArgs) error {
		for _, p := range [][2]string{{a["a"], a["b"]}, {a["b"], a["a"]}} {
			if err := transcriptCmds["session"](w, twArgs{"node": p[0], "peer": p[1]}); err != nil {
				return err
			}
		}
		return w.pump()
	}
	transcriptCmds["pump"] = func(w *tw, a twArgs) error { return w.pump() }
	transcriptCmds["hello"] = func(w *tw, a twArgs) error {
		d := w.devs[a["from"]]
		return w.step(a["from"], a["to"], helloFrom(nil, d.Cert))
	}
	transcriptCmds["hello-raw"] = func(w *tw, a twArgs) error {
		d := w.devs[a["from"]]
		return w.step(a["from"], a["to"], encodeFrame(msgHello, &helloMsg{Fleet: a["fleet"], Cert: d.Cert.Encode()}))
	}
	transcriptCmds["want"] = func(w *tw, a twArgs) error {
		m := &wantMsg{Scope: a.str("scope", "s1"), Device: w.id(a["device"]), After: a.num("after", 0), Through: a.num("through", 0)}
		n := a.num("repeat", 1)
		frames := 0
		for k := uint64(0); k < n; k++ {
			before := w.out.Len()
			err := w.session(a["to"], a["from"]).Step(w.h.ctx, encodeFrame(msgWant, m))
			if k == 0 || err != nil {
				w.flush(a["to"], a["from"])
			} else {
				frames += len(w.session(a["to"], a["from"]).Ready())
			}
			_ = before
			if err != nil {
				fmt.Fprintf(w.out, "after %d wants (%d more frames out)\n", k+1, frames)
				return err
			}
		}
		if n > 1 {
			fmt.Fprintf(w.out, "after %d wants: %d more frames out\n", n, frames)
		}
		return nil
	}
	transcriptCmds["gap-ops"] = func(w *tw, a twArgs) error {
		p, n := a["from"], a["to"]
		l := w.ledgerOf(p)
		var raws [][]byte
		for range a.num("n", 10) {
			o, err := l.Append(w.h.ctx, l.Self().Store, ledger.KindSale, ledgertest.Sale("TEA", int64(a.num("qty", 1)), 100))
			if err != nil {
				return err
			}
			raws = append(raws, o.Raw())
		}
		raws = raws[a.num("skip", 1):]
		per := int(a.num("per", 50))
		s := w.session(n, p)
		for len(raws) > 0 {
			k := min(per, len(raws))
			if err := s.Step(w.h.ctx, encodeFrame(msgOps, &opsMsg{Scope: l.Self().Store, Ops: raws[:k], Fresh: true})); err != nil {
				w.flush(n, p)
				return err
			}
			s.Ready() // its wants for the missing history, one per frame
			raws = raws[k:]
		}
		st := w.nodes[n].l.Stats()
		fmt.Fprintf(w.out, "%s held=%d bytes=%d refused=%d evicted=%d expired=%d\n", n, st.Held, st.HeldBytes, st.HeldRefused, st.HeldEvicted, st.HeldExpired)
		return nil
	}
	transcriptCmds["summary"] = func(w *tw, a twArgs) error {
		m := &summaryMsg{Scope: a.str("scope", "s1"), VV: w.parseVV(a["vv"]), Partial: true}
		if v, ok := a["anchor"]; ok {
			m.Anchor, m.AnchorSeen = w.parseVV(v), w.h.now
		}
		if v, ok := a["statement"]; ok {
			signer, rest, _ := strings.Cut(v, ":")
			anchorName := signer
			if at, r, ok := strings.Cut(rest, "@"); ok { // statement=signer:anchor@D:SEQ
				anchorName, rest = at, r
			}
			raw, err := SignStatement(w.ledgerOf(signer), &AnchorStatement{Anchor: w.id(anchorName), Scope: m.Scope,
				VV: w.parseVV(rest), Clock: w.h.now, Seq: 1})
			if err != nil {
				return err
			}
			m.Statements = [][]byte{raw}
		}
		return w.step(a["from"], a["to"], encodeFrame(msgSummary, m))
	}
	transcriptCmds["tick"] = func(w *tw, a twArgs) error {
		for range a.num("n", 1) {
			w.h.now += 1e9
			for _, k := range slices.SortedFunc(maps.Keys(w.sess), func(x, y [2]string) int {
				return strings.Compare(x[0]+"/"+x[1], y[0]+"/"+y[1])
			}) {
				if k[0] != a["node"] {
					continue
				}
				if err := w.sess[k].Tick(context.Background()); err != nil {
					w.flush(k[0], k[1])
					return err
				}
				w.flush(k[0], k[1])
			}
		}
		return nil
	}
	transcriptCmds["stats"] = func(w *tw, a twArgs) error {
		n := w.nodes[a["node"]]
		s := w.session(a["node"], a["peer"])
		st := s.Stats()
		keys := slices.Sorted(maps.Keys(st.Rejected))
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, st.Rejected[k]))
		}
		b, jobs := s.Window()
		ls := n.l.Stats()
		store := n.l.Self().Store
		fmt.Fprintf(w.out, "rejected: %s\nwindow=%d wants=%d served=%d merged=%d\nheld=%d bytes=%d\nqueued_for_hq=%d hq_seen=%t established=%t\n",
			strings.Join(parts, " "), b, jobs, st.ServedBytes, st.WantsMerged, ls.Held, ls.HeldBytes,
			n.l.VersionVector(store).Beyond(n.anchors.Acked(store)), n.anchors.Seen() != 0, s.Established())
		if st.OwnAhead > 0 {
			fmt.Fprintf(w.out, "own_ahead=%d\n", st.OwnAhead)
		}
		return nil
	}
}
