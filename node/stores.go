package node

import (
	"context"
	"net/http"
	"time"

	"storemesh/ledger"
)

// Store routes (issue 17, ledger/stores.go): GET /v1/stores lists every
// store a record or a certificate names; PUT /v1/stores/{id} declares or
// changes one (a manager its own store, an anchor any).

// Codes of the store routes.
const (
	CodeUnknownStore = "unknown_store" // a write for a store no certificate or record names
	CodeBadTimeZone  = "bad_time_zone"
)

type storeReq struct {
	Name     string `json:"name"`
	Currency string `json:"currency"`
	TimeZone string `json:"time_zone"`
}

func (n *Node) handleListStores(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"stores": n.l.Stores()})
	return nil
}

func (n *Node) handlePutStore(w http.ResponseWriter, r *http.Request) error {
	if err := n.mayManage("a store record"); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !ledger.ValidStoreID(id) || id == ledger.FleetScope {
		return apiErr(CodeNotFound, "%q is not a store id", id)
	}
	if !n.isAnchor() && id != n.self.Store {
		return apiErr(CodeRoleNotAllowed, "this manager belongs to store %s and cannot declare store %s", n.self.Store, id)
	}
	var req storeReq
	if err := n.decodeBody(r, &req); err != nil {
		return err
	}
	switch {
	case req.Name == "":
		return apiErr(CodeMissingField, "name is required")
	case len(req.Name) > 100:
		return apiErr(CodeFieldTooLong, "name is longer than 100 bytes")
	case req.Currency == "":
		return apiErr(CodeMissingField, "currency is required (ISO 4217, such as EUR)")
	case !currencyRE.MatchString(req.Currency):
		return apiErr(CodeBadCurrency, "currency %q is not an ISO 4217 code", req.Currency)
	case req.TimeZone == "":
		return apiErr(CodeMissingField, "time_zone is required (an IANA zone such as Europe/Paris, or UTC)")
	}
	if _, err := ledger.LoadZone(req.TimeZone); err != nil {
		return apiErr(CodeBadTimeZone, "%v", err)
	}
	b := &ledger.StoreRecord{Name: req.Name, Currency: req.Currency, TimeZone: req.TimeZone}
	if _, err := n.l.Append(context.WithoutCancel(r.Context()), id, ledger.KindStoreSet, b); err != nil {
		return err
	}
	for _, s := range n.l.Stores() {
		if s.ID == id {
			writeJSON(w, http.StatusOK, s)
			return nil
		}
	}
	return apiErr(CodeNotFound, "store %s", id)
}

// storeGrace is how long an anchor's write naming a store it does not know
// waits for a certificate naming it: a device of a new store that has
// just connected is still in its hello, and its certificate comes with it.
const storeGrace = 3 * time.Second

// requireStore refuses a write for a store that no record or certificate
// known here names, after storeGrace.
func (n *Node) requireStore(ctx context.Context, id string) error {
	deadline := time.Now().Add(storeGrace)
	for !n.l.KnownStore(id) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return apiErr(CodeUnknownStore, "no store %q: no device of it is known here and no store record declares it (a typo? declare it with PUT /v1/stores/%s)", id, id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
