//! Profile objects onto the catalog: `CreateProfile` when the object's creator is a
//! Ferry administrator, `DeleteProfile` when the object goes (the repository and its
//! restore points stay, as with `ferry profile delete`).

use std::sync::Arc;

use ferry_crd::{Backend, Profile, ProfileStatus, RepositoryUse, SecretKeyRef, set_condition};
use ferry_proto::v1::{
    CreateProfileRequest, DeleteProfileRequest, GetProfileRequest, ProfileKind, SecretRef,
    StorageBackend,
};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use tonic::Code;

use crate::Ctx;
use crate::error::{Error, Result};
use crate::status::{condition, reason_of, refused};

/// How often a Profile waiting for its token Secret looks again.
const SECRET_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// The controller's entry for one Profile.
pub async fn reconcile(p: Arc<Profile>, ctx: Arc<Ctx>) -> Result<Action> {
    let api: Api<Profile> = Api::all(ctx.client.clone());
    finalizer(&api, ferry_crd::FINALIZER, p, |event| async {
        match event {
            Event::Apply(p) => apply(&api, &p, &ctx).await,
            Event::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn is_ready(status: &ProfileStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn apply(api: &Api<Profile>, p: &Profile, ctx: &Ctx) -> Result<Action> {
    let mut status = p.status.clone().unwrap_or_default();
    let g = p.metadata.generation;
    // Done, or refused for this spec (which cannot change); a missing Secret is
    // looked for again.
    let refused_now = status.observed_generation == g
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason != "SecretNotFound");
    if is_ready(&status) || refused_now {
        return Ok(Action::await_change());
    }
    let name = p.name_any();
    let who = match crate::admin::administrator(
        ctx,
        p.metadata.annotations.as_ref(),
        "Profile",
        &name,
        "create repository profiles",
    )
    .await?
    {
        Ok(who) => who,
        Err((reason, message)) => return not_ready(api, p, ctx, status, reason, &message).await,
    };
    let token = match &p.spec.migration_token_secret_ref {
        None => String::new(),
        Some(r) => match crate::admin::secret_value(ctx, r).await? {
            Ok(token) => token,
            Err(missing) => {
                let message =
                    format!("{missing}; put the source's migration token (`ferry export`) there");
                not_ready(api, p, ctx, status, "SecretNotFound", &message).await?;
                return Ok(Action::requeue(SECRET_RETRY));
            }
        },
    };
    let created = ctx
        .catalog
        .clone()
        .create_profile(create_request(p, token))
        .await;
    let (profile, warnings) = match created {
        Ok(r) => {
            let r = r.into_inner();
            (r.profile.unwrap_or_default(), r.warnings)
        }
        // Made by a reconcile that died before writing the status: the same location
        // is the same profile; another one of that name is someone else's.
        Err(s) if s.code() == Code::AlreadyExists => {
            let existing = ctx
                .catalog
                .clone()
                .get_profile(GetProfileRequest { name: name.clone() })
                .await
                .map_err(|status| Error::Service {
                    what: format!("reading profile {name}"),
                    status,
                })?
                .into_inner()
                .profile
                .unwrap_or_default();
            let same = existing.bucket == p.spec.bucket
                && existing.prefix == p.spec.prefix
                && existing.endpoint == p.spec.endpoint;
            if !same {
                let message = format!(
                    "the catalog of cluster {} already has a profile {name} for another \
                     location ({}/{}); name this Profile otherwise",
                    ctx.cluster, existing.bucket, existing.prefix
                );
                return not_ready(api, p, ctx, status, "AlreadyExists", &message).await;
            }
            (existing, Vec::new())
        }
        Err(s) if refused(s.code()) => {
            tracing::info!(profile = %name, user = %who.username, reason = %s.message(),
                "profile refused");
            return not_ready(api, p, ctx, status, reason_of(s.code()), s.message()).await;
        }
        Err(status) => {
            return Err(Error::Service {
                what: format!("creating profile {name}"),
                status,
            });
        }
    };
    tracing::info!(profile = %name, repository = %profile.repository_id, user = %who.username,
        "profile created");
    status.observed_generation = g;
    status.repository_id = profile.repository_id;
    status.warnings = warnings;
    set_condition(
        &mut status.conditions,
        condition(
            "Ready",
            "True",
            "Created",
            &format!(
                "the catalog of cluster {} holds profile {name}",
                ctx.cluster
            ),
            g,
        ),
    );
    crate::status::write(api, p, p.status.as_ref(), &status, &ctx.cluster).await?;
    Ok(Action::await_change())
}

fn secret_ref(r: &Option<SecretKeyRef>) -> Option<SecretRef> {
    r.as_ref().map(|r| SecretRef {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    })
}

fn create_request(p: &Profile, migration_token: String) -> CreateProfileRequest {
    let s = &p.spec;
    CreateProfileRequest {
        name: p.name_any(),
        kind: match s.kind {
            RepositoryUse::Migration => ProfileKind::Migration,
            RepositoryUse::Export => ProfileKind::Export,
            RepositoryUse::Import => ProfileKind::Import,
        } as i32,
        // A token carries the location: the request must leave it out.
        backend: if migration_token.is_empty() {
            match s.backend {
                Backend::S3 => StorageBackend::S3,
                Backend::Local => StorageBackend::Local,
            }
        } else {
            StorageBackend::Unspecified
        } as i32,
        endpoint: s.endpoint.clone(),
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone(),
        region: s.region.clone(),
        credentials_secret: secret_ref(&s.credentials_secret_ref),
        verify_tls: s.verify_tls,
        encryption_key_secret: secret_ref(&s.encryption_key_secret_ref),
        create_repository: s.create_repository,
        migration_token,
        expected_signer: s.expected_signer.clone(),
        unsafe_skip_signer_verification: s.unsafe_skip_signer_verification,
        namespace: s.bound_namespace.clone(),
    }
}

/// Before the object goes: the profile goes from the catalog, if this object made it.
async fn cleanup(p: &Profile, ctx: &Ctx) -> Result<Action> {
    if !p.status.as_ref().is_some_and(is_ready) {
        return Ok(Action::await_change());
    }
    let name = p.name_any();
    match ctx
        .catalog
        .clone()
        .delete_profile(DeleteProfileRequest { name: name.clone() })
        .await
    {
        Ok(_) => {
            tracing::info!(profile = %name, "Profile deleted: profile removed");
            Ok(Action::await_change())
        }
        Err(s) if s.code() == Code::NotFound => Ok(Action::await_change()),
        Err(status) => Err(Error::Service {
            what: format!("deleting profile {name}"),
            status,
        }),
    }
}

async fn not_ready(
    api: &Api<Profile>,
    p: &Profile,
    ctx: &Ctx,
    mut status: ProfileStatus,
    reason: &str,
    message: &str,
) -> Result<Action> {
    let g = p.metadata.generation;
    status.observed_generation = g;
    set_condition(
        &mut status.conditions,
        condition("Ready", "False", reason, message, g),
    );
    crate::status::write(api, p, p.status.as_ref(), &status, &ctx.cluster).await?;
    Ok(Action::await_change())
}
