#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the Go module
# proxy into a cache outside the repo, keyed by version, and prints the bin dir.
# A warm cache returns at once; a cold build prints progress while it compiles.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/k8s/go.mod")"
etcd_version="$(grep -oE "go.etcd.io/etcd/server/v3 v[0-9.]+" "$here/etcd/go.mod" | head -1 | cut -d" " -f2)"
cache="${GITFERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitferry}"
bin="$cache/controlplane/k8s-$k8s_version-etcd-$etcd_version/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" ]]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
mkdir -p "$bin.partial"

# go build -v names each package as it compiles; print a line every 100.
progress() { awk -v what="$1" '{n++} n%100==0 {printf "  %s: %d packages compiled\n", what, n >"/dev/stderr"; fflush()} END {printf "  %s: done (%d packages)\n", what, n >"/dev/stderr"}'; }

export CGO_ENABLED=0
start=$(date +%s)
echo "building etcd $etcd_version and Kubernetes $k8s_version into $bin (cold build: several minutes)" >&2
(cd "$here/etcd" && go build -v -buildvcs=false -trimpath -ldflags "-s -w" \
   -o "$bin.partial/etcd" go.etcd.io/etcd/server/v3 2>&1 | progress etcd)
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
(cd "$here/k8s" && go build -v -buildvcs=false -trimpath -tags grpcnotrace -ldflags "$ldflags" \
   -o "$bin.partial/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
   2>&1 | progress kubernetes)
for b in etcd kube-apiserver kube-controller-manager; do
  [[ -x "$bin.partial/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }
done
rm -rf "$bin" && mv "$bin.partial" "$bin"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
