//! What a restarted service does with jobs a dead process left unfinished, without
//! clusters: the job store is written as the dead process would have left it.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::{ErrorCode, Job, JobKind, JobReport, JobState, StepState};
use ferry_transfer::job::{Checkpoint, pending_steps, steps};
use ferry_transfer::store::{JobStore, StoredJob};
use ferry_transfer::{
    Deps, ProfileRepositories, StaticAgents, StaticClusters, Transfer, TransferConfig,
};

fn left_running(id: &str, running: &str) -> StoredJob {
    let mut job = Job {
        id: id.into(),
        kind: JobKind::Migration as i32,
        state: JobState::Running as i32,
        created_at: Some(std::time::SystemTime::now().into()),
        steps: pending_steps(steps::MIGRATION),
        ..Default::default()
    };
    for s in &mut job.steps {
        if s.name == running {
            s.state = StepState::Running as i32;
            break;
        }
        s.state = StepState::Succeeded as i32;
    }
    StoredJob {
        job,
        request: Vec::new(),
        report: JobReport::default(),
        checkpoint: Checkpoint {
            attempt: 1,
            ..Default::default()
        },
    }
}

async fn final_job(t: &Transfer, id: &str) -> (Job, JobReport) {
    for _ in 0..100 {
        let (job, report) = t.get(id).await.expect("get");
        if let Some(r) = report {
            return (job, r);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never ended");
}

#[tokio::test]
async fn a_job_interrupted_while_committing_fails_with_the_step_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JobStore::open(dir.path()).await.expect("store");
    store
        .insert(&left_running("job-commit", steps::COMMIT))
        .await
        .expect("insert");
    drop(store);

    let deps = Deps {
        clusters: Arc::new(StaticClusters::new()),
        agents: Arc::new(StaticAgents::new()),
        repositories: Arc::new(ProfileRepositories::fixed([])),
        handover: None,
    };
    let t = Transfer::open(TransferConfig::new(dir.path(), "/unused"), deps)
        .await
        .expect("open");
    let (job, report) = final_job(&t, "job-commit").await;
    assert_eq!(job.state, JobState::Failed as i32);
    let error = report.error.expect("error");
    assert_eq!(error.code, ErrorCode::Internal as i32);
    assert!(error.message.contains(steps::COMMIT), "{}", error.message);
    assert!(error.message.contains("restore point"), "{}", error.message);
    let commit = job
        .steps
        .iter()
        .find(|s| s.name == steps::COMMIT)
        .expect("step");
    assert_eq!(commit.state, StepState::Failed as i32);
    assert!(
        job.steps
            .iter()
            .all(|s| s.state != StepState::Running as i32 && s.state != StepState::Pending as i32)
    );
    // Nothing is left for the next start either.
    drop(t);
    let store = JobStore::open(dir.path()).await.expect("store");
    assert!(store.unfinished().await.expect("unfinished").is_empty());
}

#[tokio::test]
async fn a_job_resumed_too_often_fails_instead_of_looping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JobStore::open(dir.path()).await.expect("store");
    let mut j = left_running("job-loop", steps::BACKUP);
    j.checkpoint.attempt = 3;
    store.insert(&j).await.expect("insert");
    drop(store);
    let deps = Deps {
        clusters: Arc::new(StaticClusters::new()),
        agents: Arc::new(StaticAgents::new()),
        repositories: Arc::new(ProfileRepositories::fixed([])),
        handover: None,
    };
    let t = Transfer::open(TransferConfig::new(dir.path(), "/unused"), deps)
        .await
        .expect("open");
    let (job, report) = final_job(&t, "job-loop").await;
    assert_eq!(job.state, JobState::Failed as i32);
    assert!(
        report
            .error
            .expect("error")
            .message
            .contains("resumed 3 times")
    );
}
