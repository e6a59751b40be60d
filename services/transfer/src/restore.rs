//! The restore runner (an import when a schedule starts it): read a restore point from
//! a repository, check that its data is there, narrow it to what the request selects,
//! then the destination half of a migration: pre-flight, restore volumes through the
//! destination's agent, apply, start.
//!
//! A restore never hands a workload an empty volume: the restore point and each of its
//! snapshots are read before anything is planned, and the volumes are restored before
//! any object is applied, so a repository that cannot be read fails the job while the
//! destination has none of the application's objects.

use std::collections::HashSet;

use ferry_kube::{
    Captured, Exclusion, ExclusionReason, RestorePointManifest, VolumeSnapshot,
    resource::matches_type,
};
use ferry_proto::v1::{
    ApplicationSelector, JobState, RepositoryRef, StartRestoreRequest, StepState,
};
use ferry_repo::{Id, Repository};
use kube::core::{Expression, Selector, SelectorExt};

use crate::deps::cluster_key;
use crate::destination::Destination;
use crate::error::{Result, TransferError};
use crate::job::steps;
use crate::migrate::target_namespace;
use crate::preflight::preflight;
use crate::runtime::{JobRun, captured_outcomes};

/// Runs (or resumes) a restore or an import; the state it ends in, or the error that
/// stopped it. Its requester must be allowed to read what was captured, in the
/// namespace it was captured from, on this cluster (the read review of a migration of
/// it), and to create it in the target namespace.
pub(crate) async fn run(run: &JobRun) -> Result<JobState> {
    let req: StartRestoreRequest = run.request()?;
    let cluster = run
        .deps()
        .clusters
        .cluster(req.destination.as_ref())
        .await?;
    let (captured, snapshots) = read(run, &req).await?;
    run.check_cancel()?;
    let apply = req.apply.clone().unwrap_or_default();
    // What is created is known only now; nothing has been applied yet.
    if !req.dry_run {
        let types = created_types(&captured);
        let target = target_namespace(&apply, &captured.namespace);
        run.require_create(
            crate::access::Target::of(req.destination.as_ref(), &target, Some(&apply)),
            &types,
        )
        .await?;
    }
    let dst = Destination {
        run,
        writer: run.writer(&cluster).await?,
        cluster,
        key: cluster_key(req.destination.as_ref()),
        target: target_namespace(&apply, &captured.namespace),
        namespace: captured.namespace.clone(),
        apply,
        repository: req.repository.clone(),
        dry_run: req.dry_run,
        moves_data: !req.dry_run,
        skip_volume_data: false,
        mover: run.config().mover.with_options(req.volumes.as_ref()),
        overwrite_changes: req
            .volumes
            .as_ref()
            .is_some_and(|v| v.overwrite_destination_changes),
        keep_movers: false,
    };
    let checked = preflight(run, None, Some(&dst), &captured, &snapshots).await?;
    run.check_cancel()?;
    let planned = checked
        .planned
        .ok_or_else(|| TransferError::Internal("a restore's pre-flight made no plan".into()))?;
    dst.deliver(&planned).await
}

/// The resource types of the objects a restore creates.
pub(crate) fn created_types(captured: &ferry_kube::Captured) -> Vec<kube::api::ApiResource> {
    let mut types: Vec<kube::api::ApiResource> = Vec::new();
    for o in &captured.objects {
        if !types
            .iter()
            .any(|t| t.group == o.resource.group && t.plural == o.resource.plural)
        {
            types.push(o.resource.clone());
        }
    }
    types
}

/// Refuses a request whose restore point id or label selector cannot be read.
pub(crate) fn check_request(req: &StartRestoreRequest) -> Result<()> {
    restore_point_id(req)?;
    let selector = req.application.as_ref().map(|a| a.label_selector.as_str());
    parse_selector(selector.unwrap_or_default())?;
    Ok(())
}

fn restore_point_id(req: &StartRestoreRequest) -> Result<Id> {
    Id::parse(&req.restore_point_id).map_err(|e| {
        TransferError::invalid(
            "restore_point_id",
            format!("{e}; give the id `ferry restore-points` lists"),
        )
    })
}

/// The read step: the restore point's objects (narrowed to the request's selection) and
/// the snapshots of its claims, each one read from the repository; kept in the
/// checkpoint for a resumed job.
async fn read(run: &JobRun, req: &StartRestoreRequest) -> Result<(Captured, Vec<VolumeSnapshot>)> {
    if run.step_finished(steps::READ)
        && let Some(captured) = run.with_checkpoint(|c| c.captured.clone())
    {
        return Ok((captured, run.with_checkpoint(|c| c.snapshots.clone())));
    }
    let id = restore_point_id(req)?;
    let repo_ref = run.repository_ref(req.repository.as_ref())?;
    run.step(
        steps::READ,
        StepState::Running,
        format!(
            "reading restore point {id} from the repository of profile {}",
            repo_ref.profile
        ),
    )
    .await;
    let narrowing = req.application.clone().unwrap_or_default();
    let read = async {
        let (repo, limits) = run.deps().repositories.open(&repo_ref).await?;
        let manifest = load(
            &repo,
            &repo_ref,
            &limits.reads_only,
            &id,
            &narrowing.namespace,
        )
        .await?;
        let created_at = manifest.created_at.clone();
        let (captured, snapshots) = narrow(manifest, &narrowing)?;
        // Before anything of the restore point is read further or reported: restoring
        // it shows what reading its namespace would.
        run.require_read(&captured.namespace, &created_types(&captured))
            .await?;
        check_data(&repo, &repo_ref, &captured, &snapshots).await?;
        let repository_id = repo.config().id.to_string();
        Ok::<_, TransferError>((repository_id, created_at, captured, snapshots))
    };
    let (repository_id, created_at, captured, snapshots) = tokio::select! {
        r = read => r?,
        () = run.cancel_token().cancelled() => return Err(run.cancelled()),
    };
    let message = format!(
        "restore point of {} on cluster {}, taken {}: {} object(s), {} volume(s)",
        captured.namespace,
        captured.cluster,
        created_at,
        captured.objects.len(),
        snapshots.len()
    );
    let id = id.to_string();
    run.with_report(|r| {
        r.restore_point_id = id.clone();
        r.objects = captured_outcomes(&captured);
    });
    let (stored, stored_snapshots) = (captured.clone(), snapshots.clone());
    run.update_checkpoint(|c| {
        c.captured = Some(stored);
        c.snapshots = stored_snapshots;
        c.restore_point_id = id;
        c.repository_id = repository_id;
    })
    .await;
    run.objects_done(steps::READ, captured.objects.len());
    run.step(steps::READ, StepState::Succeeded, message).await;
    Ok((captured, snapshots))
}

fn repository_error(
    repo_ref: &RepositoryRef,
    action: &'static str,
) -> impl FnOnce(ferry_repo::Error) -> TransferError {
    let profile = repo_ref.profile.clone();
    move |source| TransferError::Repository {
        profile,
        action,
        hint: "nothing was restored or applied; check that the profile reaches the repository \
               the export wrote to, and `ferry repo check` it"
            .into(),
        source: Box::new(source),
    }
}

/// Finds and loads restore point `id`, of `namespace` when the request names one, if
/// the profile's `scope` holds it.
async fn load(
    repo: &Repository,
    repo_ref: &RepositoryRef,
    scope: &ferry_profile::ReadScope,
    id: &Id,
    namespace: &str,
) -> Result<RestorePointManifest> {
    let app = (!namespace.is_empty()).then_some(namespace);
    let listed = repo
        .restore_point_ids(app)
        .await
        .map_err(repository_error(repo_ref, "listing restore points"))?;
    let Some((app, _)) = listed.into_iter().find(|(_, i)| i == id) else {
        return Err(TransferError::RestorePointNotFound {
            id: id.to_string(),
            profile: repo_ref.profile.clone(),
            hint: match app {
                Some(ns) => format!(
                    "no restore point of namespace {ns} has this id; list them with `ferry \
                     restore-points`, and name the namespace the application was exported from"
                ),
                None => "list the restore points with `ferry restore-points`, and check that \
                         the profile points at the repository the export wrote to"
                    .into(),
            },
        });
    };
    if !scope.allows(&app, &id.to_hex()) {
        return Err(TransferError::OutsideProfileScope {
            id: id.to_string(),
            namespace: app,
            profile: repo_ref.profile.clone(),
            scope: scope.to_string(),
        });
    }
    let manifest: RestorePointManifest = repo
        .load_restore_point(&app, id)
        .await
        .map_err(repository_error(repo_ref, "reading the restore point"))?;
    manifest.check_format().map_err(|e| {
        repository_error(repo_ref, "reading the restore point")(
            ferry_repo::Error::UnsupportedVersion {
                found: e.found,
                supported: e.supported,
            },
        )
    })?;
    Ok(manifest)
}

/// Every claim to restore has a snapshot, and every snapshot and its root tree read
/// back: the data a restore needs is there before anything is written.
async fn check_data(
    repo: &Repository,
    repo_ref: &RepositoryRef,
    captured: &Captured,
    snapshots: &[VolumeSnapshot],
) -> Result<()> {
    if let Some(v) = captured
        .volumes
        .iter()
        .find(|v| !snapshots.iter().any(|s| s.pvc == v.pvc))
    {
        return Err(TransferError::Volume {
            cluster: captured.cluster.clone(),
            namespace: captured.namespace.clone(),
            pvc: v.pvc.clone(),
            message: "the restore point holds no data for it, so its workload would get an \
                      empty volume"
                .into(),
            hint: "restore another restore point, or leave the claim out \
                   (exclude persistentvolumeclaims)"
                .into(),
        });
    }
    for s in snapshots {
        let unreadable =
            repository_error(repo_ref, "reading a volume snapshot of the restore point");
        let snapshot = match Id::parse(&s.snapshot_id) {
            Ok(id) => repo.load_snapshot(&id).await,
            Err(e) => Err(e),
        }
        .map_err(unreadable)?;
        repo.load_tree(&snapshot.tree)
            .await
            .map_err(repository_error(
                repo_ref,
                "reading a volume snapshot's files",
            ))?;
    }
    Ok(())
}

/// Narrows a restore point to the request's application: its namespace must be the
/// one captured (checked by [`load`]); its label selector and resource types filter
/// the captured objects, and claims left out take their volumes with them. The objects
/// and the snapshots of the claims kept.
fn narrow(
    manifest: RestorePointManifest,
    app: &ApplicationSelector,
) -> Result<(Captured, Vec<VolumeSnapshot>)> {
    let mut captured = manifest.captured;
    let selector = parse_selector(&app.label_selector)?;
    let wanted = |ar: &kube::api::ApiResource| {
        (app.include_resources.is_empty()
            || app.include_resources.iter().any(|p| matches_type(p, ar)))
            && !app.exclude_resources.iter().any(|p| matches_type(p, ar))
    };
    let mut filtered_out = Vec::new();
    captured.objects.retain(|o| {
        if !wanted(&o.resource) {
            filtered_out.push(Exclusion {
                api_version: o.resource.api_version.clone(),
                kind: o.resource.kind.clone(),
                namespace: o.object.metadata.namespace.clone(),
                name: o.object.metadata.name.clone(),
                reason: ExclusionReason::FilteredOut,
            });
            return false;
        }
        selector.matches(&o.object.metadata.labels.clone().unwrap_or_default())
    });
    captured.excluded.extend(filtered_out);
    if !app.label_selector.is_empty() {
        captured.label_selector = Some(match captured.label_selector.take() {
            Some(s) if !s.is_empty() => format!("{s},{}", app.label_selector),
            _ => app.label_selector.clone(),
        });
    }
    let kept: HashSet<ferry_kube::ObjectRef> =
        captured.objects.iter().map(|o| o.object_ref()).collect();
    let claims: HashSet<&str> = kept
        .iter()
        .filter(|o| o.api_version == "v1" && o.kind == "PersistentVolumeClaim")
        .map(|o| o.name.as_str())
        .collect();
    captured.volumes.retain(|v| claims.contains(v.pvc.as_str()));
    for d in &mut captured.dependencies {
        d.required_by.retain(|r| kept.contains(r));
    }
    captured.dependencies.retain(|d| !d.required_by.is_empty());
    let snapshots = manifest
        .volumes
        .into_iter()
        .filter(|s| claims.contains(s.pvc.as_str()))
        .collect();
    Ok((captured, snapshots))
}

/// A label selector in its string form (`app=web,tier!=cache,env in (a,b),!legacy`).
fn parse_selector(s: &str) -> Result<Selector> {
    let bad = |term: &str, why: &str| {
        TransferError::invalid(
            "application.label_selector",
            format!("{term:?}: {why}; write it as kubectl does, e.g. \"app=web,tier!=cache\""),
        )
    };
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    let set = |values: &str, term: &str| {
        let inner = values
            .trim()
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(|| bad(term, "a set is written (a,b)"))?;
        Ok::<_, TransferError>(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    let mut exprs = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let expr = if let Some(key) = term.strip_prefix('!') {
            Expression::DoesNotExist(key.trim().to_owned())
        } else if let Some((key, values)) = term.split_once(" notin ") {
            Expression::NotIn(key.trim().to_owned(), set(values, term)?)
        } else if let Some((key, values)) = term.split_once(" in ") {
            Expression::In(key.trim().to_owned(), set(values, term)?)
        } else if let Some((key, value)) = term.split_once("!=") {
            Expression::NotEqual(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Expression::Equal(key.trim().to_owned(), value.trim().to_owned())
        } else if term.contains([' ', '(', ')']) {
            return Err(bad(term, "not a label requirement"));
        } else {
            Expression::Exists(term.to_owned())
        };
        exprs.push(expr);
    }
    Ok(exprs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selectors_match_as_kubectl_reads_them() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db"), ("legacy", "yes")]);
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, db),tier", true, false),
            ("app notin (web)", false, true),
            ("!legacy", true, false),
            ("legacy", false, true),
        ];
        for (s, on_web, on_db) in cases {
            let sel = parse_selector(s).expect(s);
            assert_eq!(sel.matches(&web), on_web, "{s} on web");
            assert_eq!(sel.matches(&db), on_db, "{s} on db");
        }
        assert!(parse_selector("app in web").is_err());
        assert!(parse_selector("a b").is_err());
    }
}
