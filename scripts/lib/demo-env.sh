# Shared by `make demo` (scripts/demo.sh) and `make bench-migrate`
# (scripts/bench-migrate.sh): two local clusters with a node each and an S3 server, Ferry's
# image and chart on both, a running stateful application with generated data on a, a
# repository profile on each side and the pair. Sourced, not run; the caller sets BIN,
# HERE, DIR, MIB, NS, PROFILE, TAG and NODE_PORT, and gets the functions below.

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Prints a command, then runs it.
run() {
    printf '$ %s\n' "$*"
    "$@"
}
ferry() { "$BIN/ferry" "$@"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
    local status=$?
    if [[ ${FERRY_DEMO_KEEP:-0} == 1 && $status == 0 ]]; then
        echo
        echo "left running (FERRY_DEMO_KEEP=1): export KUBECONFIG=$DIR/kubeconfig"
        echo "stop with: $BIN/ferry-testenv down --dir $DIR"
        return
    fi
    if [[ $status != 0 && -f $DIR/kubeconfig ]]; then
        for side in a b; do
            echo "--- Ferry's pods on $side:"
            kubectl --kubeconfig "$DIR/kubeconfig" --context "$side" -n ferry-system get pods -o wide 2>&1 || true
            echo "--- last lines of the transfer service on $side:"
            kubectl --kubeconfig "$DIR/kubeconfig" --context "$side" -n ferry-system \
                logs deploy/ferry-transfer --tail=30 2>&1 || true
        done
    fi
    "$BIN/ferry-testenv" down --dir "$DIR" >/dev/null 2>&1 || true
    exit "$status"
}

# Waits until pod db-0 of the application on `side` exists, then until it is Ready.
wait_ready() {
    local side=$1
    # `kubectl wait` fails at once on a pod that does not exist yet.
    for _ in $(seq 1 300); do
        kubectl --context "$side" -n $NS get pod db-0 >/dev/null 2>&1 && break
        sleep 0.2
    done
    run kubectl --context "$side" -n $NS wait --for=condition=Ready pod/db-0 --timeout=180s
}

# Steps 1-3: the clusters, the image imported into their nodes, Ferry installed on both.
setup_clusters_and_ferry() {
    say "1. Two clusters (a, b) with a node each, and an S3 server"
    "$BIN/ferry-testenv" down --dir "$DIR" >/dev/null 2>&1 || true
    "$BIN/ferry-testenv" up --dir "$DIR" --nodes 1
    export KUBECONFIG=$DIR/kubeconfig
    # shellcheck disable=SC1091
    source "$DIR/s3.env"
    # shellcheck disable=SC1091
    source "$DIR/clusters.env"

    say "2. Ferry's image (the release binary and the libraries it links), imported into the nodes"
    FERRY_BIN=$BIN/ferry FERRY_IMAGE_TAG=$TAG FERRY_IMAGE_DIR=$DIR/images \
        bash "$HERE/scripts/build-images.sh" ferry
    image_mib=$(($(stat -c %s "$DIR/images/ferry-$TAG.tar") / 1048576))
    "$BIN/ferry-testenv" import-image --dir "$DIR" "$DIR/images/ferry-$TAG.tar"

    say "3. helm install Ferry on each cluster"
    install_started=$(date +%s.%N)
    for side in a b; do
        upper=${side^^}
        server=FERRY_${upper}_SERVER
        node_ip=FERRY_${upper}_NODE_IP
        local_paths=FERRY_${upper}_LOCAL_PATHS
        # The gateway on a NodePort the other cluster reaches, this cluster's API server as
        # the other cluster reaches it, and the node directories of local-path volumes for
        # the agent: on b, Ferry provisions the claim through local-path and restores into
        # it through a mover pod. The test nodes share this machine's private root mount,
        # hence no mount propagation, and each has its own kubelet directory, which one
        # hostPath cannot name (no CSI volumes here); the image is on the nodes already.
        run helm --kube-context "$side" install ferry "$HERE/charts/ferry" \
            -n ferry-system --create-namespace --wait --timeout 5m \
            --set clusterName="$side" \
            --set image.tag=$TAG --set image.pullPolicy=Never \
            --set tls.mode=mesh \
            --set gateway.service.type=NodePort --set gateway.service.nodePort=$NODE_PORT \
            --set peer.endpoint="${!node_ip}:$NODE_PORT" \
            --set peer.apiServerURL="${!server}" \
            --set agent.kubeletDir= \
            --set "agent.hostPaths={${!local_paths}}" \
            --set agent.mountPropagation=
    done
    install_seconds=$(elapsed "$install_started")
    for side in a b; do
        run kubectl --context "$side" -n ferry-system get pods
        run ferry --context "$side" pair list
    done
}

# Step 4: the application on a, Ready and holding its records; sets src_volume.
deploy_application() {
    say "4. A running stateful application on cluster a: StatefulSet db, ConfigMap, Secret, Service"
    # Its program appends checksummed records to its volume and, every time it starts,
    # verifies each record before it reports Ready.
    run kubectl --context a apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
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
apiVersion: v1
kind: ConfigMap
metadata: {name: records, namespace: $NS}
data:
  program.sh: |
    set -eu
    f=/data/records
    n=0
    if [ -f "\$f" ]; then
      while read -r i payload sum; do
        [ "\$i" = "\$((n + 1))" ] || { echo "record \$((n + 1)) missing (found \$i)"; exit 1; }
        [ "\$(printf %s "\$payload" | sha256sum | cut -c1-64)" = "\$sum" ] || { echo "record \$i corrupt"; exit 1; }
        n=\$i
      done < "\$f"
    fi
    echo "verified \$n records"
    touch /tmp/verified
    while [ "\$n" -lt 100 ]; do
      n=\$((n + 1))
      payload="r\$n-\$RANDOM\$RANDOM"
      echo "\$n \$payload \$(printf %s "\$payload" | sha256sum | cut -c1-64)" >> "\$f"
    done
    sync
    echo "holding \$n records"
    exec sleep 2147483647
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
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: ferry.local/toolbox:1
        command: ["sh", "/program/program.sh"]
        readinessProbe:
          exec: {command: ["test", "-f", "/tmp/verified"]}
          periodSeconds: 1
        volumeMounts:
        - {name: data, mountPath: /data}
        - {name: program, mountPath: /program}
      volumes:
      - name: program
        configMap: {name: records}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 2Gi}}
EOF
    wait_ready a
    for _ in $(seq 1 150); do
        kubectl --context a -n $NS logs db-0 2>/dev/null | grep -q "holding 100 records" && break
        sleep 0.2
    done
    run kubectl --context a -n $NS logs db-0
    # Where local-path put the claim: a directory of a's node, which is this machine.
    pv=$(kubectl --context a -n $NS get pvc data-db-0 -o jsonpath='{.spec.volumeName}')
    src_volume=$(kubectl --context a get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}')
}

# Writes MIB MiB of database-like files into the source volume; sets data_bytes and
# data_files.
generate_data() {
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
}

# Steps 5-6: a repository profile on each side, and the pair a-to-b.
repository_and_pair() {
    say "5. A repository in the S3 bucket, reachable from both clusters (a profile on each)"
    head -c 32 /dev/urandom >"$DIR/repo.key"
    for side in a b; do
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

    say "6. Pair a (source) with b (destination)"
    run ferry pair create --from a --to b --name a-to-b --profile $PROFILE
}

# Step 8: the application runs on b, its own check passes, every byte arrived.
check_on_b() {
    say "8. Check: the application runs on b, its own check passes, every byte arrived"
    wait_ready b
    run kubectl --context b -n $NS logs db-0
    kubectl --context b -n $NS logs db-0 | grep -q "verified 100 records" ||
        { echo "FAIL: the application on b did not verify its 100 records"; exit 1; }
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
    dst_volume=$(kubectl --context b get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}')
    echo "claim data-db-0 on b: $phase to volume $pv at $dst_volume"
    [[ -n $dst_volume && $dst_volume != "$src_volume" ]] || { echo "FAIL: no separate destination volume"; exit 1; }
    run diff -r --no-dereference "$src_volume" "$dst_volume"
    dst_files=$(find "$dst_volume" -type f | wc -l)
    [[ $dst_files == "$data_files" ]] || { echo "FAIL: $dst_files files on b, $data_files on a"; exit 1; }
    echo "all $data_files files ($((data_bytes / 1048576)) MiB) are identical on b"
}
