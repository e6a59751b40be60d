//! Ctrl-C while `ferry migrate` follows its job, against real `ferry serve` processes on
//! the test environment's clusters: by default the command stops following, names the
//! commands that follow and cancel the job, exits with status 14, and the job goes on to
//! succeed; with `--cancel-on-interrupt` the job is cancelled. The same Ferries then
//! show that every command's `-o yaml` is its `-o json` object.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::control::{cli, profiles_and_pair, sample_app, serve, volume_on_b, wait_answering};
use common::{Run, assert_same_tree, ferry, random_bytes};

/// Incompressible data in 16 MiB files, enough that copying it takes seconds: the
/// job is still running when the test presses Ctrl-C.
fn fill(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir.join("base")).unwrap();
    for i in 0..20 {
        let data = random_bytes(16 << 20, seed * 100 + i);
        std::fs::write(dir.join(format!("base/relation.{i}")), data).unwrap();
    }
}

/// `ferry --context a migrate ...` running, its stderr lines arriving on a channel.
struct Migrating {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: String,
}

impl Drop for Migrating {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Migrating {
    fn start(kc: &Path, ns: &str, extra: &[&str]) -> Migrating {
        let mut child = ferry()
            .arg("--kubeconfig")
            .arg(kc)
            .args(["--context", "a", "migrate", "-n", ns, "--to", "a-to-b"])
            .args(["--profile", "main"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Migrating {
            child,
            lines,
            stderr: String::new(),
        }
    }

    /// Reads stderr until a line contains `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push_str(&line);
                    self.stderr.push('\n');
                    if line.contains(needle) {
                        return;
                    }
                }
                Err(e) => panic!("no {needle:?} on stderr ({e}):\n{}", self.stderr),
            }
        }
    }

    /// Ctrl-C, then the exit status, stdout and all of stderr, and how long it took to
    /// exit.
    fn interrupt(mut self) -> (Run, Duration) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let sent = Instant::now();
        let deadline = sent + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "ferry migrate did not exit after Ctrl-C:\n{}",
                self.stderr
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = sent.elapsed();
        // The reader thread ends with the pipe; collect what it read.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
        }
        let run = Run {
            code: status.code(),
            stdout,
            stderr: std::mem::take(&mut self.stderr),
        };
        (run, took)
    }
}

/// The job's state from `ferry jobs get -o json` once it has a report.
fn final_state(kc: &Path, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = cli(kc, &["--context", "a", "-o", "json", "jobs", "get", id])
            .ok()
            .json();
        if let Some(state) = got["report"]["state"].as_str() {
            return state.to_owned();
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {got:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The job id in "cancel it: ferry jobs cancel ID".
fn hinted_job(run: &Run) -> String {
    run.stderr
        .lines()
        .find_map(|l| l.split_once("ferry jobs cancel ").map(|(_, id)| id.trim()))
        .unwrap_or_else(|| panic!("no `ferry jobs cancel` hint: {run:#?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_following_and_the_job_goes_on_unless_asked_to_cancel() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (serve_a, _) = serve(&kc, "a", root);
    let (serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "cli-interrupt", 21);

    // Ctrl-C while the volumes are copied: the command lets go, the job goes on.
    let (ns, _, src) = sample_app(&kc, root, "detach", |dir| fill(dir, 1));
    let mut migrating = Migrating::start(&kc, &ns, &[]);
    migrating.wait_for("… backup-volumes");
    let (run, took) = migrating.interrupt();
    assert_eq!(run.code, Some(14), "{run:#?}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to exit: {run:#?}"
    );
    let id = hinted_job(&run);
    assert!(
        run.stderr
            .contains(&format!("stopped following job {id}; it goes on"))
            && run.stderr.contains(&format!("ferry jobs watch {id}")),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert_eq!(final_state(&kc, &id), "JOB_STATE_SUCCEEDED");
    assert_same_tree(&src, &volume_on_b(&kc, &ns));

    // With --cancel-on-interrupt, Ctrl-C cancels the job and reports it.
    let (ns_cancel, _, _) = sample_app(&kc, root, "cancel", |dir| fill(dir, 2));
    let mut migrating = Migrating::start(&kc, &ns_cancel, &["--cancel-on-interrupt"]);
    migrating.wait_for("… backup-volumes");
    let (run, _) = migrating.interrupt();
    assert_eq!(run.code, Some(13), "{run:#?}");
    assert!(
        run.stderr.contains("cancelling job") && !run.stderr.contains("ferry jobs cancel"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("cancelled"), "{run:#?}");
    let cancelled = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("ferry: cancelling job "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id: {run:#?}"))
        .to_owned();
    assert_eq!(final_state(&kc, &cancelled), "JOB_STATE_CANCELLED");

    // Every printing command's YAML is the object its JSON shows.
    let commands: [&[&str]; 6] = [
        &["jobs", "get", &id],
        &["jobs", "get", &cancelled],
        &["jobs", "list"],
        &["pair", "list"],
        &["profile", "list"],
        &["restore-points", "--profile", "main", "-n", &ns],
    ];
    for command in commands {
        let as_json = |format: &str| {
            let mut args = vec!["--context", "a", "-o", format];
            args.extend_from_slice(command);
            cli(&kc, &args).ok()
        };
        let json = as_json("json").json();
        let yaml = as_json("yaml");
        let from_yaml: serde_json::Value = serde_yaml_ng::from_str(&yaml.stdout)
            .unwrap_or_else(|e| panic!("{command:?} -o yaml is not YAML ({e}): {yaml:#?}"));
        assert_eq!(from_yaml, json, "{command:?}: {}", yaml.stdout);
        // YAML's block style, not JSON (which YAML parsers also accept).
        assert!(
            json.as_object().is_some_and(|o| !o.is_empty())
                && !yaml.stdout.trim_start().starts_with('{'),
            "{command:?} printed no YAML mapping for -o yaml: {}",
            yaml.stdout
        );
    }
    let job = serde_yaml_ng::from_str::<serde_json::Value>(
        &cli(&kc, &["--context", "a", "-o", "yaml", "jobs", "get", &id])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(job["report"]["state"], "JOB_STATE_SUCCEEDED", "{job:#}");
    assert_eq!(job["job"]["kind"], "JOB_KIND_MIGRATION", "{job:#}");

    let _ = (serve_a.log(), serve_b.log());
}
