//! No secret in any log, message, report or trace: a full migration through the `ferry`
//! command with everything (dependencies too) logging at debug level and every span
//! exported over OTLP to a receiver in this test, then a search of everything that came
//! out for the test's secrets.
//!
//! Secrets: the S3 secret access keys (MinIO's root user, its read-only user, and a
//! wrong one planted for errors), the repository keys (the real one and a wrong one),
//! the pairing token and the destination's credential inside it (and every pair
//! credential in cluster b's Ferry namespace), the bearer tokens of the test
//! environment's users (admin, alice, bob of each cluster; the CLI sends its context's
//! token to Ferry), a password in the migrated application's own Secret, and the
//! services' own sealing keys.
//!
//! Searched: both `ferry serve` logs (stderr and stdout), every CLI command's stdout and
//! stderr (text and `-o json`, successes and errors), every OTLP export (the raw
//! protobuf bytes and a text dump of every span's name, status, attributes and events),
//! and the services' data directories, where pair credentials, repository keys and S3
//! secrets may only be stored sealed. Each secret is looked for raw, as hex, as base64
//! and base64url at any alignment (so it is found inside any base64 blob too) and as a
//! Rust byte-list `Debug` of its last bytes. A self-check plants secrets in a scratch
//! directory and requires the search to find them.
//!
//! Exceptions: `ferry pair token create` prints the pairing token on stdout for the
//! person to hand over, so that stdout is not searched; the data directories are not
//! searched for their own sealing keys. The application's password is searched for
//! there too: the transfer service keeps captured objects in its job checkpoints, which
//! it stores sealed.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::control::{
    Serve, application, free_port, jsonpath, key_secret, kubectl, s3_secret, storage_class,
    wait_answering,
};
use common::{Run, assert_same_tree, make_tree, random_bytes};
use prost::Message as _;
use prost::bytes::{Buf as _, Bytes};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Status, transport::server::TcpIncoming};

#[test]
fn a_debug_level_migration_leaks_no_secret_to_logs_reports_traces_or_stores() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    self_check();

    let env = rt
        .block_on(ferry_testenv::shared())
        .expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Everything searched goes under `out`; the data directories are searched too.
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();

    let (otlp_url, mut exports) = rt.block_on(collector());
    let mut serve_a = serve(&kc, "a", root, &out, &otlp_url);
    let mut serve_b = serve(&kc, "b", root, &out, &otlp_url);
    wait_answering(&kc, &["a", "b"]);
    let mut cli = Cli {
        kubeconfig: kc.clone(),
        out: out.clone(),
        otlp: otlp_url.clone(),
        n: 0,
    };

    let keys = keys_and_profiles(&mut cli, &kc, root, s3);
    let token = pair_through_a_token(&mut cli, root);
    let (ns, app_password) = migrate_application(&mut cli, &kc, root, &keys);
    let alice = env.source().context_for("alice");
    failures(&mut cli, &kc, s3, &keys, &ns, &alice);
    reports(&mut cli, &ns);
    let (mut secrets, bearer) =
        gather_secrets(&kc, s3, &keys, &token, &app_password, &env.state.clusters);

    // Graceful stops, so the last spans are flushed; then every export received.
    stop(&mut serve_a);
    stop(&mut serve_b);
    let (raw, spans) = collect_spans(&mut exports, &out);

    // The services' sealing keys must not leave their files either.
    for side in ["a", "b"] {
        let k = std::fs::read(root.join(format!("data-{side}/secret.key"))).unwrap();
        secrets.push(Secret::new(&format!("sealing key of data-{side}"), &k).not_at_rest());
    }

    // The search.
    let needles = needles(&secrets);
    let mut sources: Vec<(PathBuf, bool)> = vec![(out.clone(), false)];
    for side in ["a", "b"] {
        sources.push((root.join(format!("data-{side}")), true));
    }
    let scanned = scan(&sources, &needles);
    let logs = std::fs::read_to_string(out.join("serve-a.log")).unwrap_or_default();
    assert!(
        logs.contains("DEBUG"),
        "serve a logged nothing at debug level: is RUST_LOG honoured?"
    );
    eprintln!(
        "searched {} files ({} bytes) for {} secrets in {} forms; {} OTLP exports, {} spans",
        scanned.files,
        scanned.bytes,
        secrets.len(),
        needles.len(),
        raw.len(),
        spans.len()
    );
    // The search finds the real secrets when they are there.
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let doc = format!("{{\"auth\":{{\"token\":\"{bearer}\"}}}}");
    std::fs::write(
        scratch.join("planted.log"),
        format!(
            "INFO config={} key={:?}\n",
            b64(STANDARD, doc.as_bytes()),
            std::fs::read(&keys.key).unwrap()
        ),
    )
    .unwrap();
    let planted = scan(&[(scratch, false)], &needles);
    let found: BTreeSet<&str> = planted.hits.iter().map(|h| h.secret.as_str()).collect();
    assert!(
        found.contains("pair credential (from the token)") && found.contains("repository key"),
        "the search misses planted secrets; found {found:?}"
    );
    if !scanned.hits.is_empty() {
        let kept = tmp.keep();
        panic!(
            "secrets found (everything is kept in {}):\n{}",
            kept.display(),
            report_hits(&scanned.hits)
        );
    }
}

/// The keys of the test, beside the S3 server's own.
struct Keys {
    seed: u64,
    key: PathBuf,
    wrong_key: PathBuf,
    wrong_s3_secret: String,
}

/// Credentials and keys as Secrets on both clusters and the profiles over them, with
/// errors for a wrong S3 secret and a wrong key.
fn keys_and_profiles(cli: &mut Cli, kc: &Path, root: &Path, s3: &ferry_testenv::S3Info) -> Keys {
    // Credentials and keys as Secrets; a wrong S3 secret and a wrong key for the errors.
    let seed = unique_seed();
    let key = root.join("repo.key");
    std::fs::write(&key, random_bytes(32, seed)).unwrap();
    let wrong_key = root.join("wrong.key");
    std::fs::write(&wrong_key, random_bytes(32, seed + 1)).unwrap();
    let wrong_s3_secret = printable(&random_bytes(30, seed + 2));
    for side in ["a", "b"] {
        s3_secret(kc, side, "s3", &s3.access_key, &s3.secret_key);
        s3_secret(kc, side, "s3-flaky", &s3.access_key, &s3.secret_key);
        key_secret(kc, side, "repo-key", &key);
        key_secret(kc, side, "repo-key-flaky", &key);
    }
    s3_secret(kc, "a", "s3-wrong", &s3.access_key, &wrong_s3_secret);
    key_secret(kc, "a", "repo-key-wrong", &wrong_key);

    // Profiles: the repository made from a, then opened from b; errors for a wrong S3
    // secret and a wrong key.
    let location = format!(
        "{}/{}/{}",
        s3.endpoint,
        s3.bucket,
        ferry_testenv::unique_name("cli-secrets")
    );
    let profile = |cli: &mut Cli, side: &str, name: &str, creds: &str, key: &str, create| {
        let mut args = vec![
            "--context",
            side,
            "profile",
            "create",
            name,
            "--s3",
            &location,
            "--region",
            &s3.region,
            "--credentials-secret",
            creds,
            "--key-secret",
            key,
        ];
        if create {
            args.push("--create-repository");
        }
        cli.ferry(&format!("profile-create-{name}-{side}"), &args)
    };
    profile(cli, "a", "main", "s3", "repo-key", true).ok();
    profile(cli, "b", "main", "s3", "repo-key", false).ok();
    for side in ["a", "b"] {
        profile(cli, side, "flaky", "s3-flaky", "repo-key-flaky", false).ok();
    }
    let bad_s3 = profile(cli, "a", "bad-s3", "s3-wrong", "repo-key", false);
    assert_eq!(bad_s3.code, Some(1), "{bad_s3:?}");
    let bad_key = profile(cli, "a", "bad-key", "s3", "repo-key-wrong", false);
    assert_eq!(bad_key.code, Some(1), "{bad_key:?}");
    cli.ferry(
        "profile-list",
        &["--context", "a", "profile", "list", "-o", "json"],
    )
    .ok();
    Keys {
        seed,
        key,
        wrong_key,
        wrong_s3_secret,
    }
}

/// Pairing through a token, so the test holds the token and the credential in it; a
/// used token and a cut one refused. Returns the token.
fn pair_through_a_token(cli: &mut Cli, root: &Path) -> String {
    // Pairing through a token, so the test holds the token and the credential in it.
    let token = cli
        .ferry_secret_stdout(
            "pair-token-create",
            &[
                "--context",
                "b",
                "pair",
                "token",
                "create",
                "--name",
                "a-to-b",
            ],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(token.starts_with("ferry-pair-v1."), "not a pairing token");
    let token_file = root.join("token.txt");
    std::fs::write(&token_file, &token).unwrap();
    let token_path = token_file.to_str().unwrap();
    let accepted = cli
        .ferry(
            "pair-accept",
            &[
                "--context",
                "a",
                "pair",
                "accept",
                "--token-file",
                token_path,
                "--profile",
                "main",
            ],
        )
        .ok();
    assert!(!accepted.stdout.contains("failed"), "{accepted:?}");
    cli.ferry(
        "pair-check",
        &[
            "--context",
            "a",
            "pair",
            "check",
            "a-to-b",
            "--profile",
            "main",
        ],
    )
    .ok();
    for side in ["a", "b"] {
        cli.ferry(
            &format!("pair-list-{side}"),
            &["--context", side, "-o", "json", "pair", "list"],
        )
        .ok();
    }
    // A used token and a cut one are refused without echoing them.
    let replayed = cli.ferry(
        "pair-accept-replayed",
        &[
            "--context",
            "a",
            "pair",
            "accept",
            "--token-file",
            token_path,
            "--name",
            "again",
        ],
    );
    assert_eq!(replayed.code, Some(1), "{replayed:?}");
    let cut_file = root.join("cut.txt");
    std::fs::write(&cut_file, &token[..token.len() * 2 / 3]).unwrap();
    let cut = cli.ferry(
        "pair-accept-cut",
        &[
            "--context",
            "a",
            "pair",
            "accept",
            "--token-file",
            cut_file.to_str().unwrap(),
        ],
    );
    assert_ne!(cut.code, Some(0), "{cut:?}");
    token
}

/// The application, with data and its own password, migrated; returns its namespace
/// and the password.
fn migrate_application(cli: &mut Cli, kc: &Path, root: &Path, keys: &Keys) -> (String, String) {
    // The application, with data, migrated.
    let ns = ferry_testenv::unique_name("vault");
    let class = format!("local-{ns}");
    let src = root.join("disks").join(&ns);
    std::fs::create_dir_all(&src).unwrap();
    make_tree(&src, keys.seed + 3);
    application(kc, &ns, &class, &src);
    // The application's own password, moved with it: Ferry must not log it either.
    let app_password = printable(&random_bytes(32, keys.seed + 4));
    kubectl(
        kc,
        "a",
        &[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            "api-credentials",
            &format!("--from-literal=password={app_password}"),
        ],
        None,
    );
    storage_class(kc, "b", &class);
    let migrated = cli
        .ferry(
            "migrate",
            &[
                "--context",
                "a",
                "migrate",
                "-n",
                &ns,
                "--to",
                "a-to-b",
                // The administrator's own token for b goes with the job (and must
                // never show in a log either).
                "--to-context",
                "b",
                "--profile",
                "main",
            ],
        )
        .ok();
    assert!(migrated.stdout.contains("succeeded"), "{migrated:?}");
    assert_eq!(
        jsonpath(kc, "b", &ns, "configmap/settings", "{.data.greeting}"),
        "hello from a"
    );
    assert_eq!(
        unb64(&jsonpath(
            kc,
            "b",
            &ns,
            "secret/api-credentials",
            "{.data.password}"
        )),
        app_password.as_bytes()
    );
    // The volume went through both agents, which read their sealed profile files.
    let pv = jsonpath(kc, "b", &ns, "pvc/data-db-0", "{.spec.volumeName}");
    let dst = kubectl(
        kc,
        "b",
        &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
        None,
    );
    assert_same_tree(&src, Path::new(&dst));
    (ns, app_password)
}

/// Failures with secrets at hand: rotated to a wrong S3 secret, then to a wrong key,
/// after the profile was made; a pair that does not exist; a user with no rights on a
/// (`alice`, her context), whose token goes with whatever Ferry allows her.
fn failures(
    cli: &mut Cli,
    kc: &Path,
    s3: &ferry_testenv::S3Info,
    keys: &Keys,
    ns: &str,
    alice: &str,
) {
    replace_secret(kc, "a", "s3-flaky", || {
        s3_secret(kc, "a", "s3-flaky", &s3.access_key, &keys.wrong_s3_secret)
    });
    let migrate_flaky = |cli: &mut Cli, label: &str| {
        cli.ferry(
            label,
            &[
                "--context",
                "a",
                "migrate",
                "-n",
                ns,
                "--to",
                "a-to-b",
                // The administrator's own token for b goes with the job (and must
                // never show in a log either).
                "--to-context",
                "b",
                "--profile",
                "flaky",
            ],
        )
    };
    let failed = migrate_flaky(cli, "migrate-wrong-s3-secret");
    assert_ne!(failed.code, Some(0), "{failed:?}");
    replace_secret(kc, "a", "s3-flaky", || {
        s3_secret(kc, "a", "s3-flaky", &s3.access_key, &s3.secret_key)
    });
    replace_secret(kc, "a", "repo-key-flaky", || {
        key_secret(kc, "a", "repo-key-flaky", &keys.wrong_key)
    });
    let failed = migrate_flaky(cli, "migrate-wrong-key");
    assert_ne!(failed.code, Some(0), "{failed:?}");
    let nowhere = cli.ferry(
        "migrate-nowhere",
        &[
            "--context",
            "a",
            "migrate",
            "-n",
            ns,
            "--to",
            "nowhere",
            "--profile",
            "main",
        ],
    );
    assert_eq!(nowhere.code, Some(1), "{nowhere:?}");
    cli.ferry("alice-pair-list", &["--context", alice, "pair", "list"]);
    cli.ferry("alice-jobs-list", &["--context", alice, "jobs", "list"]);
}

/// Every job's report as JSON and as text, the job lists, the restore points of `ns`.
fn reports(cli: &mut Cli, ns: &str) {
    for side in ["a", "b"] {
        cli.ferry(
            &format!("jobs-list-{side}"),
            &["--context", side, "jobs", "list"],
        )
        .ok();
        let jobs = cli
            .ferry(
                &format!("jobs-list-json-{side}"),
                &["--context", side, "-o", "json", "jobs", "list"],
            )
            .ok()
            .json();
        let ids: Vec<String> = jobs["jobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|j| j["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if side == "a" {
            assert!(ids.len() >= 3, "migrations on a: {jobs:#}");
        }
        for id in ids {
            cli.ferry(
                &format!("jobs-get-json-{side}-{id}"),
                &["--context", side, "-o", "json", "jobs", "get", &id],
            )
            .ok();
            cli.ferry(
                &format!("jobs-get-{side}-{id}"),
                &["--context", side, "jobs", "get", &id, "--show-objects"],
            )
            .ok();
        }
        cli.ferry(
            &format!("restore-points-{side}"),
            &[
                "--context",
                side,
                "-o",
                "json",
                "restore-points",
                "--profile",
                "main",
                "-n",
                ns,
            ],
        )
        .ok();
    }
}

/// The secrets to search for, gathered before the services stop, and the pair
/// credential inside the pairing token.
fn gather_secrets(
    kc: &Path,
    s3: &ferry_testenv::S3Info,
    keys: &Keys,
    token: &str,
    app_password: &str,
    clusters: &[ferry_testenv::ClusterInfo],
) -> (Vec<Secret>, String) {
    let mut secrets = vec![
        Secret::new("S3 secret key of MinIO's root user", &s3.secret_key),
        Secret::new("the wrong S3 secret key", &keys.wrong_s3_secret),
        Secret::new("repository key", std::fs::read(&keys.key).unwrap()),
        Secret::new(
            "the wrong repository key",
            std::fs::read(&keys.wrong_key).unwrap(),
        ),
        // At rest too: the transfer service's job checkpoints (transfer.db) hold the
        // captured objects, Secrets included, sealed.
        Secret::new("the application's password", app_password),
        Secret::new("pairing token", token),
        Secret::new("pairing token (its middle)", {
            let (a, b) = (token.len() / 3, token.len() * 2 / 3);
            &token[a..b]
        }),
    ];
    if let Some(reader) = &s3.readonly {
        secrets.push(Secret::new(
            "S3 secret key of MinIO's read-only user",
            &reader.secret_key,
        ));
    }
    // The token's credential (from the TokenRequest API), and any token Secret b issued.
    let bearer = token_bearer(token);
    let issued = pair_credentials(kc);
    secrets.push(Secret::new("pair credential (from the token)", &bearer));
    if let Some(signature) = bearer.rsplit('.').next().filter(|s| s.len() >= 16) {
        secrets.push(Secret::new("pair credential's JWT signature", signature));
    }
    for (name, t) in issued.iter().filter(|(_, t)| *t != bearer) {
        secrets.push(Secret::new(&format!("pair credential {name} on b"), t));
    }
    for cluster in clusters {
        for user in std::iter::once(&cluster.admin).chain(&cluster.users) {
            secrets.push(Secret::new(
                &format!("bearer token of {} on {}", user.name, cluster.name),
                &user.token,
            ));
        }
    }
    (secrets, bearer)
}

/// Every OTLP export received (all three of serve a, serve b and the CLI, or what came
/// within 10 s), kept under `out/otlp` with a text dump of the spans, which are checked.
fn collect_spans(
    exports: &mut mpsc::UnboundedReceiver<Bytes>,
    out: &Path,
) -> (Vec<Bytes>, Vec<SpanText>) {
    let otlp_dir = out.join("otlp");
    std::fs::create_dir_all(&otlp_dir).unwrap();
    let mut raw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(e) = exports.try_recv() {
            raw.push(e);
        }
        let spans = dump_spans(&raw);
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        if ["ferry-serve-a", "ferry-serve-b", "ferry-cli"]
            .iter()
            .all(|s| services.contains(s))
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, e) in raw.iter().enumerate() {
        std::fs::write(otlp_dir.join(format!("export-{i:04}.pb")), e).unwrap();
    }
    let spans = dump_spans(&raw);
    let mut text = String::new();
    for s in &spans {
        text.push_str(&s.text);
    }
    std::fs::write(otlp_dir.join("spans.txt"), &text).unwrap();
    check_spans(&spans);
    (raw, spans)
}

/// Synthetic secrets planted in a scratch directory are found in every form the search
/// claims to cover, and a clean file yields nothing.
fn self_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = "sk-Zq8x1R0pLmN4vB7tY2wE6uI9oP3aS5dF";
    let key = random_bytes(32, 99);
    let secrets = vec![
        Secret::new("text secret", text),
        Secret::new("binary key", &key),
    ];
    let needles = needles(&secrets);
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "raw.log",
            format!("2026 DEBUG token={text} done\n").into_bytes(),
        ),
        ("hex.log", format!("key: {}\n", hex(&key)).into_bytes()),
        (
            "b64.json",
            format!(
                "{{\"blob\":\"{}\"}}",
                b64(STANDARD, &[b"ab", &key[..], b"c"].concat())
            )
            .into_bytes(),
        ),
        (
            "b64url.txt",
            b64(URL_SAFE, &[b"x", text.as_bytes(), b"yz"].concat()).into_bytes(),
        ),
        ("debug.log", format!("read {key:?}\n").into_bytes()),
        (
            "binary.db",
            [b"SQLite format 3\0".as_slice(), &key, b"\0"].concat(),
        ),
    ];
    for (name, content) in &files {
        let scratch = dir.path().join(name.replace('.', "-"));
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(scratch.join(name), content).unwrap();
        let hits = scan(&[(scratch, true)], &needles).hits;
        assert!(
            !hits.is_empty(),
            "the search misses the secret planted in {name}"
        );
        let shown = report_hits(&hits);
        assert!(
            !shown.contains(text) && !shown.contains(&hex(&key)),
            "the report of a hit shows the secret: {shown}"
        );
    }
    let clean = dir.path().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::write(clean.join("clean.log"), "INFO nothing to see\n").unwrap();
    assert!(scan(&[(clean, true)], &needles).hits.is_empty());
}

// ---------------------------------------------------------------------------------
// Processes

/// `ferry serve` for `side` as in `common::control::serve_with`, but logging everything
/// at debug level to `out/serve-<side>.log` and exporting spans to `otlp`.
fn serve(kubeconfig: &Path, side: &str, root: &Path, out: &Path, otlp: &str) -> Serve {
    let port = free_port();
    let log = out.join(format!("serve-{side}.log"));
    let file = |p: PathBuf| std::fs::File::create(p).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ferry-endpoint", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(root.join(format!("data-{side}")))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", side, "--cluster-name", side])
        .args(["--node-name", &format!("node-{side}")])
        .arg("--volume-root")
        .arg(root.join(format!("volumes-{side}")))
        .arg("--allow-root")
        .arg(root)
        .args(["--shutdown-grace-seconds", "2"])
        .env("RUST_LOG", "debug")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_SERVICE_NAME", format!("ferry-serve-{side}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdin(Stdio::null())
        .stdout(file(out.join(format!("serve-{side}.stdout"))))
        .stderr(file(log.clone()))
        .spawn()
        .unwrap();
    Serve { child, log }
}

/// SIGTERM, then a wait for the exit (the tracing guard flushes the last spans).
fn stop(serve: &mut Serve) {
    let pid = rustix::process::Pid::from_child(&serve.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ferry serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `ferry` command at debug level with span export; each run's output is kept in
/// `out/cli-<n>-<label>.{stdout,stderr}`.
struct Cli {
    kubeconfig: PathBuf,
    out: PathBuf,
    otlp: String,
    n: usize,
}

impl Cli {
    fn ferry(&mut self, label: &str, args: &[&str]) -> Run {
        self.run(label, args, true)
    }

    /// A command whose stdout is a secret by design (a pairing token): kept out of the
    /// searched files; its stderr is searched.
    fn ferry_secret_stdout(&mut self, label: &str, args: &[&str]) -> Run {
        self.run(label, args, false)
    }

    fn run(&mut self, label: &str, args: &[&str], keep_stdout: bool) -> Run {
        self.n += 1;
        let base = format!("cli-{:02}-{}", self.n, label);
        let stdout = if keep_stdout {
            self.out.join(format!("{base}.stdout"))
        } else {
            self.out.with_file_name(format!("{base}.stdout.secret"))
        };
        let stderr = self.out.join(format!("{base}.stderr"));
        let mut cmd = common::ferry();
        for var in [
            "FERRY_CONTEXT",
            "FERRY_SERVER",
            "FERRY_CA_FILE",
            "FERRY_CLIENT_CERT",
            "FERRY_CLIENT_KEY",
            "FERRY_TLS_SERVER_NAME",
            "FERRY_TOKEN",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("RUST_LOG", "debug")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.otlp)
            .env("OTEL_SERVICE_NAME", "ferry-cli")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ferry {args:?} ran for more than 300 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            code: status.code(),
            stdout: std::fs::read_to_string(&stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
        }
    }
}

/// Deletes Secret `name` in ferry-system on `context` and makes it again with `make`.
fn replace_secret(kubeconfig: &Path, context: &str, name: &str, make: impl FnOnce()) {
    kubectl(
        kubeconfig,
        context,
        &["-n", "ferry-system", "delete", "secret", name],
        None,
    );
    make();
}

/// Every pair credential the destination issued: the token of each
/// service-account-token Secret in b's ferry-system named `ferry-pair-…`.
fn pair_credentials(kubeconfig: &Path) -> Vec<(String, String)> {
    let listed = kubectl(
        kubeconfig,
        "b",
        &[
            "-n",
            "ferry-system",
            "get",
            "secrets",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.data.token}{\"\\n\"}{end}",
        ],
        None,
    );
    listed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, data)| name.starts_with("ferry-pair-") && !data.is_empty())
        .map(|(name, data)| {
            let token = String::from_utf8(unb64(data)).unwrap();
            (name.to_string(), token)
        })
        .collect()
}

/// The destination's credential inside a pairing token (`ferry-pair-v1.<base64url JSON>`).
fn token_bearer(token: &str) -> String {
    let body = token.strip_prefix("ferry-pair-v1.").unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&unb64(body)).unwrap();
    payload["bearer_token"]
        .as_str()
        .expect("a bearer_token in the pairing token")
        .to_string()
}

fn unique_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// Random bytes as a secret of letters and digits, like an S3 secret key.
fn printable(bytes: &[u8]) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bytes
        .iter()
        .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
        .collect()
}

// ---------------------------------------------------------------------------------
// The OTLP receiver: every export's raw bytes, to the test.

/// Starts the receiver on the current runtime; returns its URL and the exports.
async fn collector() -> (String, mpsc::UnboundedReceiver<Bytes>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Collector(tx))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), rx)
}

/// `opentelemetry.proto.collector.trace.v1.TraceService`, whose one method is Export.
#[derive(Clone)]
struct Collector(mpsc::UnboundedSender<Bytes>);

impl NamedService for Collector {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Service<http::Request<Body>> for Collector {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let export = Export(self.0.clone());
        Box::pin(async move { Ok(Grpc::new(RawCodec).unary(export, req).await) })
    }
}

struct Export(mpsc::UnboundedSender<Bytes>);

impl UnaryService<Bytes> for Export {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let _ = self.0.send(request.into_inner());
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

/// Requests as their bytes; the response is the empty ExportTraceServiceResponse.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ();
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, _: (), _: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// The parts of the OTLP trace messages a search needs (field numbers from
/// opentelemetry-proto's trace.proto and common.proto); the rest is skipped.
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<Event>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 7")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(ArrayValue),
        #[prost(bytes, tag = "7")]
        Bytes(Vec<u8>),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }
}

/// One exported span: its service, name, attribute keys, and all of it as text.
struct SpanText {
    service: String,
    name: String,
    attribute_keys: Vec<String>,
    events: usize,
    text: String,
}

fn value_text(v: Option<&otlp::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(otlp::Value::String(s)) => s.clone(),
        Some(otlp::Value::Bool(b)) => b.to_string(),
        Some(otlp::Value::Int(i)) => i.to_string(),
        Some(otlp::Value::Double(d)) => d.to_string(),
        Some(otlp::Value::Array(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| value_text(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        // Bytes as text and as hex, so either form of a secret shows.
        Some(otlp::Value::Bytes(b)) => format!("{} (hex {})", String::from_utf8_lossy(b), hex(b)),
        None => String::new(),
    }
}

fn attributes_text(kvs: &[otlp::KeyValue], indent: &str, out: &mut String) {
    for kv in kvs {
        let _ = writeln!(
            out,
            "{indent}{} = {}",
            kv.key,
            value_text(kv.value.as_ref())
        );
    }
}

fn dump_spans(exports: &[Bytes]) -> Vec<SpanText> {
    let mut spans = Vec::new();
    for raw in exports {
        let export =
            otlp::ExportTraceServiceRequest::decode(raw.clone()).expect("an OTLP export decodes");
        for rs in &export.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| &r.attributes[..])
                .unwrap_or(&[]);
            let service = resource
                .iter()
                .find(|kv| kv.key == "service.name")
                .map(|kv| value_text(kv.value.as_ref()))
                .unwrap_or_default();
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let mut text = format!("span {} of {service}\n", span.name);
                attributes_text(resource, "  resource ", &mut text);
                attributes_text(&span.attributes, "  ", &mut text);
                if let Some(status) = &span.status {
                    let _ = writeln!(text, "  status: {}", status.message);
                }
                for event in &span.events {
                    let _ = writeln!(text, "  event {}", event.name);
                    attributes_text(&event.attributes, "    ", &mut text);
                }
                spans.push(SpanText {
                    service: service.clone(),
                    name: span.name.clone(),
                    attribute_keys: span.attributes.iter().map(|kv| kv.key.clone()).collect(),
                    events: span.events.len(),
                    text,
                });
            }
        }
    }
    spans
}

/// The receiver saw the calls that carry secrets, from every process, with attributes
/// and debug events: an empty export would make the search pass for nothing.
fn check_spans(spans: &[SpanText]) {
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for (service, name) in [
        (
            "ferry-serve-a",
            "ferry.v1.PairingService/AcceptPairingToken",
        ),
        (
            "ferry-serve-b",
            "ferry.v1.PairingService/RedeemPairingToken",
        ),
        ("ferry-serve-a", "ferry.v1.CatalogService/CreateProfile"),
        ("ferry-serve-a", "ferry.v1.TransferService/StartMigration"),
    ] {
        assert!(
            spans.iter().any(|s| s.service == service && s.name == name),
            "no span {name} from {service}; spans: {names:?}"
        );
    }
    assert!(
        spans.iter().any(|s| s.service == "ferry-cli"),
        "no span from the ferry command; spans: {names:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.attribute_keys.iter().any(|k| k == "method")),
        "no span with attributes"
    );
    assert!(spans.iter().any(|s| s.events > 0), "no span with events");
}

// ---------------------------------------------------------------------------------
// The search

struct Secret {
    label: String,
    value: Vec<u8>,
    /// Also searched for in the data directories.
    at_rest: bool,
}

impl Secret {
    fn new(label: &str, value: impl AsRef<[u8]>) -> Secret {
        let value = value.as_ref().to_vec();
        assert!(value.len() >= 16, "{label} is too short to search for");
        Secret {
            label: label.to_string(),
            value,
            at_rest: true,
        }
    }

    /// Searched for everywhere but in the data directories.
    fn not_at_rest(mut self) -> Secret {
        self.at_rest = false;
        self
    }
}

/// One form of one secret.
struct Needle {
    secret: String,
    form: String,
    bytes: Vec<u8>,
    /// Also searched for in the data directories.
    at_rest: bool,
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding.
fn b64(alphabet: &[u8; 64], data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Base64 of either alphabet, padded or not.
fn unb64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = STANDARD
            .iter()
            .position(|a| *a == c)
            .or_else(|| URL_SAFE.iter().position(|a| *a == c))
            .unwrap_or_else(|| panic!("not base64: {c:?}"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Each secret raw, as hex, as base64 and base64url at each of the three alignments
/// (the characters that depend on the secret alone, so a secret inside a longer base64
/// text is found), and its last bytes as a Rust `Debug` byte list.
fn needles(secrets: &[Secret]) -> Vec<Needle> {
    let mut out: Vec<Needle> = Vec::new();
    for s in secrets {
        let mut forms: Vec<(String, Vec<u8>)> = vec![
            ("raw".into(), s.value.clone()),
            ("hex".into(), hex(&s.value).into_bytes()),
            ("HEX".into(), hex(&s.value).to_uppercase().into_bytes()),
        ];
        for (name, alphabet) in [("base64", STANDARD), ("base64url", URL_SAFE)] {
            for shift in 0..3 {
                let shifted = [&vec![0u8; shift][..], &s.value].concat();
                let text = b64(alphabet, &shifted);
                let (first, last) = ((8 * shift).div_ceil(6), 8 * shifted.len() / 6);
                forms.push((
                    format!("{name} at offset {shift}"),
                    text.as_bytes()[first..last].to_vec(),
                ));
            }
        }
        let tail = &s.value[s.value.len() - 12..];
        let listed: Vec<String> = tail.iter().map(u8::to_string).collect();
        forms.push(("Debug byte list".into(), listed.join(", ").into_bytes()));
        for (form, bytes) in forms {
            if out.iter().any(|n| n.secret == s.label && n.bytes == bytes) {
                continue;
            }
            out.push(Needle {
                secret: s.label.clone(),
                form,
                bytes,
                at_rest: s.at_rest,
            });
        }
    }
    out
}

/// Where a secret was found.
struct Hit {
    secret: String,
    form: String,
    file: PathBuf,
    offset: usize,
    context: String,
}

struct Scanned {
    files: usize,
    bytes: usize,
    hits: Vec<Hit>,
}

/// Every regular file under each source (a file or directory); a data directory
/// (`true`) is searched for the secrets that must be sealed at rest.
fn scan(sources: &[(PathBuf, bool)], needles: &[Needle]) -> Scanned {
    // Candidates by their first 8 bytes: one pass over each file.
    let mut by_prefix: HashMap<[u8; 8], Vec<&Needle>> = HashMap::new();
    for n in needles {
        assert!(
            n.bytes.len() >= 8,
            "{} as {} is too short",
            n.secret,
            n.form
        );
        let prefix: [u8; 8] = n.bytes[..8].try_into().unwrap();
        by_prefix.entry(prefix).or_default().push(n);
    }
    let mut scanned = Scanned {
        files: 0,
        bytes: 0,
        hits: Vec::new(),
    };
    let mut stack: Vec<(PathBuf, bool)> = sources.to_vec();
    while let Some((path, at_rest)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                stack.push((entry.path(), at_rest));
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        scanned.files += 1;
        scanned.bytes += data.len();
        let mut seen = BTreeSet::new();
        for at in 0..data.len().saturating_sub(7) {
            let prefix: [u8; 8] = data[at..at + 8].try_into().unwrap();
            let Some(candidates) = by_prefix.get(&prefix) else {
                continue;
            };
            for n in candidates {
                if (at_rest && !n.at_rest) || !data[at..].starts_with(&n.bytes) {
                    continue;
                }
                // One report per secret, form and file.
                if seen.insert((n.secret.clone(), n.form.clone())) {
                    scanned.hits.push(Hit {
                        secret: n.secret.clone(),
                        form: n.form.clone(),
                        file: path.clone(),
                        offset: at,
                        context: redacted_context(&data, at, needles),
                    });
                }
            }
        }
    }
    scanned
}

/// Up to 60 bytes before `at` and 140 after, every secret in it (also one reaching in
/// from outside) replaced by its label, and control bytes escaped.
fn redacted_context(data: &[u8], at: usize, needles: &[Needle]) -> String {
    let (start, end) = (at.saturating_sub(60), (at + 140).min(data.len()));
    let longest = needles.iter().map(|n| n.bytes.len()).max().unwrap_or(0);
    let (from, to) = (
        start.saturating_sub(longest),
        (end + longest).min(data.len()),
    );
    // The secret covering each byte of the window, if any.
    let mut covered: Vec<Option<&str>> = vec![None; end - start];
    for i in from..to {
        for n in needles.iter().filter(|n| data[i..to].starts_with(&n.bytes)) {
            for j in i.max(start)..(i + n.bytes.len()).min(end) {
                covered[j - start] = Some(n.secret.as_str());
            }
        }
    }
    let mut out = String::new();
    let mut previous = None;
    for (i, b) in data[start..end].iter().enumerate() {
        match covered[i] {
            Some(label) => {
                if previous != Some(label) {
                    let _ = write!(out, "<{label}>");
                }
            }
            None if b.is_ascii_graphic() || *b == b' ' => out.push(*b as char),
            None => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        previous = covered[i];
    }
    out
}

fn report_hits(hits: &[Hit]) -> String {
    let mut out = String::new();
    for h in hits {
        let _ = writeln!(
            out,
            "- {} ({}) in {} at byte {}: …{}…",
            h.secret,
            h.form,
            h.file.display(),
            h.offset,
            h.context
        );
    }
    out
}
