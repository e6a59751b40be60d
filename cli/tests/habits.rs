//! Command-line habits that need no cluster: shell completion scripts, and JSON log
//! lines (`--log-format json`) from a component and from the `ferry` command itself.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::control::free_port;
use common::{ferry, run};

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(ferry().args(["completion", shell])).ok();
        for word in ["migrate", "jobs", "completion", "log-format"] {
            assert!(
                out.stdout.contains(word),
                "{shell} completion lacks {word}: {}",
                out.stdout
            );
        }
    }
    // bash accepts the script as it is.
    let script = tempfile::NamedTempFile::new().unwrap();
    let bash = run(ferry().args(["completion", "bash"])).ok();
    std::fs::write(script.path(), &bash.stdout).unwrap();
    let checked = Command::new("bash")
        .arg("-n")
        .arg(script.path())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // An unknown shell is a usage error naming the ones there are.
    let bad = run(ferry().args(["completion", "tcsh"])).code(2);
    assert!(
        bad.stderr.contains("bash") && bad.stderr.contains("fish"),
        "{bad:#?}"
    );
}

/// Every line as a JSON object, failing on the first line that is not one.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}\n--- all:\n{stderr}"))
        })
        .collect()
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    // The gateway needs no cluster; its upstreams are ports where nothing listens.
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let mut gateway = ferry()
        .args(["--log-format", "json", "service", "gateway"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--pairing-endpoint", &dead, "--catalog-endpoint", &dead])
        .args(["--transfer-endpoint", &dead, "--scheduler-endpoint", &dead])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // A call that fails upstream is logged inside its request span.
    let server = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read().contains("TransferService/ListJobs") {
        assert!(
            Instant::now() < deadline,
            "no ListJobs in the log:\n{}",
            read()
        );
        let _ = run(ferry().args(["--server", &server, "--token", "t", "jobs", "list"]));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
    let lines = json_lines(&read());
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "serving gRPC")
        .unwrap_or_else(|| panic!("no \"serving gRPC\" line: {lines:#?}"));
    assert_eq!(serving["level"], "INFO", "{serving:#}");
    assert!(
        serving["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("ferry_")),
        "{serving:#}"
    );
    assert_eq!(
        serving["fields"]["addr"],
        format!("127.0.0.1:{port}"),
        "{serving:#}"
    );
    assert!(serving["timestamp"].is_string(), "{serving:#}");
    let in_span = lines
        .iter()
        .find(|l| l["span"]["method"] == "/ferry.v1.TransferService/ListJobs")
        .unwrap_or_else(|| panic!("no line inside the ListJobs request span: {lines:#?}"));
    assert_eq!(in_span["span"]["name"], "grpc", "{in_span:#}");
    assert!(in_span["fields"]["message"].is_string(), "{in_span:#}");
    assert!(
        in_span["spans"].as_array().is_some_and(|s| !s.is_empty()),
        "{in_span:#}"
    );

    // The command's own logs (here the client's debug lines) are JSON too, and the
    // variable works as the flag does.
    let cli = run(ferry()
        .args(["--server", "http://127.0.0.1:1", "pair", "list"])
        .env("FERRY_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug"))
    .code(1);
    let (logs, error): (Vec<&str>, Vec<&str>) =
        cli.stderr.lines().partition(|l| !l.starts_with("ferry: "));
    assert!(!logs.is_empty(), "{cli:#?}");
    for line in json_lines(&logs.join("\n")) {
        assert!(
            line["level"].is_string() && line["target"].is_string(),
            "{line:#}"
        );
    }
    // The command's error stays a sentence for people.
    assert!(
        error.iter().any(|l| l.contains("cannot reach Ferry at")),
        "{cli:#?}"
    );
}
