#!/usr/bin/env bash
# Removes everything one test node made: its processes, pod sandboxes, containers,
# mounts, cgroups, routes, firewall rules, veth pair and network namespace.
#
#   node-teardown.sh NODE_ENV_FILE
#
# The file (written by crates/testenv when the node starts, before anything else) names
# what the node owns. Every step tolerates a node that only half started or was already
# torn down, so running this twice, or after a crash, is safe.
set -u
# One teardown at a time on this machine, and each node once: names and addresses
# (namespace, veth, subnet) are reused by the next environment, so a late second
# teardown of a dead test's node (its watchdog, after the next test's sweep already did
# it) would remove the newer node that now has them. The file is renamed when done.
exec 9>"${TMPDIR:-/tmp}/ferry-testenv-teardown.lock"
flock 9
[ -f "$1" ] || exit 0
# shellcheck disable=SC1090
. "$1"
: "${NODE_DIR:?}" "${NETNS:?}" "${HOST_IF:?}" "${POD_CIDR:?}" "${CONTAINERD_SOCK:?}" "${CGROUP_ROOT:?}"

ns() { nsenter --net="/var/run/netns/$NETNS" -- "$@"; }

# Whether PID runs: `kill -0` also succeeds on a zombie, and a started process stays one
# until its parent (a test process, or init) reaps it.
running() {
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop NAME: SIGTERM the pids recorded for NAME, then SIGKILL what is left after 10s.
stop() {
  local file="$NODE_DIR/pids/$1" pid i
  [ -f "$file" ] || return 0
  for pid in $(cat "$file"); do kill -TERM "$pid" 2>/dev/null; done
  for i in $(seq 100); do
    local alive=0
    for pid in $(cat "$file"); do running "$pid" && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in $(cat "$file"); do kill -KILL "$pid" 2>/dev/null; done
  rm -f "$file"
}

# The kubelet first, so it restarts nothing while the pods go.
stop kubelet
stop kube-proxy

# Pod sandboxes through the CRI while containerd still runs: that stops their containers
# and runs the CNI DEL that frees their addresses.
if [ -S "$CONTAINERD_SOCK" ] && [ -n "${CRICTL:-}" ] && [ -x "${CRICTL:-}" ]; then
  crictl() { "$CRICTL" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 20s "$@"; }
  pods="$(crictl pods -q 2>/dev/null)"
  if [ -n "$pods" ]; then
    # shellcheck disable=SC2086
    crictl stopp $pods >/dev/null 2>&1
    # shellcheck disable=SC2086
    crictl rmp -f $pods >/dev/null 2>&1
  fi
fi
stop containerd

# Whatever outlived containerd: its shims, and any process still in the node's cgroups.
pkill -KILL -f -- "-address $CONTAINERD_SOCK" 2>/dev/null
cgroup_dirs() {
  local ctrl
  for ctrl in /sys/fs/cgroup/*/; do
    [ -d "$ctrl${CGROUP_ROOT#/}" ] && echo "$ctrl${CGROUP_ROOT#/}"
  done
}
for i in 1 2 3; do
  procs="$(for d in $(cgroup_dirs); do find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -u)"
  [ -z "$procs" ] && break
  # shellcheck disable=SC2086
  kill -KILL $procs 2>/dev/null
  sleep 0.2
done

# Mounts under the node's directory (rootfs, shm, pod volumes, pod network namespaces,
# the kubelet's bind mount of its own root), deepest first.
for i in 1 2 3; do
  mounts="$(awk -v d="$NODE_DIR/" 'index($5, d) == 1 || $5 == substr(d, 1, length(d) - 1) {print $5}' /proc/self/mountinfo | sort -r)"
  [ -z "$mounts" ] && break
  for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done

# The cluster's shared mount of its node directories, once no other node's mounts are
# under it: a plain umount fails while they are, and the last node's teardown does it.
if [ -n "${SHARED_DIR:-}" ] && awk -v d="$SHARED_DIR" '$5 == d {f=1} END {exit !f}' /proc/self/mountinfo; then
  umount "$SHARED_DIR" 2>/dev/null
fi

# Cgroups, children before parents.
for d in $(cgroup_dirs); do
  find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# Host side of the network: forwarding rules, the route to the pods, the veth pair (one
# end takes the other with it), then the namespace (and the bridge inside it).
while iptables -w 5 -D FORWARD -i "$HOST_IF" -o fn+ -j ACCEPT 2>/dev/null; do :; done
while iptables -w 5 -D FORWARD -i "$HOST_IF" -j DROP 2>/dev/null; do :; done
ip route del "$POD_CIDR" 2>/dev/null
ip link del "$HOST_IF" 2>/dev/null
if [ -e "/var/run/netns/$NETNS" ]; then
  # The pods' own namespaces went with their sandboxes; kill anything still inside.
  pids="$(ip netns pids "$NETNS" 2>/dev/null)"
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  ip netns del "$NETNS" 2>/dev/null
fi

# The kubelet's legacy log links in /var/log/containers that point into this node.
for link in /var/log/containers/*.log; do
  [ -L "$link" ] || continue
  case "$(readlink "$link")" in "$NODE_DIR"/*) rm -f "$link" ;; esac
done
mv -f "$1" "$1.torn-down"
exit 0
