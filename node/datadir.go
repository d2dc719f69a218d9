package node

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"storemesh/ledger"
)

// The data folder. Besides badger's directory it holds, format version 1:
//
//	FORMAT      "storemesh data N\n": the folder's format version. A folder
//	            without it is version 1 (written before the file existed);
//	            a newer version is refused.
//	IDENTITY    "device PEERID\nfleet FLEETID\n": the device and fleet the
//	            folder belongs to, written at first use. Any other device
//	            or fleet is refused before the ledger is opened.
//	fleet.pub   the fleet key (audit export needs it), written once: a
//	            different key is refused, never overwritten.
//	ownchain    the durable record of this device's own chains
//	            (ledger.OwnRecordFile).
const (
	formatFile   = "FORMAT"
	identityFile = "IDENTITY"
	ownChainFile = "ownchain"
	// DataFormat is the data folder format version this build writes.
	DataFormat = 1
)

// ErrForeignData refuses a data folder that belongs to another device or
// fleet, or that a newer build wrote.
var ErrForeignData = errors.New("node: data folder belongs to something else")

// prepareDataDir makes the data folder if missing and checks that it is
// this device's, in this fleet, in a format this build reads. created
// reports whether this call made the folder (a failed start removes it).
func prepareDataDir(dir string, cert *ledger.Certificate, fleet ed25519.PublicKey) (created bool, err error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return created, fmt.Errorf("node: data directory: %w", err)
	}
	if err := checkFormatFile(filepath.Join(dir, formatFile)); err != nil {
		return created, err
	}
	fleetID := ledger.FleetID(fleet)
	idPath := filepath.Join(dir, identityFile)
	want := fmt.Sprintf("device %s\nfleet %s\n", cert.Device, fleetID)
	switch b, err := os.ReadFile(idPath); {
	case err == nil:
		dev, fl := identityField(b, "device"), identityField(b, "fleet")
		if dev != cert.Device || fl != fleetID {
			return created, fmt.Errorf("%w: %s belongs to device %s of fleet %s; this is device %s (%s) of fleet %s: give each device its own --data folder",
				ErrForeignData, dir, dev, fl, cert.Device, cert.Name, fleetID)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return created, fmt.Errorf("node: %s: %w", idPath, err)
	}
	pubPath := filepath.Join(dir, FleetPubFile)
	switch have, err := ReadFleetPub(pubPath); {
	case err == nil:
		if !bytes.Equal(have, fleet) {
			return created, fmt.Errorf("%w: %s holds the key of fleet %s, this device is of fleet %s; it is never overwritten",
				ErrForeignData, pubPath, ledger.FleetID(have), fleetID)
		}
	case errors.Is(err, os.ErrNotExist):
		// audit export opens the ledger read-only and needs the fleet key.
		if err := WriteFleetPub(pubPath, fleet); err != nil {
			return created, fmt.Errorf("node: %w", err)
		}
	default:
		return created, fmt.Errorf("node: %w", err)
	}
	if _, err := os.Stat(idPath); errors.Is(err, os.ErrNotExist) {
		if err := writeFile(idPath, []byte(want), 0o644); err != nil {
			return created, fmt.Errorf("node: %s: %w", idPath, err)
		}
	}
	return created, nil
}

func identityField(b []byte, name string) string {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// checkFormatFile reads FORMAT (writing it when missing) and refuses a
// version newer than DataFormat.
func checkFormatFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := writeFile(path, fmt.Appendf(nil, "storemesh data %d\n", DataFormat), 0o644); err != nil {
			return fmt.Errorf("node: %s: %w", path, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("node: %s: %w", path, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "storemesh data ")
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n < 1 {
		return fmt.Errorf("%w: %s is not a storemesh data folder format file (%q)", ErrForeignData, path, b)
	}
	if n > DataFormat {
		return fmt.Errorf("%w: %s: data format %d, this build reads up to %d: run a newer storemesh", ErrForeignData, path, n, DataFormat)
	}
	return nil
}
