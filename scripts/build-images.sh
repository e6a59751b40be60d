#!/usr/bin/env bash
# Builds the container images the test clusters' nodes run, without Docker: each image is
# a directory turned into one layer tar plus a config, packed as a docker-archive tarball
# that `ctr images import` takes. Output, cached by tag:
#   $FERRY_CACHE/images/<name>-<tag>.tar      (image ferry.local/<name>:<tag>)
#
#   pause                  the pod sandbox: busybox `sleep`, which is all a sandbox must do
#   toolbox                busybox userland (sh, nslookup, nc, http-get, ...) for test pods and
#                          local-path-provisioner's helper pods
#   coredns                CoreDNS, from the binary build-testenv.sh built
#   local-path-provisioner the default StorageClass's provisioner, likewise
#   csi-hostpath           the test clusters' CSI driver (busybox's tar and cp take and
#                          restore its snapshots), with the CSI sidecars csi-provisioner and
#                          csi-snapshotter and the snapshot-controller, likewise
#   ferry                  Ferry itself: the release `ferry` binary (FERRY_BIN, default
#                          target/release/ferry), the shared libraries it links, CA
#                          certificates, a non-root user; tag = the workspace version
#                          (or FERRY_IMAGE_TAG). Built by `make image`, not by `all`.
#
# Usage: build-images.sh [all|pause|toolbox|coredns|local-path-provisioner|csi|ferry]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$here/crates/testenv/versions.env"

root="${FERRY_CACHE:-$HOME/.cache/ferry}"
# FERRY_IMAGE_DIR: where tarballs go instead (a test's image of the binary under test).
out_dir="${FERRY_IMAGE_DIR:-$root/images}"
bin_cache="$root/testenv"
mkdir -p "$out_dir"

log() { printf '[build-images] %s\n' "$*" >&2; }

busybox_bin() {
  local bb=/bin/busybox
  [ -x "$bb" ] && "$bb" --list >/dev/null 2>&1 && file_is_static "$bb" && { echo "$bb"; return; }
  echo "build-images: a static busybox is needed for the test images: apt-get install busybox-static" >&2
  exit 1
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# pack_image NAME TAG ROOTFS CONFIG_JSON: writes $out_dir/NAME-TAG.tar from the directory
# ROOTFS; CONFIG_JSON is the image's runtime "config" object (Entrypoint, Cmd, Env, User).
pack_image() {
  local name="$1" tag="$2" rootfs="$3" config="$4"
  local out="$out_dir/$name-$tag.tar" tmp
  tmp="$(mktemp -d)"
  # A reproducible layer: sorted names and fixed times, so the same inputs give the same
  # image id. Owners are kept as they are in ROOTFS (root, but for a non-root user's home).
  tar --sort=name --mtime=@0 --numeric-owner -C "$rootfs" -cf "$tmp/layer.tar" .
  local diff_id
  diff_id="$(sha256 "$tmp/layer.tar")"
  mkdir -p "$tmp/$diff_id"
  mv "$tmp/layer.tar" "$tmp/$diff_id/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
      "$config" "$diff_id" > "$tmp/config.json"
  local config_id
  config_id="$(sha256 "$tmp/config.json")"
  mv "$tmp/config.json" "$tmp/$config_id.json"
  printf '[{"Config":"%s.json","RepoTags":["ferry.local/%s:%s"],"Layers":["%s/layer.tar"]}]' \
      "$config_id" "$name" "$tag" "$diff_id" > "$tmp/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
      -C "$tmp" -cf "$out.tmp" manifest.json "$config_id.json" "$diff_id"
  mv "$out.tmp" "$out"
  rm -rf "$tmp"
  log "ferry.local/$name:$tag -> $out ($(du -h "$out" | cut -f1))"
}

# A busybox root: the binary, one symlink per applet, and the files a userland expects.
busybox_rootfs() {
  local dir="$1" bb
  bb="$(busybox_bin)"
  chmod 0755 "$dir"
  mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/home" "$dir/var/run"
  chmod 1777 "$dir/tmp"
  cp "$bb" "$dir/bin/busybox"
  local applet
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
  # Debian's static busybox crashes in `wget` (seen with addresses and names alike), so the
  # images carry a small HTTP getter on top of `nc`, which works.
  cat > "$dir/bin/http-get" <<'SCRIPT'
#!/bin/sh
# http-get http://HOST[:PORT][/PATH]: prints the body of a plain HTTP/1.0 GET, fails unless 200.
url="${1#http://}"; hostport="${url%%/*}"; path="/${url#*/}"
[ "$url" = "$hostport" ] && path=/
host="${hostport%:*}"; port=80
[ "$host" != "$hostport" ] && port="${hostport##*:}"
tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" | nc -w "${HTTP_GET_TIMEOUT:-5}" "$host" "$port" > "$tmp" || exit 1
head -n 1 "$tmp" | grep -q '^HTTP/1\.[01] 200 ' || { echo "http-get: $(head -n 1 "$tmp")" >&2; exit 1; }
sed '1,/^\r*$/d' "$tmp"
SCRIPT
  chmod 0755 "$dir/bin/http-get"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nferry:x:65532:65532:ferry:/home:/bin/sh\n' > "$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nferry:x:65532:\n' > "$dir/etc/group"
}

want() {
  local name="$1" tag="$2"
  if [ -s "$out_dir/$name-$tag.tar" ] && [ -z "${FERRY_IMAGES_REBUILD:-}" ]; then
    log "ferry.local/$name:$tag cached"; return 1
  fi
  return 0
}

build_pause() {
  want pause "$TOOLBOX_VERSION" || return 0
  local rootfs; rootfs="$(mktemp -d)"
  busybox_rootfs "$rootfs"
  pack_image pause "$TOOLBOX_VERSION" "$rootfs" \
    '{"Entrypoint":["/bin/sleep","2147483647"],"Env":["PATH=/bin"],"User":"65534:65534"}'
  rm -rf "$rootfs"
}

build_toolbox() {
  want toolbox "$TOOLBOX_VERSION" || return 0
  local rootfs; rootfs="$(mktemp -d)"
  busybox_rootfs "$rootfs"
  pack_image toolbox "$TOOLBOX_VERSION" "$rootfs" '{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]}'
  rm -rf "$rootfs"
}

# An image holding one static Go binary (CGO off) from the testenv cache, plus busybox for
# the shell scripts some of them run.
binary_image() {
  local name="$1" version="$2" binary="$3" entry="$4"
  want "$name" "$version" || return 0
  local bin="$bin_cache/$name-$version/bin/$binary"
  [ -x "$bin" ] || { echo "build-images: $bin is missing; run scripts/build-testenv.sh $name first" >&2; exit 1; }
  local rootfs; rootfs="$(mktemp -d)"
  busybox_rootfs "$rootfs"
  mkdir -p "$rootfs/usr/bin"
  cp "$bin" "$rootfs/usr/bin/$binary"
  pack_image "$name" "$version" "$rootfs" "{\"Entrypoint\":[\"/usr/bin/$binary\"],\"Env\":[\"PATH=/usr/bin:/bin\"]$entry}"
  rm -rf "$rootfs"
}

# Ferry's own image: only what the binary needs to run. The shared libraries come from
# ldd, so the image matches the machine the binary was built on.
build_ferry() {
  local bin="${FERRY_BIN:-$here/target/release/ferry}"
  [ -x "$bin" ] || { echo "build-images: $bin is missing; build it with cargo build --release -p ferry-cli" >&2; exit 1; }
  local tag="${FERRY_IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n 1)}"
  local rootfs; rootfs="$(mktemp -d)"
  chmod 0755 "$rootfs"
  mkdir -p "$rootfs/usr/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/ferry"
  chmod 1777 "$rootfs/tmp"
  cp "$bin" "$rootfs/usr/bin/ferry"
  # Debug information (a debug build's line tables) only makes the image bigger.
  strip --strip-debug "$rootfs/usr/bin/ferry"
  local lib
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+' | sort -u); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nferry:x:65532:65532:ferry:/home/ferry:/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nferry:x:65532:\n' > "$rootfs/etc/group"
  chown 65532:65532 "$rootfs/home/ferry"
  pack_image ferry "$tag" "$rootfs" \
    '{"Entrypoint":["/usr/bin/ferry"],"Env":["PATH=/usr/bin","HOME=/home/ferry","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"User":"65532:65532","WorkingDir":"/home/ferry"}'
  rm -rf "$rootfs"
}

build_coredns() { binary_image coredns "$COREDNS_VERSION" coredns ',"User":"65532:65532"'; }
build_local_path() { binary_image local-path-provisioner "$LOCAL_PATH_VERSION" local-path-provisioner ''; }
build_csi() {
  binary_image csi-hostpath "$CSI_HOSTPATH_VERSION" csi-hostpath ''
  binary_image csi-provisioner "$CSI_PROVISIONER_VERSION" csi-provisioner ''
  binary_image csi-snapshotter "$CSI_SNAPSHOTTER_VERSION" csi-snapshotter ''
  binary_image snapshot-controller "$CSI_SNAPSHOTTER_VERSION" snapshot-controller ''
}

what="${1:-all}"
case "$what" in
  pause) build_pause ;;
  toolbox) build_toolbox ;;
  coredns) build_coredns ;;
  local-path-provisioner) build_local_path ;;
  csi) build_csi ;;
  ferry) build_ferry ;;
  all) build_pause; build_toolbox; build_coredns; build_local_path; build_csi ;;
  *) echo "usage: $0 [all|pause|toolbox|coredns|local-path-provisioner|csi|ferry]" >&2; exit 2 ;;
esac
