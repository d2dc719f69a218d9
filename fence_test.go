package storemesh_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportFences enforces DESIGN §2 and STYLE.md: imports point downward
// only (cmd → node → mesh → ledger → crdt, sim → mesh, ledger, crdt,
// node → sink → ledger, crdt), crdt
// and ledger do no networking, and no libp2p reaches crdt, ledger or sim.
//
// libp2p is fenced transitively. "net" is fenced transitively for crdt
// (it has only the standard library and cbor beneath it) but only on our
// own packages' direct imports for ledger: badger and go-datastore pull in
// "net" for their debug pages and uuid parsing, which is not networking our
// code does.
func TestImportFences(t *testing.T) {
	fences := []struct {
		dir          string
		ours         func(path string) bool // which storemesh packages may be beneath it
		netBeneath   bool                   // "net" forbidden anywhere beneath, not only in our code
		noLibp2p     bool
		noNetInOwned bool
	}{
		{dir: "crdt", ours: only("storemesh/crdt"), netBeneath: true, noLibp2p: true, noNetInOwned: true},
		{dir: "ledger", ours: only("storemesh/ledger", "storemesh/crdt"), noLibp2p: true, noNetInOwned: true},
		{dir: "mesh", ours: only("storemesh/mesh", "storemesh/ledger", "storemesh/crdt")},
		{dir: "sim", ours: only("storemesh/sim", "storemesh/mesh", "storemesh/ledger", "storemesh/crdt"), noLibp2p: true},
		// The anchor's sinks: node imports them; they read the ledger only
		// (never the mesh: a sink knows nothing of peers).
		{dir: "sink", ours: only("storemesh/sink", "storemesh/ledger", "storemesh/crdt"), noLibp2p: true},
		{dir: "sink/pg", ours: onlyExact("storemesh/sink/pg", "storemesh/sink", "storemesh/ledger", "storemesh/crdt"), noLibp2p: true},
		{dir: "sink/mqtt", ours: onlyExact("storemesh/sink/mqtt", "storemesh/sink", "storemesh/ledger", "storemesh/crdt"), noLibp2p: true},
	}
	for _, fc := range fences {
		t.Run(fc.dir, func(t *testing.T) {
			if !hasGoFiles(t, fc.dir) {
				t.Logf("%s has no Go files yet; nothing to check", fc.dir)
				return
			}
			for _, p := range listDeps(t, "./"+fc.dir) {
				owned := p.ImportPath == "storemesh" || strings.HasPrefix(p.ImportPath, "storemesh/")
				switch {
				case owned && !fc.ours(p.ImportPath):
					t.Errorf("%s depends on %s, %s", fc.dir, p.ImportPath, p.via())
				case fc.noLibp2p && strings.Contains(p.ImportPath, "libp2p"):
					t.Errorf("%s depends on %s (libp2p), %s", fc.dir, p.ImportPath, p.via())
				case fc.netBeneath && p.ImportPath == "net":
					t.Errorf("%s depends on package net, %s", fc.dir, p.via())
				}
				if fc.noNetInOwned && owned {
					for _, imp := range p.Imports {
						if imp == "net" || imp == "net/http" || strings.HasPrefix(imp, "net/http/") {
							t.Errorf("%s imports %s", p.ImportPath, imp)
						}
					}
				}
			}
		})
	}
}

// TestImportFencesNodeAndCmd: only cmd/... may import node or cmd/....
func TestImportFencesNodeAndCmd(t *testing.T) {
	for _, p := range listDeps(t, "./...") {
		if !strings.HasPrefix(p.ImportPath, "storemesh/") || strings.HasPrefix(p.ImportPath, "storemesh/cmd/") {
			continue
		}
		for _, imp := range p.Imports {
			if imp == "storemesh/node" || strings.HasPrefix(imp, "storemesh/node/") || strings.HasPrefix(imp, "storemesh/cmd/") {
				t.Errorf("%s imports %s; only cmd may", p.ImportPath, imp)
			}
		}
	}
}

type goPackage struct {
	ImportPath string
	Imports    []string
	Error      *struct{ Err string }
	importers  []string
}

func (p goPackage) via() string {
	if len(p.importers) == 0 {
		return "directly"
	}
	return "imported by " + strings.Join(p.importers, ", ")
}

// onlyExact allows exactly these packages (and crdt's and ledger's
// subpackages), not every package beneath each: sink/pg may use sink but
// not sink/mqtt.
func onlyExact(paths ...string) func(string) bool {
	return func(p string) bool {
		for _, q := range paths {
			if p == q || (strings.HasPrefix(p, q+"/") && (q == "storemesh/crdt" || q == "storemesh/ledger")) {
				return true
			}
		}
		return false
	}
}

func only(paths ...string) func(string) bool {
	return func(p string) bool {
		for _, q := range paths {
			if p == q || strings.HasPrefix(p, q+"/") {
				return true
			}
		}
		return false
	}
}

// listDeps runs go list -deps on pattern from the module root and returns
// every package beneath it, each with the packages in the set that import it.
func listDeps(t *testing.T, pattern string) []goPackage {
	t.Helper()
	root := moduleRoot(t)
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Imports,Error", pattern)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pattern, err, stderr.String())
	}
	var pkgs []goPackage
	byPath := map[string]int{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Logf("go list: %s: %s", p.ImportPath, p.Error.Err) // a build error is not a fence breach
		}
		byPath[p.ImportPath] = len(pkgs)
		pkgs = append(pkgs, p)
	}
	for _, p := range pkgs {
		for _, imp := range p.Imports {
			if i, ok := byPath[imp]; ok {
				pkgs[i].importers = append(pkgs[i].importers, p.ImportPath)
			}
		}
	}
	return pkgs
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd() // go test runs in the package directory: the root
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: %v", dir, err)
	}
	return dir
}

func hasGoFiles(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(moduleRoot(t), dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}
