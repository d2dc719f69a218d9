package node

import (
	"context"
	"net/http"

	"storemesh/ledger"
)

type stockReq struct {
	Store  string      `json:"store"` // anchors only
	SKU    string      `json:"sku"`
	Qty    *jsonNumber `json:"qty"`     // received
	OnHand *jsonNumber `json:"on_hand"` // counted
}

type stockResult struct {
	Store  string `json:"store"`
	SKU    string `json:"sku"`
	OnHand int64  `json:"on_hand"`
	OpID   string `json:"op_id"`
	Device string `json:"device"`
	Seq    uint64 `json:"seq"`
}

func (n *Node) handleStockReceived(w http.ResponseWriter, r *http.Request) error {
	return n.stockWrite(w, r, ledger.KindStockReceived)
}

func (n *Node) handleStockCounted(w http.ResponseWriter, r *http.Request) error {
	return n.stockWrite(w, r, ledger.KindStockCounted)
}

// stockWrite records a delivery (stock.received) or a physical count
// (stock.counted: the counter moves by on_hand minus what this replica
// shows now, so concurrent sales elsewhere are not erased).
func (n *Node) stockWrite(w http.ResponseWriter, r *http.Request, kind ledger.Kind) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req stockReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	store, err := n.writeStore(req.Store)
	if err != nil {
		return err
	}
	if req.SKU == "" {
		return apiErr(CodeMissingField, "sku is required")
	}
	if _, ok := n.catalogMap()[req.SKU]; !ok {
		return apiErr(CodeUnknownSKU, "%q is not in the catalog", req.SKU)
	}
	var qty int64
	if kind == ledger.KindStockReceived {
		qty, err = intField(req.Qty, "qty", CodeBadQuantity, 1, ledger.MaxQty)
	} else {
		qty, err = intField(req.OnHand, "on_hand", CodeBadQuantity, 0, ledger.MaxQty*1000)
	}
	if err != nil {
		return err
	}
	unlock := n.keys.lock(key)
	defer unlock()
	if saleID, prior, found := n.priorWrite(key); found {
		if saleID != "" || prior.Kind != kind || !sameStock(prior, store, req.SKU, qty) {
			return apiErr(CodeIdempotencyConflict, "Idempotency-Key %q was already used for a different request (%s)", key, describePrior(saleID, prior))
		}
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusCreated, stockResult{Store: store, SKU: req.SKU, OnHand: n.l.OnHand(store, req.SKU),
			OpID: prior.ID, Device: n.self.Device, Seq: prior.Seq})
		return nil
	}
	var body any
	if kind == ledger.KindStockReceived {
		body = &ledger.StockReceived{SKU: req.SKU, Qty: qty, Ref: key}
	} else {
		body = &ledger.StockCounted{SKU: req.SKU, OnHand: qty, Seen: n.l.OnHand(store, req.SKU), Ref: key}
	}
	o, err := n.l.Append(context.WithoutCancel(r.Context()), store, kind, body)
	if err != nil {
		return err
	}
	n.refs.add(o)
	writeJSON(w, http.StatusCreated, stockResult{Store: store, SKU: req.SKU, OnHand: n.l.OnHand(store, req.SKU),
		OpID: o.ID(), Device: o.Device, Seq: o.Seq})
	return nil
}

func sameStock(e refEntry, store, sku string, qty int64) bool {
	if e.Store != store {
		return false
	}
	switch b := e.Body.(type) {
	case *ledger.StockReceived:
		return b.SKU == sku && b.Qty == qty
	case *ledger.StockCounted:
		return b.SKU == sku && b.OnHand == qty
	}
	return false
}

func (n *Node) handleListStock(w http.ResponseWriter, r *http.Request) error {
	scope, err := n.readScope(r)
	if err != nil {
		return err
	}
	items := n.l.Stock(scope)
	if items == nil {
		items = []ledger.StockItem{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": n.stockViews(items, scope)})
	return nil
}

func (n *Node) handleListCatalog(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"items": n.l.Catalog()})
	return nil
}

// mayManage refuses terminals: catalog, prices and policy are a manager's
// or HQ's (docs/design.md §6, least privilege).
func (n *Node) mayManage(what string) error {
	if n.self.Role == ledger.RoleTerminal {
		return apiErr(CodeRoleNotAllowed, "a terminal may not set %s; use a manager terminal or the anchor", what)
	}
	return nil
}

type catalogReq struct {
	Name      string      `json:"name"`
	UnitPrice *jsonNumber `json:"unit_price"`
	Currency  string      `json:"currency"`
	Stock     string      `json:"stock"` // optional: tracked, untracked
}

func (n *Node) handleCatalogPut(w http.ResponseWriter, r *http.Request) error {
	if err := n.mayManage("the catalog"); err != nil {
		return err
	}
	sku := r.PathValue("sku")
	if !ledger.ValidSKU(sku) {
		return apiErr(CodeBadSKU, "SKU %q: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", sku)
	}
	var req catalogReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return apiErr(CodeMissingField, "name is required")
	}
	if len(req.Name) > 200 {
		return apiErr(CodeFieldTooLong, "name is %d bytes; the limit is 200", len(req.Name))
	}
	price, err := intField(req.UnitPrice, "unit_price", CodeBadPrice, 0, ledger.MaxUnitPrice)
	if err != nil {
		return err
	}
	if req.Currency == "" {
		return apiErr(CodeMissingField, "currency is required (ISO 4217, e.g. EUR)")
	}
	if !currencyRE.MatchString(req.Currency) {
		return apiErr(CodeBadCurrency, "currency %q is not an ISO 4217 code", req.Currency)
	}
	switch req.Stock {
	case "", ledger.StockTracked, ledger.StockUntracked:
	default:
		return apiErr(CodeBadStockMode, "stock %q: \"tracked\" or \"untracked\" (or leave it out)", req.Stock)
	}
	item := &ledger.CatalogItem{SKU: sku, Name: req.Name, UnitPrice: price, Currency: req.Currency, Stock: req.Stock}
	if _, err := n.l.Append(context.WithoutCancel(r.Context()), ledger.FleetScope, ledger.KindCatalogUpsert, item); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, item)
	return nil
}

// policyStore is the store a policy request is about.
func (n *Node) policyStore(q string) (string, error) {
	if n.isAnchor() {
		if q == "" {
			return "", apiErr(CodeMissingField, "store is required: an anchor sets the policy of every store")
		}
		if !ledger.ValidStoreID(q) {
			return "", apiErr(CodeNotFound, "%q is not a store id", q)
		}
		return q, nil
	}
	if q != "" && q != n.self.Store {
		return "", apiErr(CodeNotFound, "this device holds store %s only, not %s", n.self.Store, q)
	}
	return n.self.Store, nil
}

func (n *Node) policyView(store string) policyView {
	p, ok := n.l.Policy(store)
	if p.OfflineMethods == nil {
		p.OfflineMethods = []string{}
	}
	off, _ := n.offline(n.cfg.Now())
	return policyView{Store: store, Set: ok, Policy: p, Offline: off}
}

func (n *Node) handleGetPolicy(w http.ResponseWriter, r *http.Request) error {
	store, err := n.policyStore(r.URL.Query().Get("store"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n.policyView(store))
	return nil
}

type policyReq struct {
	Store          string      `json:"store"`
	OfflineMethods []string    `json:"offline_methods"`
	MaxOfflineSale *jsonNumber `json:"max_offline_sale"`
	MaxOfflineAge  *jsonNumber `json:"max_offline_age_s"`
}

func (n *Node) handlePutPolicy(w http.ResponseWriter, r *http.Request) error {
	if err := n.mayManage("the offline policy"); err != nil {
		return err
	}
	var req policyReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	store, err := n.policyStore(req.Store)
	if err != nil {
		return err
	}
	if err := n.requireStore(r.Context(), store); err != nil {
		return err
	}
	p := &ledger.Policy{OfflineMethods: req.OfflineMethods}
	if len(p.OfflineMethods) > 16 {
		return apiErr(CodeBadPaymentMethod, "at most 16 offline payment methods")
	}
	for _, m := range p.OfflineMethods {
		if !methodRE.MatchString(m) {
			return apiErr(CodeBadPaymentMethod, "payment method %q: lower-case letters, digits and _", m)
		}
	}
	zero := jsonNumber{"0"}
	if req.MaxOfflineSale == nil {
		req.MaxOfflineSale = &zero
	}
	if req.MaxOfflineAge == nil {
		req.MaxOfflineAge = &zero
	}
	if p.MaxOfflineSale, err = intField(req.MaxOfflineSale, "max_offline_sale", CodeBadPrice, 0, ledger.MaxUnitPrice*ledger.MaxQty); err != nil {
		return err
	}
	if p.MaxOfflineAge, err = intField(req.MaxOfflineAge, "max_offline_age_s", CodeBadQuantity, 0, 10*365*24*3600); err != nil {
		return err
	}
	if _, err := n.l.Append(context.WithoutCancel(r.Context()), store, ledger.KindPolicySet, p); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n.policyView(store))
	return nil
}
