//! Export and import through a shared bucket with the `ferry` command: cluster b never
//! talks to cluster a and reaches the bucket with read-only credentials (the test
//! environment's MinIO user `reader`). b's import key goes to a's export; the migration
//! token that comes back is the only thing handed over; b builds an import profile
//! from it and restores. A tampered token stores nothing.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::control::{
    assert_sample_app_on_b, cli, export_repository_for, import_profile, kubectl, sample_app, serve,
    token_signer, wait_answering,
};
use common::make_tree;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_token_lets_a_read_only_destination_restore() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, _) = serve(&kc, "a", root);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);

    let (ns, _, src) = sample_app(&kc, root, "shop", |src| {
        make_tree(src, 41);
    });
    // a writes, through a profile bound to the application's namespace (tokens are
    // issued for no other); b may only read and list.
    export_repository_for(
        &kc,
        s3,
        (&s3.endpoint, root),
        ["s3", "repo-key", "s3-read"],
        "cli-export",
        31,
        Some(&ns),
    );

    let recipient = b_makes_its_import_key_once(&kc);
    let exported = a_exports_for_it_only_the_token(&kc, &ns, &recipient, s3, root);
    a_tampered_token_stores_nothing_on_b(&kc, root, &exported);
    the_bound_profile_refuses_another_namespace(&kc, &ns);
    the_real_token_restores_on_b(&kc, &exported.file, &ns, &src);
}

/// b's import key, made once: the same on every ask. Returns it.
fn b_makes_its_import_key_once(kc: &Path) -> String {
    let import_key = cli(kc, &["--context", "b", "import-key"]).ok();
    let recipient = import_key.stdout.trim().to_string();
    assert!(
        recipient.starts_with("ferry-import-key-v1:"),
        "{import_key:?}"
    );
    let again = cli(kc, &["--context", "b", "import-key"]).ok();
    assert_eq!(
        again.stdout.trim(),
        recipient,
        "the import key is made once"
    );
    recipient
}

/// The migration token a's export printed, in a file under the test's directory, and
/// the signer the destination pins.
struct Token {
    text: String,
    file: PathBuf,
    signer: String,
}

/// a's export for `recipient`: only the token goes to stdout, and it holds no secret;
/// the signer is on stderr beside it.
fn a_exports_for_it_only_the_token(
    kc: &Path,
    ns: &str,
    recipient: &str,
    s3: &ferry_testenv::S3Info,
    root: &Path,
) -> Token {
    let exported = cli(
        kc,
        &[
            "--context",
            "a",
            "export",
            "-n",
            ns,
            "--profile",
            "out",
            "--recipient-key",
            recipient,
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
    // Beside it, on stderr, the signer the destination pins.
    let signer = token_signer(&token_file);
    assert!(
        exported
            .stderr
            .contains(&format!("--expect-signer {signer}")),
        "{exported:?}"
    );
    Token {
        text: token,
        file: token_file,
        signer,
    }
}

/// A tampered token stores nothing on b.
fn a_tampered_token_stores_nothing_on_b(kc: &Path, root: &Path, token: &Token) {
    let mut tampered = token.text.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered_file = root.join("tampered.txt");
    std::fs::write(&tampered_file, &tampered).unwrap();
    let refused = cli(
        kc,
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
            "--expect-signer",
            &token.signer,
            "--credentials-secret",
            "s3-read",
        ],
    );
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("CreateProfile at"), "{refused:?}");
    let profiles = cli(kc, &["--context", "b", "profile", "list"]).ok();
    assert!(profiles.stdout.contains("no profiles"), "{profiles:?}");
}

/// `out` is bound to the application's namespace: another namespace exported through it
/// is refused before any of it is written, so the token's key opens only this one.
fn the_bound_profile_refuses_another_namespace(kc: &Path, ns: &str) {
    let other = ferry_testenv::unique_name("not-shop");
    kubectl(kc, "a", &["create", "namespace", &other], None);
    let elsewhere = cli(
        kc,
        &["--context", "a", "export", "-n", &other, "--profile", "out"],
    );
    // The job fails (exit status 13) at its commit step, having written nothing.
    assert_eq!(elsewhere.code, Some(13), "{elsewhere:?}");
    assert!(
        elsewhere
            .stderr
            .contains(&format!("profile \"out\" is bound to namespace {ns}")),
        "{elsewhere:?}"
    );
}

/// The real token: an import profile with read-only credentials, then a restore of the
/// tagged restore point, every byte.
fn the_real_token_restores_on_b(kc: &Path, token_file: &Path, ns: &str, src: &Path) {
    import_profile(kc, token_file);
    let points = cli(
        kc,
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
        kc,
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
    assert_sample_app_on_b(kc, ns, src);
}
