package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"storemesh/ledger"
)

// demoReport is what the demo found.
type demoReport struct {
	Fleet       string
	Sales       map[string]storeSales
	Stock       []ledger.StockItem // as HQ holds it
	Conflicts   []ledger.Conflict
	CutFor      time.Duration
	CutSales    int // sales the cut store took offline
	Converged   bool
	ConvergeErr error
	ConvergedIn time.Duration // from the heal until every replica agreed
	Acked       bool
	AckedIn     time.Duration // from the heal until no terminal had sales queued for HQ
	HealBytes   uint64
	TotalBytes  uint64
	Digests     map[string]map[string]int // scope → digest → replicas
	Elapsed     time.Duration
	Pages       [][2]string
}

type storeSales struct {
	Count int
	Total int64
}

func (d *demo) collect() {
	r := &d.rep
	hq := d.hq.n.Ledger()
	r.Sales = map[string]storeSales{}
	for _, s := range hq.Sales("") {
		ss := r.Sales[s.Store]
		ss.Count++
		ss.Total += s.Total - s.Refunded
		r.Sales[s.Store] = ss
		if s.Store == d.cutStore && s.Offline {
			r.CutSales++
		}
	}
	r.Stock = hq.Stock("")
	r.Conflicts = hq.Conflicts("")
	r.TotalBytes = d.bytesSynced()
	r.Digests = map[string]map[string]int{}
	for scope, ls := range d.replicas() {
		r.Digests[scope] = map[string]int{}
		for _, l := range ls {
			r.Digests[scope][l.Digest(scope)]++
		}
	}
	for _, dn := range d.all {
		r.Pages = append(r.Pages, [2]string{dn.name, dn.n.URL()})
	}
}

func (d *demo) printReport(w io.Writer, dir string, kept bool) {
	r := &d.rep
	fmt.Fprintf(w, "storemesh demo: fleet %s, %d stores × %d terminals + 1 anchor, real libp2p on 127.0.0.1, badger in %s\n\n",
		r.Fleet, len(d.stores), len(d.byStore[d.stores[0]]), dir)
	for _, s := range d.stores {
		ss := r.Sales[s]
		fmt.Fprintf(w, "  sales       %-6s %4d sales, %s EUR\n", s, ss.Count, money(ss.Total))
	}
	for _, s := range d.stores {
		var parts []string
		for _, it := range r.Stock {
			if it.Store == s {
				parts = append(parts, fmt.Sprintf("%s %d", it.SKU, it.OnHand))
			}
		}
		fmt.Fprintf(w, "  stock       %-6s %s\n", s, strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "  partition   %s cut off from HQ for %s; %d sales taken offline there\n", d.cutStore, r.CutFor.Round(time.Millisecond), r.CutSales)
	if r.Converged {
		fmt.Fprintf(w, "  heal        converged %s after the heal; %s synced after it, %s in all\n",
			r.ConvergedIn.Round(time.Millisecond), bytesIEC(r.HealBytes), bytesIEC(r.TotalBytes))
	} else {
		fmt.Fprintf(w, "  heal        NOT converged %s after the heal: %v\n", r.ConvergedIn.Round(time.Millisecond), r.ConvergeErr)
	}
	if r.Acked {
		fmt.Fprintf(w, "  uplink      HQ acknowledged every terminal's sales %s after the heal (0 queued)\n", r.AckedIn.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "  uplink      NOT every terminal knows HQ holds its sales %s after the heal (some still show sales queued)\n", r.AckedIn.Round(time.Millisecond))
	}
	open := 0
	for _, c := range r.Conflicts {
		if c.Resolution == nil {
			open++
		}
	}
	fmt.Fprintf(w, "  conflicts   %d found, %d open\n", len(r.Conflicts), open)
	for _, c := range r.Conflicts {
		fmt.Fprintf(w, "              %s %s in %s: %d oversold by sale %s (on hand %d)\n", c.Kind, c.SKU, c.Store, c.Oversold, c.Sale[:8], c.OnHand)
	}
	scopes := make([]string, 0, len(r.Digests))
	for s := range r.Digests {
		scopes = append(scopes, s)
	}
	slices.Sort(scopes)
	for _, s := range scopes {
		n, kinds := 0, len(r.Digests[s])
		for _, k := range r.Digests[s] {
			n += k
		}
		state := "same digest"
		if kinds != 1 {
			state = fmt.Sprintf("%d DIFFERENT digests", kinds)
		}
		fmt.Fprintf(w, "  converged   scope %-6s %d replicas, %s\n", s, n, state)
	}
	verdict := "every replica converged"
	if !r.Converged {
		verdict = "NOT converged"
	}
	fmt.Fprintf(w, "  result      %s (demo took %s)\n", verdict, r.Elapsed.Round(100*time.Millisecond))
	if kept {
		fmt.Fprintln(w, "\nterminal pages:")
		for _, p := range r.Pages {
			fmt.Fprintf(w, "  %-8s %s\n", p[0], p[1])
		}
	}
}

func money(minor int64) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d", sign, minor/100, minor%100)
}

func bytesIEC(b uint64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
