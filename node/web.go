package node

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"

	"storemesh/api"
)

// The terminal page: plain HTML, CSS and JS, embedded, no build step and
// no CDN, so it works while the venue has no Internet. It talks only to
// its own node. Element ids are a contract with the page tests
// (web/README.md).
//
//go:embed web/index.html web/assets
var webFS embed.FS

func (n *Node) handlePage(w http.ResponseWriter, r *http.Request) error {
	b, err := webFS.ReadFile("web/index.html")
	if err != nil {
		return apiErr(CodeNotFound, "page missing from the build")
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'")
	w.Write(b)
	return nil
}

func (n *Node) handleAsset(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	b, err := fs.ReadFile(webFS, path.Join("web/assets", path.Base(name)))
	if err != nil {
		return apiErr(CodeNotFound, "no asset %q", name)
	}
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
	return nil
}

func (n *Node) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Write(api.OpenAPI)
	return nil
}
