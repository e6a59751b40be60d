//! Warm migration on clusters with real nodes: `ferry migrate --warm` syncs a running
//! application's volume again and again while it keeps running on a (each sync writing
//! on b only what changed), `ferry cutover` moves it with a measured downtime and it
//! comes up on b checking its own data; `ferry jobs cancel` before the cutover leaves
//! the source running and b without it.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::control::{
    RECORDS_PROGRAM, assert_same_claim_data, claim_dir, cli, delete_on_both, eventually, jsonpath,
    kubectl, kubectl_ok, migrate, records_application, serve_and_pair_on_nodes, wait_ready,
};
use ferry_client::Ferry;
use ferry_client::proto::{JobState, WarmSync};

/// Bytes of the extra file the application's volume holds besides its records.
const BULK: usize = 48 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_migration_syncs_changes_while_the_source_runs_and_cuts_over_briefly() {
    let served = serve_and_pair_on_nodes("warm", 47).await;
    let (kc, image) = (served.kc.clone(), served.image.clone());
    let ferry = Ferry::for_context(Some(&kc), Some("a")).await.unwrap();

    an_aborted_warm_migration_leaves_the_source_running_and_b_without_it(&kc, &image, &ferry).await;
    a_write_on_b_between_syncs_stops_the_migration_and_is_kept(&kc, &image, &ferry).await;

    let ns = ferry_testenv::unique_name("warm");
    let source = running_application_with_bulk_data(&kc, &ns, &image);
    let job = start_warm(&kc, &ns);
    let first = wait_for_syncs(&ferry, &job, 1).await;
    the_application_runs_on_a_only(&kc, &ns);
    assert!(
        first.recent_syncs[0].bytes_written >= BULK as u64,
        "the first sync writes the whole volume: {first:?}"
    );

    let changed = change_one_percent_in_place(&source);
    a_resync_writes_only_what_changed(&ferry, &job, changed).await;

    cutover_moves_it_with_a_short_downtime(&kc, &ns, &ferry, &job).await;
    delete_on_both(&kc, &ns);
}

/// The records application on a with `BULK` bytes of random data beside its records,
/// Ready and holding its records; the volume's directory on this machine.
fn running_application_with_bulk_data(kc: &Path, ns: &str, image: &str) -> PathBuf {
    let yaml = records_application(ns, image, RECORDS_PROGRAM, &[("data", None)], "");
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    wait_ready(kc, "a", ns);
    eventually("the application on a to write its records", || {
        kubectl(kc, "a", &["-n", ns, "logs", "db-0"], None).contains("holding 100 records")
    });
    let dir = claim_dir(kc, "a", ns, "data-db-0");
    let mut bulk = vec![0u8; BULK];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in bulk.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(dir.join("bulk"), &bulk).unwrap();
    dir
}

/// `ferry migrate --warm --detach` of `ns` to b, syncing every 2 s; the job's id.
fn start_warm(kc: &Path, ns: &str) -> String {
    let run = migrate(
        kc,
        ns,
        "b",
        &["--warm", "--sync-interval", "2s", "--detach"],
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let id = run.stdout.trim().to_owned();
    assert!(id.starts_with("job-"), "ferry printed the job's id: {id}");
    id
}

/// The job once it has finished `n` syncs while the application runs; its warm status.
async fn wait_for_syncs(ferry: &Ferry, job: &str, n: u32) -> ferry_client::proto::WarmStatus {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (now, report) = ferry.job(job).get().await.unwrap();
        assert!(report.is_none(), "the warm migration ended: {report:?}");
        assert_eq!(now.state(), JobState::Running, "{now:?}");
        let warm = now.warm.clone().expect("a warm migration's status");
        if warm.syncs >= n {
            return warm;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sync(s) not done in 240 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// While it syncs, the application runs on a and only its data is on b: the claim,
/// no StatefulSet, no pod.
fn the_application_runs_on_a_only(kc: &Path, ns: &str) {
    let ready = jsonpath(kc, "a", ns, "statefulset/db", "{.status.readyReplicas}");
    assert_eq!(ready, "1", "the application still runs on a");
    assert!(
        kubectl_ok(kc, "b", &["-n", ns, "get", "pvc", "data-db-0"]),
        "the synced claim is on b"
    );
    assert!(
        !kubectl_ok(kc, "b", &["-n", ns, "get", "statefulset", "db"]),
        "the application is not on b before the cutover"
    );
}

/// Overwrites 1% of the bulk file in place, in three places; the bytes changed.
fn change_one_percent_in_place(dir: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("bulk"))
        .unwrap();
    let piece = BULK / 100 / 3;
    for (i, at) in [BULK / 10, BULK / 2, BULK - piece - 4096]
        .into_iter()
        .enumerate()
    {
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&vec![0xa5 ^ i as u8; piece]).unwrap();
    }
    f.sync_all().unwrap();
    (piece * 3) as u64
}

/// The syncs after a 1% change write at least that change on b and under 2% of the
/// volume: only what changed.
async fn a_resync_writes_only_what_changed(ferry: &Ferry, job: &str, changed: u64) {
    let before = wait_for_syncs(ferry, job, 1).await.syncs;
    // The sync running at the change may have missed it; the next one cannot.
    let warm = wait_for_syncs(ferry, job, before + 2).await;
    let after: Vec<&WarmSync> = warm
        .recent_syncs
        .iter()
        .filter(|s| s.number > before)
        .collect();
    let written: u64 = after.iter().map(|s| s.bytes_written).sum();
    let total = after.last().unwrap().bytes_total;
    assert!(
        written >= changed,
        "the change ({changed} bytes) reached b: {after:?}"
    );
    assert!(
        written * 50 < total,
        "the re-syncs wrote {written} of {total} bytes, more than 2%: {after:?}"
    );
}

/// `ferry cutover`: the source stops, the last change is copied, the application starts
/// on b and checks its records; the report says how long it was down.
async fn cutover_moves_it_with_a_short_downtime(kc: &Path, ns: &str, ferry: &Ferry, job: &str) {
    let run = cli(kc, &["--context", "a", "cutover", job]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    // The report, for whoever reads the test's output.
    eprintln!("{}", run.stdout);
    assert!(
        run.stdout.contains("downtime: "),
        "the report says the downtime:\n{}",
        run.stdout
    );
    let (done, report) = ferry.job(job).get().await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    let warm = report.unwrap().warm.expect("the warm report");
    let downtime = warm.downtime.expect("a measured downtime");
    assert!(
        (0..60).contains(&downtime.seconds),
        "downtime {downtime:?} of a small application"
    );
    assert!(
        warm.recent_syncs.last().is_some_and(|s| s.r#final),
        "{warm:?}"
    );

    wait_ready(kc, "b", ns);
    let logs = kubectl(kc, "b", &["-n", ns, "logs", "db-0"], None);
    assert!(logs.contains("verified 100 records"), "{logs}");
    // The source stays stopped, its count kept for whoever needs it back.
    let replicas = jsonpath(kc, "a", ns, "statefulset/db", "{.spec.replicas}");
    assert_eq!(replicas, "0", "the source was left running");
    let moved = jsonpath(
        kc,
        "a",
        ns,
        "statefulset/db",
        "{.metadata.annotations.ferry\\.dev/moved-replicas}",
    );
    assert_eq!(moved, "1");
    assert_same_claim_data(kc, ns, "data-db-0");
}

/// A warm migration cancelled after its first sync: the application never stopped on
/// a, and b holds nothing of it (its claim and the namespace the sync created are gone).
async fn an_aborted_warm_migration_leaves_the_source_running_and_b_without_it(
    kc: &Path,
    image: &str,
    ferry: &Ferry,
) {
    let ns = ferry_testenv::unique_name("warm-abort");
    running_application_with_bulk_data(kc, &ns, image);
    let pod = jsonpath(kc, "a", &ns, "pod/db-0", "{.metadata.uid}");
    let job = start_warm(kc, &ns);
    wait_for_syncs(ferry, &job, 1).await;
    assert!(kubectl_ok(kc, "b", &["-n", &ns, "get", "pvc", "data-db-0"]));

    let run = cli(kc, &["--context", "a", "jobs", "cancel", &job]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let (done, _) = ferry.job(&job).get().await.unwrap();
    assert_eq!(done.state(), JobState::Cancelled, "{done:?}");
    assert_source_untouched(kc, &ns, &pod);
    eventually("the synced namespace to leave b", || {
        !kubectl_ok(kc, "b", &["get", "namespace", &ns])
    });
    kubectl(kc, "a", &["delete", "namespace", &ns, "--wait=false"], None);
}

/// Someone writes into the synced claim on b: the next sync refuses to overwrite it and
/// names the file, the job fails at once (no retry can help), the source runs on, and
/// the claim on b keeps what was written.
async fn a_write_on_b_between_syncs_stops_the_migration_and_is_kept(
    kc: &Path,
    image: &str,
    ferry: &Ferry,
) {
    let ns = ferry_testenv::unique_name("warm-intruder");
    running_application_with_bulk_data(kc, &ns, image);
    let pod = jsonpath(kc, "a", &ns, "pod/db-0", "{.metadata.uid}");
    let job = start_warm(kc, &ns);
    wait_for_syncs(ferry, &job, 1).await;
    let on_b = claim_dir(kc, "b", &ns, "data-db-0");
    std::fs::write(on_b.join("written-on-b"), "not from a\n").unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    let (done, report) = loop {
        let (now, report) = ferry.job(&job).get().await.unwrap();
        if let Some(report) = report {
            break (now, report);
        }
        assert!(Instant::now() < deadline, "the job went on: {now:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(done.state(), JobState::Failed, "{done:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.message.contains("written-on-b"), "{error:?}");
    assert_source_untouched(kc, &ns, &pod);
    let kept = std::fs::read_to_string(on_b.join("written-on-b")).unwrap();
    assert_eq!(kept, "not from a\n");
    assert!(
        report.warnings.iter().any(|w| w.message.contains("stay")),
        "the report says the claims stay: {:?}",
        report.warnings
    );
    delete_on_both(kc, &ns);
}

/// The application on a runs as before: the same pod, Ready, one replica, no mark of a
/// quiesce.
fn assert_source_untouched(kc: &Path, ns: &str, pod: &str) {
    assert_eq!(jsonpath(kc, "a", ns, "pod/db-0", "{.metadata.uid}"), pod);
    let sts = |path: &str| jsonpath(kc, "a", ns, "statefulset/db", path);
    assert_eq!(sts("{.spec.replicas}"), "1");
    assert_eq!(sts("{.status.readyReplicas}"), "1");
    let mark = sts("{.metadata.annotations.ferry\\.dev/quiesced-replicas}");
    assert_eq!(mark, "", "a quiesce mark left on the source");
}
