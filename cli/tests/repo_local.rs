//! `ferry repo` against a local-directory repository: the real binary, real files.

// The setup helpers below are test code too: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn local_round_trip_and_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_tree(&src, 1);
    let repo = Repo::new(tmp.path(), tmp.path().join("repo").to_str().unwrap(), 1);

    let init = repo.run(&["init"]).ok();
    let id = init.stdout.trim();
    assert_eq!(id.len(), 64, "init prints the repository id: {init:#?}");
    let config = fs::read_to_string(tmp.path().join("repo/config")).unwrap();
    assert!(config.contains(id), "the printed id is the config's");
    // A second init refuses to overwrite.
    let again = repo.run(&["init"]).code(1);
    assert!(again.stderr.contains("already exists"), "{again:#?}");

    let first = repo
        .run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(num(&first, "files_new"), files, "{first:#}");
    assert_eq!(num(&first, "files_changed"), 0);
    assert_eq!(num(&first, "files_unmodified"), 0);
    let total: u64 = 3 << 20 | 1 << 20;
    assert!(num(&first, "bytes_total") > total, "{first:#}");
    assert_eq!(num(&first, "bytes_read"), num(&first, "bytes_total"));
    assert!(num(&first, "bytes_uploaded") > 4 << 20, "{first:#}");
    assert!(num(&first, "chunks_new") > 0);
    assert!(first["duration_seconds"].as_f64().is_some());
    assert!(first["parent"].is_null());
    let snap_id = first["snapshot_id"].as_str().unwrap().to_string();

    let list = repo.run(&["snapshots", "--json"]).ok().json();
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], snap_id.as_str());
    assert_eq!(list[0]["paths"][0], src.to_str().unwrap());
    assert_eq!(list[0]["summary"]["files"], files);
    let table = repo.run(&["snapshots"]).ok();
    assert!(table.stdout.contains(&snap_id[..8]), "{table:#?}");
    assert!(table.stdout.contains(src.to_str().unwrap()), "{table:#?}");

    let dst = tmp.path().join("dst");
    let restored = repo
        .run(&["restore", "latest", "--target", dst.to_str().unwrap()])
        .ok();
    assert!(restored.stdout.contains(&snap_id[..8]), "{restored:#?}");
    assert_same_tree(&src, &dst);
    // An id prefix works too, and --json reports what was written.
    let dst2 = tmp.path().join("dst2");
    let r = repo
        .run(&[
            "--json",
            "restore",
            &snap_id[..10],
            "-t",
            dst2.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(num(&r, "files"), files);
    assert_same_tree(&src, &dst2);

    // Nothing changed: the parent is found by path and host, no file is read.
    let second = repo
        .run(&["backup", "--json", src.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(second["parent"], snap_id.as_str(), "{second:#}");
    assert_eq!(num(&second, "files_unmodified"), files, "{second:#}");
    assert_eq!(num(&second, "files_new"), 0);
    assert_eq!(num(&second, "files_changed"), 0);
    assert_eq!(num(&second, "bytes_read"), 0);
    assert!(num(&second, "bytes_uploaded") < 64 << 10, "{second:#}");

    // One file changed, one added: the summary tells them apart.
    fs::write(src.join("a/b/small.txt"), b"changed content").unwrap();
    fs::write(src.join("many/new-file"), b"new").unwrap();
    let third = repo.run(&["backup", src.to_str().unwrap()]).ok();
    assert!(
        third.stdout.contains("Files:      1 new, 1 changed"),
        "{third:#?}"
    );
    assert!(third.stdout.contains("snapshot "), "{third:#?}");
    // Off a terminal there is no progress noise.
    assert!(third.stderr.is_empty(), "{third:#?}");

    let check = repo.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");
}

#[test]
fn errors_have_their_exit_status_and_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let url = tmp.path().join("repo");
    let repo = Repo::new(tmp.path(), url.to_str().unwrap(), 1);
    repo.run(&["init"]).ok();

    // Wrong key: 12, naming the key.
    let wrong = Repo::new(tmp.path(), url.to_str().unwrap(), 2);
    let r = wrong.run(&["snapshots"]).code(12);
    assert!(r.stderr.contains("wrong key"), "{r:#?}");
    assert!(r.stderr.contains(wrong.key.to_str().unwrap()), "{r:#?}");
    let r = wrong.run(&["backup", src.to_str().unwrap()]).code(12);
    assert!(r.stderr.contains("wrong key"), "{r:#?}");

    // No repository there: 10, naming the fix.
    let missing = Repo {
        url: tmp.path().join("nope").to_str().unwrap().into(),
        key: repo.key.clone(),
    };
    let r = missing.run(&["snapshots"]).code(10);
    assert!(r.stderr.contains("no repository at"), "{r:#?}");
    assert!(r.stderr.contains("init"), "{r:#?}");
    assert!(
        !tmp.path().join("nope").exists(),
        "opening must not create it"
    );

    // A key file that does not exist: named, with the fix.
    let absent = Repo {
        url: url.to_str().unwrap().into(),
        key: tmp.path().join("absent.key"),
    };
    let r = absent.run(&["snapshots"]).code(1);
    assert!(r.stderr.contains("absent.key"), "{r:#?}");
    assert!(r.stderr.contains("--key-file"), "{r:#?}");
    assert!(r.stderr.contains("head -c 32 /dev/urandom"), "{r:#?}");
    // An empty one too.
    let empty = tmp.path().join("empty.key");
    fs::write(&empty, b"").unwrap();
    let r = run(ferry()
        .args(["repo", "-r", url.to_str().unwrap(), "--key-file"])
        .arg(&empty)
        .arg("snapshots"))
    .code(1);
    assert!(r.stderr.contains("is empty"), "{r:#?}");

    // No key or no repository at all: usage errors.
    let r = run(ferry().args(["repo", "-r", url.to_str().unwrap(), "snapshots"])).code(2);
    assert!(r.stderr.contains("--key-file"), "{r:#?}");
    assert!(r.stderr.contains("FERRY_KEY_FILE"), "{r:#?}");
    let r = run(ferry()
        .args(["repo", "snapshots", "--key-file"])
        .arg(&repo.key))
    .code(2);
    assert!(r.stderr.contains("--repo"), "{r:#?}");
    let r = repo
        .run(&["backup", "--tag", "notatag", src.to_str().unwrap()])
        .code(2);
    assert!(r.stderr.contains("KEY=VALUE"), "{r:#?}");
    let r = repo.run(&["restore", "latest"]).code(2);
    assert!(r.stderr.contains("--target"), "{r:#?}");
    let r = run(ferry()
        .args(["repo", "-r", "s3:ftp://h/b", "--key-file"])
        .arg(&repo.key)
        .arg("snapshots"))
    .code(2);
    assert!(r.stderr.contains("repository URL"), "{r:#?}");

    // The environment variables stand in for the flags.
    let r = run(ferry()
        .env("FERRY_REPOSITORY", &url)
        .env("FERRY_KEY_FILE", &repo.key)
        .args(["repo", "snapshots", "--json"]))
    .ok();
    assert_eq!(r.json(), serde_json::json!([]));

    // Restoring from an empty repository names the problem.
    let r = repo
        .run(&[
            "restore",
            "latest",
            "--target",
            tmp.path().join("d").to_str().unwrap(),
        ])
        .code(1);
    assert!(r.stderr.contains("snapshot"), "{r:#?}");

    // The exit statuses are documented in the long help.
    let help = run(ferry().args(["repo", "--help"])).ok();
    for line in [
        "10   the repository does not exist",
        "12   wrong key",
        "130  interrupted",
    ] {
        assert!(help.stdout.contains(line), "{help:#?}");
    }
}

#[test]
fn check_names_a_damaged_pack_and_restore_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 3);
    let repo_dir = tmp.path().join("repo");
    let repo = Repo::new(tmp.path(), repo_dir.to_str().unwrap(), 3);
    repo.run(&["init"]).ok();
    repo.run(&["backup", src.to_str().unwrap()]).ok();
    repo.run(&["check", "--read-data"]).ok();

    // Flip one byte in the middle of the largest pack: inside a stored chunk.
    let (pack_id, pack_path) = packs(&repo_dir)
        .into_iter()
        .max_by_key(|(_, p)| fs::metadata(p).unwrap().len())
        .expect("a pack");
    let len = fs::metadata(&pack_path).unwrap().len();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack_path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&[byte[0] ^ 0x40]).unwrap();
    drop(f);

    let r = repo.run(&["check", "--read-data"]).code(1);
    assert!(
        r.stdout.contains(&pack_id),
        "check must name the pack: {r:#?}"
    );
    assert!(r.stderr.contains("problem"), "{r:#?}");
    let j = repo.run(&["check", "--read-data", "--json"]).code(1).json();
    assert_eq!(j["ok"], false);
    let named: Vec<&str> = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pack"].as_str())
        .collect();
    assert!(named.contains(&pack_id.as_str()), "{j:#}");

    let r = repo
        .run(&[
            "restore",
            "latest",
            "--target",
            tmp.path().join("dst").to_str().unwrap(),
        ])
        .code(1);
    assert!(r.stderr.contains("corrupt"), "{r:#?}");
    assert!(!r.stderr.contains("panicked"), "{r:#?}");
}

/// 256 MiB of incompressible data in eight files.
const BIG_FILES: usize = 8;
const BIG_FILE_SIZE: usize = 32 << 20;

/// A repository and a source of `BIG_FILES` random files; returns (tmp, src, repo dir, repo, bytes).
fn big_source(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf, Repo, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..BIG_FILES {
        fs::write(
            src.join(format!("random-{i}.bin")),
            random_bytes(BIG_FILE_SIZE, seed + i as u64),
        )
        .unwrap();
    }
    let repo_dir = tmp.path().join("repo");
    let repo = Repo::new(tmp.path(), repo_dir.to_str().unwrap(), seed);
    repo.run(&["init"]).ok();
    (tmp, src, repo_dir, repo, (BIG_FILES * BIG_FILE_SIZE) as u64)
}

/// Starts a backup and returns once `packs` pack files are stored, the child still running.
fn backup_until_packs(repo: &Repo, repo_dir: &Path, src: &Path, packs_wanted: usize) -> Child {
    let mut child = repo
        .cmd(&["backup", src.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while packs(repo_dir).len() < packs_wanted {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("backup ended ({status}) before {packs_wanted} packs were stored");
        }
        assert!(Instant::now() < deadline, "no packs appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stored_bytes(repo_dir: &Path) -> u64 {
    packs(repo_dir)
        .iter()
        .map(|(_, p)| fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn sigterm_cancels_cleanly_with_exit_130_and_the_rerun_reuses_packs() {
    let (_tmp, src, repo_dir, repo, data) = big_source(200);
    let child = backup_until_packs(&repo, &repo_dir, &src, 2);
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = Run::from(child.wait_with_output().unwrap()).code(130);
    assert!(out.stderr.contains("interrupted"), "{out:#?}");

    let list = repo.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(
        list,
        serde_json::json!([]),
        "a cancelled backup is invisible"
    );
    // A clean stop indexes every pack it stored, so none is left over.
    let check = repo.run(&["check", "--json"]).ok().json();
    assert_eq!(check["unindexed_packs"], serde_json::json!([]), "{check:#}");

    let stored = stored_bytes(&repo_dir);
    let rerun = repo
        .run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    let uploaded = num(&rerun, "bytes_uploaded");
    assert!(
        uploaded + stored < data + data / 50,
        "the re-run uploaded {uploaded} bytes though {stored} of {data} were stored: {rerun:#}"
    );
    repo.run(&["check", "--read-data"]).ok();
}

// A killed process writes no index for its last packs; the re-run adopts them (reads
// their headers) instead of uploading their chunks again.
#[test]
fn killed_backup_leaves_no_snapshot_and_the_rerun_reuses_uploaded_packs() {
    let (tmp, src, repo_dir, repo, data) = big_source(100);
    // 10 of about 16 packs: most of the data is stored, none of it indexed yet.
    let mut child = backup_until_packs(&repo, &repo_dir, &src, 10);
    child.kill().unwrap(); // SIGKILL: no clean-up runs.
    child.wait().unwrap();
    let stored = stored_bytes(&repo_dir);

    let list = repo.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(list, serde_json::json!([]), "a killed backup is invisible");

    let rerun = repo
        .run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    let check = repo.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");
    let uploaded = num(&rerun, "bytes_uploaded");
    // Random data does not compress: what is stored plus what the re-run uploads is
    // the data once, plus pack overhead.
    assert!(
        uploaded + stored < data + data / 50,
        "the re-run uploaded {uploaded} bytes though {stored} of {data} were stored: {rerun:#}"
    );
    assert!(
        uploaded < data / 2,
        "the re-run uploaded {uploaded} of {data} bytes although {stored} were stored: {rerun:#}"
    );
    let restored = tmp.path().join("restored");
    repo.run(&["restore", "latest", "--target", restored.to_str().unwrap()])
        .ok();
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        assert!(
            fs::read(entry.path()).unwrap() == fs::read(restored.join(entry.file_name())).unwrap(),
            "{:?} differs after restore",
            entry.file_name()
        );
    }
}
