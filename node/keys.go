package node

// Fleet and device files. Formats, version 1 (PEM, so they survive copy
// and paste and say what they are):
//
//	fleet.key    "PRIVATE KEY", PKCS #8 ed25519 (mode 0600)
//	fleet.pub    "PUBLIC KEY", PKIX ed25519
//	device.key   "PRIVATE KEY", PKCS #8 ed25519 (mode 0600); its libp2p peer id is the device id
//	device.cert  "STOREMESH DEVICE CERTIFICATE", ledger.Certificate.Encode() (CBOR; carries its own version)

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"storemesh/ledger"
	"storemesh/mesh/p2p"
)

// File names in fleet, device and data directories.
const (
	FleetKeyFile   = "fleet.key"
	FleetPubFile   = "fleet.pub"
	DeviceKeyFile  = "device.key"
	DeviceCertFile = "device.cert"
	certPEMType    = "STOREMESH DEVICE CERTIFICATE"
)

// Device is an enrolled device: its key, certificate and fleet key.
type Device struct {
	Key   ed25519.PrivateKey
	Cert  *ledger.Certificate
	Fleet ed25519.PublicKey
}

// InitFleet makes a fleet key in dir. It refuses to overwrite one: losing
// a fleet key orphans every device enrolled with it.
func InitFleet(dir string, rand io.Reader) (*ledger.FleetKey, error) {
	if _, err := os.Stat(filepath.Join(dir, FleetKeyFile)); err == nil {
		return nil, fmt.Errorf("%s already holds a fleet key; refusing to overwrite it", dir)
	}
	k, err := ledger.NewFleetKey(rand)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writePrivateKey(filepath.Join(dir, FleetKeyFile), k.Private); err != nil {
		return nil, err
	}
	if err := WriteFleetPub(filepath.Join(dir, FleetPubFile), k.Public()); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadFleetKey reads dir/fleet.key.
func LoadFleetKey(dir string) (*ledger.FleetKey, error) {
	priv, err := readPrivateKey(filepath.Join(dir, FleetKeyFile))
	if err != nil {
		return nil, err
	}
	return &ledger.FleetKey{Private: priv}, nil
}

// ReadFleetPub reads a fleet public key from path, or from path/fleet.pub
// when path is a directory.
func ReadFleetPub(path string) (ed25519.PublicKey, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, FleetPubFile)
	}
	b, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return pub, nil
}

// WriteFleetPub writes a fleet public key file.
func WriteFleetPub(path string, pub ed25519.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// EnrollRequest describes a device to enroll.
type EnrollRequest struct {
	Store string // ignored for anchors: they cover every store
	Role  ledger.Role
	Name  string
	// Valid is how long the certificate lasts from NotBefore.
	Valid time.Duration
	// NotBefore: default an hour before now, so a terminal whose clock is
	// a little behind the enrolling laptop's accepts its own certificate.
	NotBefore time.Time
}

// Enroll makes a device key and its certificate signed by the fleet key.
func Enroll(fleet *ledger.FleetKey, req EnrollRequest, rand io.Reader) (*Device, error) {
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	id, err := p2p.DeviceID(priv)
	if err != nil {
		return nil, err
	}
	if req.Role == ledger.RoleAnchor {
		req.Store = ledger.FleetScope
	}
	if req.NotBefore.IsZero() {
		req.NotBefore = time.Now().Add(-time.Hour)
	}
	if req.Valid <= 0 {
		return nil, errors.New("validity must be positive")
	}
	cert, err := fleet.Issue(ledger.Certificate{
		Device: id, PubKey: priv.Public().(ed25519.PublicKey), Name: req.Name, Store: req.Store, Role: req.Role,
		NotBefore: req.NotBefore.UnixMilli(), Expiry: req.NotBefore.Add(req.Valid).UnixMilli(),
	})
	if err != nil {
		return nil, err
	}
	return &Device{Key: priv, Cert: cert, Fleet: fleet.Public()}, nil
}

// WriteDevice writes dir/device.key (0600), dir/device.cert and
// dir/fleet.pub. It refuses to overwrite a device key.
func WriteDevice(dir string, d *Device) error {
	if _, err := os.Stat(filepath.Join(dir, DeviceKeyFile)); err == nil {
		return fmt.Errorf("%s already holds a device key; refusing to overwrite it", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writePrivateKey(filepath.Join(dir, DeviceKeyFile), d.Key); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: certPEMType, Bytes: d.Cert.Encode()})
	if err := writeFile(filepath.Join(dir, DeviceCertFile), certPEM, 0o644); err != nil {
		return err
	}
	return WriteFleetPub(filepath.Join(dir, FleetPubFile), d.Fleet)
}

// LoadDevice reads a device directory and checks that its key, its
// certificate and the fleet key belong together.
func LoadDevice(dir string) (*Device, error) {
	key, err := readPrivateKey(filepath.Join(dir, DeviceKeyFile))
	if err != nil {
		return nil, err
	}
	der, err := readPEM(filepath.Join(dir, DeviceCertFile), certPEMType)
	if err != nil {
		return nil, err
	}
	cert, err := ledger.DecodeCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, DeviceCertFile), err)
	}
	fleet, err := ReadFleetPub(filepath.Join(dir, FleetPubFile))
	if err != nil {
		return nil, err
	}
	if err := cert.Verify(fleet, time.Time{}); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	id, err := p2p.DeviceID(key)
	if err != nil {
		return nil, err
	}
	if id != cert.Device {
		return nil, fmt.Errorf("%s: the certificate is for device %s, the key is device %s", dir, cert.Device, id)
	}
	return &Device{Key: key, Cert: cert, Fleet: fleet}, nil
}

func writePrivateKey(path string, k ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func readPrivateKey(path string) (ed25519.PrivateKey, error) {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return priv, nil
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("%s: not a PEM %q file", path, typ)
	}
	return blk.Bytes, nil
}

// writeFile writes path atomically (temp file, fsync, rename).
func writeFile(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
