//! Round trip against the real S3 server (MinIO) of the test environment. Each run uses
//! a fresh prefix in the environment's bucket.

mod common;

use std::fs;
use std::sync::Arc;

use common::*;
use ferry_repo::backend::{Backend, S3Backend};
use ferry_repo::{BackupOptions, RestoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let prefix = ferry_testenv::unique_name("ferry-repo-test");
    let mut opts = s3_options(s3, &s3.bucket, &prefix);
    // Exercise multipart with small parts: 5 MiB is S3's minimum part size.
    opts.multipart_threshold = 5 << 20;
    opts.part_size = 5 << 20;
    let backend = Arc::new(S3Backend::new(opts));

    // A multipart object round-trips.
    let big = random_bytes(12 << 20, 77);
    backend
        .put("packs/zz/big", big.clone().into())
        .await
        .unwrap();
    assert_eq!(
        backend.head("packs/zz/big").await.unwrap(),
        Some(big.len() as u64)
    );
    assert_eq!(
        &backend
            .get_range("packs/zz/big", 6 << 20, 10)
            .await
            .unwrap()[..],
        &big[6 << 20..(6 << 20) + 10]
    );
    backend.delete("packs/zz/big").await.unwrap();
    assert_eq!(backend.head("packs/zz/big").await.unwrap(), None);

    // Setup errors are permanent and say so, rather than retrying or "not found".
    let mut wrong = s3_options(s3, "ferry-no-such-bucket", "x");
    wrong.max_attempts = 2;
    let err = S3Backend::new(wrong)
        .put("config", bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(!err.is_transient() && !err.is_not_found(), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let repo = init(backend.clone()).await;
    let r = repo.backup(&src, BackupOptions::default()).await.unwrap();
    let dst = tmp.path().join("dst");
    repo.restore(&r.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_same_tree(&src, &dst);
    assert!(repo.check(true).await.unwrap().is_ok());
    // Everything the repository wrote lives under the test's prefix, and nothing else.
    let keys = backend.list("").await.unwrap();
    assert!(keys.iter().any(|o| o.key == "config"), "no config object");
    assert!(keys.iter().any(|o| o.key.starts_with("packs/")), "no packs");
    assert!(
        keys.iter().any(|o| o.key.starts_with("snapshots/")),
        "no snapshot"
    );
    for o in keys {
        backend.delete(&o.key).await.unwrap();
    }
    assert!(backend.list("").await.unwrap().is_empty());
    assert!(fs::read_dir(&dst).is_ok());
}

/// A bounded read of an object over the limit is refused from the declared length,
/// and one at the limit is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_over_the_limit_is_refused_before_its_body() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let prefix = ferry_testenv::unique_name("ferry-repo-bounds");
    let backend = S3Backend::new(s3_options(s3, &s3.bucket, &prefix));
    backend
        .put("snapshots/big", random_bytes(3 << 20, 5).into())
        .await
        .unwrap();
    let err = backend
        .get_at_most("snapshots/big", 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ferry_repo::backend::BackendError::TooLarge { size, limit, .. }
                if size == 3 << 20 && limit == 1 << 20
        ),
        "{err}"
    );
    assert_eq!(
        backend
            .get_at_most("snapshots/big", 3 << 20)
            .await
            .unwrap()
            .len(),
        3 << 20
    );
    backend.delete("snapshots/big").await.unwrap();
}
