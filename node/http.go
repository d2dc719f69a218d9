package node

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Route is one method on one path of the HTTP API, with every error code
// it can answer. The server is built from this table and the OpenAPI
// document is checked against it, so the two cannot drift apart.
type Route struct {
	Method string
	Path   string   // as documented: /v1/catalog/{sku}
	Errors []string // every error code this route can return, sorted
	Public bool     // served without the token (the page and its assets)
	h      handlerFunc
}

type handlerFunc func(n *Node, w http.ResponseWriter, r *http.Request) error

// Codes every route of a kind can return.
var (
	authCodes   = []string{CodeUnauthorized, CodeMethodNotAllowed}
	bodyCodes   = []string{CodeBodyTooLarge, CodeUnsupportedMedia, CodeBadJSON}
	appendCodes = []string{CodeRoleNotAllowed, CodeHistoryBehind, CodeChainForked, CodeStorageFailed}
	idemCodes   = []string{CodeBadIdempotencyKey, CodeIdempotencyConflict}
)

func get(path string, h handlerFunc, codes ...string) Route {
	return Route{Method: http.MethodGet, Path: path, h: h, Errors: codeList(authCodes, codes)}
}

func write(method, path string, h handlerFunc, codes ...string) Route {
	return Route{Method: method, Path: path, h: h, Errors: codeList(authCodes, bodyCodes, appendCodes, codes)}
}

func codeList(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// routes is the API. Keep api/openapi.json in step (TestOpenAPIMatchesRoutes).
var routes = []Route{
	{Method: http.MethodGet, Path: "/", Public: true, h: (*Node).handlePage, Errors: []string{CodeMethodNotAllowed}},
	{Method: http.MethodGet, Path: "/assets/{name}", Public: true, h: (*Node).handleAsset, Errors: []string{CodeMethodNotAllowed, CodeNotFound}},
	get("/metrics", (*Node).handleMetrics),
	get("/v1/openapi", (*Node).handleOpenAPI),
	get("/v1/status", (*Node).handleStatus),
	get("/v1/events", (*Node).handleEvents),
	get("/v1/sales", (*Node).handleListSales, CodeNotFound, CodeBadQuery, CodeBadDate),
	write(http.MethodPost, "/v1/sales", (*Node).handleSale, codeList(idemCodes, []string{CodeMissingField, CodeUnknownSKU,
		CodeBadQuantity, CodeBadPrice, CodeBadCurrency, CodeBadPaymentMethod, CodeOfflineMethod, CodeOfflineTooLarge, CodeOfflineTooLong,
		CodeAllotmentExhausted, CodeUnknownStore})...),
	get("/v1/sales/{id}", (*Node).handleGetSale, CodeUnknownSale),
	get("/v1/reports/sales", (*Node).handleSalesReport, CodeNotFound, CodeBadQuery, CodeBadDate),
	get("/v1/reports/price-variance", (*Node).handleVariance, CodeNotFound, CodeBadQuery, CodeBadDate),
	get("/v1/refunds", (*Node).handleListRefunds, CodeNotFound, CodeBadQuery, CodeBadDate),
	write(http.MethodPost, "/v1/refunds", (*Node).handleRefund, codeList(idemCodes, []string{CodeMissingField, CodeUnknownSale,
		CodeBadQuantity, CodeRefundExceedsSale})...),
	get("/v1/stock", (*Node).handleListStock, CodeNotFound),
	write(http.MethodPost, "/v1/stock/received", (*Node).handleStockReceived, codeList(idemCodes, []string{CodeMissingField, CodeUnknownSKU, CodeBadQuantity, CodeUnknownStore})...),
	write(http.MethodPost, "/v1/stock/counted", (*Node).handleStockCounted, codeList(idemCodes, []string{CodeMissingField, CodeUnknownSKU, CodeBadQuantity, CodeUnknownStore})...),
	get("/v1/catalog", (*Node).handleListCatalog),
	write(http.MethodPut, "/v1/catalog/{sku}", (*Node).handleCatalogPut, CodeBadSKU, CodeMissingField, CodeFieldTooLong, CodeBadPrice, CodeBadCurrency, CodeBadStockMode),
	get("/v1/policy", (*Node).handleGetPolicy, CodeNotFound),
	write(http.MethodPut, "/v1/policy", (*Node).handlePutPolicy, CodeMissingField, CodeNotFound, CodeBadPaymentMethod, CodeBadPrice, CodeBadQuantity, CodeUnknownStore),
	get("/v1/conflicts", (*Node).handleListConflicts),
	write(http.MethodPost, "/v1/conflicts/{id}/resolve", (*Node).handleResolve, CodeNotFound, CodeMissingField, CodeBadAction, CodeFieldTooLong),
	get("/v1/digest", (*Node).handleDigest, CodeNotFound),
	get("/v1/allotments", (*Node).handleListAllotments, CodeNotFound),
	write(http.MethodPut, "/v1/allotments/{sku}", (*Node).handlePutAllotment, CodeBadSKU, CodeMissingField, CodeUnknownSKU, CodeUnknownStore),
	write(http.MethodPost, "/v1/allotments/{sku}/writeoff", (*Node).handleWriteoff, CodeMissingField, CodeNotFound, CodeBadQuantity, CodeFieldTooLong, CodeUnknownStore),
	get("/v1/stores", (*Node).handleListStores, CodeBadQuery),
	write(http.MethodPut, "/v1/stores/{id}", (*Node).handlePutStore, CodeNotFound, CodeMissingField, CodeFieldTooLong, CodeBadCurrency, CodeBadTimeZone),
	get("/v1/devices", (*Node).handleListDevices, CodeBadQuery),
	get("/v1/devices/{id}", (*Node).handleGetDevice, CodeUnknownDevice),
	write(http.MethodPost, "/v1/devices/{id}/revoke", (*Node).handleRevoke, CodeUnknownDevice, CodeRevokeNotAllowed,
		CodeAlreadyRevoked, CodeBadFleetStatement, CodeMissingField, CodeFieldTooLong),
}

// Routes returns the API's routes (for tests and docs).
func Routes() []Route {
	out := make([]Route, len(routes))
	for i, r := range routes {
		r.Errors = slices.Clone(r.Errors)
		out[i] = r
	}
	return out
}

// handler builds the server's handler from the route table: one mux entry
// per path, dispatching on the method itself so a wrong method gets a JSON
// method_not_allowed, and a JSON not_found for any other /v1 path.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	byPath := map[string][]Route{}
	var paths []string
	for _, r := range routes {
		if byPath[r.Path] == nil {
			paths = append(paths, r.Path)
		}
		byPath[r.Path] = append(byPath[r.Path], r)
	}
	for _, p := range paths {
		rs := byPath[p]
		pattern := p
		if p == "/" {
			pattern = "/{$}"
		}
		mux.Handle(pattern, n.dispatch(p, rs))
	}
	mux.Handle("/", n.dispatch("other", nil))
	return mux
}

// statusWriter remembers the status for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	status int
	code   string // error code sent, if any
}

func (w *statusWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
	w.ResponseWriter.WriteHeader(s)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (n *Node) dispatch(path string, rs []Route) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		var err error
		defer func() {
			n.met.observe(path, r.Method, w.status, w.code, time.Since(start))
		}()
		i := slices.IndexFunc(rs, func(x Route) bool { return x.Method == r.Method })
		switch {
		case rs == nil:
			err = n.authorize(r)
			if err == nil {
				err = apiErr(CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
			}
		case i < 0:
			if rs[0].Public || n.authorize(r) == nil {
				var allow []string
				for _, x := range rs {
					allow = append(allow, x.Method)
				}
				w.Header().Set("Allow", strings.Join(allow, ", "))
				err = apiErr(CodeMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, path, strings.Join(allow, ", "))
			} else {
				err = n.authorize(r)
			}
		default:
			rt := rs[i]
			if !rt.Public {
				err = n.authorize(r)
			}
			if err == nil {
				err = rt.h(n, w, r)
			}
		}
		if err != nil {
			n.writeError(w, r, path, err)
		}
	})
}

// authorize checks the bearer token when one is configured. EventSource
// cannot send headers, so a GET may carry it as ?access_token= instead.
func (n *Node) authorize(r *http.Request) error {
	if n.cfg.Token == "" {
		return nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok && r.Method == http.MethodGet {
		got, ok = r.URL.Query().Get("access_token"), true
	}
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(n.cfg.Token)) != 1 {
		return apiErr(CodeUnauthorized, "missing or wrong bearer token (send Authorization: Bearer TOKEN)")
	}
	return nil
}

func (n *Node) writeError(w *statusWriter, r *http.Request, path string, err error) {
	ae := fromLedger(err)
	status, ok := codeStatus[ae.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	w.code = ae.Code
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	attrs := []any{"route", path, "method", r.Method, "status", status, "code", ae.Code, "msg", ae.Message}
	if ae.Err != nil {
		attrs = append(attrs, "err", ae.Err)
	}
	n.log.Log(r.Context(), level, "request refused", attrs...)
	if status == http.StatusServiceUnavailable {
		retry := 2
		if ae.RetryAfter > 0 {
			retry = int((ae.RetryAfter + time.Second - 1) / time.Second)
		}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	var body errorBody
	body.Error.Code, body.Error.Message = ae.Code, ae.Message
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"code":"storage_failed","message":"encode response"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decodeBody reads a JSON request body into v: application/json only, at
// most MaxBody bytes, one JSON value. Unknown fields are ignored so old
// servers accept requests from newer POS apps.
func (n *Node) decodeBody(r *http.Request, v any) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return apiErr(CodeUnsupportedMedia, "Content-Type must be application/json, not %q", ct)
	}
	if r.ContentLength > n.cfg.MaxBody {
		return apiErr(CodeBodyTooLarge, "body is %d bytes; the limit is %d", r.ContentLength, n.cfg.MaxBody)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, n.cfg.MaxBody+1))
	if err != nil {
		return apiErr(CodeBadJSON, "reading the body: %v", err)
	}
	if int64(len(b)) > n.cfg.MaxBody {
		return apiErr(CodeBodyTooLarge, "body is over the limit of %d bytes", n.cfg.MaxBody)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(v); err != nil {
		return apiErr(CodeBadJSON, "body is not the expected JSON: %v", err)
	}
	if dec.More() {
		return apiErr(CodeBadJSON, "body holds more than one JSON value")
	}
	return nil
}

// idempotencyKey returns the request's Idempotency-Key ("" when absent).
// It is stored in the op (128 bytes at most), so it must be printable.
func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	if len(k) > 128 {
		return "", apiErr(CodeBadIdempotencyKey, "Idempotency-Key is %d bytes; the limit is 128", len(k))
	}
	for _, c := range k {
		if !unicode.IsPrint(c) {
			return "", apiErr(CodeBadIdempotencyKey, "Idempotency-Key holds a non-printable character")
		}
	}
	return k, nil
}

// jsonNumber is a numeric field of a request: a JSON number literal. Unlike
// json.Number, which also takes a string holding a number ("2"), it
// refuses anything else, so {"qty":"2"} is bad_json as docs/api.md says.
type jsonNumber struct{ json.Number }

var errNotNumber = errors.New("must be a JSON number, not a string or another value")

// UnmarshalJSON takes a number literal only.
func (n *jsonNumber) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return errNotNumber
	}
	if !json.Valid(b) {
		return errNotNumber
	}
	n.Number = json.Number(b)
	return nil
}

// intField parses a required JSON integer in [lo, hi]; bad values get
// code, a missing one missing_field.
func intField(v *jsonNumber, name, code string, lo, hi int64) (int64, error) {
	if v == nil {
		return 0, apiErr(CodeMissingField, "%s is required", name)
	}
	i, err := v.Int64()
	if err != nil {
		return 0, apiErr(code, "%s must be a whole number (minor units for money), not %s", name, v.String())
	}
	if i < lo || i > hi {
		return 0, apiErr(code, "%s is %d; it must be between %d and %d", name, i, lo, hi)
	}
	return i, nil
}

var errNotFlusher = errors.New("response writer cannot stream")
