//! The standalone binary takes `--log-format` as `ferry service gateway` does: with
//! `json`, every line it writes to stderr is one JSON object.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `ferry-gateway` on `port`, its upstreams a port where nothing listens.
fn gateway(port: u16) -> Command {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry-gateway"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--pairing-endpoint", &dead, "--catalog-endpoint", &dead])
        .args(["--transfer-endpoint", &dead, "--scheduler-endpoint", &dead])
        .env_remove("FERRY_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

#[test]
fn log_format_json_makes_every_line_a_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let port = free_port();
    let mut child = gateway(port)
        .args(["--log-format", "json"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read().contains("serving gRPC") {
        assert!(Instant::now() < deadline, "never served:\n{}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}\n{text}"))
        })
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "serving gRPC")
        .unwrap_or_else(|| panic!("no serving line: {text}"));
    assert_eq!(serving["level"], "INFO", "{serving:#}");
    assert_eq!(serving["target"], "ferry_rpc", "{serving:#}");
    assert_eq!(serving["fields"]["addr"], format!("127.0.0.1:{port}"));
}

#[test]
fn an_unknown_log_format_is_a_usage_error_naming_the_formats() {
    let out = gateway(free_port())
        .env("FERRY_LOG_FORMAT", "xml")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("xml") && stderr.contains("text") && stderr.contains("json"),
        "{stderr}"
    );
}
