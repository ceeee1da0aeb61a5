#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
# from the Go module proxy into a cache outside the repo, keyed by version, and
# prints the bin dir. Beside the bin dir it writes kwok-stages.yaml, kwok's own
# Stages for fake Nodes and Pods, taken from kwok's module at build time.
# A warm cache returns at once; a cold build prints progress while it compiles.
#
# To move to a newer kwok: `go list -m -versions sigs.k8s.io/kwok`, then change
# KWOK_VERSION below (the cache dir's name changes with it, so it is rebuilt).
set -euo pipefail

KWOK_VERSION=v0.8.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/k8s/go.mod")"
etcd_version="$(grep -oE "go.etcd.io/etcd/server/v3 v[0-9.]+" "$here/etcd/go.mod" | head -1 | cut -d" " -f2)"
cache="${GITFERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitferry}"
dir="$cache/controlplane/k8s-$k8s_version-etcd-$etcd_version-kwok-$KWOK_VERSION"
bin="$dir/bin"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

warm=1
for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || warm=0; done
[[ -s "$dir/kwok-stages.yaml" ]] || warm=0
if (( warm )); then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not installed" >&2; exit 1; }
rm -rf "$bin.partial"
mkdir -p "$bin.partial"

# go build -v names each package as it compiles; print a line every 100.
progress() { awk -v what="$1" '{n++} n%100==0 {printf "  %s: %d packages compiled\n", what, n >"/dev/stderr"; fflush()} END {printf "  %s: done (%d packages)\n", what, n >"/dev/stderr"}'; }

export CGO_ENABLED=0
start=$(date +%s)
echo "building etcd $etcd_version, Kubernetes $k8s_version and kwok $KWOK_VERSION into $bin (cold build: several minutes)" >&2
(cd "$here/etcd" && go build -v -buildvcs=false -trimpath -ldflags "-s -w" \
   -o "$bin.partial/etcd" go.etcd.io/etcd/server/v3 2>&1 | progress etcd)
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
(cd "$here/k8s" && go build -v -buildvcs=false -trimpath -tags grpcnotrace -ldflags "$ldflags" \
   -o "$bin.partial/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
   k8s.io/kubernetes/cmd/kube-scheduler 2>&1 | progress kubernetes)
# kwok has no replace directives, so `go install pkg@version` builds it as published.
# Run from / so no go.mod around changes what it resolves.
(cd / && GOBIN="$bin.partial" go install -v -trimpath -ldflags "-s -w" \
   "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" 2>&1 | progress kwok)
for b in "${binaries[@]}"; do
  [[ -x "$bin.partial/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }
done

# The standalone kwok binary ships no Stages ("no stages found"): its module has
# them. Nodes: initialize, then heartbeat with a Lease. Pods: ready, complete (Pods
# of a Job), delete (nothing else finishes a deleted Pod without a kubelet).
stage_dir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
stages=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
)
{
  echo "# kwok $KWOK_VERSION's Stages, from $stage_dir (written by hack/controlplane/build.sh)"
  for s in "${stages[@]}"; do
    [[ -f "$stage_dir/$s" ]] || { echo "build.sh: kwok's module has no $s" >&2; exit 1; }
    printf -- '---\n# %s\n' "$s"
    cat "$stage_dir/$s"
  done
} >"$bin.partial/../kwok-stages.yaml.partial"

rm -rf "$bin" && mv "$bin.partial" "$bin"
mv "$dir/kwok-stages.yaml.partial" "$dir/kwok-stages.yaml"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
