//! The catalog database's own checks.

use super::*;
use crate::restore_points::RestorePointDetail;

fn row(id: &str) -> IndexedRestorePoint {
    IndexedRestorePoint {
        id: id.into(),
        application: "shop".into(),
        created_at_ns: 1,
        job_id: "job-1".into(),
        volumes: Vec::new(),
        tags: BTreeMap::new(),
        detail: RestorePointDetail::default(),
        local_labels: BTreeMap::new(),
    }
}

fn label(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_string(), v.to_string())]
}

#[tokio::test]
async fn local_labels_outlive_a_rebuild_but_not_the_restore_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path()).await.expect("open");
    let key = "ferry.dev/import-policy";
    db.replace_index("repo", &[row("a"), row("b")])
        .await
        .expect("index");
    assert!(
        !db.set_labels("repo", "zz", label(key, "p"))
            .await
            .expect("set")
    );
    assert!(
        db.set_labels("repo", "a", label(key, "p"))
            .await
            .expect("set")
    );
    let labels = |rp: Option<IndexedRestorePoint>| rp.expect("indexed").local_labels;
    let a = db.restore_point("repo", "a").await.expect("read");
    assert_eq!(labels(a).get(key).map(String::as_str), Some("p"));
    let page = db
        .restore_points_page("repo", None, None, 10)
        .await
        .expect("page");
    let with: Vec<usize> = page.iter().map(|r| r.local_labels.len()).collect();
    assert_eq!(with.iter().sum::<usize>(), 1, "{page:?}");

    // A rebuild that still finds it keeps its labels; one that does not drops them.
    db.replace_index("repo", &[row("a")])
        .await
        .expect("rebuild");
    let a = db.restore_point("repo", "a").await.expect("read");
    assert_eq!(labels(a).get(key).map(String::as_str), Some("p"));
    db.update_index("repo", vec!["a".into()], &[])
        .await
        .expect("remove");
    db.update_index("repo", Vec::new(), &[row("a")])
        .await
        .expect("back");
    let a = db.restore_point("repo", "a").await.expect("read");
    assert!(labels(a).is_empty(), "labels went with the restore point");

    // An empty value removes a label.
    assert!(
        db.set_labels("repo", "a", label(key, "p"))
            .await
            .expect("set")
    );
    assert!(
        db.set_labels("repo", "a", label(key, ""))
            .await
            .expect("unset")
    );
    let a = db.restore_point("repo", "a").await.expect("read");
    assert!(labels(a).is_empty());
}
