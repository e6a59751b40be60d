//! PruneRepository over real gRPC, on a repository in the test environment's S3 server
//! with restore points written by the engine as export jobs write them: both limits
//! apply (the newest N AND younger than the age), only the named application is
//! touched, a dry run changes nothing, a writer's lock refuses the prune with
//! ABORTED/REPOSITORY_LOCKED and nothing removed, and removed restore points leave the
//! catalog's listing.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{Exported, Harness, expect_error};
use ferry_proto::v1::{
    ErrorCode, ListRestorePointsRequest, PruneRepositoryRequest, PruneRepositoryResponse,
};
use ferry_repo::LockInfo;
use ferry_repo::backend::DynBackend;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::Code;

fn hours_ago(h: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::hours(h))
        .format(&Rfc3339)
        .expect("format")
}

fn ids(points: &[ferry_proto::v1::RestorePoint]) -> Vec<String> {
    points.iter().map(|p| p.id.clone()).collect()
}

/// Restore points of `app`, one per age in hours (oldest first as given), each with the
/// job id `job` makes of its age; their ids in that order.
async fn save_aged(
    exported: &Exported,
    app: &str,
    ages: &[i64],
    job: impl Fn(i64) -> String,
) -> Vec<String> {
    let mut written = Vec::new();
    for &age in ages {
        let m = exported.manifest(&hours_ago(age), &job(age), BTreeMap::new());
        let id = exported
            .repo
            .save_restore_point(app, &m)
            .await
            .expect("save");
        written.push(id.to_hex());
    }
    written
}

/// A live shared lock, as a writer (an export's backup) holds one; its key.
async fn hold_writer_lock(backend: &DynBackend) -> String {
    let lock_key = format!("locks/{}", ferry_repo::Id::random().expect("id").to_hex());
    let now = OffsetDateTime::now_utc();
    let info = LockInfo {
        hostname: "exporter".into(),
        pid: 4242,
        purpose: "backup".into(),
        exclusive: false,
        created: now,
        expires: now + time::Duration::minutes(30),
        ttl_ms: Some(30 * 60 * 1000),
    };
    backend
        .put(
            &lock_key,
            Bytes::from(serde_json::to_vec(&info).expect("lock json")),
        )
        .await
        .expect("write lock");
    lock_key
}

#[tokio::test]
async fn both_limits_apply_to_one_application_and_a_writer_lock_refuses() {
    let h = Harness::start("prune").await;
    h.secrets(b"prune test key").await;
    h.create(h.request("out", true)).await;

    // Five restore points of one application, an hour apart, and two of another.
    let app = ferry_testenv::unique_name("cat-prune");
    let exported = Exported::new(&h, "out", &app).await;
    let written = save_aged(&exported, &app, &[5, 4, 3, 2, 1], |age| {
        format!("job-{age}")
    })
    .await;
    let other = ferry_testenv::unique_name("cat-other");
    save_aged(&exported, &other, &[9, 8], |_| "other".into()).await;
    let list = |namespace: String| {
        let mut client = h.client.clone();
        let repository = h.repo("out");
        async move {
            client
                .list_restore_points(ListRestorePointsRequest {
                    repository,
                    namespace,
                    page_size: 0,
                    page_token: String::new(),
                })
                .await
                .expect("list")
                .into_inner()
                .restore_points
        }
    };
    // Indexed before the prune, so the catalog has rows to drop.
    assert_eq!(list(app.clone()).await.len(), 5);

    let prune = |keep_last: u32, max_age_s: Option<i64>, dry_run: bool| {
        let mut client = h.client.clone();
        let req = PruneRepositoryRequest {
            repository: h.repo("out"),
            namespace: app.clone(),
            keep_last,
            max_age: max_age_s.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            dry_run,
        };
        async move {
            client
                .prune_repository(req)
                .await
                .map(tonic::Response::into_inner)
        }
    };

    // Keep the newest 3, none older than 2.5 h: only the two newest stay (the union of
    // the rules would have kept three).
    let dry: PruneRepositoryResponse = prune(3, Some(9000), true).await.expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(
        ids(&dry.restore_points_removed),
        [written[2].clone(), written[1].clone(), written[0].clone()],
        "newest first: {dry:#?}"
    );
    assert_eq!(
        ids(&dry.restore_points_kept),
        [written[4].clone(), written[3].clone()]
    );
    assert_eq!(
        dry.restore_points_removed[0].job_id, "job-3",
        "from the index"
    );
    assert_eq!(
        list(app.clone()).await.len(),
        5,
        "a dry run removes nothing"
    );

    // A writer holds the repository: refused, nothing removed.
    let backend = exported.repo.backend().clone();
    let lock_key = hold_writer_lock(&backend).await;
    let locked = prune(3, Some(9000), false).await.expect_err("locked");
    let d = expect_error(&locked, Code::Aborted, ErrorCode::RepositoryLocked);
    assert!(d.message.contains(&lock_key), "{d:?}");
    assert!(d.message.contains("profile \"out\""), "{d:?}");
    assert_eq!(
        list(app.clone()).await.len(),
        5,
        "a refused prune removes nothing"
    );
    backend.delete(&lock_key).await.expect("remove lock");

    let done = prune(3, Some(9000), false).await.expect("prune");
    assert!(!done.dry_run);
    assert_eq!(
        ids(&done.restore_points_removed),
        ids(&dry.restore_points_removed)
    );
    assert_eq!(
        ids(&done.restore_points_kept),
        ids(&dry.restore_points_kept)
    );
    assert_eq!(
        ids(&list(app.clone()).await),
        [written[4].clone(), written[3].clone()]
    );
    // The other application was not in scope.
    assert_eq!(list(other.clone()).await.len(), 2);
    // Its snapshot stays: the kept restore points name it.
    assert_eq!(done.snapshots_removed, 0, "{done:#?}");
    assert!(done.snapshots_kept >= 1, "{done:#?}");

    // Again: nothing more to remove.
    let again = prune(3, Some(9000), false).await.expect("prune again");
    assert!(again.restore_points_removed.is_empty(), "{again:#?}");

    // No limit at all is refused before anything is opened.
    let none = prune(0, None, false).await.expect_err("no limit");
    expect_error(&none, Code::InvalidArgument, ErrorCode::InvalidArgument);
    let short = prune(0, Some(10), false).await.expect_err("too short");
    let d = expect_error(&short, Code::InvalidArgument, ErrorCode::InvalidArgument);
    assert!(d.message.contains("max_age"), "{d:?}");
}
