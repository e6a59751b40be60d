//! `ferry repo forget`, `prune` and `unlock` with the real binary, against a local
//! directory and the test environment's MinIO.

// The setup helpers below are test code too: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;

fn count_files(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        n += if e.metadata().unwrap().is_dir() {
            count_files(&e.path())
        } else {
            1
        };
    }
    n
}

/// Replaces the 3 MiB binary of the tree `make_tree` wrote with new random content.
fn change_tool(src: &Path, seed: u64) {
    fs::write(src.join("bin/tool"), random_bytes(3 << 20, seed)).unwrap();
}

/// A lock object as another host's process would write it.
fn foreign_lock(repo: &Path, name: &str, purpose: &str, exclusive: bool, expires: &str) {
    let lock = serde_json::json!({
        "hostname": "other-host",
        "pid": 4242,
        "purpose": purpose,
        "exclusive": exclusive,
        "created": "2025-01-01T00:00:00Z",
        "expires": expires,
        "ttl_ms": 1_800_000,
    });
    fs::create_dir_all(repo.join("locks")).unwrap();
    fs::write(repo.join("locks").join(name), lock.to_string()).unwrap();
}

#[test]
fn forget_and_prune_shrink_the_repository_and_keep_what_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1);
    let root = tmp.path().join("repo");
    let repo = Repo::new(tmp.path(), root.to_str().unwrap(), 1);
    repo.run(&["init"]).ok();
    let path = src.to_str().unwrap();
    for seed in [10, 11, 12] {
        change_tool(&src, seed);
        repo.run(&["backup", path]).ok();
    }
    let snaps = repo.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().map(Vec::len), Some(3));
    let newest = snaps[2]["id"].as_str().unwrap().to_string();

    // Usage errors: no rule, a zero count, a bad duration.
    let r = repo.run(&["forget"]).code(2);
    assert!(r.stderr.contains("--keep-last"), "{r:#?}");
    repo.run(&["forget", "--keep-last", "0"]).code(2);
    let r = repo.run(&["forget", "--keep-within", "3 weeks"]).code(2);
    assert!(r.stderr.contains("duration"), "{r:#?}");
    repo.run(&["prune", "--max-clock-skew", "soon"]).code(2);

    // A dry run lists what would go and changes nothing.
    let files_before = count_files(&root);
    let dry = repo
        .run(&[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--dry-run",
            "--prune",
        ])
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true, "{dry:#}");
    assert_eq!(
        dry["snapshots_removed"].as_array().map(Vec::len),
        Some(2),
        "{dry:#}"
    );
    assert_eq!(dry["snapshots_kept"][0]["id"], newest.as_str(), "{dry:#}");
    assert!(num(&dry["prune"], "packs_deleted") > 0, "{dry:#}");
    assert_eq!(
        count_files(&root),
        files_before,
        "a dry run deletes nothing"
    );
    let text = repo.run(&["forget", "--keep-last", "1", "--dry-run"]).ok();
    assert!(
        text.stdout
            .contains("would remove 0 restore point(s) and 2 snapshot(s)"),
        "{text:#?}"
    );

    // For real: two 3 MiB versions of the binary become unused and are deleted.
    let size_before = tree_bytes(&root);
    let done = repo
        .run(&["--json", "forget", "--keep-last", "1", "--prune"])
        .ok()
        .json();
    let prune = &done["prune"];
    assert!(num(prune, "bytes_deleted") > 5 << 20, "{done:#}");
    assert_eq!(num(prune, "snapshots"), 1, "{done:#}");
    assert!(num(prune, "index_files_deleted") > 0, "{done:#}");
    let size_after = tree_bytes(&root);
    assert!(
        size_after + (5 << 20) < size_before,
        "{size_before} -> {size_after}"
    );
    let snaps = repo.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().map(Vec::len), Some(1));
    assert_eq!(snaps[0]["id"], newest.as_str());

    let check = repo.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");
    let dst = tmp.path().join("dst");
    repo.run(&["restore", "latest", "--target", dst.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &dst);

    // Nothing left to prune; the text summary says so.
    let again = repo.run(&["prune"]).ok();
    assert!(again.stdout.contains("deleted 0 of"), "{again:#?}");
    assert!(again.stdout.contains("prune done"), "{again:#?}");
    assert!(count_files(&root.join("locks")) == 0, "locks left behind");
}

#[test]
fn locks_stop_prune_and_backup_and_unlock_clears_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 2);
    let root = tmp.path().join("repo");
    let repo = Repo::new(tmp.path(), root.to_str().unwrap(), 2);
    repo.run(&["init"]).ok();
    let path = src.to_str().unwrap();
    repo.run(&["backup", path]).ok();
    change_tool(&src, 20);
    repo.run(&["backup", path]).ok();
    let forgot = repo.run(&["forget", "--keep-last", "1"]).ok();
    assert!(
        forgot.stdout.contains("until `ferry repo prune`"),
        "{forgot:#?}"
    );
    let packs = count_files(&root.join("packs"));
    let packs_size = tree_bytes(&root.join("packs"));

    // Another host's backup is running: prune refuses, naming it, and deletes nothing.
    let name = "ab".repeat(32);
    foreign_lock(&root, &name, "backup", false, "2999-01-01T00:00:00Z");
    let r = repo.run(&["prune"]).code(1);
    for want in [
        "locked",
        "other-host",
        "4242",
        "backup (shared)",
        "2999-01-01",
        "unlock",
    ] {
        assert!(r.stderr.contains(want), "{want:?} missing: {r:#?}");
    }
    assert_eq!(count_files(&root.join("packs")), packs);
    assert_eq!(
        count_files(&root.join("locks")),
        1,
        "prune removed its own lock"
    );
    // A backup next to another backup is fine.
    repo.run(&["backup", path]).ok();
    // `unlock` leaves a live lock alone.
    let r = repo.run(&["unlock"]).ok();
    assert!(r.stdout.contains("0 lock(s) removed"), "{r:#?}");
    assert!(r.stdout.contains("1 live lock(s) kept"), "{r:#?}");

    // Another host's prune is running: a backup refuses.
    foreign_lock(&root, &name, "prune", true, "2999-01-01T00:00:00Z");
    let r = repo.run(&["backup", path]).code(1);
    assert!(r.stderr.contains("prune (exclusive)"), "{r:#?}");
    assert!(r.stderr.contains("other-host"), "{r:#?}");

    // The holder died long ago: its lock expired, and `unlock` removes it.
    foreign_lock(&root, &name, "prune", true, "2025-01-01T00:30:00Z");
    let old = SystemTime::now() - Duration::from_secs(24 * 3600);
    fs::File::options()
        .write(true)
        .open(root.join("locks").join(&name))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let r = repo.run(&["--json", "unlock"]).ok().json();
    assert_eq!(r["removed"].as_array().map(Vec::len), Some(1), "{r:#}");
    assert_eq!(r["removed"][0]["hostname"], "other-host", "{r:#}");
    assert_eq!(r["removed"][0]["stale"], true, "{r:#}");
    assert_eq!(count_files(&root.join("locks")), 0);

    // `--remove-all` removes a live one too; then prune runs.
    foreign_lock(&root, &name, "backup", false, "2999-01-01T00:00:00Z");
    let r = repo.run(&["unlock", "--remove-all"]).ok();
    assert!(r.stdout.contains("removed live lock"), "{r:#?}");
    let pruned = repo.run(&["--json", "prune"]).ok().json();
    assert!(num(&pruned, "packs_deleted") > 0, "{pruned:#}");
    // The first backup's pack was mostly the old binary: repacked.
    assert!(num(&pruned, "packs_repacked") > 0, "{pruned:#}");
    assert!(tree_bytes(&root.join("packs")) + (2 << 20) < packs_size);
    let check = repo.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");
    let dst = tmp.path().join("dst");
    repo.run(&["restore", "latest", "--target", dst.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_prune_on_s3() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 3);
    let repo = Repo::on_s3(tmp.path(), s3, "ferry-cli-prune", 3);
    let with_creds = |args: &[&str]| repo.s3_cmd(s3, args);
    let go = run_blocking;
    let path = src.to_str().unwrap().to_string();
    go(with_creds(&["init"])).await.ok();
    for seed in [30, 31] {
        change_tool(&src, seed);
        go(with_creds(&["backup", &path])).await.ok();
    }
    let done = go(with_creds(&[
        "--json",
        "forget",
        "--keep-within",
        "1h",
        "--keep-last",
        "1",
        "--prune",
    ]))
    .await
    .ok()
    .json();
    // Both snapshots are younger than an hour: nothing goes.
    assert_eq!(
        done["snapshots_removed"].as_array().map(Vec::len),
        Some(0),
        "{done:#}"
    );
    assert_eq!(num(&done["prune"], "packs_deleted"), 0, "{done:#}");

    let done = go(with_creds(&[
        "--json",
        "forget",
        "--keep-last",
        "1",
        "--prune",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(
        done["snapshots_removed"].as_array().map(Vec::len),
        Some(1),
        "{done:#}"
    );
    let prune = &done["prune"];
    assert!(num(prune, "bytes_deleted") > 2 << 20, "{done:#}");
    assert!(
        prune["clock_skew_seconds"].as_f64().unwrap().abs() < 60.0,
        "{done:#}"
    );

    let check = go(with_creds(&["check", "--read-data"])).await.ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");
    let dst = tmp.path().join("dst");
    go(with_creds(&[
        "restore",
        "latest",
        "--target",
        dst.to_str().unwrap(),
    ]))
    .await
    .ok();
    assert_same_tree(&src, &dst);
    let r = go(with_creds(&["unlock"])).await.ok();
    assert!(r.stdout.contains("0 lock(s) removed"), "{r:#?}");
}
