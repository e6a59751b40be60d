#!/usr/bin/env bash
# `make demo`: Ferry's main job end to end on this machine.
#
# Starts two local Kubernetes clusters (contexts a and b) and an S3 server, runs one
# `ferry serve` per cluster, deploys a stateful application with >= 1 GiB of data on a,
# pairs the clusters, migrates the application to b with the `ferry` command, and proves
# the objects are on b and the data arrived byte for byte. Every `ferry` and `kubectl`
# line it prints is what you would run against your own clusters.
#
# FERRY_DEMO_DIR (default .ferry-demo) holds everything; FERRY_DEMO_KEEP=1 leaves the
# clusters and servers running afterwards; FERRY_DEMO_MIB sets the data size (1100).
set -euo pipefail

BIN=${FERRY_BIN_DIR:?set by make demo: directory of the ferry and ferry-testenv binaries}
DIR=$(realpath -m "${FERRY_DEMO_DIR:-.ferry-demo}")
MIB=${FERRY_DEMO_MIB:-1100}
NS=demo-shop
PROFILE=demo
started=$(date +%s.%N)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Prints a command, then runs it.
run() {
    printf '$ %s\n' "$*"
    "$@"
}
ferry() { "$BIN/ferry" "$@"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

pids=()
cleanup() {
    local status=$?
    if [[ ${FERRY_DEMO_KEEP:-0} == 1 && $status == 0 ]]; then
        echo
        echo "left running (FERRY_DEMO_KEEP=1): export KUBECONFIG=$DIR/kubeconfig"
        echo "ferry serve logs: $DIR/serve-a.log $DIR/serve-b.log"
        echo "stop with: kill ${pids[*]}; $BIN/ferry-testenv down --dir $DIR"
        return
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $status != 0 ]]; then
        for side in a b; do
            [[ -f $DIR/serve-$side.log ]] || continue
            echo "--- last lines of ferry serve ($side):"
            tail -n 30 "$DIR/serve-$side.log"
        done
    fi
    "$BIN/ferry-testenv" down --dir "$DIR" >/dev/null 2>&1 || true
    exit "$status"
}
trap cleanup EXIT

free_port() {
    local port=$1
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

say "1. Two clusters (a, b) and an S3 server"
"$BIN/ferry-testenv" down --dir "$DIR" >/dev/null 2>&1 || true
# API-only clusters until Ferry runs in them from its chart: the demo reads volumes on this host.
"$BIN/ferry-testenv" up --dir "$DIR" --nodes 0
export KUBECONFIG=$DIR/kubeconfig
# shellcheck disable=SC1091
source "$DIR/s3.env"

say "2. Ferry on each cluster (ferry serve: agent, pairing, catalog, transfer, scheduler)"
port_a=$(free_port 17443)
port_b=$(free_port $((port_a + 1)))
for side in a b; do
    port=port_$side
    mkdir -p "$DIR/$side" "$DIR/volumes/$side"
    RUST_LOG=${RUST_LOG:-info} "$BIN/ferry" serve \
        --context "$side" --cluster-name "$side" \
        --listen "127.0.0.1:${!port}" --ferry-endpoint "127.0.0.1:${!port}" \
        --data-dir "$DIR/$side" --volume-root "$DIR/volumes/$side" \
        --allow-root "$DIR/disks" --allow-root "$DIR/volumes" --node-name "node-$side" \
        >"$DIR/serve-$side.log" 2>&1 &
    pids+=($!)
    echo "ferry serve for cluster $side on 127.0.0.1:${!port} (log $DIR/serve-$side.log)"
done
for side in a b; do
    for _ in $(seq 1 100); do
        ferry --context "$side" pair list >/dev/null 2>&1 && break
        sleep 0.2
    done
    run ferry --context "$side" pair list
done

say "3. A stateful application on cluster a: StatefulSet db, ConfigMap, Secret, Service"
# A disk of cluster a, where its storage put the claim (not under Ferry's volume root).
src_volume=$DIR/disks/a/$NS-data-db-0
mkdir -p "$src_volume"
run kubectl --context a apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: demo-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-settings, namespace: $NS}
data: {greeting: "hello from cluster a", database: "db.$NS.svc"}
---
apiVersion: v1
kind: Secret
metadata: {name: db-password, namespace: $NS}
type: Opaque
stringData: {password: "demo-password-42"}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: $NS}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: $NS}
spec:
  replicas: 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: postgres:17
        volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: demo-local
      resources: {requests: {storage: 2Gi}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-shop-data-db-0}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: demo-local
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $src_volume}
  claimRef: {namespace: $NS, name: data-db-0}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-db-0, namespace: $NS, labels: {app: db}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: demo-local
  volumeName: demo-shop-data-db-0
  resources: {requests: {storage: 2Gi}}
EOF
# The destination needs the storage class too (or map it with --storage-class-map).
run kubectl --context b apply -f - <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: demo-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
EOF
for _ in $(seq 1 150); do
    phase=$(kubectl --context a -n $NS get pvc data-db-0 -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [[ $phase == Bound ]] && break
    sleep 0.2
done
[[ $phase == Bound ]] || { echo "claim data-db-0 never bound on a"; exit 1; }

echo "writing ${MIB} MiB of generated files into the volume ($src_volume)"
gen_started=$(date +%s.%N)
(
    # `yes | head` ends yes with SIGPIPE, which is expected here.
    set +o pipefail
    cd "$src_volume"
    mkdir -p base/16384 pg_wal log small
    # A database-like image: large random segments.
    big=$((MIB * 40 / 100))
    head -c "$((big * 1024 * 1024))" /dev/urandom >base/16384/relation.0
    # Table files of 1 MiB.
    for i in $(seq 1 $((MIB * 35 / 100))); do
        head -c 1048576 /dev/urandom >"base/16384/$((16400 + i))"
    done
    # Compressible logs.
    for i in $(seq 1 $((MIB * 15 / 100 / 4))); do
        yes "2026-11-25 12:00:$((i % 60)) UTC [$i] LOG:  checkpoint complete: wrote $i buffers" |
            head -c 4194304 >"log/postgresql-$i.log"
    done
    # WAL segments of 16 MiB.
    for i in $(seq 1 $((MIB * 10 / 100 / 16))); do
        head -c 16777216 /dev/urandom >"pg_wal/0000000100000000000000$(printf %02X "$i")"
    done
    # Many small files.
    dd if=/dev/urandom of=small.blob bs=1M count=$((MIB / 100 + 1)) status=none
    split -b 8192 -a 4 small.blob small/f_
    rm small.blob
)
data_bytes=$(du -sb "$src_volume" | cut -f1)
data_files=$(find "$src_volume" -type f | wc -l)
echo "wrote $data_files files, $((data_bytes / 1048576)) MiB in $(elapsed "$gen_started") s"

say "4. A repository in the S3 bucket, reachable from both clusters (a profile on each)"
head -c 32 /dev/urandom >"$DIR/repo.key"
for side in a b; do
    kubectl --context "$side" create namespace ferry-system --dry-run=client -o yaml |
        kubectl --context "$side" apply -f - >/dev/null
    printf '$ kubectl --context %s -n ferry-system create secret generic demo-s3 --from-literal=access_key_id=... --from-literal=secret_access_key=...\n' "$side"
    kubectl --context "$side" -n ferry-system create secret generic demo-s3 \
        --from-literal=access_key_id="$AWS_ACCESS_KEY_ID" \
        --from-literal=secret_access_key="$AWS_SECRET_ACCESS_KEY" >/dev/null
    run kubectl --context "$side" -n ferry-system create secret generic demo-repo-key \
        --from-file=key="$DIR/repo.key"
done
run ferry --context a profile create $PROFILE --s3 "$FERRY_S3_ENDPOINT/$FERRY_S3_BUCKET/demo" \
    --region "$AWS_REGION" --credentials-secret demo-s3 --key-secret demo-repo-key --create-repository
run ferry --context b profile create $PROFILE --s3 "$FERRY_S3_ENDPOINT/$FERRY_S3_BUCKET/demo" \
    --region "$AWS_REGION" --credentials-secret demo-s3 --key-secret demo-repo-key

say "5. Pair a (source) with b (destination)"
run ferry pair create --from a --to b --name a-to-b --profile $PROFILE

say "6. Migrate namespace $NS from a to b"
migrate_started=$(date +%s.%N)
run ferry --context a migrate -n $NS --to b --profile $PROFILE
migrate_seconds=$(elapsed "$migrate_started")

say "7. Check: the objects are on b, and the data arrived byte for byte"
run kubectl --context b -n $NS get statefulset,configmap,secret,service,pvc
password=$(kubectl --context b -n $NS get secret db-password -o jsonpath='{.data.password}' | base64 -d)
[[ $password == demo-password-42 ]] || { echo "FAIL: Secret db-password differs on b"; exit 1; }
greeting=$(kubectl --context b -n $NS get configmap shop-settings -o jsonpath='{.data.greeting}')
[[ $greeting == "hello from cluster a" ]] || { echo "FAIL: ConfigMap shop-settings differs on b"; exit 1; }
replicas=$(kubectl --context b -n $NS get statefulset db -o jsonpath='{.spec.replicas}')
[[ $replicas == 1 ]] || { echo "FAIL: StatefulSet db has replicas=$replicas on b, want 1"; exit 1; }
kubectl --context b -n $NS get service db >/dev/null
pv=$(kubectl --context b -n $NS get pvc data-db-0 -o jsonpath='{.spec.volumeName}')
phase=$(kubectl --context b -n $NS get pvc data-db-0 -o jsonpath='{.status.phase}')
dst_volume=$(kubectl --context b get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
echo "claim data-db-0 on b: $phase to volume $pv at $dst_volume"
[[ -n $dst_volume && $dst_volume != "$src_volume" ]] || { echo "FAIL: no separate destination volume"; exit 1; }
run diff -r --no-dereference "$src_volume" "$dst_volume"
dst_files=$(find "$dst_volume" -type f | wc -l)
[[ $dst_files == "$data_files" ]] || { echo "FAIL: $dst_files files on b, $data_files on a"; exit 1; }
echo "all $data_files files ($((data_bytes / 1048576)) MiB) are identical on b"

run ferry --context a jobs list
run ferry --context a restore-points --profile $PROFILE -n $NS

mib_per_s=$(awk -v b="$data_bytes" -v s="$migrate_seconds" 'BEGIN { printf "%.1f", b / 1048576 / s }')
say "demo passed"
echo "migration of $((data_bytes / 1048576)) MiB in $data_files files: ${migrate_seconds} s (${mib_per_s} MiB/s)"
echo "demo wall time: $(elapsed "$started") s"
echo "summary: demo=passed data_mib=$((data_bytes / 1048576)) files=$data_files migrate_s=$migrate_seconds throughput_mib_s=$mib_per_s wall_s=$(elapsed "$started")"
