package node

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"storemesh/ledger"
)

// RegistryFile, in a fleet directory, lists every device enrolled with
// it, one a line: name, device id, store, role and enrolment time, tab
// separated. storemesh enroll refuses a name already in it, so device
// names (which receipt numbers carry: till-1·0042) are unique in a fleet
// enrolled from one fleet directory.
const RegistryFile = "devices.tsv"

// ErrNameTaken refuses to enroll a device under a name the fleet
// directory's registry already holds.
var ErrNameTaken = errors.New("device name already enrolled in this fleet")

// CheckDeviceName refuses name when the registry of fleetDir holds it (a
// missing registry holds nothing). Names compare without regard to case,
// as a person reading a receipt would.
func CheckDeviceName(fleetDir, name string) error {
	if strings.ContainsAny(name, "\t\n\r") {
		return fmt.Errorf("device name %q: no tabs or line breaks", name)
	}
	f, err := os.Open(filepath.Join(fleetDir, RegistryFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) >= 2 && strings.EqualFold(fields[0], name) {
			return fmt.Errorf("%w: %q is device %s (%s line %d); choose another name", ErrNameTaken, name, fields[1], RegistryFile, n)
		}
	}
	return sc.Err()
}

// RegisterDevice appends cert's device to the registry of fleetDir.
func RegisterDevice(fleetDir string, cert *ledger.Certificate) error {
	f, err := os.OpenFile(filepath.Join(fleetDir, RegistryFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s\t%s\t%s\t%s\t%s\n", cert.Name, cert.Device, cert.Store, cert.Role, time.Now().UTC().Format(time.RFC3339))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
