//! `ferry serve` against the test environment's cluster `a`: the real binary serves all
//! its services on one port (listed by grpcurl through reflection), each answers a
//! call, and SIGTERM stops the process cleanly with status 0.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use ferry_testenv::run_grpcurl as grpcurl;

/// The admin's `authorization` header, which every call but health and reflection needs.
static AUTH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn auth() -> &'static str {
    AUTH.get().expect("AUTH is set first")
}

fn call(addr: &str, method: &str, body: &str) -> String {
    let (ok, out) = grpcurl(&["-plaintext", "-H", auth(), "-d", body, addr, method]);
    assert!(ok, "{method}: {out}");
    out
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the server if the test fails before stopping it.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn start(kubeconfig: &Path, data: &Path, volumes: &Path, port: u16, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "a", "--cluster-name", "serve-a"])
        .args(["--node-name", "serve-node", "--ferry-endpoint"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--volume-root")
        .arg(volumes)
        .arg("--allow-root")
        .arg(data)
        .args(["--shutdown-grace-seconds", "2"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        // A file, not a pipe: nobody reads while it runs, and a full pipe would block it.
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_every_service_on_one_port_and_stops_on_sigterm() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let kubeconfig = env.kubeconfig().to_path_buf();
    let admin = env.cluster("a").unwrap().admin.token.clone();
    let _ = AUTH.set(format!("authorization: Bearer {admin}"));
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let volumes = data.join("volumes");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");

    let log = tmp.path().join("serve.log");
    let mut server = Server(Some(start(&kubeconfig, &data, &volumes, port, &log)));

    // grpcurl blocks: the checks run off the async workers.
    let checks = tokio::task::spawn_blocking(move || {
        health_is_serving_once_every_service_is_up(&addr);
        every_service_is_listed_and_serving(&addr);
        a_fresh_data_directory_answers_known_callers_only(&addr);
        a_migration_to_an_unknown_pair_is_refused_by_the_pairing_service(&addr);
        a_scheduled_run_fails_with_the_transfer_services_refusal(&addr);
    });
    let outcome = checks.await;

    let child = server.0.take().unwrap();
    if let Err(e) = outcome {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("checks failed: {e}\nserver log:\n{}", log_of(&log));
    }

    every_services_state_lives_under_the_data_directory(&data);
    sigterm_stops_the_server_with_status_0(child, &log).await;
}

/// Health: SERVING once every service is up.
fn health_is_serving_once_every_service_is_up(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = grpcurl(&["-plaintext", addr, "grpc.health.v1.Health/Check"]);
        if ok && out.contains("\"SERVING\"") {
            break;
        }
        assert!(Instant::now() < deadline, "never healthy: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reflection lists every service; each has its own health, SERVING; the agent answers.
fn every_service_is_listed_and_serving(addr: &str) {
    let (ok, listed) = grpcurl(&["-plaintext", addr, "list"]);
    assert!(ok, "{listed}");
    for service in [
        "ferry.v1.AgentService",
        "ferry.v1.PairingService",
        "ferry.v1.CatalogService",
        "ferry.v1.TransferService",
        "ferry.v1.SchedulerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} not listed:\n{listed}"
        );
    }
    for service in [
        "ferry.v1.PairingService",
        "ferry.v1.TransferService",
        "ferry.v1.SchedulerService",
    ] {
        let (ok, health) = grpcurl(&[
            "-plaintext",
            "-d",
            &format!(r#"{{"service": "{service}"}}"#),
            addr,
            "grpc.health.v1.Health/Check",
        ]);
        assert!(ok && health.contains("\"SERVING\""), "{service}: {health}");
    }

    let info = call(addr, "ferry.v1.AgentService/GetInfo", "{}");
    assert!(info.contains("\"nodeName\": \"serve-node\""), "{info}");
}

/// A fresh data directory: no pairs, profiles, jobs or schedules, and each call of the
/// administrator succeeds; without a token, or with one the cluster does not know,
/// nobody is served.
fn a_fresh_data_directory_answers_known_callers_only(addr: &str) {
    let pairs = call(addr, "ferry.v1.PairingService/ListPairs", "{}");
    assert!(!pairs.contains("\"pairs\""), "{pairs}");
    let profiles = call(addr, "ferry.v1.CatalogService/ListProfiles", "{}");
    assert!(!profiles.contains("\"profiles\""), "{profiles}");
    let jobs = call(addr, "ferry.v1.TransferService/ListJobs", "{}");
    assert!(!jobs.contains("\"jobs\""), "{jobs}");
    // Without a token, or with one the cluster does not know, nobody is served.
    let (ok, anonymous) = grpcurl(&["-plaintext", addr, "ferry.v1.TransferService/ListJobs"]);
    assert!(
        !ok && anonymous.contains("Unauthenticated") && anonymous.contains("bearer token"),
        "{anonymous}"
    );
    let (ok, forged) = grpcurl(&[
        "-plaintext",
        "-H",
        "authorization: Bearer not-a-token-of-this-cluster",
        addr,
        "ferry.v1.TransferService/ListJobs",
    ]);
    assert!(
        !ok && forged.contains("Unauthenticated") && forged.contains("serve-a"),
        "{forged}"
    );
    let schedules = call(addr, "ferry.v1.SchedulerService/ListSchedules", "{}");
    assert!(!schedules.contains("\"schedules\""), "{schedules}");

    let (_, getjob) = grpcurl(&[
        "-plaintext",
        "-H",
        auth(),
        "-d",
        r#"{"job": {"id": "no-such-job"}}"#,
        addr,
        "ferry.v1.TransferService/GetJob",
    ]);
    assert!(getjob.contains("NotFound"), "{getjob}");
}

/// The transfer service's collaborators are wired in-process: a migration to a pair this
/// cluster does not have is refused by way of the pairing service.
fn a_migration_to_an_unknown_pair_is_refused_by_the_pairing_service(addr: &str) {
    let (_, start) = grpcurl(&[
        "-plaintext",
        "-H",
        auth(),
        "-d",
        r#"{"source": {"local": true}, "destination": {"pairId": "no-such-pair"},
                "application": {"namespace": "default"}, "repository": {"profile": "nope"},
                "dryRun": true}"#,
        addr,
        "ferry.v1.TransferService/StartMigration",
    ]);
    assert!(
        start.contains("no-such-pair") && start.contains("not found on cluster serve-a"),
        "{start}"
    );
    // An unknown pair is the caller's mistake, not an outage.
    assert!(start.contains("Code: NotFound"), "{start}");
}

/// The scheduler starts its jobs through the transfer service on this same port: a run
/// of a migration to that pair fails with the transfer service's refusal.
fn a_scheduled_run_fails_with_the_transfer_services_refusal(addr: &str) {
    call(
        addr,
        "ferry.v1.SchedulerService/CreateSchedule",
        r#"{"name": "nightly", "cron": "0 2 * * *", "timeZone": "Europe/Paris",
                "serviceAccount": "default",
                "migration": {"source": {"local": true}, "destination": {"pairId": "no-such-pair"},
                              "application": {"namespace": "default"}, "skipVolumeData": true}}"#,
    );
    call(
        addr,
        "ferry.v1.SchedulerService/RunNow",
        r#"{"schedule": "nightly"}"#,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = call(
            addr,
            "ferry.v1.SchedulerService/ListRuns",
            r#"{"schedule": "nightly"}"#,
        );
        if runs.contains("RUN_STATE_FAILED") {
            assert!(runs.contains("no-such-pair"), "{runs}");
            assert!(runs.contains("\"manual\": true"), "{runs}");
            break;
        }
        assert!(Instant::now() < deadline, "the run never failed: {runs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every service's state lives under the data directory.
fn every_services_state_lives_under_the_data_directory(data: &Path) {
    for file in [
        "pairing.db",
        "catalog.db",
        "transfer.db",
        "scheduler.db",
        "secret.key",
    ] {
        assert!(data.join(file).exists(), "{file} missing in the data dir");
    }
    assert!(data.join("agent-profiles").is_dir());
}

/// SIGTERM stops the server within 5 s, with status 0 (killed if not stopped in 10 s).
async fn sigterm_stops_the_server_with_status_0(child: Child, log: &Path) {
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let started = Instant::now();
    let mut child = child;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferry serve did not stop within 10 s of SIGTERM:\n{}",
                log_of(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = log_of(log);
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(log.contains("ferry serve starting"), "{log}");
}
