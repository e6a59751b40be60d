//! Bounded inputs: whatever a bucket holds, opening a repository and reading its
//! objects costs at most the limits in `ferry_repo::limits`, and each refusal says
//! which limit and what to do.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ferry_repo::backend::{BackendError, DynBackend, LocalBackend};
use ferry_repo::limits::{MAX_CONFIG_BYTES, MAX_KDF_MEMORY_KIB, MAX_MANIFEST_BYTES};
use ferry_repo::{CONFIG_KEY, Error, Id, Repository, snapshot_key};

const KEY: &[u8] = b"the key";

/// The stored config with `edit` applied to its JSON.
async fn edit_config(backend: &DynBackend, edit: impl FnOnce(&mut serde_json::Value)) {
    let raw = backend.get(CONFIG_KEY).await.unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    edit(&mut v);
    backend
        .put(CONFIG_KEY, Bytes::from(serde_json::to_vec(&v).unwrap()))
        .await
        .unwrap();
}

#[tokio::test]
async fn repository_config_with_huge_argon2_memory_is_refused() {
    let backend: DynBackend = memory();
    Repository::init(
        backend.clone(),
        KEY,
        ferry_repo::InitOptions::small_for_tests(),
    )
    .await
    .unwrap();
    // 64 GiB: before the bound every Ferry opening the repository tried to allocate it.
    edit_config(&backend, |v| v["kdf"]["m_cost_kib"] = (64u64 << 20).into()).await;
    let started = Instant::now();
    let err = Repository::open(backend.clone(), KEY).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let Error::TooLarge {
        found, limit, what, ..
    } = &err
    else {
        panic!("expected TooLarge, got {err}");
    };
    assert_eq!((*found, *limit), (64 << 20, u64::from(MAX_KDF_MEMORY_KIB)));
    assert!(what.contains("argon2id memory"), "{err}");
    assert!(err.to_string().contains("restore the config"), "{err}");

    // Passes and lanes are bounded the same way.
    for (field, value) in [("t_cost", 1_000_000u64), ("p_cost", 4096)] {
        edit_config(&backend, |v| {
            v["kdf"]["m_cost_kib"] = 64.into();
            v["kdf"][field] = value.into();
        })
        .await;
        let err = Repository::open(backend.clone(), KEY).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{field}: {err}");
    }

    // A new repository cannot be made with a cost others could not open.
    let mut options = ferry_repo::InitOptions::small_for_tests();
    options.kdf.m_cost_kib = MAX_KDF_MEMORY_KIB + 1;
    let err = Repository::init(memory(), KEY, options).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
}

/// A config object of megabytes is refused before it is read, on a local store.
#[tokio::test]
async fn oversized_config_and_manifests_are_refused_before_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(dir.path()));
    let repo = Repository::init(
        backend.clone(),
        KEY,
        ferry_repo::InitOptions::small_for_tests(),
    )
    .await
    .unwrap();

    // A snapshot object one byte over the limit, sparse so the test writes nothing.
    let id = Id::of_content(b"a huge snapshot");
    let path = dir.path().join(snapshot_key(&id));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_MANIFEST_BYTES as u64 + 1).unwrap();
    let err = repo.load_snapshot(&id).await.unwrap_err();
    let Error::Backend(BackendError::TooLarge { size, limit, .. }) = &err else {
        panic!("expected TooLarge, got {err}");
    };
    assert_eq!(
        (*size, *limit),
        (MAX_MANIFEST_BYTES as u64 + 1, MAX_MANIFEST_BYTES as u64)
    );
    assert!(err.to_string().contains("check who else"), "{err}");

    let config = dir.path().join(CONFIG_KEY);
    std::fs::File::options()
        .write(true)
        .open(&config)
        .unwrap()
        .set_len(MAX_CONFIG_BYTES + 1)
        .unwrap();
    let err = Repository::open(backend, KEY).await.unwrap_err();
    assert!(
        matches!(err, Error::Backend(BackendError::TooLarge { .. })),
        "{err}"
    );
}

/// Every backend's bounded read: at the limit it reads, past it it refuses.
#[tokio::test]
async fn bounded_reads_stop_at_the_limit_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backends: Vec<DynBackend> = vec![memory(), Arc::new(LocalBackend::new(dir.path()))];
    for b in backends {
        b.put("index/x", Bytes::from(vec![7u8; 1000]))
            .await
            .unwrap();
        assert_eq!(b.get_at_most("index/x", 1000).await.unwrap().len(), 1000);
        let err = b.get_at_most("index/x", 999).await.unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::TooLarge {
                    size: 1000,
                    limit: 999,
                    ..
                }
            ),
            "{}: {err}",
            b.describe()
        );
    }
}
