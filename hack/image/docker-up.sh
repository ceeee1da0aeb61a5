#!/usr/bin/env bash
# Makes sure a Docker daemon answers `docker info` (the image tests and
# `make image` need one): installs Debian's docker.io with apt when dockerd is
# missing, and starts dockerd in the background when the daemon does not
# answer, logging to $GITFERRY_DOCKERD_LOG (default /tmp/gitferry-dockerd.log).
#
#   docker-up.sh              outside CI, a Docker that cannot run is a warning
#                             (the image tests then skip, saying why)
#   docker-up.sh --required   it is an error; so is it whenever CI=true
set -euo pipefail

required=false
[[ "${1:-}" == "--required" || "${CI:-}" == "true" ]] && required=true
log="${GITFERRY_DOCKERD_LOG:-/tmp/gitferry-dockerd.log}"
if [[ "$(id -u)" = 0 ]]; then SUDO=(); else SUDO=(sudo); fi

give_up() {
  if $required; then
    echo "Docker is required${CI:+ under CI} and $1" >&2
    exit 1
  fi
  echo "warning: $1; the tests that need Docker will be skipped" >&2
  exit 0
}

answers() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; }

answers && exit 0

dockerd="$(command -v dockerd || true)"
if [[ -z "$dockerd" ]]; then
  echo "installing docker.io (for the operator image and its test)" >&2
  { "${SUDO[@]}" apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq docker.io >/dev/null; } \
    || give_up "installing docker.io with apt-get failed"
  dockerd="$(command -v dockerd || true)"
  [[ -n "$dockerd" ]] || give_up "docker.io is installed but dockerd is not on PATH"
fi
command -v docker >/dev/null || give_up "dockerd is installed but the docker client is not"

# A daemon on a non-default DOCKER_HOST is not ours to start.
if [[ -n "${DOCKER_HOST:-}" && "$DOCKER_HOST" != "unix:///var/run/docker.sock" ]]; then
  give_up "the daemon at DOCKER_HOST=$DOCKER_HOST does not answer"
fi

echo "starting dockerd (log: $log)" >&2
"${SUDO[@]}" sh -c 'setsid "$1" >>"$2" 2>&1 </dev/null &' sh "$dockerd" "$log" \
  || give_up "dockerd could not be started"
for _ in $(seq 60); do
  answers && exit 0
  sleep 1
done
give_up "dockerd did not answer \`docker info\` within 60s ($(tail -1 "$log" 2>/dev/null || echo "see $log"))"
