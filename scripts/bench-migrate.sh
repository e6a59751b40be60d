#!/usr/bin/env bash
# `make bench-migrate`: a warm migration of the demo's application with a 1 GiB volume,
# measured on this machine: the first sync, each re-sync after 1% of the volume's bytes
# changed in place while the application ran, and the cutover's downtime (the source's
# last pod gone to the destination's pod Ready); then the data mover alone (`ferry repo`
# backup and restore of the same volume through the same S3 server) for the ratio of the
# migration's time to the data mover's. Ends with one `summary:` line.
#
# FERRY_BENCH_DIR (default .ferry-bench-migrate) holds everything; FERRY_BENCH_MIB sets
# the data size (1024); FERRY_BENCH_RESYNCS the re-syncs measured (3);
# FERRY_BENCH_SYNC_INTERVAL the seconds between syncs (5).
set -euo pipefail

BIN=${FERRY_BIN_DIR:?set by make bench-migrate: directory of the ferry and ferry-testenv binaries}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$(realpath -m "${FERRY_BENCH_DIR:-.ferry-bench-migrate}")
MIB=${FERRY_BENCH_MIB:-1024}
RESYNCS=${FERRY_BENCH_RESYNCS:-3}
INTERVAL=${FERRY_BENCH_SYNC_INTERVAL:-5}
NS=bench-shop
PROFILE=bench
TAG=bench
NODE_PORT=30443
started=$(date +%s.%N)

command -v jq >/dev/null || { echo "jq is needed to read the job's JSON: apt-get install jq"; exit 1; }

# shellcheck source=scripts/lib/demo-env.sh
source "$HERE/scripts/lib/demo-env.sh"
trap cleanup EXIT

setup_clusters_and_ferry
deploy_application
generate_data
repository_and_pair

# The job as `ferry jobs get -o json` shows it.
job_json() { ferry --context a jobs get "$job" -o json; }
# Seconds of a protobuf JSON duration ("2.512s"), to 0.01 s.
seconds() { jq -r "$1 // \"0s\" | rtrimstr(\"s\") | tonumber * 100 | round / 100" <<<"$2"; }
# Waits until the job has finished $1 syncs while the application runs; its JSON.
wait_syncs() {
    local want=$1 doc
    for _ in $(seq 1 3000); do
        doc=$(job_json)
        if [[ $(jq -r '.job.state' <<<"$doc") != JOB_STATE_RUNNING ]]; then
            echo "FAIL: the warm migration is no longer running:" >&2
            ferry --context a jobs get "$job" >&2
            exit 1
        fi
        if (($(jq -r '.job.warm.syncs // 0' <<<"$doc") >= want)); then
            printf '%s' "$doc"
            return
        fi
        sleep 0.2
    done
    echo "FAIL: sync $want did not finish in 10 minutes" >&2
    exit 1
}
# Overwrites 1% of the volume's bytes in place, in pieces of 1 MiB spread over its large
# files (the relation segment and the table files), as a database's writes would.
change_one_percent() {
    local pieces=$((data_bytes / 100 / 1048576)) i file
    mapfile -t files < <(find "$src_volume/base" -type f -size +1M | sort)
    for i in $(seq 1 "$pieces"); do
        file=${files[$((RANDOM % ${#files[@]}))]}
        size=$(stat -c %s "$file")
        dd if=/dev/urandom of="$file" bs=1M count=1 conv=notrunc status=none \
            seek=$((RANDOM % (size / 1048576)))
    done
    sync
    echo "changed $pieces MiB in place ($((pieces * 100 * 1048576 / data_bytes))% of the volume)"
}

say "7. Warm migration to b while the application keeps running on a"
migrate_started=$(date +%s.%N)
printf '$ ferry --context a migrate -n %s --to a-to-b --to-context b --profile %s --warm --sync-interval %ss --detach\n' \
    $NS $PROFILE "$INTERVAL"
job=$(ferry --context a migrate -n $NS --to a-to-b --to-context b --profile $PROFILE \
    --warm --sync-interval "${INTERVAL}s" --detach)
echo "$job"
doc=$(wait_syncs 1)
first_sync_s=$(seconds '.job.warm.recentSyncs[0].duration' "$doc")
echo "first sync (every byte): ${first_sync_s} s"

resync_list=()
written_pct=()
for round in $(seq 1 "$RESYNCS"); do
    # Right after a sync ends, so the change lands in the next one whole.
    have=$(jq -r '.job.warm.syncs' <<<"$doc")
    change_one_percent
    doc=$(wait_syncs $((have + 1)))
    last='.job.warm.recentSyncs[-1]'
    took=$(seconds "$last.duration" "$doc")
    phases="backup $(seconds "$last.backupDuration" "$doc") s, commit $(seconds "$last.commitDuration" "$doc") s, restore $(seconds "$last.restoreDuration" "$doc") s"
    written=$(jq -r "$last.bytesWritten // \"0\"" <<<"$doc")
    pct=$(awk -v w="$written" -v t="$data_bytes" 'BEGIN { printf "%.2f", w * 100 / t }')
    echo "re-sync $round: ${took} s ($phases), wrote $((written / 1048576)) MiB on b (${pct}% of the volume)"
    resync_list+=("$took")
    written_pct+=("$pct")
done

say "8. Cutover: stop on a, copy the last change, start on b"
cutover_started=$(date +%s.%N)
run ferry --context a cutover "$job"
cutover_s=$(elapsed "$cutover_started")
doc=$(job_json)
downtime_s=$(seconds '.report.warm.downtime' "$doc")
final_s=$(seconds '.report.warm.recentSyncs[-1].duration' "$doc")
whole_s=$(elapsed "$migrate_started")
echo "cutover: ${cutover_s} s, of which the final sync ${final_s} s; downtime ${downtime_s} s"

check_on_b

say "9. The data mover alone: the same volume backed up and restored through the same S3 server"
alone_repo="s3:$FERRY_S3_ENDPOINT/$FERRY_S3_BUCKET/bench-alone-$(date +%s)"
head -c 32 /dev/urandom >"$DIR/alone.key"
export FERRY_REPOSITORY=$alone_repo FERRY_KEY_FILE=$DIR/alone.key
ferry repo init >/dev/null
alone_started=$(date +%s.%N)
run ferry repo backup "$src_volume"
backup_s=$(elapsed "$alone_started")
rm -rf "$DIR/alone-restore"
restore_started=$(date +%s.%N)
run ferry repo restore latest --target "$DIR/alone-restore"
restore_s=$(elapsed "$restore_started")
alone_s=$(elapsed "$alone_started")
diff -r --no-dereference "$src_volume" "$DIR/alone-restore" >/dev/null ||
    { echo "FAIL: the data mover alone restored something else"; exit 1; }
rm -rf "$DIR/alone-restore"
unset FERRY_REPOSITORY FERRY_KEY_FILE

resyncs=$(IFS=,; echo "${resync_list[*]}")
max_resync=$(printf '%s\n' "${resync_list[@]}" | sort -g | tail -1)
max_written=$(printf '%s\n' "${written_pct[@]}" | sort -g | tail -1)
busy_s=$(awk -v f="$first_sync_s" -v c="$cutover_s" -v r="$resyncs" \
    'BEGIN { n = split(r, a, ","); s = f + c; for (i = 1; i <= n; i++) s += a[i]; printf "%.1f", s }')
ratio_first=$(awk -v a="$first_sync_s" -v b="$alone_s" 'BEGIN { printf "%.2f", a / b }')
ratio_busy=$(awk -v a="$busy_s" -v b="$alone_s" 'BEGIN { printf "%.2f", a / b }')
say "bench-migrate done"
echo "volume: $((data_bytes / 1048576)) MiB in $data_files files; syncs every ${INTERVAL} s"
echo "first sync ${first_sync_s} s; re-syncs after 1% changed: ${resyncs} s (max ${max_resync} s, at most ${max_written}% written)"
echo "cutover ${cutover_s} s; downtime ${downtime_s} s (source's last pod gone to b's pod Ready)"
echo "data mover alone: backup ${backup_s} s + restore ${restore_s} s = ${alone_s} s"
echo "migration / data mover alone: first sync ${ratio_first}x; syncs and cutover (${busy_s} s) ${ratio_busy}x"
echo "summary: bench-migrate data_mib=$((data_bytes / 1048576)) first_sync_s=$first_sync_s resync_s=$resyncs max_resync_s=$max_resync max_resync_written_pct=$max_written cutover_s=$cutover_s final_sync_s=$final_s downtime_s=$downtime_s mover_alone_s=$alone_s first_sync_ratio=$ratio_first busy_ratio=$ratio_busy whole_s=$whole_s wall_s=$(elapsed "$started")"
