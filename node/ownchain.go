package node

// The own chain and the disk, as status shows them (docs/design.md §7).

func (n *Node) diskFull() bool { return n.l.Stats().DiskFull }

type ownChainView struct {
	Scope    string `json:"scope"`
	Held     uint64 `json:"held"`
	Recorded uint64 `json:"recorded"`
	Missing  uint64 `json:"missing"`
	Source   string `json:"source,omitempty"`
}

// ownChain is the own chain to show: the one missing the most, else the
// device's own store's.
func (n *Node) ownChain() *ownChainView {
	var v *ownChainView
	for _, c := range n.l.OwnChains() {
		if v == nil || c.Missing > v.Missing || (v.Missing == 0 && c.Missing == 0 && c.Scope == n.self.Store) {
			v = &ownChainView{Scope: c.Scope, Held: c.Held, Recorded: c.Recorded, Missing: c.Missing, Source: c.Source}
		}
	}
	if v == nil {
		v = &ownChainView{Scope: n.self.Store}
	}
	return v

}
