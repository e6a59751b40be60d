//! Job checkpoints hold every captured object, an application's Secrets included: they
//! are stored sealed, so a migration whose service is killed mid-job and restarted
//! leaves no trace of a Secret's value in `transfer.db` (or its WAL), and the restarted
//! service still opens the checkpoint and finishes the job.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use ferry_proto::v1::{JobState, job_event};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rand::RngCore;

/// transfer.db and its WAL, as they are on disk.
fn raw_store(data_dir: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(data_dir.join("transfer.db")).unwrap();
    if let Ok(wal) = std::fs::read(data_dir.join("transfer.db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

/// The forms a Secret's value takes in a captured object: as it is, and base64 (a
/// Secret's `data`).
fn forms(value: &str) -> Vec<String> {
    let b64: String = serde_json::from_value(
        serde_json::to_value(ByteString(value.as_bytes().to_vec())).unwrap(),
    )
    .unwrap();
    vec![value.to_string(), b64]
}

fn assert_absent(data_dir: &Path, value: &str, when: &str) {
    let bytes = raw_store(data_dir);
    assert!(bytes.len() > 4096, "transfer.db is there ({when})");
    for form in forms(value) {
        assert!(
            !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
            "the Secret's value ({} bytes form) is in transfer.db {when}",
            form.len()
        );
    }
}

#[tokio::test]
async fn a_captured_secret_is_sealed_in_the_job_store_and_the_job_resumes() {
    let mut bench = Bench::start().await;
    let (ns, files) = bench.with_application("mig-sealed", 24 << 20).await;
    let mut raw = [0u8; 18];
    rand::rng().fill_bytes(&mut raw);
    let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    create_in::<Secret>(
        &bench.a,
        &ns,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "app-credentials", "namespace": ns}, "type": "Opaque",
            "stringData": {"password": password}}),
    )
    .await;

    let id = bench.start_migration(bench.request(&ns)).await;
    let (ended, _) = watch_until(&bench.service.client, &id, |e| {
        matches!(&e.event, Some(job_event::Event::Progress(p)) if p.step == "backup-volumes" && p.bytes_read > 0)
    })
    .await;
    assert!(!ended, "the job finished before the restart");
    let data = bench.root.path().join("data");
    // The capture is in the checkpoint by now (the volume backup comes after it).
    let stored = bench
        .service
        .transfer
        .get(&id)
        .await
        .map(|(job, _)| job)
        .unwrap();
    assert!(
        stored
            .steps
            .iter()
            .any(|s| s.name == "capture" && s.state == ferry_proto::v1::StepState::Succeeded as i32),
        "{stored:#?}"
    );
    bench.crash_and_restart().await;
    assert_absent(&data, &password, "after the crash");

    // The restarted service opens the sealed checkpoint and finishes the job.
    let (_, report) = bench.watch(&id).await;
    assert_eq!(
        report.state,
        JobState::Succeeded as i32,
        "job did not succeed: {report:#?}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.message.contains("resumed at step")),
        "the job was resumed: {:#?}",
        report.warnings
    );
    bench.assert_restored(&files, &ns, "data-db-0").await;
    let moved = Api::<Secret>::namespaced(bench.b.clone(), &ns)
        .get("app-credentials")
        .await
        .unwrap();
    assert_eq!(
        moved
            .data
            .unwrap_or_default()
            .get("password")
            .map(|v| v.0.as_slice()),
        Some(password.as_bytes()),
        "the Secret arrived from the sealed capture"
    );
    assert_absent(&data, &password, "after the job");
}
