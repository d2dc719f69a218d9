package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"storemesh/ledger"
	"storemesh/node"
)

// revokeDevice is the part of GET /v1/devices/{id} the command reads.
type revokeDevice struct {
	Device  string          `json:"device"`
	Name    string          `json:"name"`
	Store   string          `json:"store"`
	Role    string          `json:"role"`
	Chains  []ledger.Cutoff `json:"chains"`
	Revoked *struct {
		Cutoff []ledger.Cutoff `json:"cutoff"`
		By     string          `json:"by"`
	} `json:"revoked"`
}

func runRevoke(c *cli, args []string) error {
	fs := newFlags("revoke", "storemesh revoke --node http://127.0.0.1:PORT [--token T] --device ID --reason TEXT [--fleet FLEET]",
		"Revokes a device through a manager or anchor node: every replica drops the device's ops past what\n"+
			"that node holds of it now (its cut-offs) and refuses its connections. A store's manager may revoke\n"+
			"its own store's terminals, an anchor terminals and managers of any store; anything else (an anchor)\n"+
			"needs --fleet: the fleet key signs the revocation, and any manager or anchor node may carry it.")
	nodeURL := fs.String("node", "", "base URL of the node's HTTP API (required)")
	token := fs.String("token", "", "the node's API token (--token of storemesh node), if it has one")
	device := fs.String("device", "", "peer id of the device to revoke (required)")
	reason := fs.String("reason", "", "why, shown on every replica's status (required)")
	fleet := fs.String("fleet", "", "fleet directory (fleet.key): sign the revocation with the fleet's authority")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if *nodeURL == "" || *device == "" || *reason == "" {
		return usagef("revoke: --node, --device and --reason are required")
	}
	base, err := url.Parse(strings.TrimRight(*nodeURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return usagef("revoke: --node %q: want a URL such as http://127.0.0.1:8080", *nodeURL)
	}
	api := &apiClient{base: base.String(), token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	path := "/v1/devices/" + url.PathEscape(*device)
	var dev revokeDevice
	if err := api.call(http.MethodGet, path, nil, http.StatusOK, &dev); err != nil {
		return err
	}
	body := map[string]any{"reason": *reason}
	if *fleet != "" {
		fk, err := node.LoadFleetKey(*fleet)
		if err != nil {
			return err
		}
		cuts := dev.Chains
		ledger.SortCutoffs(cuts)
		sig, err := ledger.SignRevocation(fk, *device, cuts)
		if err != nil {
			return err
		}
		body["cutoff"] = cuts
		body["fleet_statement"] = base64.StdEncoding.EncodeToString(sig)
	}
	var res struct {
		OpID   string       `json:"op_id"`
		Device revokeDevice `json:"device"`
	}
	if err := api.call(http.MethodPost, path+"/revoke", body, http.StatusCreated, &res); err != nil {
		return err
	}
	kept := "nothing"
	if r := res.Device.Revoked; r != nil && len(r.Cutoff) > 0 {
		var parts []string
		for _, k := range r.Cutoff {
			parts = append(parts, fmt.Sprintf("%s #%d", k.Store, k.Seq))
		}
		kept = strings.Join(parts, ", ")
	}
	fmt.Fprintf(c.stdout, "revoked %s (%s, %s of %s)\nkept: %s; every later op is dropped on every replica\nop: %s\n",
		*device, dev.Name, dev.Role, dev.Store, kept, res.OpID)
	return nil
}

// apiClient calls a node's HTTP API and turns its errors into messages
// with their stable code.
type apiClient struct {
	base, token string
	http        *http.Client
}

func (a *apiClient) call(method, path string, in any, want int, out any) error {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s %s: %s: %s", method, path, e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}
