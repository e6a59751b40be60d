//! The source's Ferry is killed (SIGKILL) in the middle of a migration's volume backup
//! and started again on the same data directory: `ferry jobs watch` then follows the
//! same job to an end — resumed to success with every byte on b, or failed with a
//! reason — and never leaves it running forever.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::control::{
    cli, free_port, jsonpath, kubectl, profiles, report, sample_app, serve, serve_on,
    wait_answering,
};
use common::{assert_same_tree, random_bytes};
use ferry_client::{Ferry, proto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_source_ferry_resumes_or_fails_the_job_after_a_restart() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let port_a = free_port();
    let (serve_a, _) = serve_on(&kc, "a", root, port_a);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);

    profiles(&kc, s3, root, ("s3", "repo-key"), "cli-restart", 21);
    cli(&kc, &["pair", "create", "--from", "a", "--to", "b"]).ok();

    // Enough data that the backup is still running when the process dies.
    let (ns, _, src) = sample_app(&kc, root, "restart", |src| {
        for i in 0..24 {
            let dir = src.join(format!("seg{}", i % 4));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{i}.bin")), random_bytes(8 << 20, 100 + i)).unwrap();
        }
    });

    let started = cli(
        &kc,
        &[
            "--context",
            "a",
            "migrate",
            "-n",
            &ns,
            "--to",
            "b",
            "--profile",
            "main",
            "--detach",
        ],
    )
    .ok();
    let id = started.stdout.trim().to_string();
    assert!(id.starts_with("job-"), "{started:?}");

    // Kill it once the backup has read something.
    let ferry_a = Ferry::for_context(Some(&kc), Some("a")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (job, _) = ferry_a.job(&id).get().await.unwrap();
        let reading = job
            .progress
            .as_ref()
            .is_some_and(|p| p.step == "backup-volumes" && p.bytes_read > 0);
        if reading {
            break;
        }
        assert!(
            !ferry_client::is_final(job.state()),
            "the job ended before it could be killed: {job:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the backup never started: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut killed = serve_a;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let log = killed.log.clone();
    drop(killed);

    // Same port, same data directory: the same Ferry, started again.
    let (serve_a, _) = serve_on(&kc, "a", root, port_a);
    let watched = tokio::task::spawn_blocking({
        let kc = kc.clone();
        let id = id.clone();
        move || {
            let began = Instant::now();
            let run = cli(&kc, &["--context", "a", "jobs", "watch", &id]);
            (run, began.elapsed())
        }
    })
    .await
    .unwrap();
    let (run, took) = watched;
    assert!(
        took < Duration::from_secs(180),
        "the job took {took:?} to end after the restart"
    );
    let report = report(&ferry_a, &id).await;
    match report.state() {
        proto::JobState::Succeeded => {
            assert_eq!(run.code, Some(0), "{run:?}");
            let pv = jsonpath(&kc, "b", &ns, "pvc/data-db-0", "{.spec.volumeName}");
            let dst = PathBuf::from(kubectl(
                &kc,
                "b",
                &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
                None,
            ));
            assert_same_tree(&src, &dst);
        }
        proto::JobState::Failed => {
            assert_eq!(run.code, Some(13), "{run:?}");
            let error = report.error.clone().unwrap_or_default();
            assert!(!error.message.is_empty(), "{report:?}");
            assert!(run.stdout.contains("error:"), "{run:?}");
        }
        other => panic!(
            "job ended {other:?} after the restart: {run:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ),
    }
    eprintln!(
        "after the restart the job ended {:?} in {took:?}",
        report.state()
    );
    drop(serve_a);
}
