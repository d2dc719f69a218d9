package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"storemesh/ledger"
	"storemesh/node"
)

func runAuditExport(c *cli, args []string) error {
	fs := newFlags("audit export", "storemesh audit export --data DIR --out FILE",
		"Writes every op and certificate of a node's data directory to an audit bundle an inspector\n"+
			"checks offline with storemesh audit verify. Stop the node first: badger is single-process.")
	data := fs.String("data", "", "the node's data directory (required)")
	out := fs.String("out", "", "bundle file to write (required)")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if *data == "" || *out == "" {
		return usagef("audit export: --data and --out are required")
	}
	if _, err := os.Stat(filepath.Join(*data, "badger")); err != nil {
		return fmt.Errorf("%s holds no storemesh data (no badger directory): %w", *data, err)
	}
	fleet, err := node.ReadFleetPub(filepath.Join(*data, node.FleetPubFile))
	if err != nil {
		return fmt.Errorf("fleet key of the data directory: %w", err)
	}
	bs, err := ledger.OpenBadger(filepath.Join(*data, "badger"))
	if err != nil {
		return fmt.Errorf("%w (is the node still running?)", err)
	}
	defer bs.Close()
	ctx := context.Background()
	cfg := ledger.DefaultConfig()
	cfg.Fleet = fleet // Self nil: read-only, every scope
	l, err := ledger.Open(ctx, bs, cfg)
	if err != nil {
		return err
	}
	defer l.Close()

	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	m, err := l.Export(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "exported fleet %s: %d ops in %d chains, %d certificates to %s\n", m.Fleet, m.Ops, len(m.Chains), m.Certs, *out)
	return nil
}

func runAuditVerify(c *cli, args []string) error {
	fs := newFlags("audit verify", "storemesh audit verify FILE [--fleet FLEET_PUB] [--json]",
		"Checks a bundle offline: checksum, canonical encoding, every certificate against the fleet key,\n"+
			"every op's signature and rights, every device's hash chain, and the manifest. Exit 1 on any problem.")
	fleetPath := fs.String("fleet", "", "the fleet public key you trust (fleet.pub or its directory); without it the bundle's own key is used")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("audit verify: want exactly one bundle FILE, got %d arguments", len(pos))
	}
	var fleet ed25519.PublicKey
	if *fleetPath != "" {
		if fleet, err = node.ReadFleetPub(*fleetPath); err != nil {
			return err
		}
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	rep, verr := ledger.VerifyBundle(f, ledger.VerifyOptions{Fleet: fleet})
	if rep == nil {
		return verr
	}
	if *asJSON {
		out := map[string]any{"ok": verr == nil, "report": rep}
		var ae *ledger.AuditError
		if errors.As(verr, &ae) {
			out["problems"], out["omitted"] = ae.Problems, ae.Omitted
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(c.stdout, string(b))
	} else {
		fmt.Fprintf(c.stdout, "fleet %s: %d certificates, %d ops in %d chains, %d forked devices\n",
			rep.Manifest.Fleet, rep.Certs, rep.Ops, len(rep.Chains), len(rep.Forks))
		for _, s := range rep.Sales {
			fmt.Fprintf(c.stdout, "  store %s: %d sales, %d %s\n", s.Store, s.Sales, s.Total, s.Currency)
		}
		for _, r := range rep.Refunds {
			fmt.Fprintf(c.stdout, "  store %s: %d refunds, %d honoured", r.Store, r.Refunds, r.Amount)
			if r.Conflicts > 0 {
				fmt.Fprintf(c.stdout, ", %d past what their sale had left", r.Conflicts)
			}
			if r.Unmatched > 0 {
				fmt.Fprintf(c.stdout, ", %d of sales not in the bundle", r.Unmatched)
			}
			fmt.Fprintln(c.stdout)
		}
		for _, rc := range rep.RefundConflicts {
			state := "OPEN"
			if rc.Resolution != nil {
				state = "resolved: " + rc.Resolution.Action
			}
			fmt.Fprintf(c.stdout, "  refund conflict %s (%s): sale %s, %d units and %d past what was left, not counted\n",
				rc.ID, state, rc.Sale, rc.Oversold, rc.Excess)
		}
		for _, r := range rep.Revocations {
			fmt.Fprintf(c.stdout, "  revocation of %s by %s\n", r.Device, r.By)
		}
		if rep.Excluded > 0 {
			fmt.Fprintf(c.stdout, "  %d sales, refunds or resolutions past a revoked device's cut-off: kept as evidence, counted in no total\n", rep.Excluded)
		}
		if fleet == nil {
			fmt.Fprintln(c.stdout, "note: no --fleet given; this proves the bundle consistent, not whose it is")
		}
	}
	if verr != nil {
		var ae *ledger.AuditError
		if errors.As(verr, &ae) {
			for _, p := range ae.Problems {
				fmt.Fprintf(c.stderr, "problem: %s\n", p)
			}
			if ae.Omitted > 0 {
				fmt.Fprintf(c.stderr, "... and %d more problems\n", ae.Omitted)
			}
		}
		return fmt.Errorf("audit FAILED: %w", verr)
	}
	fmt.Fprintln(c.stdout, "audit OK")
	return nil
}
