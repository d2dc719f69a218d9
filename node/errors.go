package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"storemesh/ledger"
)

// Error codes of the HTTP API (docs/design.md §8a). They are a public contract:
// POS apps branch on them. Add codes; never rename one.
const (
	CodeUnknownSKU          = "unknown_sku"
	CodeBadSKU              = "bad_sku"
	CodeBadQuantity         = "bad_quantity"
	CodeBadPrice            = "bad_price"
	CodeBadCurrency         = "bad_currency"
	CodeBadPaymentMethod    = "bad_payment_method"
	CodeBadAction           = "bad_action"
	CodeBadIdempotencyKey   = "bad_idempotency_key"
	CodeFieldTooLong        = "field_too_long"
	CodeBodyTooLarge        = "body_too_large"
	CodeUnsupportedMedia    = "unsupported_media_type"
	CodeBadJSON             = "bad_json"
	CodeMissingField        = "missing_field"
	CodeRoleNotAllowed      = "role_not_allowed"
	CodeNotFound            = "not_found"
	CodeUnknownSale         = "unknown_sale"
	CodeRefundExceedsSale   = "refund_exceeds_sale"
	CodeIdempotencyConflict = "idempotency_conflict"
	CodeOfflineMethod       = "offline_method_not_allowed"
	CodeOfflineTooLarge     = "offline_sale_too_large"
	CodeOfflineTooLong      = "offline_too_long"
	CodeHistoryBehind       = "history_behind"
	CodeChainForked         = "chain_forked"
	CodeStorageFailed       = "storage_failed"
	CodeUnauthorized        = "unauthorized"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeBadStockMode        = "bad_stock_mode"
	CodeAllotmentExhausted  = "allotment_exhausted" // an allotted SKU: this device holds fewer units than the sale needs
	CodeBadQuery            = "bad_query"           // an unknown, repeated or malformed query parameter
	CodeBadDate             = "bad_date"            // a date that is not YYYY-MM-DD, or a range that ends before it starts
)

// codeStatus is the HTTP status of each code. Every code the server can
// send is here; TestErrorCodesCovered checks each has a test.
var codeStatus = map[string]int{
	CodeUnknownSKU:          http.StatusUnprocessableEntity,
	CodeBadQuery:            http.StatusBadRequest,
	CodeUnknownStore:        http.StatusUnprocessableEntity,
	CodeBadTimeZone:         http.StatusBadRequest,
	CodeBadDate:             http.StatusBadRequest,
	CodeBadSKU:              http.StatusBadRequest,
	CodeBadQuantity:         http.StatusBadRequest,
	CodeBadPrice:            http.StatusBadRequest,
	CodeBadCurrency:         http.StatusBadRequest,
	CodeBadPaymentMethod:    http.StatusBadRequest,
	CodeBadAction:           http.StatusBadRequest,
	CodeBadIdempotencyKey:   http.StatusBadRequest,
	CodeFieldTooLong:        http.StatusBadRequest,
	CodeBodyTooLarge:        http.StatusRequestEntityTooLarge,
	CodeUnsupportedMedia:    http.StatusUnsupportedMediaType,
	CodeBadJSON:             http.StatusBadRequest,
	CodeMissingField:        http.StatusBadRequest,
	CodeRoleNotAllowed:      http.StatusForbidden,
	CodeNotFound:            http.StatusNotFound,
	CodeUnknownSale:         http.StatusNotFound,
	CodeRefundExceedsSale:   http.StatusUnprocessableEntity,
	CodeIdempotencyConflict: http.StatusConflict,
	CodeOfflineMethod:       http.StatusUnprocessableEntity,
	CodeOfflineTooLarge:     http.StatusUnprocessableEntity,
	CodeOfflineTooLong:      http.StatusUnprocessableEntity,
	CodeHistoryBehind:       http.StatusServiceUnavailable,
	CodeChainForked:         http.StatusConflict,
	CodeStorageFailed:       http.StatusInternalServerError,
	CodeUnauthorized:        http.StatusUnauthorized,
	CodeMethodNotAllowed:    http.StatusMethodNotAllowed,
	CodeBadStockMode:        http.StatusBadRequest,
	CodeAllotmentExhausted:  http.StatusConflict,
	CodeUnknownDevice:       http.StatusNotFound,   // devices.go
	CodeRevokeNotAllowed:    http.StatusForbidden,  // devices.go
	CodeAlreadyRevoked:      http.StatusConflict,   // devices.go
	CodeBadFleetStatement:   http.StatusBadRequest, // devices.go
}

// ErrorCodes lists every error code the API can return, with its status.
func ErrorCodes() map[string]int {
	out := make(map[string]int, len(codeStatus))
	for c, s := range codeStatus {
		out[c] = s
	}
	return out
}

// apiError is an error with a stable code, sent as
// {"error":{"code":"...","message":"..."}}.
type apiError struct {
	Code    string
	Message string
	Err     error // the cause, for logs; not sent
	// RetryAfter, when set, is sent as Retry-After (rounded up to seconds).
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }
func (e *apiError) Unwrap() error { return e.Err }

func apiErr(code, format string, args ...any) *apiError {
	return &apiError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeErrors maps an error from the ledger to an API error. Validation
// runs before any write, so a body or role rejection here means the
// ledger is stricter than the API: reported, never hidden.
func fromLedger(err error) *apiError {
	var ae *apiError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return ae
	case allotErr(err) != nil:
		return allotErr(err)
	case errors.As(err, new(*ledger.BehindError)):
		var be *ledger.BehindError
		errors.As(err, &be)
		return &apiError{Code: CodeHistoryBehind, Err: err, Message: fmt.Sprintf(
			"this device's own history is still arriving from its peers (%d of %d ops of its chain held, known from %s); it sells again once they arrive, or in at most %s on a new chain",
			be.Held, be.Known, be.Source, be.Wait.Round(time.Second)), RetryAfter: be.Wait}
	case errors.Is(err, ledger.ErrOwnHistoryBehind):
		return &apiError{Code: CodeHistoryBehind, Message: "this device's own history is still arriving from its peers; retry once it has synced", Err: err}
	case errors.Is(err, ledger.ErrRefundExceedsSale):
		return &apiError{Code: CodeRefundExceedsSale, Message: err.Error(), Err: err}
	case errors.Is(err, ledger.ErrUnknownSale):
		return &apiError{Code: CodeUnknownSale, Message: err.Error() + " (not synced yet?)", Err: err}
	case errors.Is(err, ledger.ErrOwnChainForked):
		return &apiError{Code: CodeChainForked, Message: "this device's chain is forked (restored from an old backup?); a manager must resolve it before it sells again", Err: err}
	case ledger.RejectReason(err) == ledger.ReasonCertExpired, ledger.RejectReason(err) == ledger.ReasonCertInvalid:
		return &apiError{Code: CodeRoleNotAllowed, Message: "this device's certificate is not valid now (expired?): re-enroll it; " + err.Error(), Err: err}
	case ledger.RejectReason(err) == ledger.ReasonRole, ledger.RejectReason(err) == ledger.ReasonStore:
		return &apiError{Code: CodeRoleNotAllowed, Message: err.Error(), Err: err}
	case ledger.RejectReason(err) != "", errors.Is(err, ledger.ErrBadInput):
		return &apiError{Code: CodeBadJSON, Message: "rejected by the ledger: " + err.Error(), Err: err}
	case errors.Is(err, ledger.ErrNoSpace):
		return &apiError{Code: CodeStorageFailed, Message: "disk full: " + err.Error() + "; nothing was written, and writes resume once space is freed", Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Code: CodeStorageFailed, Message: "the write was interrupted; it may or may not be stored: retry with the same Idempotency-Key", Err: err}
	default:
		return &apiError{Code: CodeStorageFailed, Message: "storage failed: " + err.Error() + "; the node stopped taking writes", Err: err}
	}
}
