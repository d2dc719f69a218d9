package p2p

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"

	"storemesh/ledger"
	"storemesh/ledger/ledgertest"
	"storemesh/mesh"
)

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestAttackerOverLibp2p: a certified device turned hostile speaks raw
// frames to a victim holding a 20,000-op chain, over libp2p on loopback:
// a want storm (thousands of wants for the whole history, never
// acknowledged) and a held-ops flood (its own ops with the first one
// missing, so none can be placed). The victim's memory and CPU stay
// bounded (logged: the figures of docs/benchmarks.md), an honest peer
// keeps syncing through it, the held ops stay under the per-author bound,
// and the attacker is cut off and banned.
func TestAttackerOverLibp2p(t *testing.T) {
	ctx := context.Background()
	f := ledgertest.NewFleet(41)
	victim := lpStartNode(t, f, lpEnroll(f, 41, 0, "s1", ledger.RoleTerminal, lpName("victim")), "", nil)
	lpSell(t, victim, 20000)
	honest := lpStartNode(t, f, lpEnroll(f, 41, 1, "s1", ledger.RoleTerminal, lpName("honest")), "",
		func(c *Config) { c.Peers = []string{lpTCPAddr(t, victim)} })
	lpConverge(t, 60*time.Second, "s1", victim, honest)

	dev := lpEnroll(f, 41, 2, "s1", ledger.RoleTerminal, lpName("attacker"))
	al, err := f.Open(ctx, ledgertest.MemStore(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := victim.l.AddCertificate(ctx, dev.Cert.Encode()); err != nil {
		t.Fatal(err)
	}
	heap0, cpu0, start := heapInuse(), cpuTime(t), time.Now()

	h := lpRawHost(t, dev.Key)
	s := lpRawStream(t, h, victim)
	w := msgio.NewVarintWriter(s)
	if err := w.WriteMsg(lpHello(al, dev.Cert)); err != nil {
		t.Fatal(err)
	}
	// The held-ops flood: 3,000 of its own ops without seq 1.
	var ops [][]byte
	for range 3000 {
		o, err := al.Append(ctx, "s1", ledger.KindSale, ledgertest.Sale("TEA", 1, 350))
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, o.Raw())
	}
	sent := 0
	for i := 1; i < len(ops); i += 50 {
		if err := w.WriteMsg(mesh.OpsFrame("s1", nil, ops[i:min(i+50, len(ops))])); err != nil {
			break // cut off
		}
		sent++
	}
	// The want storm: the whole 20,000-op history, again and again, never
	// read nor acknowledged.
	wants := 0
	for range 5000 {
		if err := w.WriteMsg(mesh.WantFrame("s1", victim.dev.ID(), 0, 0)); err != nil {
			break
		}
		wants++
	}
	// Honest traffic goes on meanwhile.
	lpSell(t, victim, 1)
	lpConverge(t, 20*time.Second, "s1", victim, honest)

	lpWait(t, victim.m, 20*time.Second, "the attacker banned", func() bool { return victim.m.gater.Banned(h.ID()) != "" })
	lpWait(t, victim.m, 10*time.Second, "the attacker disconnected", func() bool {
		return victim.m.Host().Network().Connectedness(h.ID()) != network.Connected
	})
	cpu, wall, heap := cpuTime(t)-cpu0, time.Since(start), heapInuse()
	st := victim.l.Stats()
	t.Logf("attack: %d held-op frames and %d wants written before the cut; ban %q; victim held %d ops (%d bytes), heap %+.1f MiB (%.1f → %.1f), process CPU %v over %v wall",
		sent, wants, victim.m.gater.Banned(h.ID()), st.Held, st.HeldBytes,
		(float64(heap)-float64(heap0))/(1<<20), float64(heap0)/(1<<20), float64(heap)/(1<<20), cpu.Round(time.Millisecond), wall.Round(time.Millisecond))
	cfg := ledger.DefaultConfig()
	if st.HeldBytes > cfg.MaxHeldPerAuthor {
		t.Errorf("victim holds %d bytes of the attacker's ops, over the per-author bound %d", st.HeldBytes, cfg.MaxHeldPerAuthor)
	}
	if heap > heap0+64<<20 {
		t.Errorf("victim heap grew by %d MiB during the attack", (heap-heap0)>>20)
	}
	if got := victim.l.VersionVector("s1").Get(dev.ID()); got != 0 {
		t.Errorf("attacker's unlinked ops placed up to seq %d", got)
	}
}
