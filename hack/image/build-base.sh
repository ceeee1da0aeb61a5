#!/usr/bin/env bash
# Builds the operator image's base from Debian packages, for machines that reach
# no container registry: debootstrap a Debian root filesystem with python3, git,
# openssh-client and ca-certificates, then `docker import` it. Prints the tag.
#
# The Debian mirror is this machine's own (its apt sources), else debootstrap's
# default; release files are checked against debian-archive-keyring. The tag
# carries a hash of this script, so changing the suite or the packages rebuilds;
# an existing tag returns at once. The root filesystem's tarball is cached
# outside the repo, so a pruned Docker re-imports without bootstrapping again.
set -euo pipefail

SUITE=bookworm   # Debian 12: python3 is 3.11, the version requirements/*.lock are for
PACKAGES=python3,python3-venv,python3-pip,git,openssh-client,ca-certificates

version="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
tag="gitferry-base:$SUITE-$version"
cache="${GITFERRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitferry}/image-base"
tarball="$cache/$SUITE-$version.tar"

command -v docker >/dev/null || { echo "build-base.sh: docker is not installed" >&2; exit 1; }
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi

if [[ "$(id -u)" = 0 ]]; then SUDO=(); else SUDO=(sudo); fi

# This machine's Debian entries for $SUITE, $SUITE-updates and $SUITE-security,
# as deb822 paragraphs (from sources.list.d/*.sources) and one-line entries
# (from sources.list and sources.list.d/*.list).
host_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        deb = 0; match_suite = 0; enabled = 1; out = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^#/) continue
          out = out $i "\n"
          split($i, kv, ":[ \t]*")
          key = tolower(kv[1]); n = split(substr($i, length(kv[1]) + 2), words, /[ \t]+/)
          for (j = 1; j <= n; j++) {
            if (key == "types" && words[j] == "deb") deb = 1
            if (key == "suites" && (words[j] == suite || index(words[j], suite "-") == 1)) match_suite = 1
            if (key == "enabled" && tolower(words[j]) == "no") enabled = 0
          }
        }
        if (deb && match_suite && enabled) printf "%s\n", out
      }' "$f"
  done
}
host_list_lines() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    if [[ -r "$f" ]]; then cat "$f"; fi
  done | awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {
        if ($(i+1) == suite || index($(i+1), suite "-") == 1) print; break } }'
}
# The mirror for debootstrap: the first URI of an entry for exactly $SUITE.
host_mirror() {
  {
    host_sources | awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      { uri = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
          if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == suite) ok = 1 }
        }
        if (ok && uri != "") print uri }'
    host_list_lines | awk -v suite="$SUITE" '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == suite) print $i; break } }'
  } | head -1
}

if [[ ! -f "$tarball" ]]; then
  command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] \
    || { echo "build-base.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  mirror="$(host_mirror || true)"
  echo "bootstrapping Debian $SUITE from ${mirror:-the default mirror of debootstrap} (cold build: a few minutes)" >&2
  start=$(date +%s)
  mkdir -p "$cache/debs"
  work="$(mktemp -d "$cache/build.XXXXXX")"
  trap '"${SUDO[@]}" rm -rf "$work"' EXIT
  root="$work/rootfs"
  "${SUDO[@]}" /usr/sbin/debootstrap --variant=minbase --include="$PACKAGES" \
    --cache-dir="$cache/debs" "$SUITE" "$root" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; echo "build-base.sh: debootstrap failed" >&2; exit 1; }

  # Security and point-release updates from the same sources this machine uses.
  sources="$(host_sources)"
  lines="$(host_list_lines)"
  if [[ -n "$sources$lines" ]]; then
    "${SUDO[@]}" rm -f "$root/etc/apt/sources.list"
    [[ -z "$sources" ]] || printf '%s\n' "$sources" | "${SUDO[@]}" tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null
    [[ -z "$lines" ]] || printf '%s\n' "$lines" | "${SUDO[@]}" tee "$root/etc/apt/sources.list" >/dev/null
    "${SUDO[@]}" chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get update -qq && apt-get -y -qq --no-install-recommends dist-upgrade' >>"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; echo "build-base.sh: apt-get dist-upgrade failed" >&2; exit 1; }
  fi
  "${SUDO[@]}" chroot "$root" apt-get clean
  "${SUDO[@]}" rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/*

  "${SUDO[@]}" tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$work/rootfs.tar" .
  "${SUDO[@]}" chown "$(id -u):$(id -g)" "$work/rootfs.tar"
  mv "$work/rootfs.tar" "$tarball"
  find "$cache" -maxdepth 1 -name '*.tar' ! -path "$tarball" -delete  # older versions
  echo "bootstrapped in $(( $(date +%s) - start ))s" >&2
fi

docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "Debian $SUITE with $PACKAGES (hack/image/build-base.sh)" \
  "$tarball" "$tag" >/dev/null
echo "$tag"
