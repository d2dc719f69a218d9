package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"storemesh/ledger"
)

var (
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
	methodRE   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
)

type saleLineReq struct {
	SKU       string      `json:"sku"`
	Qty       *jsonNumber `json:"qty"`
	UnitPrice *jsonNumber `json:"unit_price"` // optional: the catalog price
}

type saleReq struct {
	Store   string        `json:"store"` // anchors only: the store sold from
	Lines   []saleLineReq `json:"lines"`
	Payment *struct {
		Method string `json:"method"`
	} `json:"payment"`
	Currency string `json:"currency"` // optional: must match the catalog's
}

// saleResult is the answer to POST /v1/sales (and to its retries).
type saleResult struct {
	SaleID   string `json:"sale_id"`
	Receipt  string `json:"receipt_no"`
	Device   string `json:"device"`
	Seq      uint64 `json:"seq"`
	Total    int64  `json:"total"`
	Currency string `json:"currency"`
	Store    string `json:"store"`
	Offline  bool   `json:"offline"`
	At       int64  `json:"at_ms"`
}

func resultOf(r ledger.SaleRecord) saleResult {
	return saleResult{SaleID: r.ID, Receipt: r.Receipt, Device: r.Device, Seq: r.Seq, Total: r.Total,
		Currency: r.Currency, Store: r.Store, Offline: r.Offline, At: r.At}
}

// writeStore is the store a write goes to: the device's own, or for an
// anchor (which writes for every store) the one the request names.
func (n *Node) writeStore(req string) (string, error) {
	if n.isAnchor() {
		if req == "" {
			return "", apiErr(CodeMissingField, "store is required: an anchor writes for every store")
		}
		if !ledger.ValidStoreID(req) {
			return "", apiErr(CodeMissingField, "store %q is not a store id", req)
		}
		if err := n.requireStore(context.Background(), req); err != nil {
			return "", err
		}
		return req, nil
	}
	if req != "" && req != n.self.Store {
		return "", apiErr(CodeRoleNotAllowed, "this %s belongs to store %s and cannot write store %s", n.self.Role, n.self.Store, req)
	}
	return n.self.Store, nil
}

// readScope is the store a listing covers: the device's own; for an
// anchor every store ("") unless ?store= names one.
func (n *Node) readScope(r *http.Request) (string, error) {
	q := r.URL.Query().Get("store")
	if n.isAnchor() {
		return q, nil
	}
	if q == "" || q == n.self.Store {
		return n.self.Store, nil
	}
	return "", apiErr(CodeNotFound, "this device holds store %s only, not %s", n.self.Store, q)
}

func (n *Node) catalogMap() map[string]ledger.CatalogItem {
	items := n.l.Catalog()
	m := make(map[string]ledger.CatalogItem, len(items))
	for _, it := range items {
		m[it.SKU] = it
	}
	return m
}

// validateSale turns a request into a sale body, or the first problem.
func (n *Node) validateSale(req *saleReq) (*ledger.Sale, error) {
	if len(req.Lines) == 0 {
		return nil, apiErr(CodeMissingField, "lines is required: at least one {sku, qty}")
	}
	if len(req.Lines) > ledger.MaxLines {
		return nil, apiErr(CodeBadQuantity, "a sale has at most %d lines, not %d", ledger.MaxLines, len(req.Lines))
	}
	cat := n.catalogMap()
	sale := &ledger.Sale{}
	for i, l := range req.Lines {
		if l.SKU == "" {
			return nil, apiErr(CodeMissingField, "lines[%d].sku is required", i)
		}
		item, ok := cat[l.SKU]
		if !ok {
			return nil, apiErr(CodeUnknownSKU, "lines[%d]: %q is not in the catalog", i, l.SKU)
		}
		qty, err := intField(l.Qty, fmt.Sprintf("lines[%d].qty", i), CodeBadQuantity, 1, ledger.MaxQty)
		if err != nil {
			return nil, err
		}
		price := item.UnitPrice
		if l.UnitPrice != nil {
			if price, err = intField(l.UnitPrice, fmt.Sprintf("lines[%d].unit_price", i), CodeBadPrice, 0, ledger.MaxUnitPrice); err != nil {
				return nil, err
			}
		}
		if sale.Currency == "" {
			sale.Currency = item.Currency
		} else if item.Currency != sale.Currency {
			return nil, apiErr(CodeBadCurrency, "lines mix currencies (%s and %s): ring them up as separate sales", sale.Currency, item.Currency)
		}
		sale.Lines = append(sale.Lines, ledger.SaleLine{SKU: l.SKU, Qty: qty, UnitPrice: price})
	}
	if req.Payment == nil || req.Payment.Method == "" {
		return nil, apiErr(CodeMissingField, "payment.method is required (cash, card, ...)")
	}
	if !methodRE.MatchString(req.Payment.Method) {
		return nil, apiErr(CodeBadPaymentMethod, "payment method %q: lower-case letters, digits and _ (cash, card, mobile_pay)", req.Payment.Method)
	}
	sale.Payment = req.Payment.Method
	if req.Currency != "" && !currencyRE.MatchString(req.Currency) {
		return nil, apiErr(CodeBadCurrency, "currency %q is not an ISO 4217 code", req.Currency)
	}
	if req.Currency != "" && req.Currency != sale.Currency {
		return nil, apiErr(CodeBadCurrency, "the catalog prices these items in %s, not %s", sale.Currency, req.Currency)
	}
	return sale, nil
}

// sameSale reports whether a retry asks for the sale already written.
func sameSale(rec ledger.SaleRecord, store string, req *saleReq, sale *ledger.Sale) bool {
	if rec.Store != store || rec.Payment != sale.Payment || len(rec.Lines) != len(req.Lines) {
		return false
	}
	for i, l := range rec.Lines {
		want := sale.Lines[i]
		if l.SKU != want.SKU || l.Qty != want.Qty || (req.Lines[i].UnitPrice != nil && l.UnitPrice != want.UnitPrice) {
			return false
		}
	}
	return true
}

func (n *Node) handleSale(w http.ResponseWriter, r *http.Request) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req saleReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	store, err := n.writeStore(req.Store)
	if err != nil {
		return err
	}
	sale, err := n.validateSale(&req)
	if err != nil {
		return err
	}
	unlock := n.keys.lock(key)
	defer unlock()
	if id, other, found := n.priorWrite(key); found {
		rec, _ := n.l.Sale(id)
		if id == "" || !sameSale(rec, store, &req, sale) {
			return apiErr(CodeIdempotencyConflict, "Idempotency-Key %q was already used for a different request (%s)", key, describePrior(id, other))
		}
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusCreated, resultOf(rec))
		return nil
	}
	offline, err := n.checkOfflinePolicy(store, sale.Payment, sale.Total())
	if err != nil {
		return err
	}
	sale.Ref, sale.Offline = key, offline
	// A client that hangs up must not abort a write half-way: the outcome
	// is decided by the ledger, and a retry with the key finds it.
	o, err := n.l.Append(context.WithoutCancel(r.Context()), store, ledger.KindSale, sale)
	if err != nil {
		return err
	}
	rec, ok := n.l.Sale(o.ID())
	if !ok { // cannot happen: Append returns once the sale is materialised
		return fmt.Errorf("sale %s written but not in the sale log", o.ID())
	}
	n.log.Debug("sale", "sale", rec.ID, "receipt", rec.Receipt, "total", rec.Total, "offline", offline)
	writeJSON(w, http.StatusCreated, resultOf(rec))
	return nil
}

func describePrior(saleID string, e refEntry) string {
	if saleID != "" {
		return "sale " + saleID
	}
	return string(e.Kind) + " " + e.ID
}

func (n *Node) handleListSales(w http.ResponseWriter, r *http.Request) error {
	scope, err := n.readScope(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := onlyParams(q, "store", "from", "to", "device", "limit", "cursor", "order"); err != nil {
		return err
	}
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	sq := ledger.SalesQuery{Store: scope, From: q.Get("from"), To: q.Get("to"), Device: q.Get("device"), After: q.Get("cursor"), Limit: limit}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		sq.Desc = true
	default:
		return apiErr(CodeBadQuery, "order %q: want asc or desc", q.Get("order"))
	}
	sales, more, err := n.l.SalesPage(sq)
	switch {
	case errors.Is(err, ledger.ErrUnknownCursor):
		return apiErr(CodeBadQuery, "cursor %q names no sale this replica holds", sq.After)
	case err != nil:
		return dateErr(err)
	}
	out := map[string]any{"sales": sales}
	if more {
		out["next"] = sales[len(sales)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleListRefunds is GET /v1/refunds: the refunds this replica holds
// for its scope, a page at a time, each with what the refund rule honours
// of it; filters and paging as GET /v1/sales (cursor: a refund id).
func (n *Node) handleListRefunds(w http.ResponseWriter, r *http.Request) error {
	scope, err := n.readScope(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := onlyParams(q, "store", "from", "to", "device", "limit", "cursor"); err != nil {
		return err
	}
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	rq := ledger.RefundsQuery{Store: scope, From: q.Get("from"), To: q.Get("to"), Device: q.Get("device"), After: q.Get("cursor"), Limit: limit}
	refunds, more, err := n.l.RefundsPage(rq)
	switch {
	case errors.Is(err, ledger.ErrUnknownCursor):
		return apiErr(CodeBadQuery, "cursor %q names no refund this replica holds", rq.After)
	case err != nil:
		return dateErr(err)
	}
	out := map[string]any{"refunds": refunds}
	if more {
		out["next"] = refunds[len(refunds)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// MaxSalesPage bounds the sales one GET /v1/sales answers (and its
// default limit); "next" then gives the cursor for the rest.
const MaxSalesPage = 10000

// pageLimit is a list's limit parameter: 1..MaxSalesPage, default the
// maximum.
func pageLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return MaxSalesPage, nil
	}
	l, err := strconv.Atoi(v)
	if err != nil || l < 1 || l > MaxSalesPage {
		return 0, apiErr(CodeBadQuery, "limit %q: want a whole number in 1..%d", v, MaxSalesPage)
	}
	return l, nil
}

// dateErr is the API error of a ledger query refused for its dates.
func dateErr(err error) error {
	return apiErr(CodeBadDate, "%s", strings.TrimPrefix(err.Error(), ledger.ErrBadInput.Error()+": "))
}

// onlyParams refuses a query parameter not in known, or given twice.
func onlyParams(q url.Values, known ...string) error {
	for k := range q {
		if !slices.Contains(known, k) {
			return apiErr(CodeBadQuery, "unknown query parameter %q (known: %s)", k, strings.Join(known, ", "))
		}
		if len(q[k]) > 1 {
			return apiErr(CodeBadQuery, "query parameter %q given %d times", k, len(q[k]))
		}
	}
	return nil
}

func (n *Node) handleGetSale(w http.ResponseWriter, r *http.Request) error {
	rec, ok := n.l.Sale(r.PathValue("id"))
	if !ok {
		rec, ok = n.l.SaleByReceipt(r.PathValue("id")) // a receipt number: till-1·0042
	}
	if !ok || !n.l.HoldsScope(rec.Store) {
		return apiErr(CodeUnknownSale, "no sale %q on this replica", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

type refundReq struct {
	SaleID string `json:"sale_id"`
	Lines  []struct {
		SKU string      `json:"sku"`
		Qty *jsonNumber `json:"qty"`
	} `json:"lines"` // optional: the whole sale
}

type refundResult struct {
	RefundID string `json:"refund_id"`
	SaleID   string `json:"sale_id"`
	Amount   int64  `json:"amount"`
	Receipt  string `json:"receipt_no"`
	Device   string `json:"device"`
	Seq      uint64 `json:"seq"`
	Store    string `json:"store"`
	// Honoured is what the replicated state honours of the refund now:
	// Amount unless another till refunded the same line meanwhile (an
	// over_refund conflict).
	Honoured int64 `json:"honoured_amount"`
}

// refundBody turns a request into a refund of rec, checked against what
// the replicated state says is left of the sale (ledger.Refunds): the SKUs
// were sold, no more units than are left, each priced at what the sale
// charged. The ledger checks it again under its lock when it appends.
func (n *Node) refundBody(req *refundReq, rec ledger.SaleRecord) (*ledger.Refund, error) {
	sold := map[string]int64{}
	for _, l := range rec.Lines {
		sold[l.SKU] += l.Qty
	}
	state := n.l.Refunds(rec.ID)
	done := state.Units
	ref := &ledger.Refund{Sale: rec.ID}
	want := map[string]int64{}
	if len(req.Lines) == 0 {
		if state.Amount > 0 || len(done) > 0 {
			return nil, apiErr(CodeRefundExceedsSale, "sale %s is already partly refunded (%d); name the lines to refund", rec.ID, state.Amount)
		}
		for _, l := range rec.Lines {
			ref.Lines = append(ref.Lines, ledger.RefundLine{SKU: l.SKU, Qty: l.Qty})
			want[l.SKU] += l.Qty
		}
	}
	if len(req.Lines) > ledger.MaxLines {
		return nil, apiErr(CodeBadQuantity, "a refund has at most %d lines", ledger.MaxLines)
	}
	for i, l := range req.Lines {
		if l.SKU == "" {
			return nil, apiErr(CodeMissingField, "lines[%d].sku is required", i)
		}
		qty, err := intField(l.Qty, fmt.Sprintf("lines[%d].qty", i), CodeBadQuantity, 1, ledger.MaxQty)
		if err != nil {
			return nil, err
		}
		want[l.SKU] += qty
		if want[l.SKU]+done[l.SKU] > sold[l.SKU] {
			return nil, apiErr(CodeRefundExceedsSale, "sale %s sold %d of %q and %d are already refunded; cannot refund %d",
				rec.ID, sold[l.SKU], l.SKU, done[l.SKU], want[l.SKU])
		}
		ref.Lines = append(ref.Lines, ledger.RefundLine{SKU: l.SKU, Qty: qty})
	}
	ref.Amount = ledger.RefundPrice(&rec.Sale, done, want)
	if ref.Amount > rec.Total-state.Amount {
		return nil, apiErr(CodeRefundExceedsSale, "sale %s has %d left to refund; this refund is %d", rec.ID, rec.Total-state.Amount, ref.Amount)
	}
	return ref, nil
}

// refundResultOf is the answer to POST /v1/refunds for refund op id of
// sale, with its receipt number from the ledger.
func (n *Node) refundResultOf(sale, id string, seq uint64, store string, amount int64) refundResult {
	res := refundResult{RefundID: id, SaleID: sale, Amount: amount, Device: n.self.Device, Seq: seq, Store: store}
	for _, r := range n.l.Refunds(sale).Refunds {
		if r.ID == id {
			res.Receipt, res.Device = r.Receipt, r.Device
			res.Honoured = r.Paid
		}
	}
	return res
}

func (n *Node) handleRefund(w http.ResponseWriter, r *http.Request) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req refundReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	if req.SaleID == "" {
		return apiErr(CodeMissingField, "sale_id is required")
	}
	rec, ok := n.l.Sale(req.SaleID)
	if !ok || !n.l.HoldsScope(rec.Store) {
		return apiErr(CodeUnknownSale, "no sale %q on this replica (not synced yet?)", req.SaleID)
	}
	unlock := n.keys.lock(key)
	defer unlock()
	if saleID, prior, found := n.priorWrite(key); found {
		b, isRefund := prior.Body.(*ledger.Refund)
		if saleID != "" || !isRefund || b.Sale != req.SaleID || !sameRefundLines(b, &req) {
			return apiErr(CodeIdempotencyConflict, "Idempotency-Key %q was already used for a different request (%s)", key, describePrior(saleID, prior))
		}
		w.Header().Set("Idempotent-Replayed", "true")
		writeJSON(w, http.StatusCreated, n.refundResultOf(b.Sale, prior.ID, prior.Seq, prior.Store, b.Amount))
		return nil
	}
	body, err := n.refundBody(&req, rec)
	if err != nil {
		return err
	}
	body.Ref = key
	o, err := n.l.Append(context.WithoutCancel(r.Context()), rec.Store, ledger.KindRefund, body)
	if err != nil {
		return err
	}
	n.refs.add(o)
	writeJSON(w, http.StatusCreated, n.refundResultOf(rec.ID, o.ID(), o.Seq, rec.Store, body.Amount))
	return nil
}

func sameRefundLines(b *ledger.Refund, req *refundReq) bool {
	if len(req.Lines) == 0 {
		return true // "the whole sale": whatever the first request refunded
	}
	if len(req.Lines) != len(b.Lines) {
		return false
	}
	for i, l := range req.Lines {
		if l.Qty == nil || l.SKU != b.Lines[i].SKU {
			return false
		}
		if q, err := l.Qty.Int64(); err != nil || q != b.Lines[i].Qty {
			return false
		}
	}
	return true
}
