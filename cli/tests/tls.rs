//! TLS as a user sets it up: `ferry certs create` makes a CA and a certificate per
//! Ferry, `ferry serve` serves mutual TLS with them on the test environment's clusters a
//! and b, the `ferry` command reaches them with `--ca-file` and a client certificate
//! (by `--server` and through the published https:// endpoint), grpcurl lists the
//! services with `-cacert`, and the two Ferries pair over mutual TLS (b's certificate
//! read from a Kubernetes Secret, a's from files). A wrong CA, a
//! wrong name and a missing client certificate are refused with the mismatch named;
//! plaintext on a non-loopback address is refused at start.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::control::{Serve, cli, eventually, free_port, jsonpath, kubectl, serve_with};
use common::{Run, ferry, run};

/// The files `ferry certs create --dir DIR --name NAME` wrote.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn create(dir: &Path, name: &str, ca_dir: &Path) -> (Certs, String) {
        let made = run(ferry()
            .args(["certs", "create", "--name", name])
            .args(["--host", "127.0.0.1", "--host", "localhost"])
            .arg("--dir")
            .arg(dir)
            .arg("--ca-dir")
            .arg(ca_dir))
        .ok();
        let certs = Certs {
            ca: ca_dir.join("ca.crt"),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        (certs, made.stdout)
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// `ferry serve`'s flags for these files.
    fn serve_flags(&self) -> Vec<String> {
        [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-client-ca", &self.ca),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), Certs::path(path).to_string()])
        .collect()
    }

    /// The `ferry` flags that trust this CA and present this certificate.
    fn client_flags(&self) -> Vec<&str> {
        self.presented_with(&self.ca)
    }

    /// The `ferry` flags that trust `ca` and present this certificate.
    fn presented_with<'a>(&'a self, ca: &'a Path) -> Vec<&'a str> {
        vec![
            "--ca-file",
            Certs::path(ca),
            "--client-cert",
            Certs::path(&self.cert),
            "--client-key",
            Certs::path(&self.key),
        ]
    }
}

/// Asserts that `run` failed (status 1) saying every one of `words`.
#[track_caller]
fn assert_refused(run: &Run, words: &[&str]) {
    assert_eq!(run.code, Some(1), "{run:?}");
    for w in words {
        assert!(run.stderr.contains(w), "{w:?} not said: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_serves_mutual_tls_and_names_every_mismatch() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    let (a, b, stranger) = one_ca_for_both_ferries_and_a_stranger(root);
    let secret = bs_certificate_as_a_secret_of_its_cluster(&kc, &b);

    let (port_a, port_b) = (free_port(), free_port());
    let serve_a = serve_with(&kc, "a", root, port_a, &a.serve_flags());
    let serve_b = serve_with(
        &kc,
        "b",
        root,
        port_b,
        &["--tls-secret".to_string(), format!("default/{secret}")],
    );
    let ctx = Tls {
        server: format!("https://127.0.0.1:{port_a}"),
        kc,
        a,
        b,
        stranger,
    };

    the_right_ca_and_a_client_certificate_are_answered(&ctx);
    grpcurl_lists_the_services_with_the_ca(&ctx.a, port_a);
    a_wrong_ca_or_name_is_named(&ctx);
    mutual_tls_wants_a_client_certificate_of_its_ca(&ctx, &serve_a);
    the_published_endpoint_is_https(&ctx, &serve_b);
    the_ferries_pair_over_mutual_tls(&ctx);
}

/// What the phases share: the kubeconfig, Ferry a's https:// address, the certificates
/// of a and b (one CA) and of a stranger (a CA of its own).
struct Tls {
    kc: PathBuf,
    server: String,
    a: Certs,
    b: Certs,
    stranger: Certs,
}

impl Tls {
    /// `ferry --server SERVER EXTRA... ARGS...`.
    fn with(&self, extra: &[&str], args: &[&str]) -> Run {
        let mut all = vec!["--server", self.server.as_str()];
        all.extend_from_slice(extra);
        all.extend_from_slice(args);
        cli(&self.kc, &all)
    }
}

/// One CA for both Ferries: each trusts the other's certificate; the CA is made once and
/// reused, and the keys are the owner's only. And a CA of its own: trusted by nobody
/// here. Returns a's, b's and the stranger's certificates.
fn one_ca_for_both_ferries_and_a_stranger(root: &Path) -> (Certs, Certs, Certs) {
    let ca_dir = root.join("ca");
    let (a, printed) = Certs::create(&root.join("a"), "ferry-a", &ca_dir);
    assert!(printed.contains("(created)"), "{printed}");
    assert!(
        printed.contains("--tls-cert") && printed.contains("--ca-file"),
        "{printed}"
    );
    let (b, printed) = Certs::create(&root.join("b"), "ferry-b", &ca_dir);
    assert!(printed.contains("(reused)"), "{printed}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&a.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    // A CA of its own: trusted by nobody here.
    let (stranger, _) = Certs::create(&root.join("other"), "other", &root.join("other"));
    (a, b, stranger)
}

/// b's certificate, key and CA as a Secret of its cluster. Returns the Secret's name.
fn bs_certificate_as_a_secret_of_its_cluster(kc: &Path, b: &Certs) -> String {
    let secret = ferry_testenv::unique_name("ferry-b-tls");
    kubectl(
        kc,
        "b",
        &[
            "-n",
            "default",
            "create",
            "secret",
            "generic",
            &secret,
            &format!("--from-file=tls.crt={}", b.cert.display()),
            &format!("--from-file=tls.key={}", b.key.display()),
            &format!("--from-file=ca.crt={}", b.ca.display()),
        ],
        None,
    );
    secret
}

/// The right CA and a client certificate: answered.
fn the_right_ca_and_a_client_certificate_are_answered(ctx: &Tls) {
    eventually("Ferry a to answer over TLS", || {
        ctx.with(&ctx.a.client_flags(), &["pair", "list"]).code == Some(0)
    });
    let listed = ctx.with(&ctx.a.client_flags(), &["pair", "list"]).ok();
    assert!(listed.stdout.contains("no pairs"), "{listed:?}");
}

/// grpcurl, verifying with the CA and presenting the certificate, lists the services;
/// plaintext gets no answer on the TLS port.
fn grpcurl_lists_the_services_with_the_ca(a: &Certs, port_a: u16) {
    let addr = format!("127.0.0.1:{port_a}");
    let (ok, out) = ferry_testenv::run_grpcurl(&[
        "-cacert",
        Certs::path(&a.ca),
        "-cert",
        Certs::path(&a.cert),
        "-key",
        Certs::path(&a.key),
        &addr,
        "list",
    ]);
    assert!(ok, "{out}");
    for service in [
        "ferry.v1.PairingService",
        "ferry.v1.TransferService",
        "grpc.health.v1.Health",
    ] {
        assert!(out.contains(service), "{service} not listed: {out}");
    }
    let (ok, out) = ferry_testenv::run_grpcurl(&["-plaintext", &addr, "list"]);
    assert!(!ok, "plaintext answered on a TLS port: {out}");
}

/// Another CA, or a name the certificate does not hold: refused, the mismatch named.
fn a_wrong_ca_or_name_is_named(ctx: &Tls) {
    let Tls { a, stranger, .. } = ctx;
    // Another CA.
    let wrong_ca = ctx.with(&a.presented_with(&stranger.ca), &["pair", "list"]);
    assert_refused(
        &wrong_ca,
        &[
            "certificate of 127.0.0.1 is signed by an unknown CA; pass --ca-file with the CA \
           that signed it",
        ],
    );

    // A name the certificate does not hold.
    let mut flags = a.client_flags();
    flags.extend(["--tls-server-name", "ferry-z.example"]);
    let wrong_name = ctx.with(&flags, &["pair", "list"]);
    assert_refused(
        &wrong_name,
        &[
            "certificate of ferry-z.example is for ",
            "127.0.0.1",
            "not ferry-z.example",
        ],
    );
}

/// Mutual TLS: no client certificate, or one from another CA, is refused, and the
/// server (`serve_a`) logs why.
fn mutual_tls_wants_a_client_certificate_of_its_ca(ctx: &Tls, serve_a: &Serve) {
    let Tls { a, stranger, .. } = ctx;
    let anonymous = ctx.with(&["--ca-file", Certs::path(&a.ca)], &["pair", "list"]);
    assert_refused(
        &anonymous,
        &["127.0.0.1 requires a client certificate (mutual TLS); pass --client-cert"],
    );
    let foreign = ctx.with(&stranger.presented_with(&a.ca), &["pair", "list"]);
    assert_refused(
        &foreign,
        &["refused this client's certificate: it is signed by a CA the server does not trust"],
    );
    eventually("the server to log why it refused", || {
        serve_a
            .log()
            .contains("the client sent no certificate and mutual TLS is on")
    });
}

/// The published endpoint is https://, and the command finds it from the context; b
/// (`serve_b`), with its certificate from the Secret, serves mutual TLS too.
fn the_published_endpoint_is_https(ctx: &Tls, serve_b: &Serve) {
    let Tls { kc, server, b, .. } = ctx;
    let published = jsonpath(
        kc,
        "a",
        "ferry-system",
        "configmap/ferry",
        "{.data.endpoint}",
    );
    assert_eq!(&published, server);
    eventually("Ferry b to answer over TLS", || {
        let mut args = b.client_flags();
        args.extend(["--context", "b", "pair", "list"]);
        cli(kc, &args).code == Some(0)
    });
    assert!(serve_b.log().contains("mutual TLS"), "{}", serve_b.log());
}

/// The Ferries pair with each other over mutual TLS: a's pairing service presents its
/// certificate to b's.
fn the_ferries_pair_over_mutual_tls(ctx: &Tls) {
    let mut args = ctx.a.client_flags();
    args.extend([
        "pair",
        "create",
        "--from",
        "a",
        "--to",
        "b",
        "--name",
        "tls-a-to-b",
    ]);
    let paired = cli(&ctx.kc, &args).ok();
    assert!(paired.stdout.contains("paired a (source"), "{paired:?}");
    assert!(!paired.stdout.contains("failed"), "{paired:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_on_an_address_others_reach_is_refused() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let tmp = tempfile::tempdir().unwrap();
    let refused = run(ferry()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["--context", "a"]));
    assert_refused(
        &refused,
        &[
            "refusing to serve plaintext gRPC on 0.0.0.0:0",
            "--tls-cert and --tls-key",
            "--insecure-plaintext",
        ],
    );
}
