#!/usr/bin/env bash
# Builds Gitea (the forge the commit-status and webhook e2e tests talk to) from the
# Go module proxy into a cache outside the repo, keyed by version, and prints the
# bin dir. Beside it, static/options/ is the options/ folder of Gitea's module
# (locales, licenses, .gitignore templates): a build without the `bindata` tag
# reads it from disk (STATIC_ROOT_PATH), and the `bindata` tag needs generated
# files that the published module lacks. Without it Gitea stops at start
# ("translation is missing"); the REST API needs nothing else (no templates/, no
# built web assets: the web UI is not what the tests use).
# A warm cache returns at once; a cold build prints progress while it compiles.
#
# Tags: `sqlite sqlite_unlock_notify` (SQLite through cgo, as Gitea's own releases
# are built), so a C compiler is needed. To move to a newer Gitea, change the
# require line in go.mod, copy the replace lines of that release's go.mod
# (`go mod download -json code.gitea.io/gitea@vX.Y.Z` names the file) and
# `go mod tidy`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk '/^require code.gitea.io\/gitea /{print $3}' "$here/go.mod")"
cache="${GITFERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitferry}"
dir="$cache/gitea/$version"
bin="$dir/bin"
tags="sqlite sqlite_unlock_notify"

if [[ -x "$bin/gitea" && -d "$dir/static/options/locale" ]]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
command -v gcc >/dev/null || { echo "build.sh: gcc is needed (Gitea's SQLite driver uses cgo)" >&2; exit 1; }
rm -rf "$dir.partial"
mkdir -p "$dir.partial/bin" "$dir.partial/static"

# go build -v names each package as it compiles; print a line every 100.
progress() { awk -v what="$1" '{n++} n%100==0 {printf "  %s: %d packages compiled\n", what, n >"/dev/stderr"; fflush()} END {printf "  %s: done (%d packages)\n", what, n >"/dev/stderr"}'; }

start=$(date +%s)
echo "building Gitea $version into $bin (cold build: several minutes)" >&2
ldflags="-s -w -X main.Version=${version#v} -X 'main.Tags=$tags'"
# nice: the build shares the machine's two cores with whatever else runs.
log="$dir.partial/build.log"
if ! (cd "$here" && CGO_ENABLED=1 nice -n 19 go build -v -buildvcs=false -trimpath -tags "$tags" \
      -ldflags "$ldflags" -o "$dir.partial/bin/gitea" code.gitea.io/gitea 2>&1 | tee "$log" | progress gitea); then
  tail -n 30 "$log" >&2
  echo "build.sh: building Gitea failed (log: $log)" >&2
  exit 1
fi
rm -f "$log"
[[ -x "$dir.partial/bin/gitea" ]] || { echo "build.sh: gitea was not built" >&2; exit 1; }

src="$(cd "$here" && go list -m -f '{{.Dir}}' code.gitea.io/gitea)"
cp -r "$src/options" "$dir.partial/static/"
chmod -R u+w "$dir.partial/static"

rm -rf "$dir" && mv "$dir.partial" "$dir"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
