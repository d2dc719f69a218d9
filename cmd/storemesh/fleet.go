package main

import (
	"crypto/rand"
	"fmt"
	"time"

	"storemesh/ledger"
	"storemesh/node"
)

func runFleetInit(c *cli, args []string) error {
	fs := newFlags("fleet init", "storemesh fleet init --dir FLEET",
		"Makes the fleet key: FLEET/fleet.key (mode 0600; keep it offline, it enrolls devices) and FLEET/fleet.pub.")
	dir := fs.String("dir", "", "directory for the fleet key (required)")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("fleet init: --dir is required")
	}
	k, err := node.InitFleet(*dir, rand.Reader)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "fleet %s\nkey: %s/%s (keep it offline)\n", k.ID(), *dir, node.FleetKeyFile)
	return nil
}

func runEnroll(c *cli, args []string) error {
	fs := newFlags("enroll", "storemesh enroll --fleet FLEET --store S --role terminal|manager|anchor --name N --out DEV [--days 365]",
		"Makes a device key (its libp2p identity) and a certificate signed by the fleet key:\n"+
			"DEV/device.key (0600), DEV/device.cert, DEV/fleet.pub. Anchors cover every store (store \"*\").\n"+
			"Names are unique in the fleet: FLEET/devices.tsv lists every device enrolled, and a name in it is refused.")
	fleet := fs.String("fleet", "", "fleet directory made by storemesh fleet init (required)")
	store := fs.String("store", "", "store id the device sells for (required unless --role anchor)")
	role := fs.String("role", "terminal", "terminal, manager or anchor")
	name := fs.String("name", "", "device name shown to staff and in logs (required)")
	out := fs.String("out", "", "device directory to write (required)")
	days := fs.Int("days", 365, "days the certificate is valid")
	if _, err := c.parse(fs, args); err != nil {
		return err
	}
	r := ledger.Role(*role)
	switch {
	case *fleet == "" || *out == "" || *name == "":
		return usagef("enroll: --fleet, --name and --out are required")
	case !r.Valid():
		return usagef("enroll: --role %q: terminal, manager or anchor", *role)
	case r != ledger.RoleAnchor && !ledger.ValidStoreID(*store):
		return usagef("enroll: --store %q: a store id (letters, digits, _ . -) is required for a %s", *store, r)
	case *days <= 0:
		return usagef("enroll: --days must be positive")
	}
	fk, err := node.LoadFleetKey(*fleet)
	if err != nil {
		return err
	}
	if err := node.CheckDeviceName(*fleet, *name); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	d, err := node.Enroll(fk, node.EnrollRequest{Store: *store, Role: r, Name: *name, Valid: time.Duration(*days) * 24 * time.Hour}, rand.Reader)
	if err != nil {
		return err
	}
	if err := node.WriteDevice(*out, d); err != nil {
		return err
	}
	if err := node.RegisterDevice(*fleet, d.Cert); err != nil {
		return fmt.Errorf("enroll: device written to %s, but the fleet registry %s was not updated: %w", *out, node.RegistryFile, err)
	}
	fmt.Fprintf(c.stdout, "device %s\nname %s, %s of store %s, fleet %s, valid until %s\n", d.Cert.Device, d.Cert.Name, d.Cert.Role,
		d.Cert.Store, d.Cert.Fleet, time.UnixMilli(d.Cert.Expiry).UTC().Format(time.DateOnly))
	return nil
}
