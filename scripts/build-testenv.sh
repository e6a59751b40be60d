#!/usr/bin/env bash
# Builds etcd, the Kubernetes control plane and node binaries, MinIO, mc, grpcurl, CoreDNS,
# local-path-provisioner, crictl, helm, and the CSI parts (csi-provisioner, csi-snapshotter,
# snapshot-controller and the snapshot CRDs, and the repository's own csi-hostpath driver)
# from their Go modules,
# once, into a cache outside the checkout keyed by version:
#   $FERRY_CACHE/testenv/<component>-<version>/bin/
# A component whose binaries exist is skipped, so a warm run costs nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$here/crates/testenv/versions.env"

cache="${FERRY_CACHE:-$HOME/.cache/ferry}/testenv"
work="${FERRY_CACHE:-$HOME/.cache/ferry}/gobuild"
mkdir -p "$cache" "$work"

export GOTOOLCHAIN=local
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
# The checksum database is not always reachable from here; the proxy's content is pinned
# by exact versions above.
export GOSUMDB="${GOSUMDB:-off}"
jobs="${FERRY_GO_JOBS:-$(nproc)}"

log() { printf '[build-testenv] %s\n' "$*" >&2; }

timed() {
  local name="$1"; shift
  local start=$SECONDS
  "$@"
  local took=$((SECONDS - start))
  [ "$took" -gt 1 ] && log "$name built in ${took}s"
  return 0
}

# A wrapper module that requires $1@$2, imports the given main packages from a tools.go,
# and applies the replace lines passed on stdin.
wrapper_module() {
  local dir="$1" modpath="$2" version="$3"; shift 3
  rm -rf "$dir"; mkdir -p "$dir"
  (
    cd "$dir"
    go mod init "ferry.local/testenv-build" >/dev/null 2>&1
    go mod edit -require="$modpath@$version"
    while read -r line; do
      [ -n "$line" ] && go mod edit -replace="$line"
    done
    {
      echo '//go:build tools'
      echo
      echo 'package tools'
      echo
      echo 'import ('
      for pkg in "$@"; do echo "	_ \"$pkg\""; done
      echo ')'
    } > tools.go
    go mod tidy >/dev/null
  )
}

build_etcd() {
  local out="$cache/etcd-$ETCD_VERSION/bin"
  [ -x "$out/etcd" ] && { log "etcd $ETCD_VERSION cached"; return; }
  local dir="$work/etcd-$ETCD_VERSION"
  local gomod
  gomod="$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  # etcd's server module replaces its sibling modules with ../ paths; pin them to the
  # same released version instead.
  grep -oE 'go\.etcd\.io/etcd/[a-z0-9/]+/v3 +=> +\.\./[a-z0-9/]+' "$gomod" \
    | awk -v v="$ETCD_VERSION" '{print $1 "=" $1 "@" v}' \
    | wrapper_module "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# The control plane and, for clusters with real nodes, the node's own binaries: one
# wrapper module, one build, so the node costs about a minute over the API server alone.
kube_bins="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
kube_pkgs="$(for b in $kube_bins; do printf 'k8s.io/kubernetes/cmd/%s ' "$b"; done)"

build_kube_at() {
  local KUBE_VERSION="$1"
  local out="$cache/kube-$KUBE_VERSION/bin"
  local have=1 b
  for b in $kube_bins; do [ -x "$out/$b" ] || have=0; done
  [ "$have" = 1 ] && { log "kubernetes $KUBE_VERSION cached"; return; }
  local dir="$work/kube-$KUBE_VERSION"
  local gomod staging
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  # Every staging module is required at v0.0.0 and replaced by a ./staging path that is
  # not in the module zip: point each at its published v0.<minor>.<patch> tag.
  staging="v0.${KUBE_VERSION#v1.}"
  grep -oE '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" \
    | awk -v v="$staging" '{print $1 "=" $1 "@" v}' \
    | wrapper_module "$dir" k8s.io/kubernetes "$KUBE_VERSION" $kube_pkgs
  local major minor
  major=1; minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  local ld="-s -w"
  ld+=" -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=$major"
  ld+=" -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -p "$jobs" -trimpath -ldflags "$ld" -o "$out.tmp/" $kube_pkgs)
  rm -rf "$out"; mv "$out.tmp" "$out"
}
build_kube() { build_kube_at "$KUBE_VERSION"; }
# The minor before KUBE_VERSION, for the test that moves an application from an older
# cluster to a newer one: that cluster's own control plane and node binaries.
build_kube_previous() { build_kube_at "$KUBE_PREVIOUS_VERSION"; }

# A single Go main package installed into the cache: go_install NAME VERSION PACKAGE.
go_install() {
  local name="$1" version="$2" pkg="$3"
  local out="$cache/$name-$version/bin"
  [ -x "$out/$name" ] && { log "$name $version cached"; return; }
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_coredns() { go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns; }
build_local_path() { go_install local-path-provisioner "$LOCAL_PATH_VERSION" github.com/rancher/local-path-provisioner; }
build_helm() { go_install helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm; }
build_crictl() { go_install crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl; }

build_minio() { go_install minio "$MINIO_VERSION" github.com/minio/minio; }
# mc, the MinIO client: the test environment adds a read-only user with it (MinIO's admin
# API wants signed requests).
build_mc() { go_install mc "$MC_VERSION" github.com/minio/mc; }

# The replace lines of the go.mod file $1 as `go mod edit -replace` arguments. A replace by a
# local path names a sibling module that is not in the module zip: it becomes that module
# at the same tag, $2.
replaces_of() {
  awk -v v="$2" '
    /^replace[ \t]*\(/ { block = 1; next }
    block && /^\)/ { block = 0; next }
    {
      line = $0
      if (block) line = "replace " line
      if (line !~ /^replace[ \t]/ || line !~ /=>/) next
      split(line, side, "=>")
      split(side[1], l, " "); n = split(side[2], r, " ")
      if (n == 1 && r[1] ~ /^[.\/]/) print l[2] "=" l[2] "@" v
      else if (n == 2) print l[2] "=" r[1] "@" r[2]
    }' "$1"
}

# Main packages of a module whose go.mod has replace lines (`go install` refuses those):
# built from a wrapper module that applies the same replaces.
#   module_build DIR MODULE VERSION OUT_DIR PACKAGE...
module_build() {
  local dir="$1" modpath="$2" version="$3" out="$4"; shift 4
  local gomod
  gomod="$(go mod download -json "$modpath@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  replaces_of "$gomod" "$version" | wrapper_module "$dir" "$modpath" "$version" "$@"
  mkdir -p "$out"
  (cd "$dir" && go build -p "$jobs" -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/" "$@")
}

# The CSI external-provisioner sidecar: it turns PVCs of the csi-hostpath class into
# CreateVolume calls (and snapshot data sources into volumes made from snapshots).
build_csi_provisioner() {
  local out="$cache/csi-provisioner-$CSI_PROVISIONER_VERSION/bin"
  [ -x "$out/csi-provisioner" ] && { log "csi-provisioner $CSI_PROVISIONER_VERSION cached"; return; }
  module_build "$work/csi-provisioner-$CSI_PROVISIONER_VERSION" \
    github.com/kubernetes-csi/external-provisioner/v6 "$CSI_PROVISIONER_VERSION" "$out.tmp" \
    github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# external-snapshotter: the csi-snapshotter sidecar, the snapshot-controller, and the
# VolumeSnapshot CRDs from its client module (applied from the cache, so they always
# match the controller), one build for both binaries.
build_snapshotter() {
  local v="$CSI_SNAPSHOTTER_VERSION"
  local sidecar="$cache/csi-snapshotter-$v" controller="$cache/snapshot-controller-$v"
  if [ -x "$sidecar/bin/csi-snapshotter" ] && [ -x "$controller/bin/snapshot-controller" ] \
      && [ -s "$controller/crd/volumesnapshots.yaml" ]; then
    log "external-snapshotter $v cached"; return
  fi
  local tmp="$work/snapshotter-$v.out"
  rm -rf "$tmp"
  module_build "$work/snapshotter-$v" github.com/kubernetes-csi/external-snapshotter/v8 "$v" "$tmp" \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
  local crds
  crds="$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/config/crd"
  rm -rf "$sidecar" "$controller"
  mkdir -p "$sidecar/bin" "$controller/bin" "$controller/crd"
  mv "$tmp/csi-snapshotter" "$sidecar/bin/"
  local kind
  for kind in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
    install -m 0644 "$crds/snapshot.storage.k8s.io_$kind.yaml" "$controller/crd/$kind.yaml"
  done
  mv "$tmp/snapshot-controller" "$controller/bin/"
  rm -rf "$tmp"
}

# The test clusters' CSI driver, from crates/testenv/csi-hostpath (a module of this
# repository; its dependencies come from the module proxy and are pinned by its go.sum).
build_csi_hostpath() {
  local out="$cache/csi-hostpath-$CSI_HOSTPATH_VERSION/bin"
  [ -x "$out/csi-hostpath" ] && { log "csi-hostpath $CSI_HOSTPATH_VERSION cached"; return; }
  mkdir -p "$out.tmp"
  (cd "$here/crates/testenv/csi-hostpath" && go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$out.tmp/csi-hostpath" .)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# kubectl: the machine's own if it has one (real kubectl either way); else built from the
# same Kubernetes module into the cache, and the Makefile puts that on PATH.
build_kubectl() {
  if command -v kubectl >/dev/null 2>&1; then log "kubectl found at $(command -v kubectl)"; return; fi
  local out="$cache/kube-$KUBE_VERSION/kubectl"
  [ -x "$out/kubectl" ] && { log "kubectl $KUBE_VERSION cached"; return; }
  local dir="$work/kubectl-$KUBE_VERSION"
  local gomod staging
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  staging="v0.${KUBE_VERSION#v1.}"
  grep -oE '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" \
    | awk -v v="$staging" '{print $1 "=" $1 "@" v}' \
    | wrapper_module "$dir" k8s.io/kubernetes "$KUBE_VERSION" k8s.io/kubernetes/cmd/kubectl
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -p "$jobs" -trimpath \
      -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" \
      -o "$out.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# grpcurl: the usual gRPC command-line client, to check reflection the way users will.
build_grpcurl() { go_install grpcurl "$GRPCURL_VERSION" github.com/fullstorydev/grpcurl/cmd/grpcurl; }

# Debian's packages a real node needs (containerd, runc, the CNI plugins, iptables, a
# static busybox for the test images); installed only when something is missing.
node_packages="containerd runc containernetworking-plugins iptables iproute2 conntrack busybox-static util-linux binutils"
install_debs() {
  local missing=""
  local cmd
  for cmd in containerd ctr runc iptables ip conntrack nsenter strip; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=" $cmd"
  done
  [ -x /usr/lib/cni/bridge ] || missing+=" cni-plugins"
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=" busybox-static"
  if [ -z "$missing" ]; then log "node packages present"; return; fi
  log "missing:$missing; installing $node_packages"
  if [ "$(id -u)" != 0 ]; then
    echo "build-testenv: real test nodes need root and these packages: apt-get install $node_packages" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $node_packages >/dev/null
}

command -v go >/dev/null 2>&1 || { echo "build-testenv: Go is needed to build the test binaries; install Go 1.25 or newer" >&2; exit 1; }

what="${1:-all}"
case "$what" in
  etcd) timed etcd build_etcd ;;
  kube) timed kubernetes build_kube ;;
  kube-previous) timed "kubernetes $KUBE_PREVIOUS_VERSION" build_kube_previous ;;
  minio) timed minio build_minio ;;
  kubectl) timed kubectl build_kubectl ;;
  mc) timed mc build_mc ;;
  grpcurl) timed grpcurl build_grpcurl ;;
  coredns) timed coredns build_coredns ;;
  local-path-provisioner) timed local-path-provisioner build_local_path ;;
  crictl) timed crictl build_crictl ;;
  helm) timed helm build_helm ;;
  csi-provisioner) timed csi-provisioner build_csi_provisioner ;;
  snapshotter) timed external-snapshotter build_snapshotter ;;
  csi-hostpath) timed csi-hostpath build_csi_hostpath ;;
  csi) timed csi-provisioner build_csi_provisioner; timed external-snapshotter build_snapshotter
       timed csi-hostpath build_csi_hostpath ;;
  debs) install_debs ;;
  all) install_debs; timed etcd build_etcd; timed minio build_minio; timed mc build_mc; timed kubernetes build_kube
       timed "kubernetes $KUBE_PREVIOUS_VERSION" build_kube_previous
       timed kubectl build_kubectl; timed grpcurl build_grpcurl
       timed coredns build_coredns; timed local-path-provisioner build_local_path; timed crictl build_crictl
       timed helm build_helm
       timed csi-provisioner build_csi_provisioner; timed external-snapshotter build_snapshotter
       timed csi-hostpath build_csi_hostpath ;;
  *) echo "usage: $0 [all|etcd|kube|kube-previous|minio|mc|kubectl|grpcurl|coredns|local-path-provisioner|crictl|helm|csi|csi-provisioner|snapshotter|csi-hostpath|debs]" >&2; exit 2 ;;
esac
