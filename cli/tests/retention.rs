//! Retention and garbage collection with the `ferry` command, across two real clusters
//! (one `ferry serve` each) and the test environment's MinIO:
//!
//! - a migration schedule with `--keep-last 2`, run four times, leaves exactly the two
//!   newest restore points (and their volume snapshots) in the bucket, records what
//!   each run pruned, and the repository checks clean with `ferry repo check --read-data`;
//!   the scheduler's metrics count the four successful runs and the last one's time;
//! - exports and `ferry restore-points prune` started at the same time, round after
//!   round: every export either succeeds or fails on the repository lock (and then
//!   succeeds when run again), every prune either succeeds or is refused on the lock,
//!   nothing is lost: the newest restore point restores byte for byte on cluster b from
//!   a read-only profile, and the repository checks clean.
//!
//! The two tests share the clusters (Secrets and the published endpoint live there), so
//! they run one after the other, each with Secrets of its own names.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::control::{
    cli, export_out, export_repository, free_port, key_secret, profiles_and_pair,
    runs_service_account, sample_app, serve, serve_with, volume_on_b, wait_answering,
};
use common::{Run, assert_same_tree, ferry, make_tree, random_bytes, run};
use serde_json::Value;

/// The tests of this file one at a time: they share clusters a and b.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `ferry --context CONTEXT -o json ARGS...`, which must succeed, parsed.
fn json(kc: &Path, context: &str, args: &[&str]) -> Value {
    let mut all = vec!["--context", context, "-o", "json"];
    all.extend_from_slice(args);
    cli(kc, &all).ok().json()
}

/// A number of protobuf JSON (uint64 are strings there; zero values are left out).
#[track_caller]
fn number(v: &Value, field: &str) -> u64 {
    match &v[field] {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0,
        n => n
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is not a number in {v:#}")),
    }
}

fn ids(points: &Value) -> Vec<String> {
    points
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `ferry repo` on the bucket with the writer's credentials.
struct BucketRepo {
    url: String,
    key: PathBuf,
    access_key: String,
    secret_key: String,
    region: String,
}

impl BucketRepo {
    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = ferry();
        cmd.arg("repo")
            .arg("-r")
            .arg(&self.url)
            .arg("--key-file")
            .arg(&self.key)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_REGION", &self.region);
        run(&mut cmd)
    }

    /// `check --read-data` finds nothing wrong.
    #[track_caller]
    fn assert_checks_clean(&self) {
        let check = self.run(&["check", "--read-data"]).ok();
        assert!(check.stdout.contains("no problems found"), "{check:#?}");
    }
}

/// Data that changes every round: a file no other round's restore point holds, so a
/// pruned restore point leaves packs only it used.
fn change_round_data(src: &Path, round: u64) {
    let dir = src.join("rounds");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("round-{round}.bin")),
        random_bytes(12 << 20, 1000 + round),
    )
    .unwrap();
}

/// `ferry repo` on the bucket at `location`, with the writer's credentials and `key`.
fn bucket_repo(location: &str, key: PathBuf, s3: &ferry_testenv::S3Info) -> BucketRepo {
    BucketRepo {
        url: format!("s3:{location}"),
        key,
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        region: s3.region.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_the_newest_restore_points_and_records_what_it_pruned() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _serve_a = serve_with(
        &kc,
        "a",
        root,
        free_port(),
        &["--metrics-listen".into(), metrics.to_string()],
    );
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);

    let (location, key) = profiles_and_pair(
        &kc,
        s3,
        root,
        ("s3-sched", "repo-key-sched"),
        "cli-retention",
        61,
    );

    let (ns, _, src) = sample_app(&kc, root, "kept", |src| {
        make_tree(src, 62);
    });

    retention_needs_the_profile_it_prunes_named(&kc, &ns);
    let runs = four_runs_each_carrying_new_data(&kc, &src);
    let written = each_run_records_what_it_pruned(&kc, &runs);
    prometheus_sees_four_successful_runs(metrics, &runs);
    let bucket = bucket_repo(&location, key, s3);
    the_bucket_holds_exactly_the_two_newest(&kc, &ns, &written, &bucket);

    // The destination got the last run's data: pruning never took what it needed.
    assert_same_tree(&src, &volume_on_b(&kc, &ns));
}

/// Retention prunes the repository the runs write to: it must be named. Named, the
/// schedule `keep-two` is created keeping the last 2; its runs act as a ServiceAccount
/// of the administrator's that may read on a and write on b.
fn retention_needs_the_profile_it_prunes_named(kc: &Path, ns: &str) {
    let unnamed = cli(
        kc,
        &[
            "--context",
            "a",
            "schedules",
            "create",
            "unnamed",
            "--every",
            "1h",
            "-n",
            ns,
            "--to",
            "b",
            "--keep-last",
            "2",
        ],
    )
    .code(2);
    assert!(unnamed.stderr.contains("--profile"), "{unnamed:?}");

    let runner = runs_service_account(kc, "a", &["a", "b"]);
    let created = json(
        kc,
        "a",
        &[
            "schedules",
            "create",
            "keep-two",
            "--every",
            "1h",
            "-n",
            ns,
            "--to",
            "b",
            "--profile",
            "main",
            "--keep-last",
            "2",
            "--service-account",
            &runner,
        ],
    );
    assert_eq!(
        created["schedule"]["retention"]["keepLast"], 2,
        "{created:#}"
    );
}

/// Four runs of `keep-two`, each carrying new data, each succeeding. Returns the
/// finished runs, oldest first.
fn four_runs_each_carrying_new_data(kc: &Path, src: &Path) -> Vec<Value> {
    let mut runs: Vec<Value> = Vec::new();
    for round in 1..=4 {
        change_round_data(src, round);
        let started = json(kc, "a", &["schedules", "run-now", "keep-two"]);
        let run_id = started["run"]["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(180);
        let finished = loop {
            let listed = json(kc, "a", &["schedules", "runs", "keep-two"]);
            let run = listed["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == run_id.as_str())
                .cloned()
                .unwrap();
            if run["state"] != "RUN_STATE_RUNNING" {
                break run;
            }
            assert!(
                Instant::now() < deadline,
                "run {round} never ended: {run:#}"
            );
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(finished["state"], "RUN_STATE_SUCCEEDED", "{finished:#}");
        runs.push(finished);
    }
    runs
}

/// The third and fourth runs pruned one restore point each, and the runs' table says
/// so. Returns the restore points the runs wrote, oldest first.
fn each_run_records_what_it_pruned(kc: &Path, runs: &[Value]) -> Vec<String> {
    let pruned: Vec<u64> = runs
        .iter()
        .map(|r| number(r, "restorePointsPruned"))
        .collect();
    assert_eq!(pruned, [0, 0, 1, 1], "{runs:#?}");
    let written: Vec<String> = runs
        .iter()
        .map(|r| r["restorePointId"].as_str().unwrap().to_owned())
        .collect();
    let table = cli(kc, &["--context", "a", "schedules", "runs", "keep-two"]).ok();
    assert!(table.stdout.contains("PRUNED"), "{table:?}");
    written
}

/// What Prometheus sees: four successful runs, none missed, the last one's time, and
/// the four migrations they started.
fn prometheus_sees_four_successful_runs(metrics: std::net::SocketAddr, runs: &[Value]) {
    let m = common::metrics::scrape(metrics);
    let sched = ("schedule", "keep-two");
    assert_eq!(
        m.value(
            "ferry_schedule_runs_total",
            &[sched, ("result", "succeeded")]
        ),
        4.0
    );
    assert_eq!(
        m.value("ferry_schedule_runs_total", &[sched, ("result", "failed")]),
        0.0
    );
    assert_eq!(m.value("ferry_schedule_missed_runs_total", &[sched]), 0.0);
    let last = runs[3]["finishedAt"].as_str().unwrap();
    let last = time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp_nanos() as f64
        / 1e9;
    let gauge = m.value("ferry_last_success_timestamp_seconds", &[sched]);
    assert!((gauge - last).abs() < 0.01, "{gauge} against {last}");
    assert_eq!(
        m.value("ferry_migrations_total", &[("result", "succeeded")]),
        4.0
    );
}

/// The bucket holds exactly the two newest restore points, newest first, and exactly
/// their volume snapshots (read with `ferry repo` on the same bucket); it checks clean.
fn the_bucket_holds_exactly_the_two_newest(
    kc: &Path,
    ns: &str,
    written: &[String],
    bucket: &BucketRepo,
) {
    let listed = json(kc, "a", &["restore-points", "--profile", "main", "-n", ns]);
    assert_eq!(
        ids(&listed["restorePoints"]),
        [written[3].clone(), written[2].clone()],
        "{listed:#}"
    );
    // And exactly their volume snapshots, read with `ferry repo` on the same bucket.
    let mut named: Vec<String> = Vec::new();
    for id in &written[2..] {
        let rp = json(
            kc,
            "a",
            &["restore-points", "--profile", "main", "--id", id],
        );
        for v in rp["restorePoint"]["volumes"].as_array().unwrap() {
            named.push(v["snapshotId"].as_str().unwrap().to_owned());
        }
    }
    named.sort();
    let snapshots = bucket.run(&["snapshots", "--json"]).ok().json();
    let mut in_bucket = ids(&snapshots);
    in_bucket.sort();
    assert_eq!(in_bucket, named, "{snapshots:#}");
    bucket.assert_checks_clean();
}

/// How one `ferry export` attempt ended.
#[derive(Debug, PartialEq)]
enum Exported {
    /// The new restore point's id.
    Ok(String),
    /// Refused because a prune held the repository.
    Locked,
}

fn export_once(kc: &Path, ns: &str) -> Exported {
    let run = export_out(kc, ns, None);
    match run.code {
        Some(0) => {
            let report = run.json();
            assert_eq!(report["state"], "JOB_STATE_SUCCEEDED", "{report:#}");
            Exported::Ok(report["restorePointId"].as_str().unwrap().to_owned())
        }
        // The job ended without succeeding: only the lock may have stopped it.
        Some(13)
            if run.stdout.contains("ERROR_CODE_REPOSITORY_LOCKED")
                || run.stdout.contains("is locked by") =>
        {
            Exported::Locked
        }
        _ => panic!("the export failed for another reason than the lock: {run:#?}"),
    }
}

/// How one `ferry restore-points prune` ended.
#[derive(Debug)]
enum Pruned {
    Ok(Value),
    Locked,
}

fn prune_once(kc: &Path, ns: &str) -> Pruned {
    let args = [
        "--context",
        "a",
        "-o",
        "json",
        "restore-points",
        "prune",
        "--profile",
        "out",
        "-n",
        ns,
        "--keep-last",
        "2",
    ];
    let run = cli(kc, &args);
    match run.code {
        Some(0) => Pruned::Ok(run.json()),
        Some(1) if run.stderr.contains("is locked by") => Pruned::Locked,
        _ => panic!("the prune failed for another reason than the lock: {run:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_prunes_at_the_same_time_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, _) = serve(&kc, "a", root);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);

    let (location, key) = a_writes_and_b_reads_with_read_only_credentials(&kc, s3, root);

    // An application with a few tens of MiB, so an export takes a moment.
    let (ns, _, src) = sample_app(&kc, root, "race", |src| {
        make_tree(src, 72);
        std::fs::create_dir_all(src.join("base")).unwrap();
        std::fs::write(src.join("base/table.0"), random_bytes(32 << 20, 73)).unwrap();
        change_round_data(src, 0);
    });

    the_import_profile_only_reads(&kc);
    let export_took = how_long_a_lone_export_takes(&kc, &ns, &src);
    let newest = rounds_of_an_export_and_a_prune_started_together(&kc, &ns, &src, export_took);
    a_lone_prune_keeps_the_two_newest(&kc, &ns, &newest);
    b_restores_the_newest_byte_for_byte(&kc, &ns, &src, &newest);
    bucket_repo(&location, key, s3).assert_checks_clean();
}

/// The export repository: a writes; b reads with read-only credentials, through its
/// import profile `in`. Returns the repository's location and key file.
fn a_writes_and_b_reads_with_read_only_credentials(
    kc: &Path,
    s3: &ferry_testenv::S3Info,
    root: &Path,
) -> (String, PathBuf) {
    let (location, key) = export_repository(
        kc,
        s3,
        &s3.endpoint,
        root,
        ["s3-race", "repo-key-race", "s3-race-read"],
        "cli-prune-race",
        71,
    );
    key_secret(kc, "b", "repo-key-race", &key);
    let import = [
        "--context",
        "b",
        "profile",
        "create",
        "in",
        "--kind",
        "import",
        "--s3",
        &location,
        "--region",
        &s3.region,
        "--credentials-secret",
        "s3-race-read",
        "--key-secret",
        "repo-key-race",
    ];
    cli(kc, &import).ok();
    (location, key)
}

/// The import profile on b only reads: a prune through it is refused, naming why.
fn the_import_profile_only_reads(kc: &Path) {
    let refused = cli(
        kc,
        &[
            "--context",
            "b",
            "restore-points",
            "prune",
            "--profile",
            "in",
            "--keep-last",
            "1",
        ],
    );
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("import profile") && refused.stderr.contains("only reads"),
        "{refused:?}"
    );
}

/// A first export, then how long an export of one round's new data takes, alone.
fn how_long_a_lone_export_takes(kc: &Path, ns: &str, src: &Path) -> Duration {
    let first = export_once(kc, ns);
    assert!(matches!(first, Exported::Ok(_)), "{first:?}");
    // How long an export of one round's new data takes, alone.
    change_round_data(src, 100);
    let started = Instant::now();
    let Exported::Ok(_) = export_once(kc, ns) else {
        panic!("a lone export met a lock")
    };
    let export_took = started.elapsed();
    eprintln!("one export of a round's data takes {export_took:?}");
    export_took
}

/// Rounds: an export and a prune started together, the prune a little later each round,
/// so it meets the export at a different step each time. Every export succeeds (again
/// after the lock if need be), every prune succeeds or meets the lock, and some prunes
/// deleted something. Returns the last export's restore point.
fn rounds_of_an_export_and_a_prune_started_together(
    kc: &Path,
    ns: &str,
    src: &Path,
    export_took: Duration,
) -> String {
    let mut newest = String::new();
    let (mut exports_locked, mut prunes_locked, mut prunes_done) = (0, 0, 0);
    let (mut restore_points_pruned, mut packs_deleted, mut side_by_side) = (0, 0, 0);
    let rounds = 8u32;
    for round in 1..=rounds {
        change_round_data(src, u64::from(round));
        let delay = export_took.mul_f64(f64::from(round - 1) / f64::from(rounds - 1));
        let t0 = Instant::now();
        let (exported, pruned) = std::thread::scope(|s| {
            let exporter = s.spawn(|| {
                let mut locked = 0;
                loop {
                    let began = t0.elapsed();
                    match export_once(kc, ns) {
                        Exported::Ok(id) => return (id, locked, began..t0.elapsed()),
                        Exported::Locked => {
                            locked += 1;
                            assert!(locked < 20, "the export kept meeting the lock");
                            std::thread::sleep(Duration::from_millis(300));
                        }
                    }
                }
            });
            let pruner = s.spawn(|| {
                std::thread::sleep(delay);
                let began = t0.elapsed();
                let pruned = prune_once(kc, ns);
                (pruned, began..t0.elapsed())
            });
            (exporter.join().unwrap(), pruner.join().unwrap())
        });
        let ((id, locked, export_ran), (pruned, prune_ran)) = (exported, pruned);
        exports_locked += locked;
        let outcome = match &pruned {
            Pruned::Ok(r) => {
                prunes_done += 1;
                let removed = r["restorePointsRemoved"].as_array().map_or(0, Vec::len);
                restore_points_pruned += removed;
                packs_deleted += number(r, "packsDeleted");
                // Both succeeded while their runs overlapped: the prune fitted between
                // the export's locked steps.
                let overlapped =
                    prune_ran.start < export_ran.end && export_ran.start < prune_ran.end;
                if overlapped {
                    side_by_side += 1;
                }
                format!(
                    "removed {removed} restore point(s), deleted {} pack(s){}",
                    number(r, "packsDeleted"),
                    if overlapped {
                        ", overlapping the export"
                    } else {
                        ""
                    }
                )
            }
            Pruned::Locked => {
                prunes_locked += 1;
                "refused: locked".into()
            }
        };
        eprintln!(
            "round {round}: export {id} after {locked} lock refusal(s) ran {export_ran:?}; \
             prune ran {prune_ran:?}: {outcome}"
        );
        newest = id;
    }
    eprintln!(
        "{rounds} rounds: {exports_locked} export(s) met the lock, {prunes_locked} prune(s) \
         met it, {prunes_done} prune(s) ran ({side_by_side} overlapping a successful export): \
         {restore_points_pruned} restore point(s) and {packs_deleted} pack(s) deleted"
    );
    assert!(prunes_done > 0, "no prune ever ran");
    assert!(
        restore_points_pruned > 0 && packs_deleted > 0,
        "prunes deleted nothing"
    );
    newest
}

/// Once more alone: exactly the two newest stay, the newest being the last export's.
fn a_lone_prune_keeps_the_two_newest(kc: &Path, ns: &str, newest: &str) {
    let Pruned::Ok(last) = prune_once(kc, ns) else {
        panic!("a lone prune met a lock")
    };
    let kept = ids(&last["restorePointsKept"]);
    assert_eq!(kept.len(), 2, "{last:#}");
    assert_eq!(kept[0], newest, "{last:#}");
    let listed = json(kc, "a", &["restore-points", "--profile", "out", "-n", ns]);
    assert_eq!(ids(&listed["restorePoints"]), kept, "{listed:#}");
}

/// b restores the newest from its read-only profile, byte for byte.
fn b_restores_the_newest_byte_for_byte(kc: &Path, ns: &str, src: &Path, newest: &str) {
    let restored = cli(
        kc,
        &[
            "--context",
            "b",
            "restore",
            "--profile",
            "in",
            "--restore-point",
            newest,
        ],
    )
    .ok();
    assert!(restored.stdout.contains("succeeded"), "{restored:?}");
    assert_same_tree(src, &volume_on_b(kc, ns));
}
