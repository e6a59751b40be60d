//! Profiles: CreateProfile's steps (and their undoing), listing, deleting and checking
//! profiles, and opening the repository behind one.

use ferry_proto::v1::{
    CheckProfileResponse, CreateProfileRequest, CreateProfileResponse, ListProfilesRequest,
    ListProfilesResponse, ProfileKind, RepositoryRef, StorageBackend,
};
use ferry_repo::Repository;
use ferry_repo::backend::{BackendError, DynBackend};

use crate::config::CatalogConfig;
use crate::db::{Inserted, ProfileRecord};
use crate::error::CatalogError;
use crate::key_secret::{self, Origin};
use crate::migration::{PendingKey, generated_key_warning};
use crate::profile::{self, Material, NewProfile, Patience};

use super::page::page;
use super::{Cached, CatalogService, Claim, now_ns};

impl CatalogService {
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
    pub(super) async fn repository(
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
    pub(super) async fn create_profile(
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
            // The profile reads only what the token names.
            if let Some(info) = &pending.token {
                new.record.token_namespace = info.namespace.clone();
                new.record.token_restore_point = info.restore_point_id.clone();
            }
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
    pub(super) async fn make_key_secret(
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
    pub(super) async fn forget_key_secret(
        &self,
        record: &ProfileRecord,
        origin: Origin,
        repo_created: bool,
    ) {
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
    pub(super) async fn store_profile(
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
        if !record.namespace.is_empty() {
            holds_only(record, &repo).await?;
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
        let token_use = pending.and_then(|p| p.token_use.clone());
        let inserted = self
            .inner
            .db
            .insert_profile(record.clone(), token_use)
            .await;
        if !matches!(inserted, Ok(Inserted::Yes)) {
            // The profile is not stored, so the agent must not have it either.
            if let Some(dir) = &config.agent_profiles_dir
                && let Err(e) = profile::remove_agent_profile(dir, &record.name).await
            {
                tracing::warn!(error = %e, "could not remove the agent profile file again");
            }
            return Err(match inserted? {
                Inserted::TokenUsed(used) => self.token_used(used),
                _ => self.exists(&record.name),
            });
        }
        Ok(())
    }

    pub(super) fn claim(&self, name: &str) -> Result<Claim<'_>, CatalogError> {
        if !self.inner.creating.lock().insert(name.to_string()) {
            return Err(self.exists(name));
        }
        Ok(Claim {
            set: &self.inner.creating,
            name: name.to_string(),
        })
    }

    pub(super) fn exists(&self, name: &str) -> CatalogError {
        CatalogError::ProfileExists {
            name: name.to_string(),
            cluster: self.cluster().to_string(),
        }
    }

    pub(super) async fn list_profiles(
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
        let page = page(req.page_size, &req.page_token)?;
        let mut rows = self
            .inner
            .db
            .list_profiles(kind, page.after.clone(), page.fetch())
            .await?;
        let next_page_token = page.finish(&mut rows, |p| p.name.clone());
        Ok(ListProfilesResponse {
            profiles: rows.iter().map(profile::to_proto).collect(),
            next_page_token,
        })
    }

    pub(super) async fn delete_profile(&self, name: &str) -> Result<(), CatalogError> {
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
}

/// Fails unless the repository of `record`, an export profile bound to a namespace,
/// holds restore points of that namespace only; else returns them (namespace, id).
pub(crate) async fn holds_only(
    record: &ProfileRecord,
    repo: &Repository,
) -> Result<Vec<(String, ferry_repo::Id)>, CatalogError> {
    let listed = repo
        .restore_point_ids(None)
        .await
        .map_err(|e| profile::repo_error(record, "listing restore points in", e))?;
    let others: std::collections::BTreeSet<&str> = listed
        .iter()
        .map(|(app, _)| app.as_str())
        .filter(|app| *app != record.namespace)
        .collect();
    if !others.is_empty() {
        return Err(CatalogError::BoundRepositoryHoldsOthers {
            location: profile::location(record),
            namespace: record.namespace.clone(),
            others: others.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(listed)
}

/// What CreateProfile has done so far, for undoing it when a later step fails.
#[derive(Debug, Default)]
pub(super) struct CreateSteps {
    secret_created: bool,
    repository_created: bool,
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
pub(super) async fn open_or_init(
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
pub(super) async fn check_access(
    record: &ProfileRecord,
    backend: &DynBackend,
) -> Result<(), CatalogError> {
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
