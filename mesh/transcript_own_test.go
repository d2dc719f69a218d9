package mesh

import "fmt"

// own node=N
//
//	N's own chains: what it holds, what is known of each, and which one
//	it writes now.
func init() {
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
