//! Restore points (`restorepoints/<application>/<id>`): an application's captured
//! objects and the snapshots of its volumes, stored sealed and written last, after
//! every snapshot they name, so a listed restore point is always complete.
//!
//! The engine stores the manifest as opaque JSON; its shape belongs to the caller
//! (ferry-kube's `RestorePointManifest`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::aad;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;

const PREFIX: &str = "restorepoints";

/// Application names are Kubernetes namespace names: DNS labels.
fn check_application(app: &str) -> Result<()> {
    let ok = !app.is_empty()
        && app.len() <= 63
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !app.starts_with('-')
        && !app.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "application name",
            format!(
                "{app:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
            ),
        ))
    }
}

/// Key of a restore point.
pub fn restore_point_key(app: &str, id: &Id) -> String {
    format!("{PREFIX}/{app}/{id}")
}

impl Repository {
    /// Stores a restore point of `app`; call only after every snapshot it names exists.
    pub async fn save_restore_point<T: Serialize>(&self, app: &str, manifest: &T) -> Result<Id> {
        check_application(app)?;
        self.save_object(&format!("{PREFIX}/{app}"), aad::RESTORE_POINT, manifest)
            .await
    }

    /// Loads one restore point.
    pub async fn load_restore_point<T: DeserializeOwned + Send + 'static>(
        &self,
        app: &str,
        id: &Id,
    ) -> Result<T> {
        check_application(app)?;
        self.load_object(&restore_point_key(app, id), aad::RESTORE_POINT, id)
            .await
    }

    /// `(application, id)` of every restore point, or of one application's.
    pub async fn restore_point_ids(&self, app: Option<&str>) -> Result<Vec<(String, Id)>> {
        let prefix = match app {
            Some(a) => {
                check_application(a)?;
                format!("{PREFIX}/{a}/")
            }
            None => format!("{PREFIX}/"),
        };
        let listed = self.backend().list(&prefix).await?;
        let mut out: Vec<(String, Id)> = listed
            .iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(&format!("{PREFIX}/"))?;
                let (a, id) = rest.split_once('/')?;
                Some((a.to_string(), Id::parse(id).ok()?))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes a restore point (its snapshots stay until prune).
    pub async fn delete_restore_point(&self, app: &str, id: &Id) -> Result<()> {
        check_application(app)?;
        self.backend().delete(&restore_point_key(app, id)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::Deserialize;

    use super::*;
    use crate::InitOptions;
    use crate::backend::MemoryBackend;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Manifest {
        objects: Vec<String>,
        volumes: Vec<(String, String)>,
    }

    #[tokio::test]
    async fn restore_points_round_trip_per_application() {
        let repo = Repository::init(
            Arc::new(MemoryBackend::new()),
            b"k",
            InitOptions::small_for_tests(),
        )
        .await
        .expect("init");
        let m = Manifest {
            objects: vec!["v1/ConfigMap/app".into()],
            volumes: vec![("data-db-0".into(), "ab".repeat(32))],
        };
        let a = repo.save_restore_point("shop", &m).await.expect("save");
        let b = repo.save_restore_point("blog", &m).await.expect("save");
        assert_eq!(
            repo.restore_point_ids(Some("shop")).await.expect("list"),
            vec![("shop".to_string(), a)]
        );
        assert_eq!(repo.restore_point_ids(None).await.expect("list").len(), 2);
        let back: Manifest = repo.load_restore_point("shop", &a).await.expect("load");
        assert_eq!(back, m);
        assert!(
            repo.load_restore_point::<Manifest>("shop", &b)
                .await
                .is_err(),
            "wrong application"
        );
        let err = repo
            .save_restore_point("../x", &m)
            .await
            .expect_err("bad name");
        assert!(err.to_string().contains("namespace name"), "{err}");
        repo.delete_restore_point("shop", &a).await.expect("delete");
        assert!(
            repo.restore_point_ids(Some("shop"))
                .await
                .expect("list")
                .is_empty()
        );
    }
}
