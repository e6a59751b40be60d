//! `ferry.v1.CatalogService`: profiles, applications and restore points.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use ferry_authz::Caller;
use ferry_kube::RestorePointManifest;
use ferry_proto::v1::catalog_service_server::{CatalogService as CatalogApi, CatalogServiceServer};
use ferry_proto::v1::{
    Application, CheckProfileRequest, CheckProfileResponse, ClusterRef, CreateImportKeyRequest,
    CreateImportKeyResponse, CreateProfileRequest, CreateProfileResponse, DeleteProfileRequest,
    DeleteProfileResponse, ErrorDetail, GetImportKeyRequest, GetImportKeyResponse,
    GetProfileRequest, GetProfileResponse, GetRestorePointRequest, GetRestorePointResponse,
    IssueMigrationTokenRequest, IssueMigrationTokenResponse, LabelRestorePointRequest,
    LabelRestorePointResponse, ListApplicationsRequest, ListApplicationsResponse,
    ListProfilesRequest, ListProfilesResponse, ListRestorePointsRequest, ListRestorePointsResponse,
    ProfileKind, Progress, PruneRepositoryRequest, PruneRepositoryResponse, RebuildIndexEvent,
    RebuildIndexRequest, RebuildIndexSummary, RepositoryRef, StorageBackend, cluster_ref,
    rebuild_index_event,
};
use ferry_repo::backend::{BackendError, DynBackend};
use ferry_repo::{Id, Repository};
use ferry_store::SecretBox;
use futures::{Stream, StreamExt, stream};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::applications;
use crate::config::CatalogConfig;
use crate::db::{Db, ProfileRecord};
use crate::error::CatalogError;
use crate::key_secret::{self, Origin};
use crate::keys::Keys;
use crate::migration::{PendingKey, generated_key_warning};
use crate::profile::{self, Material, NewProfile, Patience};
use crate::restore_points::{IndexedRestorePoint, UnsupportedFormat, timestamp};

/// Page size when a request leaves it 0, and the most a request may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Restore point manifests read at once.
const LOAD_CONCURRENCY: usize = 8;
const STREAM_BUFFER: usize = 16;
const REBUILD_STEP: &str = "rebuild-index";

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

    /// Opens the repository of `profile` afresh (its own index, not shared with the
    /// catalog's reads), for in-process users such as the transfer service. Checks that
    /// it is still the repository the profile was created for.
    pub async fn open_repository(&self, profile: &str) -> Result<Repository, CatalogError> {
        let record = self.profile_record(profile).await?;
        let material =
            profile::read_material(&self.inner.config.client, self.cluster(), &record).await?;
        let repo = open_checked(&record, &material, Patience::Normal).await?;
        Ok(repo)
    }

    /// CheckProfile: proves the profile works now. Opens its repository afresh (not from
    /// the cache) with the profile's credentials and key and lists its restore points;
    /// when `write` is asked and the profile may write (EXPORT, MIGRATION), writes and
    /// removes a probe object. An IMPORT profile is never written to: it reports
    /// `writable: false`. Any failure is an error, not a `false`.
    pub async fn check_profile(
        &self,
        name: &str,
        write: bool,
    ) -> Result<CheckProfileResponse, CatalogError> {
        let record = self.profile_record(name).await?;
        let material =
            profile::read_material(&self.inner.config.client, self.cluster(), &record).await?;
        // A person (or a pair check with a deadline) waits: fail soon rather than retry long.
        let repo = open_checked(&record, &material, Patience::Validate).await?;
        let listed = repo
            .restore_point_ids(None)
            .await
            .map_err(|e| profile::repo_error(&record, "listing restore points in", e))?;
        let location = profile::location(&record);
        let mut message = format!(
            "profile {name:?} on cluster {}: repository {} at {location} opens with its key, \
             {} restore point(s) listed",
            self.cluster(),
            record.repository_id,
            listed.len()
        );
        let import = record.kind == ProfileKind::Import as i32;
        let writable = write && !import;
        if writable {
            profile::probe_write(repo.backend())
                .await
                .map_err(|e| profile::repo_error(&record, "writing to", e.into()))?;
            message.push_str("; a probe object was written and removed");
        } else if write {
            message.push_str("; not written to: an import profile is read-only");
        }
        tracing::info!(repository = %record.repository_id, write, writable, "profile checked");
        Ok(CheckProfileResponse {
            repository_id: record.repository_id,
            readable: true,
            writable,
            message,
        })
    }

    pub(crate) async fn profile_record(&self, name: &str) -> Result<ProfileRecord, CatalogError> {
        profile::validate_name(name)?;
        self.inner
            .db
            .get_profile(name)
            .await?
            .ok_or_else(|| CatalogError::ProfileNotFound {
                name: name.to_string(),
                cluster: self.cluster().to_string(),
            })
    }

    /// The profile a request names and its repository, opened or from the cache.
    async fn repository(
        &self,
        r: Option<&RepositoryRef>,
    ) -> Result<(ProfileRecord, Repository), CatalogError> {
        let (record, _, repo) = self.repository_and_key(r).await?;
        Ok((record, repo))
    }

    /// [`Self::repository`], with the Secrets' contents that opened it.
    pub(crate) async fn repository_and_key(
        &self,
        r: Option<&RepositoryRef>,
    ) -> Result<(ProfileRecord, Material, Repository), CatalogError> {
        let r = r.ok_or_else(|| CatalogError::invalid("repository", "missing; name a profile"))?;
        let record = self.profile_record(&r.profile).await?;
        if !r.repository_id.is_empty() && r.repository_id != record.repository_id {
            return Err(CatalogError::RepositoryMismatch {
                profile: record.name.clone(),
                expected: r.repository_id.clone(),
                found: record.repository_id.clone(),
            });
        }
        let material =
            profile::read_material(&self.inner.config.client, self.cluster(), &record).await?;
        let cached = self
            .inner
            .cache
            .lock()
            .get(&record.name)
            .filter(|c| c.record == record && c.material == material)
            .map(|c| c.repo.clone());
        if let Some(repo) = cached {
            return Ok((record, material, repo));
        }
        let repo = open_checked(&record, &material, Patience::Normal).await?;
        self.inner.cache.lock().insert(
            record.name.clone(),
            Cached {
                record: record.clone(),
                material: material.clone(),
                repo: repo.clone(),
            },
        );
        Ok((record, material, repo))
    }

    /// CreateProfile. With a migration token, the token is verified and opened first and
    /// gives the location and the key; without a key Secret, a key is generated. Either
    /// way the key's Secret is made only by this call, and removed again when the call
    /// fails (unless it made a repository with a generated key: that key is its only copy).
    async fn create_profile(
        &self,
        req: CreateProfileRequest,
    ) -> Result<CreateProfileResponse, CatalogError> {
        let config = &self.inner.config;
        let (new, pending) = if req.migration_token.is_empty() {
            let new = profile::validate(&req, &config.secrets_namespace)?;
            let pending = new.generate_key.then(PendingKey::generated).transpose()?;
            (new, pending)
        } else {
            let (filled, pending, signer) = self.open_migration_token(&req).await?;
            let mut new = profile::validate(&filled, &config.secrets_namespace)?;
            new.record.token_signer = signer;
            (new, Some(pending))
        };
        let NewProfile {
            mut record,
            create_repository,
            mut warnings,
            ..
        } = new;
        let _claim = self.claim(&record.name)?;
        if self.inner.db.get_profile(&record.name).await?.is_some() {
            return Err(self.exists(&record.name));
        }
        let material = match &pending {
            None => profile::read_material(&config.client, self.cluster(), &record).await?,
            Some(p) => {
                key_secret::ensure_absent(
                    &config.client,
                    self.cluster(),
                    &record.key_secret,
                    p.origin,
                )
                .await?;
                Material {
                    s3: profile::read_credentials(&config.client, self.cluster(), &record).await?,
                    key: p.key.to_vec(),
                }
            }
        };
        let mut progress = CreateSteps::default();
        let stored = self
            .store_profile(
                &mut record,
                &material,
                create_repository,
                pending.as_ref(),
                &mut progress,
            )
            .await;
        if let Err(e) = stored {
            if let Some(p) = pending.as_ref().filter(|_| progress.secret_created) {
                self.forget_key_secret(&record, p.origin, progress.repository_created)
                    .await;
            }
            return Err(e);
        }
        if pending
            .as_ref()
            .is_some_and(|p| p.origin == Origin::Generated)
        {
            let warning =
                generated_key_warning(&record.name, &record.key_secret.to_string(), self.cluster());
            tracing::warn!("{warning}");
            warnings.push(warning);
        }
        tracing::info!(
            repository = %record.repository_id,
            location = %profile::location(&record),
            created = progress.repository_created,
            "profile created"
        );
        Ok(CreateProfileResponse {
            profile: Some(profile::to_proto(&record)),
            repository_created: progress.repository_created,
            warnings,
            migration_token: pending.and_then(|p| p.token),
        })
    }

    /// Creates the key Secret of a new profile.
    async fn make_key_secret(
        &self,
        record: &ProfileRecord,
        p: &PendingKey,
    ) -> Result<(), CatalogError> {
        key_secret::create(
            &self.inner.config.client,
            self.cluster(),
            &record.key_secret,
            &record.name,
            p.origin,
            &p.key,
            p.annotations.clone(),
        )
        .await
    }

    /// Removes a key Secret this call made, after the call failed.
    async fn forget_key_secret(&self, record: &ProfileRecord, origin: Origin, repo_created: bool) {
        if origin == Origin::Generated && repo_created {
            tracing::warn!(secret = %record.key_secret,
                "profile not created, but the repository was: keeping the generated key's \
                 Secret, the only copy of that repository's key");
            return;
        }
        let client = &self.inner.config.client;
        if let Err(e) = key_secret::delete_if_ours(
            client,
            self.cluster(),
            &record.key_secret,
            &record.name,
            origin,
        )
        .await
        {
            tracing::warn!(error = %e, secret = %record.key_secret,
                "could not remove the key Secret of the failed profile again");
        }
    }

    /// The checks and writes of CreateProfile once the request and the Secrets are read:
    /// the repository opens (or is made), access is as the kind needs, then the key
    /// Secret, agent file and row are written.
    async fn store_profile(
        &self,
        record: &mut ProfileRecord,
        material: &Material,
        create_repository: bool,
        pending: Option<&PendingKey>,
        progress: &mut CreateSteps,
    ) -> Result<(), CatalogError> {
        let config = &self.inner.config;
        let generated = pending.filter(|p| p.origin == Origin::Generated);
        // A generated key is stored before a repository is made with it, so it is never lost.
        if let Some(p) = generated {
            self.make_key_secret(record, p).await?;
            progress.secret_created = true;
        }
        let backend = profile::backend(record, material, Patience::Validate);
        let opened = open_or_init(
            record,
            backend.clone(),
            &material.key,
            create_repository,
            config,
        )
        .await;
        let (repo, created) = match opened {
            Err(CatalogError::WrongKey { location, .. }) if generated.is_some() => {
                return Err(CatalogError::invalid(
                    "encryption_key_secret",
                    format!(
                        "{location} already holds a repository, which a newly generated key \
                         cannot open: name the Secret with that repository's key"
                    ),
                ));
            }
            other => other?,
        };
        progress.repository_created = created;
        let found = repo.config().id.to_string();
        if let Some(token) = pending.and_then(|p| p.token.as_ref())
            && token.repository_id != found
        {
            return Err(CatalogError::TokenRepositoryMismatch {
                location: profile::location(record),
                expected: token.repository_id.clone(),
                found,
            });
        }
        check_access(record, &backend).await?;
        if record.kind == ProfileKind::Import as i32 {
            // Importing means listing what the source exported.
            repo.restore_point_ids(None)
                .await
                .map_err(|e| profile::repo_error(record, "listing restore points in", e))?;
        }
        record.repository_id = found;
        record.created_at_ns = now_ns();
        if let Some(p) = pending.filter(|p| p.origin == Origin::MigrationToken) {
            self.make_key_secret(record, p).await?;
            progress.secret_created = true;
        }

        if let Some(dir) = &config.agent_profiles_dir {
            let yaml = profile::agent_profile_yaml(record, material, self.inner.keys.sealer())?;
            profile::write_agent_profile(dir, &record.name, yaml).await?;
        }
        let inserted = self.inner.db.insert_profile(record.clone()).await;
        if !matches!(inserted, Ok(true)) {
            // The profile is not stored, so the agent must not have it either.
            if let Some(dir) = &config.agent_profiles_dir
                && let Err(e) = profile::remove_agent_profile(dir, &record.name).await
            {
                tracing::warn!(error = %e, "could not remove the agent profile file again");
            }
            inserted?;
            return Err(self.exists(&record.name));
        }
        Ok(())
    }

    fn claim(&self, name: &str) -> Result<Claim<'_>, CatalogError> {
        if !self.inner.creating.lock().insert(name.to_string()) {
            return Err(self.exists(name));
        }
        Ok(Claim {
            set: &self.inner.creating,
            name: name.to_string(),
        })
    }

    fn exists(&self, name: &str) -> CatalogError {
        CatalogError::ProfileExists {
            name: name.to_string(),
            cluster: self.cluster().to_string(),
        }
    }

    async fn list_profiles(
        &self,
        req: ListProfilesRequest,
    ) -> Result<ListProfilesResponse, CatalogError> {
        let kind = match ProfileKind::try_from(req.kind) {
            Ok(ProfileKind::Unspecified) => None,
            Ok(k) => Some(k as i32),
            Err(_) => {
                return Err(CatalogError::invalid(
                    "kind",
                    format!("{} is not a profile kind", req.kind),
                ));
            }
        };
        let limit = page_size(req.page_size);
        let after = decode_token(&req.page_token)?;
        let mut rows = self.inner.db.list_profiles(kind, after, limit + 1).await?;
        let next_page_token = next_token(&mut rows, limit, |p| p.name.clone());
        Ok(ListProfilesResponse {
            profiles: rows.iter().map(profile::to_proto).collect(),
            next_page_token,
        })
    }

    async fn delete_profile(&self, name: &str) -> Result<(), CatalogError> {
        let record = self.profile_record(name).await?;
        // The agent file goes first: a profile the catalog no longer lists must not stay
        // usable by the agent.
        if let Some(dir) = &self.inner.config.agent_profiles_dir {
            profile::remove_agent_profile(dir, &record.name).await?;
        }
        self.inner.db.delete_profile(name).await?;
        self.inner.cache.lock().remove(name);
        // The key a token brought goes with its profile (the source keeps the original); a
        // generated key stays, as it may be the only copy.
        if !record.token_signer.is_empty() {
            self.forget_key_secret(&record, Origin::MigrationToken, false)
                .await;
        }
        tracing::info!(repository = %record.repository_id, "profile deleted");
        Ok(())
    }

    async fn list_applications(
        &self,
        req: ListApplicationsRequest,
        reader: Option<&Caller>,
    ) -> Result<ListApplicationsResponse, CatalogError> {
        self.check_local(req.cluster.as_ref())?;
        let config = &self.inner.config;
        let limit = page_size(req.page_size);
        let after = decode_token(&req.page_token)?;
        let mut names =
            applications::namespaces(&config.client, self.cluster(), &config.secrets_namespace)
                .await?;
        if let Some(after) = &after {
            names.retain(|n| n > after);
        }
        if let Some(caller) = reader {
            let visible = self.visible(caller, &names).await?;
            names.retain(|n| visible.contains(n));
        }
        let next_page_token = next_token(&mut names, limit, Clone::clone);
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

    async fn list_restore_points(
        &self,
        req: ListRestorePointsRequest,
        reader: Option<&Caller>,
    ) -> Result<ListRestorePointsResponse, CatalogError> {
        let namespace = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
        if let Some(ns) = namespace {
            validate_namespace(ns)?;
            if let Some(caller) = reader {
                self.require_see(caller, ns).await?;
            }
        }
        let limit = page_size(req.page_size);
        let after = match decode_token(&req.page_token)? {
            None => None,
            Some(t) => Some(
                t.split_once(':')
                    .and_then(|(ns, id)| Some((ns.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(bad_token)?,
            ),
        };
        let (record, repo) = self.repository(req.repository.as_ref()).await?;
        self.sync_index(&record, &repo, namespace).await?;
        let mut rows = self
            .inner
            .db
            .restore_points_page(&record.repository_id, namespace, after, limit + 1)
            .await?;
        let next_page_token = next_token(&mut rows, limit, |r| {
            format!("{}:{}", r.created_at_ns, r.id)
        });
        // After the page is cut, so the token still continues the whole listing; a page
        // may hold fewer than page_size.
        if let (Some(caller), None) = (reader, namespace) {
            let apps: Vec<String> = rows
                .iter()
                .map(|r| r.application.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let visible = self.visible(caller, &apps).await?;
            rows.retain(|r| visible.contains(&r.application));
        }
        Ok(ListRestorePointsResponse {
            restore_points: rows.iter().map(|r| r.to_proto(false)).collect(),
            next_page_token,
        })
    }

    /// Brings the index of a repository (or of one application in it) in line with
    /// what the repository lists: new restore points are read and added, vanished ones
    /// removed. A restore point that does not decrypt is left out and logged;
    /// RebuildIndex reports it.
    async fn sync_index(
        &self,
        record: &ProfileRecord,
        repo: &Repository,
        application: Option<&str>,
    ) -> Result<(), CatalogError> {
        let listed = repo
            .restore_point_ids(application)
            .await
            .map_err(|e| profile::repo_error(record, "listing restore points in", e))?;
        let known = self
            .inner
            .db
            .indexed_ids(&record.repository_id, application)
            .await?;
        let present: HashSet<String> = listed.iter().map(|(_, id)| id.to_hex()).collect();
        let remove: Vec<String> = known.difference(&present).cloned().collect();
        let new: Vec<(String, Id)> = listed
            .into_iter()
            .filter(|(_, id)| !known.contains(&id.to_hex()))
            .collect();
        let loaded: Vec<Loaded> = stream::iter(new)
            .map(|(app, id)| load(record, repo, app, id))
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        let mut rows = Vec::new();
        for l in loaded {
            match l {
                Loaded::Ok(row) => rows.push(row),
                Loaded::Gone => {}
                Loaded::Unreadable { app, id, error } => {
                    tracing::warn!(restore_point = %format!("{app}/{id}"), error = %error,
                        "restore point left out of the listing");
                }
                Loaded::Failed(e) => return Err(e),
            }
        }
        if !remove.is_empty() || !rows.is_empty() {
            self.inner
                .db
                .update_index(&record.repository_id, remove, &rows)
                .await?;
        }
        Ok(())
    }

    async fn get_restore_point(
        &self,
        req: GetRestorePointRequest,
        reader: Option<&Caller>,
    ) -> Result<GetRestorePointResponse, CatalogError> {
        let id = Id::parse(&req.id).map_err(|_| {
            CatalogError::invalid(
                "id",
                format!("{:?} is not a restore point id (64 hex digits)", req.id),
            )
        })?;
        let (record, repo) = self.repository(req.repository.as_ref()).await?;
        let not_found = || CatalogError::RestorePointNotFound {
            id: req.id.clone(),
            profile: record.name.clone(),
            location: profile::location(&record),
        };
        let indexed_app = self
            .inner
            .db
            .restore_point(&record.repository_id, &id.to_hex())
            .await?
            .map(|r| r.application);
        let app = match indexed_app {
            Some(app) => app,
            None => repo
                .restore_point_ids(None)
                .await
                .map_err(|e| profile::repo_error(&record, "listing restore points in", e))?
                .into_iter()
                .find(|(_, found)| *found == id)
                .map(|(app, _)| app)
                .ok_or_else(not_found)?,
        };
        // Refused by namespace, as Kubernetes answers Forbidden naming what was asked.
        if let Some(caller) = reader {
            self.require_see(caller, &app).await?;
        }
        let row = match load(&record, &repo, app, id).await {
            Loaded::Ok(row) => row,
            Loaded::Gone => {
                self.inner
                    .db
                    .update_index(&record.repository_id, vec![id.to_hex()], &[])
                    .await?;
                return Err(not_found());
            }
            Loaded::Unreadable { error, .. } | Loaded::Failed(error) => return Err(error),
        };
        self.inner
            .db
            .update_index(
                &record.repository_id,
                Vec::new(),
                std::slice::from_ref(&row),
            )
            .await?;
        let mut rp = row.to_proto(true);
        for v in &mut rp.volumes {
            // File counts live in the snapshots, not the restore point: one small read each.
            let snapshot = match Id::parse(&v.snapshot_id) {
                Ok(sid) => repo.load_snapshot(&sid).await,
                Err(e) => Err(e),
            };
            match snapshot {
                Ok(s) => v.files = s.summary.files,
                Err(e) => tracing::warn!(snapshot = %v.snapshot_id, pvc = %v.pvc_name,
                    error = %e, "volume snapshot unreadable; file count unknown"),
            }
        }
        Ok(GetRestorePointResponse {
            restore_point: Some(rp),
        })
    }

    /// LabelRestorePoint: sets (or removes) labels the catalog keeps on a restore point
    /// the repository holds. One not indexed yet is looked for in the repository first.
    async fn label_restore_point(
        &self,
        req: LabelRestorePointRequest,
    ) -> Result<LabelRestorePointResponse, CatalogError> {
        let id = Id::parse(&req.id).map_err(|_| {
            CatalogError::invalid(
                "id",
                format!("{:?} is not a restore point id (64 hex digits)", req.id),
            )
        })?;
        check_labels(&req.labels)?;
        let (record, repo) = self.repository(req.repository.as_ref()).await?;
        let hex = id.to_hex();
        let mut labels: Vec<(String, String)> = req.labels.into_iter().collect();
        labels.sort();
        let db = &self.inner.db;
        let mut found = db
            .set_labels(&record.repository_id, &hex, labels.clone())
            .await?;
        if !found {
            self.sync_index(&record, &repo, None).await?;
            found = db
                .set_labels(&record.repository_id, &hex, labels.clone())
                .await?;
        }
        let not_found = || CatalogError::RestorePointNotFound {
            id: hex.clone(),
            profile: record.name.clone(),
            location: profile::location(&record),
        };
        if !found {
            return Err(not_found());
        }
        let row = db
            .restore_point(&record.repository_id, &hex)
            .await?
            .ok_or_else(not_found)?;
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        tracing::info!(restore_point = %hex, labels = ?keys, "restore point labelled");
        Ok(LabelRestorePointResponse {
            restore_point: Some(row.to_proto(false)),
        })
    }

    /// Reads every restore point of the repository and replaces its index, reporting
    /// progress on `tx`. A transport or permission failure stops the rebuild and leaves
    /// the old index; only restore points that fail to decrypt or parse are skipped.
    async fn rebuild(
        &self,
        record: ProfileRecord,
        repo: Repository,
        tx: &mpsc::Sender<Result<RebuildIndexEvent, Status>>,
    ) -> Result<Option<RebuildIndexSummary>, CatalogError> {
        let started = Instant::now();
        let ids = repo
            .restore_point_ids(None)
            .await
            .map_err(|e| profile::repo_error(&record, "listing restore points in", e))?;
        let total = ids.len() as u64;
        let progress = |done: u64| RebuildIndexEvent {
            event: Some(rebuild_index_event::Event::Progress(Progress {
                step: REBUILD_STEP.into(),
                objects_done: done,
                objects_total: total,
                ..Default::default()
            })),
        };
        if tx.send(Ok(progress(0))).await.is_err() {
            return Ok(None);
        }
        // About a hundred updates at most, however large the repository.
        let every = (total / 100).max(1);
        let mut loads = stream::iter(ids)
            .map(|(app, id)| load(&record, &repo, app, id))
            .buffer_unordered(LOAD_CONCURRENCY);
        let (mut rows, mut errors, mut done) = (Vec::new(), Vec::new(), 0u64);
        while let Some(l) = loads.next().await {
            done += 1;
            match l {
                Loaded::Ok(row) => rows.push(row),
                Loaded::Gone => {}
                Loaded::Unreadable { app, id, error } => errors.push(unreadable(&app, &id, error)),
                Loaded::Failed(e) => return Err(e),
            }
            if (done % every == 0 || done == total) && tx.send(Ok(progress(done))).await.is_err() {
                // Nobody is listening: leave the old index as it was.
                return Ok(None);
            }
        }
        drop(loads);
        self.inner
            .db
            .replace_index(&record.repository_id, &rows)
            .await?;
        let elapsed = started.elapsed();
        tracing::info!(
            restore_points = total,
            unreadable = errors.len(),
            ?elapsed,
            "index rebuilt"
        );
        Ok(Some(RebuildIndexSummary {
            restore_points: total,
            unreadable: errors.len() as u64,
            duration: Some(prost_types::Duration {
                seconds: elapsed.as_secs() as i64,
                nanos: elapsed.subsec_nanos() as i32,
            }),
            errors,
        }))
    }
}

/// What CreateProfile has done so far, for undoing it when a later step fails.
#[derive(Debug, Default)]
struct CreateSteps {
    secret_created: bool,
    repository_created: bool,
}

/// Outcome of reading one restore point.
enum Loaded {
    Ok(IndexedRestorePoint),
    /// Deleted between listing and reading.
    Gone,
    /// Does not decrypt, verify or parse: reported, left out.
    Unreadable {
        app: String,
        id: String,
        error: CatalogError,
    },
    /// The store failed: the caller stops.
    Failed(CatalogError),
}

async fn load(record: &ProfileRecord, repo: &Repository, app: String, id: Id) -> Loaded {
    use ferry_repo::Error as R;
    let hex = id.to_hex();
    match repo
        .load_restore_point::<RestorePointManifest>(&app, &id)
        .await
    {
        Ok(m) => match IndexedRestorePoint::from_manifest(&hex, &app, &m) {
            Ok(row) => Loaded::Ok(row),
            Err(UnsupportedFormat(found)) => Loaded::Unreadable {
                error: CatalogError::Repo {
                    context: format!("restore point {app}/{hex}"),
                    source: Box::new(R::UnsupportedVersion {
                        found,
                        supported: ferry_kube::RESTORE_POINT_FORMAT,
                    }),
                },
                app,
                id: hex,
            },
        },
        Err(e) if e.is_not_found() => Loaded::Gone,
        Err(e @ (R::Corrupt { .. } | R::UnsupportedVersion { .. })) => Loaded::Unreadable {
            error: profile::repo_error(record, "reading restore point from", e),
            app,
            id: hex,
        },
        Err(e) => Loaded::Failed(profile::repo_error(record, "reading restore point from", e)),
    }
}

fn unreadable(app: &str, id: &str, e: CatalogError) -> ErrorDetail {
    let mut d = e.detail();
    d.message = format!("restore point {app}/{id}: {}", d.message);
    d
}

/// Opens a profile's repository and checks it is the one the profile was made for.
pub(crate) async fn open_checked(
    record: &ProfileRecord,
    m: &Material,
    patience: Patience,
) -> Result<Repository, CatalogError> {
    let backend = profile::backend(record, m, patience);
    let repo = Repository::open(backend, &m.key)
        .await
        .map_err(|e| profile::repo_error(record, "opening", e))?;
    let found = repo.config().id.to_string();
    if found != record.repository_id {
        return Err(CatalogError::RepositoryMismatch {
            profile: record.name.clone(),
            expected: record.repository_id.clone(),
            found,
        });
    }
    Ok(repo)
}

/// Opens the repository at a new profile's location, creating it when asked and
/// nothing is there. Returns whether this call created it.
async fn open_or_init(
    record: &ProfileRecord,
    backend: DynBackend,
    key: &[u8],
    create: bool,
    config: &CatalogConfig,
) -> Result<(Repository, bool), CatalogError> {
    use ferry_repo::Error as R;
    match Repository::open(backend.clone(), key).await {
        Ok(repo) => Ok((repo, false)),
        Err(R::NotFound { .. }) if create => {
            match Repository::init(backend.clone(), key, config.init_options.clone()).await {
                Ok(repo) => Ok((repo, true)),
                // Someone else created it meanwhile: validate the key against theirs.
                Err(R::AlreadyExists { .. }) => Repository::open(backend, key)
                    .await
                    .map(|r| (r, false))
                    .map_err(|e| profile::repo_error(record, "opening", e)),
                Err(e) => Err(profile::repo_error(record, "initialising", e)),
            }
        }
        Err(e) => Err(profile::repo_error(record, "opening", e)),
    }
}

/// Export and migration profiles must write; import profiles on S3 must not be able to.
async fn check_access(record: &ProfileRecord, backend: &DynBackend) -> Result<(), CatalogError> {
    let probe = profile::probe_write(backend).await;
    if record.kind == ProfileKind::Import as i32 {
        if record.backend != StorageBackend::S3 as i32 {
            // A directory's permissions are the host's business, not a policy to check.
            return Ok(());
        }
        return match probe {
            Ok(()) => Err(CatalogError::ImportCanWrite {
                profile: record.name.clone(),
                location: profile::location(record),
            }),
            Err(e) if e.is_transient() => Err(profile::repo_error(record, "writing to", e.into())),
            Err(BackendError::Permanent { .. }) => Ok(()),
            Err(e) => Err(profile::repo_error(record, "writing to", e.into())),
        };
    }
    probe.map_err(|e| profile::repo_error(record, "writing to", e.into()))
}

/// Most labels one LabelRestorePoint may set, and their sizes.
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 253;
const MAX_LABEL_VALUE: usize = 1024;

/// Label keys as Kubernetes writes them (`ferry.dev/import-policy`); values any printable
/// text.
fn check_labels(labels: &HashMap<String, String>) -> Result<(), CatalogError> {
    if labels.is_empty() {
        return Err(CatalogError::invalid(
            "labels",
            "empty; give at least one label to set (an empty value removes one)",
        ));
    }
    if labels.len() > MAX_LABELS {
        return Err(CatalogError::invalid(
            "labels",
            format!("{} labels, at most {MAX_LABELS} at once", labels.len()),
        ));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_ok {
            return Err(CatalogError::invalid(
                "labels",
                format!(
                    "key {key:?} is not a label key: 1 to {MAX_LABEL_KEY} letters, digits and \
                     -_./ such as \"ferry.dev/import-policy\""
                ),
            ));
        }
        if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
            return Err(CatalogError::invalid(
                "labels",
                format!(
                    "value of {key:?} must be at most {MAX_LABEL_VALUE} bytes of printable text"
                ),
            ));
        }
    }
    Ok(())
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

fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn bad_token() -> CatalogError {
    CatalogError::invalid(
        "page_token",
        "not a token this call returned; pass next_page_token unchanged, or leave it empty",
    )
}

/// Page tokens are opaque to clients: the last key of the previous page.
fn decode_token(token: &str) -> Result<Option<String>, CatalogError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad_token())?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad_token())
}

/// Cuts `rows` (fetched with one extra) to `limit` and returns the next page's token.
fn next_token<T>(rows: &mut Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> String {
    if rows.len() <= limit {
        return String::new();
    }
    rows.truncate(limit);
    rows.last()
        .map(|last| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key(last)))
        .unwrap_or_default()
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

#[tonic::async_trait]
impl CatalogApi for CatalogService {
    type RebuildIndexStream = EventStream<RebuildIndexEvent>;

    async fn create_profile(
        &self,
        request: Request<CreateProfileRequest>,
    ) -> Result<Response<CreateProfileResponse>, Status> {
        self.review(&request, Some("creating a profile")).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.create_profile", profile = %req.name);
        traced(span, self.create_profile(req)).await
    }

    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        self.review(&request, None).await?;
        let name = request.into_inner().name;
        let span = tracing::info_span!("catalog.get_profile", profile = %name);
        traced(span, async {
            let record = self.profile_record(&name).await?;
            Ok(GetProfileResponse {
                profile: Some(profile::to_proto(&record)),
            })
        })
        .await
    }

    async fn list_profiles(
        &self,
        request: Request<ListProfilesRequest>,
    ) -> Result<Response<ListProfilesResponse>, Status> {
        self.review(&request, None).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.list_profiles", kind = req.kind);
        traced(span, self.list_profiles(req)).await
    }

    async fn delete_profile(
        &self,
        request: Request<DeleteProfileRequest>,
    ) -> Result<Response<DeleteProfileResponse>, Status> {
        self.review(&request, Some("deleting a profile")).await?;
        let name = request.into_inner().name;
        let span = tracing::info_span!("catalog.delete_profile", profile = %name);
        traced(span, async {
            self.delete_profile(&name).await?;
            Ok(DeleteProfileResponse {})
        })
        .await
    }

    async fn list_applications(
        &self,
        request: Request<ListApplicationsRequest>,
    ) -> Result<Response<ListApplicationsResponse>, Status> {
        let reader = self.narrowed_for(&request).await?;
        let span = tracing::info_span!("catalog.list_applications", cluster = %self.cluster());
        traced(
            span,
            self.list_applications(request.into_inner(), reader.as_ref()),
        )
        .await
    }

    async fn list_restore_points(
        &self,
        request: Request<ListRestorePointsRequest>,
    ) -> Result<Response<ListRestorePointsResponse>, Status> {
        let reader = self.narrowed_for(&request).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.list_restore_points",
            profile = profile.as_deref().unwrap_or_default(), namespace = %req.namespace);
        traced(span, self.list_restore_points(req, reader.as_ref())).await
    }

    async fn get_restore_point(
        &self,
        request: Request<GetRestorePointRequest>,
    ) -> Result<Response<GetRestorePointResponse>, Status> {
        let reader = self.narrowed_for(&request).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.get_restore_point",
            profile = profile.as_deref().unwrap_or_default(), id = %req.id);
        traced(span, self.get_restore_point(req, reader.as_ref())).await
    }

    async fn label_restore_point(
        &self,
        request: Request<LabelRestorePointRequest>,
    ) -> Result<Response<LabelRestorePointResponse>, Status> {
        self.review(&request, Some("labelling a restore point"))
            .await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.label_restore_point",
            profile = profile.as_deref().unwrap_or_default(), id = %req.id);
        traced(span, self.label_restore_point(req)).await
    }

    async fn check_profile(
        &self,
        request: Request<CheckProfileRequest>,
    ) -> Result<Response<CheckProfileResponse>, Status> {
        // It derives the repository key (argon2, tens of MiB) and may write to the store.
        self.review(&request, Some("checking a profile")).await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.check_profile", profile = %req.name,
            write = req.write);
        traced(span, self.check_profile(&req.name, req.write)).await
    }

    async fn create_import_key(
        &self,
        request: Request<CreateImportKeyRequest>,
    ) -> Result<Response<CreateImportKeyResponse>, Status> {
        self.review(&request, Some("creating the import key"))
            .await?;
        let span = tracing::info_span!("catalog.create_import_key");
        traced(span, async {
            let (key, created) = self.import_key(true).await?;
            Ok(CreateImportKeyResponse {
                key: Some(key),
                created,
            })
        })
        .await
    }

    async fn get_import_key(
        &self,
        request: Request<GetImportKeyRequest>,
    ) -> Result<Response<GetImportKeyResponse>, Status> {
        self.review(&request, None).await?;
        let span = tracing::info_span!("catalog.get_import_key");
        traced(span, async {
            let (key, _) = self.import_key(false).await?;
            Ok(GetImportKeyResponse { key: Some(key) })
        })
        .await
    }

    async fn issue_migration_token(
        &self,
        request: Request<IssueMigrationTokenRequest>,
    ) -> Result<Response<IssueMigrationTokenResponse>, Status> {
        self.review(&request, Some("issuing a migration token"))
            .await?;
        let req = request.into_inner();
        let span = tracing::info_span!("catalog.issue_migration_token", profile = %req.profile,
            namespace = %req.namespace);
        traced(span, self.issue_migration_token(req)).await
    }

    async fn prune_repository(
        &self,
        request: Request<PruneRepositoryRequest>,
    ) -> Result<Response<PruneRepositoryResponse>, Status> {
        self.review(&request, Some("pruning a repository")).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!("catalog.prune_repository",
            profile = profile.as_deref().unwrap_or_default(), namespace = %req.namespace,
            keep_last = req.keep_last, max_age_s = req.max_age.map(|d| d.seconds),
            dry_run = req.dry_run);
        traced(span, self.prune_repository(req)).await
    }

    async fn rebuild_index(
        &self,
        request: Request<RebuildIndexRequest>,
    ) -> Result<Response<Self::RebuildIndexStream>, Status> {
        self.review(&request, Some("rebuilding the index")).await?;
        let req = request.into_inner();
        let profile = req.repository.as_ref().map(|r| r.profile.clone());
        let span = tracing::info_span!(
            "catalog.rebuild_index",
            profile = profile.as_deref().unwrap_or_default()
        );
        // Opening fails the call itself; later failures end the stream with a status.
        let (record, repo) = traced(span.clone(), self.repository(req.repository.as_ref()))
            .await?
            .into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(
            async move {
                let last = match service.rebuild(record, repo, &tx).await {
                    Ok(Some(summary)) => Ok(RebuildIndexEvent {
                        event: Some(rebuild_index_event::Event::Done(summary)),
                    }),
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "rebuild failed");
                        Err(Status::from(e))
                    }
                };
                let _ = tx.send(last).await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_junk() {
        let mut rows = vec!["a".to_string(), "b".into(), "c".into()];
        let token = next_token(&mut rows, 2, Clone::clone);
        assert_eq!(rows, vec!["a", "b"]);
        assert_eq!(decode_token(&token).expect("decode"), Some("b".into()));
        let mut last = vec!["a".to_string()];
        assert_eq!(next_token(&mut last, 2, Clone::clone), "");
        assert!(decode_token("%%%").is_err());
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(5000), MAX_PAGE);
    }

    #[test]
    fn labels_are_checked() {
        let one = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(check_labels(&one("ferry.dev/import-policy", "nightly")).is_ok());
        assert!(
            check_labels(&one("ferry.dev/import-policy", "")).is_ok(),
            "removal"
        );
        assert!(check_labels(&HashMap::new()).is_err());
        assert!(check_labels(&one("", "x")).is_err());
        assert!(check_labels(&one("a b", "x")).is_err());
        assert!(check_labels(&one("k", "line\nbreak")).is_err());
        assert!(check_labels(&one("k", &"x".repeat(MAX_LABEL_VALUE + 1))).is_err());
    }
}
