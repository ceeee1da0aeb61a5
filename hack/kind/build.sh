#!/usr/bin/env bash
# Builds kind from the Go module proxy into a cache outside the repo, keyed by
# version, and prints the binary's path. A warm cache returns at once.
#
# Used by the pytest `cluster` fixture when GITFERRY_TEST_CLUSTER=kind. Only the
# kind binary comes from here; its node image must already be present locally
# (kind's own download of a binary or an image is never used).
#
# To move to a newer kind: `go list -m -versions sigs.k8s.io/kind`, then change
# KIND_VERSION below.
set -euo pipefail

KIND_VERSION=v0.33.0

cache="${GITFERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitferry}"
dir="$cache/kind-$KIND_VERSION"

if [[ -x "$dir/kind" ]]; then
  echo "$dir/kind"
  exit 0
fi

command -v go >/dev/null || { echo "hack/kind/build.sh: go is not installed" >&2; exit 1; }
rm -rf "$dir.partial"
mkdir -p "$dir.partial"

start=$(date +%s)
echo "building kind $KIND_VERSION into $dir (cold build: under a minute)" >&2
GOBIN="$dir.partial" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/kind@$KIND_VERSION"
[[ -x "$dir.partial/kind" ]] || { echo "hack/kind/build.sh: kind was not built" >&2; exit 1; }
rm -rf "$dir" && mv "$dir.partial" "$dir"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$dir/kind"
