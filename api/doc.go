// Package api holds the HTTP API's OpenAPI 3 document (openapi.json), the
// public contract of docs/design.md §8a, embedded so the node serves the very file
// the repository documents at GET /v1/openapi.
//
// Invariant: every route the node registers is in the document with its
// methods and error codes (x-error-codes), and nothing else is;
// node.TestOpenAPIMatchesRoutes enforces it.
//
// Imports nothing of ours. Imported by node.
package api

import _ "embed"

// OpenAPI is the OpenAPI 3 document, JSON.
//
//go:embed openapi.json
var OpenAPI []byte
