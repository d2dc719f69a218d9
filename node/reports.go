package node

import (
	"encoding/csv"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"storemesh/ledger"
)

// GET /v1/reports/sales?store=&from=&to=&by=day|sku|device|payment
// (issue 17): counts, gross, refunds, net and units per group, from the
// ledger's aggregates (ledger/reports.go). JSON by default; CSV with a
// header row for format=csv or Accept: text/csv. A terminal or manager
// answers for its own store; an anchor for any store, or all.

var reportParams = []string{"store", "from", "to", "by", "format"}

func (n *Node) handleSalesReport(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := onlyParams(q, reportParams...); err != nil {
		return err
	}
	scope, err := n.readScope(r)
	if err != nil {
		return err
	}
	rq := ledger.ReportQuery{Store: scope, From: q.Get("from"), To: q.Get("to"), By: q.Get("by")}
	if rq.By == "" {
		rq.By = ledger.ByDay
	}
	if !slices.Contains(ledger.ReportDims, rq.By) {
		return apiErr(CodeBadQuery, "by %q: want one of %s", rq.By, strings.Join(ledger.ReportDims, ", "))
	}
	if err := rq.Validate(); err != nil {
		return dateErr(err)
	}
	format := q.Get("format")
	switch {
	case format == "" && strings.Contains(r.Header.Get("Accept"), "text/csv"):
		format = "csv"
	case format == "":
		format = "json"
	case format != "json" && format != "csv":
		return apiErr(CodeBadQuery, "format %q: want json or csv", format)
	}
	rows, err := n.l.SalesReport(rq)
	if err != nil {
		return apiErr(CodeBadQuery, "%v", err)
	}
	if format == "json" {
		writeJSON(w, http.StatusOK, map[string]any{"store": rq.Store, "from": rq.From, "to": rq.To, "by": rq.By, "rows": rows})
		return nil
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="sales-by-`+rq.By+`.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"store", rq.By, "currency", "sales", "units", "gross", "refunds", "refund_count", "refund_units", "net"})
	for _, x := range rows {
		_ = cw.Write([]string{x.Store, x.Key, x.Currency, itoa(x.Sales), itoa(x.Units), itoa(x.Gross), itoa(x.Refunds),
			itoa(x.RefundCount), itoa(x.RefundUnits), itoa(x.Net)})
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		n.log.Warn("writing a CSV report", "err", err)
	}
	return nil
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// handleVariance is GET /v1/reports/price-variance: the sale lines charged
// off the list price in force at their sale's time (DESIGN §5), in the
// sale log's order, at most limit (default and maximum 10,000) lines.
func (n *Node) handleVariance(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := onlyParams(q, "store", "from", "to", "device", "limit"); err != nil {
		return err
	}
	scope, err := n.readScope(r)
	if err != nil {
		return err
	}
	limit, err := pageLimit(q)
	if err != nil {
		return err
	}
	sq := ledger.SalesQuery{Store: scope, From: q.Get("from"), To: q.Get("to"), Device: q.Get("device"), Limit: limit}
	lines, more, err := n.l.PriceVariance(sq)
	if err != nil {
		return dateErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"lines": lines, "truncated": more})
	return nil
}
