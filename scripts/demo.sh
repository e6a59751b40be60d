#!/usr/bin/env bash
# `make demo`: Ferry's main job end to end on this machine, as users run it.
#
# Starts two local Kubernetes clusters (contexts a and b) with a real node each and an S3
# server, builds Ferry's image and imports it into the nodes, installs the Helm chart on
# both clusters, deploys a running stateful application with >= 1 GiB of data on a,
# pairs the clusters, migrates the application to b with the `ferry` command, and proves
# it runs on b (its own check of its records passes) with every byte of its volume. Every
# `helm`, `ferry` and `kubectl` line it prints is what you would run against your own
# clusters.
#
# FERRY_DEMO_DIR (default .ferry-demo) holds everything; FERRY_DEMO_KEEP=1 leaves the
# clusters running afterwards; FERRY_DEMO_MIB sets the data size (1100).
set -euo pipefail

BIN=${FERRY_BIN_DIR:?set by make demo: directory of the ferry and ferry-testenv binaries}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$(realpath -m "${FERRY_DEMO_DIR:-.ferry-demo}")
MIB=${FERRY_DEMO_MIB:-1100}
NS=demo-shop
PROFILE=demo
TAG=demo
NODE_PORT=30443
started=$(date +%s.%N)

# shellcheck source=scripts/lib/demo-env.sh
source "$HERE/scripts/lib/demo-env.sh"
trap cleanup EXIT

setup_clusters_and_ferry
deploy_application
generate_data
repository_and_pair

say "7. Migrate the running application from a to b"
# --to-context: your own credential for b goes with the job; b verifies it and the
# application is written there as you, judged by b's RBAC.
migrate_started=$(date +%s.%N)
run ferry --context a migrate -n $NS --to a-to-b --to-context b --profile $PROFILE
migrate_seconds=$(elapsed "$migrate_started")

check_on_b

run ferry --context a jobs list
run ferry --context a restore-points --profile $PROFILE -n $NS

mib_per_s=$(awk -v b="$data_bytes" -v s="$migrate_seconds" 'BEGIN { printf "%.1f", b / 1048576 / s }')
say "demo passed"
echo "migration of $((data_bytes / 1048576)) MiB in $data_files files: ${migrate_seconds} s (${mib_per_s} MiB/s)"
echo "demo wall time: $(elapsed "$started") s"
echo "chart installed on both clusters, every Ferry pod Ready, in ${install_seconds} s; image ${image_mib} MiB"
echo "summary: demo=passed data_mib=$((data_bytes / 1048576)) files=$data_files migrate_s=$migrate_seconds throughput_mib_s=$mib_per_s install_s=$install_seconds image_mib=$image_mib wall_s=$(elapsed "$started")"
