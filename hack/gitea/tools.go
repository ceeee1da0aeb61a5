//go:build tools

// Package tools pins the gitea command this module builds (its main package is the
// module root), so `go mod tidy` keeps its dependencies.
package tools

import _ "code.gitea.io/gitea"
