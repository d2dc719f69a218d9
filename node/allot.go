package node

import (
	"context"
	"errors"
	"net/http"
	"time"

	"storemesh/ledger"
)

// Stock allotments (issue 14): the node drives the ledger's AllotReactor
// (requests when this device runs low, answers from its surplus) on every
// durable batch and on a short tick, and serves the allotment routes.

// allotTick is how often the reactor runs with nothing new: staggered
// answers (ledger.ReactorConfig.Stagger) are due on a tick.
const allotTick = 50 * time.Millisecond

func (n *Node) startAllot(ctx context.Context) {
	r, err := ledger.NewAllotReactor(ledger.DefaultReactorConfig())
	if err != nil {
		n.log.Error("allotment reactor", "err", err)
		return
	}
	kick := make(chan struct{}, 1)
	unsub := n.l.Subscribe(func([]*ledger.Op) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer unsub()
		t := time.NewTicker(allotTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-t.C:
			}
			if _, err := n.l.React(ctx, r, n.cfg.Now().UnixNano()); err != nil && ctx.Err() == nil {
				n.log.Warn("allotment reactor", "err", err)
			}
		}
	}()
}

// allotView is an allotted SKU as the API shows it.
type allotView struct {
	Store     string          `json:"store"`
	SKU       string          `json:"sku"`
	Allotted  bool            `json:"allotted"`
	Epoch     string          `json:"epoch,omitempty"`
	Total     int64           `json:"total"`
	Here      int64           `json:"here"`      // units this device holds
	AtHQ      int64           `json:"at_hq"`     // units held by anchors
	Elsewhere []allotHolderV  `json:"elsewhere"` // other devices holding units, most first
	Overspent []allotHolderV  `json:"overspent,omitempty"`
	Requests  []allotRequestV `json:"requests,omitempty"`
}

type allotHolderV struct {
	Device string `json:"device"`
	Name   string `json:"name"`
	Units  int64  `json:"units"`
}

type allotRequestV struct {
	Device string `json:"device"`
	Want   int64  `json:"want"`
}

func (n *Node) allotView(st ledger.AllotStatus) allotView {
	me := ledger.ChainOwner(n.self.Device)
	v := allotView{Store: st.Store, SKU: st.SKU, Allotted: st.Allotted, Epoch: st.Epoch, Total: st.Total,
		Here: st.Rights(me), Elsewhere: []allotHolderV{}}
	for _, h := range st.Holders {
		if h.Role == ledger.RoleAnchor {
			v.AtHQ += h.Units
		}
		if h.Device != me {
			v.Elsewhere = append(v.Elsewhere, allotHolderV{Device: h.Device, Name: h.Label(), Units: h.Units})
		}
	}
	for _, h := range st.Overspent {
		v.Overspent = append(v.Overspent, allotHolderV{Device: h.Device, Name: h.Label(), Units: h.Units})
	}
	for _, q := range st.Requests {
		v.Requests = append(v.Requests, allotRequestV{Device: q.Device, Want: q.Want})
	}
	return v
}

// stockView is a GET /v1/stock item: the counter and, for an allotted
// SKU, where its units are.
type stockView struct {
	ledger.StockItem
	Allotment *allotView `json:"allotment,omitempty"`
}

func (n *Node) stockViews(items []ledger.StockItem, scope string) []stockView {
	byKey := map[[2]string]ledger.AllotStatus{}
	for _, st := range n.l.Allotments(scope) {
		byKey[[2]string{st.Store, st.SKU}] = st
	}
	out := make([]stockView, len(items))
	for i, it := range items {
		out[i].StockItem = it
		if st, ok := byKey[[2]string{it.Store, it.SKU}]; ok {
			v := n.allotView(st)
			out[i].Allotment = &v
		}
	}
	return out
}

func (n *Node) handleListAllotments(w http.ResponseWriter, r *http.Request) error {
	scope, err := n.readScope(r)
	if err != nil {
		return err
	}
	out := []allotView{}
	for _, st := range n.l.Allotments(scope) {
		out = append(out, n.allotView(st))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

type allotReq struct {
	Store    string `json:"store"` // anchors only
	Allotted *bool  `json:"allotted"`
}

// handlePutAllotment marks a SKU of a store allotted or ordinary
// (allot.set, manager or anchor). Marking it allotted gives every unit
// this replica counts to this device (the store's bank when an anchor);
// the reactors then move them to the terminals that sell.
func (n *Node) handlePutAllotment(w http.ResponseWriter, r *http.Request) error {
	if err := n.mayManage("allotments"); err != nil {
		return err
	}
	sku := r.PathValue("sku")
	if !ledger.ValidSKU(sku) {
		return apiErr(CodeBadSKU, "SKU %q: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", sku)
	}
	var req allotReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	if req.Allotted == nil {
		return apiErr(CodeMissingField, "allotted (true or false) is required")
	}
	store, err := n.writeStore(req.Store)
	if err != nil {
		return err
	}
	if _, ok := n.catalogMap()[sku]; !ok {
		return apiErr(CodeUnknownSKU, "%q is not in the catalog", sku)
	}
	if n.l.Allotted(store, sku) != *req.Allotted {
		if _, err := n.l.Append(context.WithoutCancel(r.Context()), store, ledger.KindAllotSet, &ledger.AllotSet{SKU: sku, Allotted: *req.Allotted}); err != nil {
			return err
		}
	}
	st, _ := n.l.Allotment(store, sku)
	st.Store, st.SKU, st.Allotted = store, sku, *req.Allotted
	writeJSON(w, http.StatusOK, n.allotView(st))
	return nil
}

type writeoffReq struct {
	Store  string      `json:"store"` // anchors only
	Device string      `json:"device"`
	Units  *jsonNumber `json:"units"` // default: every unit the device holds
	Reason string      `json:"reason"`
}

// handleWriteoff reclaims the units a revoked, lost or silent device holds
// (allot.writeoff, manager or anchor), crediting this device.
func (n *Node) handleWriteoff(w http.ResponseWriter, r *http.Request) error {
	if err := n.mayManage("allotments"); err != nil {
		return err
	}
	sku := r.PathValue("sku")
	var req writeoffReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	if req.Device == "" {
		return apiErr(CodeMissingField, "device is required")
	}
	if len(req.Reason) > 500 {
		return apiErr(CodeFieldTooLong, "reason is longer than 500 bytes")
	}
	store, err := n.writeStore(req.Store)
	if err != nil {
		return err
	}
	st, ok := n.l.Allotment(store, sku)
	if !ok {
		return apiErr(CodeNotFound, "%s is not allotted in %s", sku, store)
	}
	held := st.Rights(req.Device)
	units := held
	if req.Units != nil {
		if units, err = intField(req.Units, "units", CodeBadQuantity, 1, ledger.MaxQty); err != nil {
			return err
		}
	}
	if units < 1 || units > held {
		return apiErr(CodeBadQuantity, "%s holds %d units of %s; cannot write off %d", req.Device, held, sku, units)
	}
	chain := req.Device
	seq := n.l.Seq(store, chain)
	_, err = n.l.Append(context.WithoutCancel(r.Context()), store, ledger.KindAllotWriteoff, &ledger.AllotWriteoff{
		SKU: sku, Epoch: st.Epoch, Device: req.Device, Units: units, Chain: chain, Seq: seq, Reason: req.Reason})
	if err != nil {
		return err
	}
	st, _ = n.l.Allotment(store, sku)
	writeJSON(w, http.StatusCreated, n.allotView(st))
	return nil
}

// allotErr maps the ledger's refusal to the API's code; nil for another
// error.
func allotErr(err error) *apiError {
	if !errors.Is(err, ledger.ErrAllotmentExhausted) {
		return nil
	}
	return &apiError{Code: CodeAllotmentExhausted, Message: err.Error(), Err: err}
}
