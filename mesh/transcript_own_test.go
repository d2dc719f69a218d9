package mesh

import (
	"fmt"

	"storemesh/ledger"
)

// own node=N
//
//	N's own chains: what it holds, what is known of each, and which one
//	it writes now.
//
// clone node=N name=C
//
//	a second process of N's device: its own ledger, holding a copy of
//	N's ops now. Its device prints as N's.
func init() {
	transcriptCmds["clone"] = func(w *tw, a twArgs) error {
		src := w.nodes[a["node"]]
		d := w.devs[a["node"]]
		c := w.h.open(d)
		for _, sc := range []string{d.Cert.Store, ledger.FleetScope} {
			err := src.l.Ops(w.h.ctx, sc, c.l.VersionVector(sc), 1<<20, func(b []ledger.RawOp) error {
				raws := make([][]byte, len(b))
				for i, r := range b {
					raws[i] = r.Bytes
				}
				_, err := c.l.ApplyBatch(w.h.ctx, raws)
				return err
			})
			if err != nil {
				return err
			}
		}
		w.nodes[a["name"]], w.devs[a["name"]], w.ids[a["name"]] = c, d, d.ID()
		return nil
	}
	transcriptCmds["own"] = func(w *tw, a twArgs) error {
		for _, c := range w.ledgerOf(a["node"]).OwnChains() {
			cur := ""
			if c.Current {
				cur = " current"
			}
			fmt.Fprintf(w.out, "%s %s held=%d known=%d source=%q%s\n", c.Scope, w.name(c.Chain), c.Held, c.Recorded, c.Source, cur)
		}
		return nil
	}
}
