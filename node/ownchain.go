package node

import (
	"log/slog"
	"sync"
	"time"

	"storemesh/ledger"
	"storemesh/mesh/p2p"
)

// The own chain and the disk, as status shows them (docs/design.md §7).

// pairRecord keeps the own-chain record in the data folder and a copy in
// the device folder. Load answers the further of the two per chain: a
// data folder put back from an older copy has a record as old as itself,
// but the device folder's copy remembers what this device really wrote.
// A save to the device folder that fails is logged once and never fails
// the ledger: only the data folder's record is the ledger's guarantee.
type pairRecord struct {
	data, device ledger.OwnRecord
	log          *slog.Logger
	warned       sync.Once
}

func (p *pairRecord) Load() (map[ledger.OwnChain]uint64, error) {
	m, err := p.data.Load()
	if err != nil {
		return nil, err
	}
	d, err := p.device.Load()
	if err != nil {
		p.log.Warn("device folder's own-chain record unreadable: ignored", "err", err)
		return m, nil
	}
	for k, v := range d {
		if v > m[k] {
			if m == nil {
				m = map[ledger.OwnChain]uint64{}
			}
			p.log.Warn("the device folder remembers more of this device's own chain than the data folder holds: the data folder is an older copy (restored?)",
				"scope", k.Scope, "chain", k.Chain, "data", m[k], "device", v)
			m[k] = v
		}
	}
	return m, nil
}

func (p *pairRecord) Save(m map[ledger.OwnChain]uint64) error {
	if err := p.data.Save(m); err != nil {
		return err
	}
	if err := p.device.Save(m); err != nil {
		p.warned.Do(func() { p.log.Warn("cannot update the device folder's own-chain record", "err", err) })
	}
	return nil
}

func (n *Node) diskFull() bool { return n.l.Stats().DiskFull }

type ownChainView struct {
	Scope    string `json:"scope"`
	Chain    string `json:"chain"` // the chain it writes: the device id, or an epoch of it (id~N)
	Epoch    uint64 `json:"epoch"` // 0 for the device's first chain
	Held     uint64 `json:"held"`
	Recorded uint64 `json:"recorded"`
	Missing  uint64 `json:"missing"`
	Source   string `json:"source,omitempty"`
	// WaitSeconds is, while Missing > 0, how long sales still wait for
	// peers to refill the chain before this device writes a new epoch.
	WaitSeconds float64 `json:"wait_seconds,omitempty"`
}

// ownChain is the own chain to show: the one missing the most, else the
// device's own store's.
func (n *Node) ownChain() *ownChainView {
	var v *ownChainView
	for _, c := range n.l.OwnChains() {
		if !c.Current {
			continue
		}
		if v == nil || c.Missing > v.Missing || (v.Missing == 0 && c.Missing == 0 && c.Scope == n.self.Store) {
			v = &ownChainView{Scope: c.Scope, Chain: c.Chain, Epoch: ledger.ChainEpoch(c.Chain), Held: c.Held,
				Recorded: c.Recorded, Missing: c.Missing, Source: c.Source, WaitSeconds: c.Wait.Round(time.Millisecond).Seconds()}
		}
	}
	if v == nil {
		v = &ownChainView{Scope: n.self.Store, Chain: n.self.Device}
	}
	return v

}

// copied reports whether some chain of this device is forked: another
// process wrote ops as this device.
func (n *Node) copied() bool {
	for _, f := range n.l.Forks() {
		if ledger.ChainOwner(f.Device) == n.self.Device {
			return true
		}
	}
	return false
}

type cloneView struct {
	Device    string    `json:"device"`
	Name      string    `json:"name,omitempty"`
	Store     string    `json:"store,omitempty"`
	Instances int       `json:"instances"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// clones names the devices the mesh saw running twice.
func (n *Node) clones(cs []p2p.Clone) []cloneView {
	out := make([]cloneView, 0, len(cs))
	for _, c := range cs {
		v := cloneView{Device: c.Device, Instances: c.Instances, FirstSeen: c.First.UTC(), LastSeen: c.Last.UTC()}
		if certs := n.l.Certificate(c.Device); len(certs) > 0 {
			v.Name, v.Store = certs[len(certs)-1].Name, certs[len(certs)-1].Store
		}
		out = append(out, v)
	}
	return out
}
