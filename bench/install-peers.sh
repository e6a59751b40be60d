#!/usr/bin/env bash
# Installs the tools bench-datamover compares Ferry with, once, into a cache outside the
# checkout keyed by version:
#   $FERRY_CACHE/bench/<tool>-<version>/bin/<tool>
# A tool whose binary exists is skipped, so a warm run costs nothing. kopia is optional:
# when it does not build, the reason goes to $FERRY_CACHE/bench/kopia-<version>.skipped
# and the bench reports it instead of failing (a failed build is retried on the next run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091
source "$here/peers.env"

cache="${FERRY_CACHE:-$HOME/.cache/ferry}/bench"
mkdir -p "$cache"

log() { printf '[install-peers] %s\n' "$*" >&2; }

# Root needs no sudo; anyone else does (and apt tells them if sudo is missing).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null; then
    # A fresh container has no package lists yet.
    as_root apt-get update >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null
  fi
}

install_restic() {
  local ver="${RESTIC_DEB_VERSION%%-*}"
  local out="$cache/restic-$ver/bin"
  [ -x "$out/restic" ] && { log "restic $ver cached"; return; }
  if [ "$(dpkg-query -W -f='${Version}' restic 2>/dev/null || true)" != "$RESTIC_DEB_VERSION" ]; then
    log "installing restic $RESTIC_DEB_VERSION (Debian package)"
    apt_install "restic=$RESTIC_DEB_VERSION"
  fi
  # The package owns /usr/bin/restic; the cache entry points at it so every peer is
  # found the same way.
  mkdir -p "$out"
  ln -sf "$(command -v restic)" "$out/restic"
}

install_time() {
  [ -x /usr/bin/time ] && return
  log "installing GNU time (Debian package)"
  apt_install time
}

install_rustic() {
  local root="$cache/rustic-$RUSTIC_VERSION"
  [ -x "$root/bin/rustic" ] && { log "rustic $RUSTIC_VERSION cached"; return; }
  log "building rustic $RUSTIC_VERSION (cargo install; takes a long while on 2 cores)"
  # Its own target dir (kept until success, so an interrupted build resumes), never the
  # workspace's.
  nice cargo install --locked rustic-rs --version "$RUSTIC_VERSION" \
    --target-dir "$cache/rustic-build" --root "$root.tmp"
  rm -rf "$root"; mv "$root.tmp" "$root"
  rm -rf "$cache/rustic-build"
}

install_kopia() {
  local root="$cache/kopia-$KOPIA_VERSION"
  local skipped="$cache/kopia-$KOPIA_VERSION.skipped"
  local log="$cache/kopia-build.log"
  [ -x "$root/bin/kopia" ] && { log "kopia $KOPIA_VERSION cached"; return; }
  if ! command -v go >/dev/null; then
    echo "go is not installed" > "$skipped"
    log "kopia skipped: go is not installed"
    return
  fi
  export GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
  # The checksum database is not always reachable from here; the version is pinned.
  export GOSUMDB="${GOSUMDB:-off}"
  rm -rf "$root.tmp"; mkdir -p "$root.tmp/bin"
  log "building kopia $KOPIA_VERSION (go install; a few minutes)"
  if GOBIN="$root.tmp/bin" nice go install "github.com/kopia/kopia@$KOPIA_VERSION" >"$log" 2>&1 \
      || build_kopia_in_wrapper "$root.tmp/bin" >>"$log" 2>&1; then
    rm -rf "$root"; mv "$root.tmp" "$root"; rm -f "$skipped"
    return
  fi
  rm -rf "$root.tmp"
  # The reason is shown in the bench output: keep it short and free of server names.
  {
    echo "kopia $KOPIA_VERSION did not build from the Go module proxy:"
    grep -v '^go: downloading' "$log" | tail -n 3 | sed -E 's#https?://[^ ]*#<proxy URL>#g'
  } > "$skipped"
  log "kopia skipped: build failed (see $log)"
}

# `go install mod@version` also asks the proxy for the module's version list (to look for
# deprecation notices), which some proxies refuse. A throwaway module that requires the
# same version and builds its main package fetches only that version, with the same
# dependency versions (kopia's own go.mod decides them).
build_kopia_in_wrapper() {
  local out="$1" dir="${FERRY_CACHE:-$HOME/.cache/ferry}/gobuild/kopia-$KOPIA_VERSION"
  echo "go install failed; building in a wrapper module at $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir"
    go mod init ferry.local/bench-kopia
    go mod edit -require="github.com/kopia/kopia@$KOPIA_VERSION"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/kopia/kopia"\n' > tools.go
    go mod tidy
    nice go build -trimpath -ldflags "-s -w" -o "$out/kopia" github.com/kopia/kopia
  )
}

case "${1:-all}" in
  restic) install_restic ;;
  rustic) install_rustic ;;
  kopia) install_kopia ;;
  time) install_time ;;
  all) install_time; install_restic; install_kopia; install_rustic ;;
  *) echo "usage: $0 [all|restic|rustic|kopia|time]" >&2; exit 2 ;;
esac
