//! `ferry version` against a real `ferry serve` on the test environment's cluster a:
//! both versions, as text and as JSON, found through the context and through
//! --server; with no Ferry to reach, the client's version, the reason, exit status 1.

mod common;

use common::control::{cli, free_port, serve, wait_answering};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_prints_the_client_and_the_server_and_says_why_not() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_serve, endpoint) = serve(&kc, "a", tmp.path());
    wait_answering(&kc, &["a"]);

    // Found through the context's ConfigMap.
    let out = cli(&kc, &["--context", "a", "version"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert!(
        lines[0].starts_with(&format!("Client: {VERSION}")),
        "{out:#?}"
    );
    assert!(
        lines[1].starts_with(&format!("Server: {VERSION} (serve"))
            && lines[1].ends_with(&format!(" at {endpoint}")),
        "{out:#?}"
    );

    // As JSON, and through --server: the same server.
    let json = cli(&kc, &["--server", &endpoint, "-o", "json", "version"])
        .ok()
        .json();
    assert_eq!(json["client"]["version"], VERSION, "{json:#}");
    assert_eq!(json["server"]["version"], VERSION, "{json:#}");
    assert_eq!(json["server"]["component"], "serve", "{json:#}");
    assert_eq!(json["server"]["endpoint"], endpoint.as_str(), "{json:#}");
    assert!(json.get("serverError").is_none(), "{json:#}");

    // Cluster b runs no Ferry: the client's version, then why the server's is unknown.
    let out = cli(&kc, &["--context", "b", "version"]).code(1);
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with(&format!("Client: {VERSION}"))
            && out.stdout.contains("Server: unknown"),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains("the server's version is unknown")
            && out.stderr.contains("kubeconfig context \"b\"")
            && out.stderr.contains("ConfigMap ferry-system/ferry"),
        "{out:#?}"
    );

    // Nothing listens at --server: the same, as JSON too.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = cli(&kc, &["--server", &nowhere, "-o", "json", "version"]).code(1);
    let json = out.json();
    assert_eq!(json["client"]["version"], VERSION, "{json:#}");
    assert!(json["server"].is_null(), "{json:#}");
    let reason = json["serverError"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("cannot reach Ferry at {nowhere}")),
        "{json:#}"
    );
    assert!(out.stderr.contains(reason), "{out:#?}");
}
