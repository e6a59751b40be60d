//! Key slots: several user keys open one repository; changing the key keeps every
//! earlier snapshot readable, and a wrong key's error names the keys that would work.
//! Run on a local directory, on the real S3 server (MinIO) of the test environment,
//! and on a fault-injecting store for the crash cases.

// The shared steps below are test code too: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use ferry_repo::backend::{DynBackend, FaultRule, FaultyBackend, LocalBackend, Op, S3Backend};
use ferry_repo::{
    BackupOptions, Error, InitOptions, KEY_CHANGE_PURPOSE, Repository, RestoreOptions,
};

const KEY_A: &[u8] = b"key A: the key the repository is made with";
const KEY_B: &[u8] = b"key B: the rotated key";
const KEY_C: &[u8] = b"key C: a key nobody added";

async fn init_with(backend: DynBackend, key: &[u8]) -> Repository {
    Repository::init(backend, key, InitOptions::small_for_tests())
        .await
        .unwrap()
}

/// The wrong-key error, checked for the parts every such error must have.
async fn wrong_key(backend: DynBackend, key: &[u8]) -> (String, Vec<ferry_repo::KeyInfo>) {
    let err = Repository::open(backend, key).await.unwrap_err();
    let Error::WrongKey {
        fingerprint, keys, ..
    } = &err
    else {
        panic!("expected WrongKey, got {err}");
    };
    let msg = err.to_string();
    assert!(msg.contains(fingerprint.as_str()), "{msg}");
    assert!(msg.contains("ferry repo key add"), "{msg}");
    // Never key material: not the key given, not any other.
    for k in [KEY_A, KEY_B, KEY_C] {
        let text = String::from_utf8_lossy(k);
        assert!(!msg.contains(text.as_ref()), "{msg}");
        assert!(!msg.contains(&hex(k)), "{msg}");
    }
    (msg, keys.clone())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The whole story of the issue, on any store: init with A, back up, add B, read A's
/// snapshot with B, back up with B, remove A; A then fails naming B, C names the keys.
async fn rotate_keys(backend: DynBackend, work: &Path) {
    let src = work.join("src");
    make_tree(&src);

    let repo_a = init_with(backend.clone(), KEY_A).await;
    let fp_a = repo_a.key_fingerprint().to_string();
    assert!(fp_a.starts_with("k-") && fp_a.len() == 18, "{fp_a}");
    let under_a = repo_a.backup(&src, BackupOptions::default()).await.unwrap();
    let listed = repo_a.keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint.as_deref(), Some(fp_a.as_str()));
    assert_eq!(listed[0].label, "initial");
    assert!(listed[0].primary);

    let added = repo_a.add_key(KEY_B, "rotated").await.unwrap();
    let fp_b = added.fingerprint.clone().unwrap();
    assert_ne!(fp_a, fp_b);
    assert_eq!(added.label, "rotated");

    // C is neither: the error names C's fingerprint and both keys with their labels.
    let (msg, keys) = wrong_key(backend.clone(), KEY_C).await;
    assert_eq!(keys.len(), 2, "{msg}");
    assert!(msg.contains(&format!("{fp_a} \"initial\" added ")), "{msg}");
    assert!(msg.contains(&format!("{fp_b} \"rotated\" added ")), "{msg}");

    // B reads what was written under A, byte for byte.
    let repo_b = Repository::open(backend.clone(), KEY_B).await.unwrap();
    assert_eq!(repo_b.key_fingerprint(), fp_b);
    let dst = work.join("restored-a");
    repo_b
        .restore(&under_a.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_same_tree(&src, &dst);

    // B writes; A (still a key) reads it: one master key under both.
    fs::write(src.join("after-rotation.txt"), b"written under key B").unwrap();
    let under_b = repo_b.backup(&src, BackupOptions::default()).await.unwrap();
    let again_a = Repository::open(backend.clone(), KEY_A).await.unwrap();
    let dst = work.join("restored-b-with-a");
    again_a
        .restore(&under_b.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_same_tree(&src, &dst);

    // Remove A through B's handle. A no longer opens, and its error says which key does.
    let removed = repo_b.remove_key(&fp_a, None).await.unwrap();
    assert_eq!(removed.fingerprint.as_deref(), Some(fp_a.as_str()));
    let (msg, keys) = wrong_key(backend.clone(), KEY_A).await;
    assert!(
        msg.contains(&format!("this key (fingerprint {fp_a})")),
        "{msg}"
    );
    assert!(msg.contains(&format!("{fp_b} \"rotated\"")), "{msg}");
    assert_eq!(keys.len(), 1, "{msg}");
    assert_eq!(keys[0].fingerprint.as_deref(), Some(fp_b.as_str()));
    // B became the primary slot, so readers from before key slots open with it too.
    assert!(keys[0].primary);

    // Both snapshots still restore with B alone.
    let repo_b = Repository::open(backend.clone(), KEY_B).await.unwrap();
    let dst = work.join("restored-a-after-removal");
    repo_b
        .restore(&under_a.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert!(repo_b.check(true).await.unwrap().is_ok());

    // B is now the only key: it cannot be removed, even with another key given.
    let err = repo_b.remove_key(&fp_b, Some(KEY_C)).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("only key"), "{err}");
    Repository::open(backend.clone(), KEY_B).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_in_a_local_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    rotate_keys(backend, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_in_s3() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let prefix = ferry_testenv::unique_name("ferry-repo-keys");
    let backend: DynBackend = Arc::new(S3Backend::new(common::s3_options(s3, &s3.bucket, &prefix)));
    let tmp = tempfile::tempdir().unwrap();
    rotate_keys(backend.clone(), tmp.path()).await;
    for o in backend.list("").await.unwrap() {
        backend.delete(&o.key).await.unwrap();
    }
}

/// Rewrites a config as the code before key slots wrote it: the wrapped key without
/// fingerprint, label or time, and no further slots.
async fn make_pre_slot(backend: &DynBackend) {
    let raw = backend.get("config").await.unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    json["master_key"] = serde_json::json!({
        "algorithm": json["master_key"]["algorithm"],
        "sealed": json["master_key"]["sealed"],
    });
    let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "chunker",
            "compression_level",
            "created",
            "id",
            "kdf",
            "master_key",
            "pack_target_size",
            "version"
        ],
        "a single-key config must keep the fields of format version 1"
    );
    backend
        .put(
            "config",
            Bytes::from(serde_json::to_vec_pretty(&json).unwrap()),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_from_before_key_slots_open_and_gain_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
    let made = init_with(backend.clone(), KEY_A)
        .await
        .backup(&src, BackupOptions::default())
        .await
        .unwrap();
    make_pre_slot(&backend).await;

    // A wrong key: the only key is described without a fingerprint (none is recorded).
    let (msg, keys) = wrong_key(backend.clone(), KEY_C).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].fingerprint, None);
    assert!(msg.contains("\"initial\" added "), "{msg}");
    assert!(msg.contains("fingerprint not recorded"), "{msg}");

    // The key it was made with opens it, and lists itself by its fingerprint.
    let repo = Repository::open(backend.clone(), KEY_A).await.unwrap();
    let fp_a = repo.key_fingerprint().to_string();
    let listed = repo.keys().await.unwrap();
    assert_eq!(listed[0].fingerprint.as_deref(), Some(fp_a.as_str()));
    assert_eq!(listed[0].created, repo.config().created);

    // Adding a key records the first key's fingerprint too.
    let fp_b = repo
        .add_key(KEY_B, "rotated")
        .await
        .unwrap()
        .fingerprint
        .unwrap();
    let raw = backend.get("config").await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    // Adding a key leaves the format version alone.
    assert_eq!(json["version"], ferry_repo::FORMAT_VERSION);
    assert_eq!(json["master_key"]["fingerprint"], fp_a.as_str());
    assert_eq!(json["master_key"]["label"], "initial");
    assert_eq!(json["extra_keys"][0]["fingerprint"], fp_b.as_str());

    let repo_b = Repository::open(backend.clone(), KEY_B).await.unwrap();
    let dst = tmp.path().join("dst");
    repo_b
        .restore(&made.snapshot_id, &dst, RestoreOptions::default())
        .await
        .unwrap();
    assert_same_tree(&src, &dst);
    let (msg, _) = wrong_key(backend.clone(), KEY_C).await;
    assert!(msg.contains(&fp_a) && msg.contains(&fp_b), "{msg}");
}

#[tokio::test]
async fn removal_and_addition_refusals() {
    let backend: DynBackend = memory();
    let repo_a = init_with(backend.clone(), KEY_A).await;
    let fp_a = repo_a.key_fingerprint().to_string();

    // The only key.
    let err = repo_a.remove_key(&fp_a, None).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");

    // The same key twice, an empty key, a label with a newline.
    let err = repo_a.add_key(KEY_A, "again").await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(err.to_string().contains(&fp_a), "{err}");
    assert!(repo_a.add_key(b"", "empty").await.is_err());
    assert!(repo_a.add_key(KEY_B, "two\nlines").await.is_err());

    let fp_b = repo_a
        .add_key(KEY_B, "rotated")
        .await
        .unwrap()
        .fingerprint
        .unwrap();

    // Malformed and unknown fingerprints.
    let err = repo_a.remove_key("k-12", None).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = repo_a
        .remove_key("k-0000000000000000", None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&fp_b), "{err}");

    // The key in use, without another key: refused, naming the key that would remain.
    let err = repo_a.remove_key(&fp_a, None).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains(&fp_b), "{err}");
    // With a key that is not one of the remaining ones: refused too.
    let err = repo_a.remove_key(&fp_a, Some(KEY_C)).await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains(&fp_b), "{err}");
    // With B, typed in capitals and without `k-`: done.
    repo_a
        .remove_key(&fp_a[2..].to_ascii_uppercase(), Some(KEY_B))
        .await
        .unwrap();
    assert!(matches!(
        Repository::open(backend.clone(), KEY_A).await.unwrap_err(),
        Error::WrongKey { .. }
    ));

    // A's handle no longer holds a key of the repository: it must not add keys.
    let err = repo_a.add_key(KEY_C, "sneaky").await.unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("removed"), "{err}");
    let repo_b = Repository::open(backend.clone(), KEY_B).await.unwrap();
    assert_eq!(repo_b.keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn key_changes_exclude_each_other_but_not_backups() {
    let backend: DynBackend = memory();
    let repo = init_with(backend.clone(), KEY_A).await;
    // Another process's key change in progress.
    let now = time::OffsetDateTime::now_utc();
    let lock = serde_json::json!({
        "hostname": "elsewhere", "pid": 4242, "purpose": KEY_CHANGE_PURPOSE,
        "exclusive": false,
        "created": now.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "expires": (now + time::Duration::minutes(30))
            .format(&time::format_description::well_known::Rfc3339).unwrap(),
        "ttl_ms": 1_800_000,
    });
    backend
        .put(
            "locks/0000000000000000000000000000000000000000000000000000000000000001",
            Bytes::from(serde_json::to_vec(&lock).unwrap()),
        )
        .await
        .unwrap();
    let err = repo.add_key(KEY_B, "rotated").await.unwrap_err();
    assert!(err.is_locked(), "{err}");
    assert_eq!(repo.keys().await.unwrap().len(), 1);
    // Only that lock is left: ours was removed again.
    assert_eq!(backend.list("locks/").await.unwrap().len(), 1);

    // A backup's lock does not stop a key change.
    let mut backup_lock = lock.clone();
    backup_lock["purpose"] = "backup".into();
    backend
        .put(
            "locks/0000000000000000000000000000000000000000000000000000000000000001",
            Bytes::from(serde_json::to_vec(&backup_lock).unwrap()),
        )
        .await
        .unwrap();
    repo.add_key(KEY_B, "rotated").await.unwrap();
    assert_eq!(repo.keys().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_the_old_key_working() {
    let faulty = FaultyBackend::wrap(memory());
    let backend: DynBackend = faulty.clone();
    let repo_a = init_with(backend.clone(), KEY_A).await;
    let fp_a = repo_a.key_fingerprint().to_string();

    // Adding: the lock cannot be written, then the config cannot be written.
    for rule in [
        FaultRule::on(Op::Put).key_contains("locks/").nth(1),
        FaultRule::on(Op::Put).key_contains("config").nth(1),
        FaultRule::on(Op::Get).key_contains("config").nth(1),
    ] {
        faulty.add_rule(rule);
        assert!(repo_a.add_key(KEY_B, "rotated").await.is_err());
        faulty.clear_rules();
        Repository::open(backend.clone(), KEY_A).await.unwrap();
        assert!(matches!(
            Repository::open(backend.clone(), KEY_B).await.unwrap_err(),
            Error::WrongKey { .. }
        ));
        assert!(faulty.inner().list("locks/").await.unwrap().is_empty());
    }

    // The config was written but reading it back failed: the call fails, both keys
    // open (the new config is complete), and the lock is gone.
    faulty.add_rule(FaultRule::on(Op::Get).key_contains("config").nth(2));
    let err = repo_a.add_key(KEY_B, "rotated").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    faulty.clear_rules();
    Repository::open(backend.clone(), KEY_A).await.unwrap();
    let repo_b = Repository::open(backend.clone(), KEY_B).await.unwrap();
    assert_eq!(repo_b.keys().await.unwrap().len(), 2);

    // Removing A: the config put fails. A still opens; nothing was lost.
    faulty.add_rule(FaultRule::on(Op::Put).key_contains("config"));
    assert!(repo_b.remove_key(&fp_a, None).await.is_err());
    faulty.clear_rules();
    Repository::open(backend.clone(), KEY_A).await.unwrap();
    Repository::open(backend.clone(), KEY_B).await.unwrap();

    // Releasing the lock fails after the change: the change holds, the lock lapses.
    faulty.add_rule(FaultRule::on(Op::Delete).key_contains("locks/"));
    repo_b.remove_key(&fp_a, None).await.unwrap();
    faulty.clear_rules();
    assert!(matches!(
        Repository::open(backend.clone(), KEY_A).await.unwrap_err(),
        Error::WrongKey { .. }
    ));
    Repository::open(backend.clone(), KEY_B).await.unwrap();
}
