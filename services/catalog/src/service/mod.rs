//! `ferry.v1.CatalogService`: profiles, applications and restore points.
//!
//! The service's state is here, with access checks and list_applications;
//! `api.rs` is the gRPC surface, `profiles.rs` and `restore_points.rs` do the work of
//! each family of calls, `page.rs` makes page tokens.

mod api;
mod page;
mod profiles;
mod restore_points;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_authz::Caller;
use ferry_proto::v1::catalog_service_server::CatalogServiceServer;
use ferry_proto::v1::{
    Application, ClusterRef, ListApplicationsRequest, ListApplicationsResponse, cluster_ref,
};
use ferry_repo::Repository;
use ferry_store::SecretBox;
use futures::Stream;
use parking_lot::Mutex;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::applications;
use crate::config::CatalogConfig;
use crate::db::{Db, ProfileRecord};
use crate::error::CatalogError;
use crate::keys::Keys;
use crate::profile::Material;
use crate::restore_points::timestamp;

use page::page;
pub(crate) use profiles::{holds_only, open_checked};

/// The catalog service. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CatalogService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: CatalogConfig,
    pub(crate) db: Db,
    /// The import and signing key pairs of migration tokens.
    pub(crate) keys: Keys,
    /// Names being created right now, so two racing creates cannot both write the
    /// agent file.
    creating: Mutex<HashSet<String>>,
    /// Opened repositories per profile for the catalog's own reads: opening derives the
    /// key (about a second by design) and loads the index. Reused only while the
    /// profile and its Secrets' contents are unchanged.
    cache: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    record: ProfileRecord,
    material: Material,
    repo: Repository,
}

impl std::fmt::Debug for CatalogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Releases a name claimed for creation.
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.name);
    }
}

impl CatalogService {
    /// Opens (or creates) `<data_dir>/catalog.db` and the data directory's secret key
    /// (`secret.key`, which seals the catalog's key pairs).
    pub async fn new(config: CatalogConfig) -> Result<Self, CatalogError> {
        let db = Db::open(&config.data_dir).await?;
        let dir = config.data_dir.clone();
        let sealer = tokio::task::spawn_blocking(move || SecretBox::load_or_create(&dir))
            .await
            .map_err(|e| CatalogError::Internal(format!("loading the secret key: {e}")))??;
        Ok(CatalogService {
            inner: Arc::new(Inner {
                keys: Keys::new(db.clone(), sealer),
                config,
                db,
                creating: Mutex::new(HashSet::new()),
                cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> CatalogServiceServer<CatalogService> {
        CatalogServiceServer::new(self)
    }

    pub(crate) fn cluster(&self) -> &str {
        &self.inner.config.cluster_name
    }

    pub(crate) fn client(&self) -> &kube::Client {
        &self.inner.config.client
    }

    pub(crate) fn internal_token(&self) -> Option<&str> {
        self.inner.config.internal_token.as_deref()
    }
}

impl CatalogService {
    async fn list_applications(
        &self,
        req: ListApplicationsRequest,
        reader: Option<&Caller>,
    ) -> Result<ListApplicationsResponse, CatalogError> {
        self.check_local(req.cluster.as_ref())?;
        let config = &self.inner.config;
        let page = page(req.page_size, &req.page_token)?;
        let mut names =
            applications::namespaces(&config.client, self.cluster(), &config.secrets_namespace)
                .await?;
        if let Some(after) = &page.after {
            names.retain(|n| n > after);
        }
        if let Some(caller) = reader {
            let visible = self.visible(caller, &names).await?;
            names.retain(|n| visible.contains(n));
        }
        let next_page_token = page.finish(&mut names, Clone::clone);
        let counts = applications::count(&config.client, self.cluster(), &names).await?;
        let newest = self.inner.db.newest_by_application(names).await?;
        Ok(ListApplicationsResponse {
            applications: counts
                .into_iter()
                .map(|c| Application {
                    last_restore_point_at: newest.get(&c.namespace).map(|ns| timestamp(*ns)),
                    namespace: c.namespace,
                    object_count: c.object_count,
                    volume_count: c.volume_count,
                    requested_storage_bytes: c.requested_storage_bytes,
                })
                .collect(),
            next_page_token,
        })
    }

    /// The catalog answers for its own cluster only; other clusters have their own.
    fn check_local(&self, cluster: Option<&ClusterRef>) -> Result<(), CatalogError> {
        match cluster.and_then(|c| c.target.as_ref()) {
            None | Some(cluster_ref::Target::Local(true)) => Ok(()),
            Some(cluster_ref::Target::Context(c)) if c == self.cluster() => Ok(()),
            Some(cluster_ref::Target::Local(false)) => Err(CatalogError::invalid(
                "cluster",
                "local is false but names no other cluster; leave cluster out for this one",
            )),
            Some(_) => Err(CatalogError::Unsupported {
                what: format!(
                    "listing another cluster's applications (this catalog serves cluster {})",
                    self.cluster()
                ),
                next_step: "ask the catalog of that cluster, or leave cluster out".into(),
            }),
        }
    }
}

pub(crate) fn validate_namespace(ns: &str) -> Result<(), CatalogError> {
    let ok = ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::invalid(
            "namespace",
            format!("{ns:?} is not a namespace name"),
        ))
    }
}
fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}
/// Runs one RPC's body in its span; a failure becomes a status, which the server's layer
/// (ferry_rpc::log) logs once.
async fn traced<T>(
    span: tracing::Span,
    body: impl Future<Output = Result<T, CatalogError>>,
) -> Result<Response<T>, Status> {
    body.instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
impl CatalogService {
    /// Whom a call showing restore points or applications is narrowed for: None shows
    /// everything (no caller checks, this process's scheduler, an administrator).
    async fn narrowed_for<T>(&self, request: &Request<T>) -> Result<Option<Caller>, Status> {
        let config = &self.inner.config;
        match &config.access {
            Some(authz) => authz
                .narrowed_for(request.metadata(), config.internal_token.as_deref())
                .await
                .map_err(|e| e.to_status()),
            None => Ok(None),
        }
    }

    /// Fails unless `caller` may see `namespace` (list its pods), naming it.
    async fn require_see(&self, caller: &Caller, namespace: &str) -> Result<(), CatalogError> {
        if let Some(authz) = &self.inner.config.access {
            authz
                .require(caller, &[ferry_authz::Access::see_namespace(namespace)])
                .await?;
        }
        Ok(())
    }

    /// The namespaces of `names` that `caller` may see.
    async fn visible(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<HashSet<String>, CatalogError> {
        match &self.inner.config.access {
            Some(authz) => Ok(authz.visible_namespaces(caller, names).await?),
            None => Ok(names.iter().cloned().collect()),
        }
    }

    /// Fails unless the caller is signed in, and an administrator when `admin_for`
    /// names what needs one; this process's scheduler passes; everyone passes when the
    /// catalog checks no callers.
    async fn review<T>(&self, request: &Request<T>, admin_for: Option<&str>) -> Result<(), Status> {
        let config = &self.inner.config;
        match &config.access {
            Some(authz) => authz
                .review(
                    request.metadata(),
                    admin_for,
                    config.internal_token.as_deref(),
                )
                .await
                .map_err(|e| e.to_status()),
            None => Ok(()),
        }
    }
}
