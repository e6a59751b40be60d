//! Export and import through a shared bucket with the `ferry` command: cluster b never
//! talks to cluster a and reaches the bucket with read-only credentials (the test
//! environment's MinIO user `reader`). b's import key goes to a's export; the migration
//! token that comes back is the only thing handed over; b builds an import profile
//! from it and restores. A tampered token stores nothing.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::control::{
    cli, jsonpath, key_secret, kubectl, s3_secret, sample_app, serve, wait_answering,
};
use common::{assert_same_tree, make_tree, random_bytes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_token_lets_a_read_only_destination_restore() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let reader = s3.readonly.clone().expect("a read-only S3 user");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, _) = serve(&kc, "a", root);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);

    // a writes; b may only read and list.
    let key = root.join("repo.key");
    std::fs::write(&key, random_bytes(32, 31)).unwrap();
    s3_secret(&kc, "a", "s3", &s3.access_key, &s3.secret_key);
    key_secret(&kc, "a", "repo-key", &key);
    s3_secret(&kc, "b", "s3-read", &reader.access_key, &reader.secret_key);
    let location = format!(
        "{}/{}/{}",
        s3.endpoint,
        s3.bucket,
        ferry_testenv::unique_name("cli-export")
    );
    cli(
        &kc,
        &[
            "--context",
            "a",
            "profile",
            "create",
            "out",
            "--kind",
            "export",
            "--s3",
            &location,
            "--region",
            &s3.region,
            "--credentials-secret",
            "s3",
            "--key-secret",
            "repo-key",
            "--create-repository",
        ],
    )
    .ok();

    let (ns, _, src) = sample_app(&kc, root, "shop", |src| {
        make_tree(src, 41);
    });

    // b's import key, then a's export for it: only the token goes to stdout.
    let import_key = cli(&kc, &["--context", "b", "import-key"]).ok();
    let recipient = import_key.stdout.trim().to_string();
    assert!(
        recipient.starts_with("ferry-import-key-v1:"),
        "{import_key:?}"
    );
    let again = cli(&kc, &["--context", "b", "import-key"]).ok();
    assert_eq!(
        again.stdout.trim(),
        recipient,
        "the import key is made once"
    );
    let exported = cli(
        &kc,
        &[
            "--context",
            "a",
            "export",
            "-n",
            &ns,
            "--profile",
            "out",
            "--recipient-key",
            &recipient,
            "--tag",
            "reason=test",
        ],
    )
    .ok();
    let token = exported.stdout.trim().to_string();
    assert!(
        token.starts_with("-----BEGIN FERRY MIGRATION TOKEN-----"),
        "{exported:?}"
    );
    // The token opens nothing by itself: no S3 secret and no repository key in it.
    assert!(!token.contains(&s3.secret_key));
    let token_file = root.join("token.txt");
    std::fs::write(&token_file, &token).unwrap();

    // A tampered token stores nothing on b.
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered_file = root.join("tampered.txt");
    std::fs::write(&tampered_file, &tampered).unwrap();
    let refused = cli(
        &kc,
        &[
            "--context",
            "b",
            "profile",
            "create",
            "in",
            "--kind",
            "import",
            "--migration-token-file",
            tampered_file.to_str().unwrap(),
            "--credentials-secret",
            "s3-read",
        ],
    );
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("CreateProfile at"), "{refused:?}");
    let profiles = cli(&kc, &["--context", "b", "profile", "list"]).ok();
    assert!(profiles.stdout.contains("no profiles"), "{profiles:?}");

    // The real token: an import profile with read-only credentials, then a restore.
    cli(
        &kc,
        &[
            "--context",
            "b",
            "profile",
            "create",
            "in",
            "--kind",
            "import",
            "--migration-token-file",
            token_file.to_str().unwrap(),
            "--credentials-secret",
            "s3-read",
        ],
    )
    .ok();
    let points = cli(
        &kc,
        &[
            "--context",
            "b",
            "-o",
            "json",
            "restore-points",
            "--profile",
            "in",
        ],
    )
    .ok()
    .json();
    let point = points["restorePoints"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        points["restorePoints"][0]["tags"]["reason"], "test",
        "{points:#}"
    );
    let restored = cli(
        &kc,
        &[
            "--context",
            "b",
            "restore",
            "--profile",
            "in",
            "--restore-point",
            &point,
        ],
    )
    .ok();
    assert!(restored.stdout.contains("succeeded"), "{restored:?}");
    let pv = jsonpath(&kc, "b", &ns, "pvc/data-db-0", "{.spec.volumeName}");
    let dst = PathBuf::from(kubectl(
        &kc,
        "b",
        &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
        None,
    ));
    assert_same_tree(&src, &dst);
    assert_eq!(
        jsonpath(&kc, "b", &ns, "configmap/settings", "{.data.greeting}"),
        "hello from a"
    );
}
