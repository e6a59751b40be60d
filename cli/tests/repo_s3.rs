//! `ferry repo` against the real S3 server (MinIO) of the test environment, with
//! credentials passed the usual AWS way.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_tree(&src, 7);
    let repo = Repo::on_s3(tmp.path(), s3, "ferry-cli-test", 7);
    let with_creds = |args: &[&str]| repo.s3_cmd(s3, args);
    let go = run_blocking;

    // No repository under a fresh prefix yet.
    go(with_creds(&["snapshots"])).await.code(10);
    // Missing credentials are named.
    let r = go(repo.cmd(&["snapshots"])).await.code(2);
    assert!(r.stderr.contains("AWS_ACCESS_KEY_ID"), "{r:#?}");

    let init = go(with_creds(&["--json", "init"])).await.ok().json();
    assert_eq!(init["id"].as_str().map(str::len), Some(64), "{init:#}");
    let first = go(with_creds(&["--json", "backup", src.to_str().unwrap()]))
        .await
        .ok()
        .json();
    assert_eq!(num(&first, "files_new"), files, "{first:#}");
    let snap_id = first["snapshot_id"].as_str().unwrap().to_string();

    let list = go(with_creds(&["snapshots", "--json"])).await.ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    assert_eq!(list[0]["id"], snap_id.as_str());

    let dst = tmp.path().join("dst");
    go(with_creds(&[
        "restore",
        &snap_id[..12],
        "--target",
        dst.to_str().unwrap(),
    ]))
    .await
    .ok();
    assert_same_tree(&src, &dst);

    let second = go(with_creds(&["--json", "backup", src.to_str().unwrap()]))
        .await
        .ok()
        .json();
    assert_eq!(num(&second, "files_unmodified"), files, "{second:#}");
    assert!(num(&second, "bytes_uploaded") < 64 << 10, "{second:#}");

    let check = go(with_creds(&["check", "--read-data"])).await.ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");
}

/// A bucket that does not exist is named as such, in the store's words and with the fix,
/// not as a dump of the SDK's response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_with_the_fix() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(
        tmp.path(),
        format!("s3:{}/no-such-bucket-here/p", s3.endpoint),
        3,
    );
    let r = run_blocking(repo.s3_cmd(s3, &["init"])).await;
    assert_ne!(r.code, Some(0), "{r:#?}");
    for want in [
        "no-such-bucket-here",
        "NoSuchBucket",
        "HTTP 404",
        "create the bucket first",
    ] {
        assert!(r.stderr.contains(want), "{want:?} missing: {r:#?}");
    }
    assert!(!r.stderr.contains("raw: Response"), "{r:#?}");
    assert!(r.stderr.lines().count() <= 2, "{r:#?}");
}
