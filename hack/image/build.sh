#!/usr/bin/env bash
# Builds the operator image from operator/Dockerfile and prints its tag:
#
#   hack/image/build.sh [TAG]              TAG defaults to gitferry:dev (manifests/)
#   BASE=python:3.11-slim hack/image/build.sh   where a registry is reachable
#
# Without BASE the base is the Debian image hack/image/build-base.sh bootstraps
# (cached; no registry needed). The Python wheels are downloaded here, by this
# machine's pip, into build/wheelhouse, checked against the hashes of
# requirements/runtime.lock (and of setuptools in requirements/test.lock);
# the Dockerfile installs from that wheelhouse, again with --require-hashes, so
# the build itself needs no network, and no trust in a CA that only this
# machine has (e.g. a proxy's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tag="${1:-gitferry:dev}"
python="${PYTHON:-python3}"

command -v docker >/dev/null || { echo "build.sh: docker is not installed" >&2; exit 1; }
base="${BASE:-$(bash "$here/build-base.sh")}"

# The wheels for the image's platform (CPython 3.11, glibc x86_64/aarch64 up
# to manylinux_2_28, as `make lock` resolves them), not for this machine's Python.
arch="$(docker info --format '{{.Architecture}}')"
case "$arch" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) echo "build.sh: no wheels are locked for $arch" >&2; exit 1 ;;
esac
platforms=(--platform "manylinux2014_$arch")
for minor in $(seq 28 -1 17); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done

wheelhouse="$repo/build/wheelhouse"
stamp="$(cat "$repo/requirements/runtime.lock" "$repo/requirements/test.lock" | sha256sum | cut -c1-16)-$arch"
if [[ "$(cat "$wheelhouse/.locks" 2>/dev/null)" != "$stamp" ]]; then
  rm -rf "$wheelhouse"
  mkdir -p "$wheelhouse"
  build_lock="$wheelhouse/.build.lock"
  awk '/^setuptools==/ {p = 1} p {print} p && !/\\$/ {exit}' "$repo/requirements/test.lock" >"$build_lock"
  grep -q -- '--hash=sha256:' "$build_lock" || { echo "build.sh: no setuptools with hashes in requirements/test.lock" >&2; exit 1; }
  echo "downloading the locked wheels into build/wheelhouse" >&2
  "$python" -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps \
    --only-binary=:all: --implementation cp --python-version 3.11 "${platforms[@]}" \
    --dest "$wheelhouse" -r "$repo/requirements/runtime.lock" -r "$build_lock"
  echo "$stamp" >"$wheelhouse/.locks"
fi

echo "building $tag on $base" >&2
old="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
docker build --file "$repo/operator/Dockerfile" --build-arg BASE="$base" --tag "$tag" "$repo" >&2
# The image this build replaced would stay behind untagged (a venv layer of
# some 200 MB per change): remove it, unless a container still uses it.
if [[ -n "$old" && "$old" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
  docker image rm "$old" >/dev/null 2>&1 || true
fi
echo "$tag"
