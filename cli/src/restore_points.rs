//! `ferry restore-points`: what a repository holds (list, show) and its pruning.

use clap::{Args, Subcommand};
use ferry_proto::v1::{
    GetRestorePointRequest, ListRestorePointsRequest, PruneRepositoryRequest,
    PruneRepositoryResponse, RepositoryRef,
};

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::{parse_duration, proto_duration, table, when};
use crate::output::{Format, bytes, print, print_proto};

/// `ferry restore-points`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_long_help = "Examples:
  ferry --context a restore-points --profile main
  ferry --context a restore-points --profile main -n shop
  ferry --context a restore-points --profile main --id RESTORE_POINT_ID
  ferry --context a restore-points prune --profile main -n shop --keep-last 7 --dry-run"
)]
pub struct RestorePointsArgs {
    #[command(subcommand)]
    pub command: Option<RestorePointsCommand>,
    /// Profile of the repository to read.
    #[arg(long, required = true)]
    pub profile: Option<String>,
    /// Only restore points of this application namespace (as on the source).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Show one restore point with its volumes.
    #[arg(long)]
    pub id: Option<String>,
}

/// `ferry restore-points` subcommands.
#[derive(Debug, Subcommand)]
pub enum RestorePointsCommand {
    /// Remove restore points beyond retention limits, then delete the data nothing needs
    /// any more (under the repository's exclusive lock: exports running meanwhile lose
    /// nothing; a prune that meets one fails with "locked", to be run again later).
    Prune(PruneArgs),
}

/// `ferry restore-points prune`.
#[derive(Debug, Args)]
#[command(
    after_long_help = "Both limits apply: a restore point stays only while it is among \
the newest N of its application and younger than DURATION.

Examples:
  ferry --context a restore-points prune --profile main -n shop --keep-last 7
  ferry --context a restore-points prune --profile main --keep-last 30 --keep-within 30d --dry-run"
)]
pub struct PruneArgs {
    /// Profile of the repository to prune: an export or migration profile (import
    /// profiles only read).
    #[arg(long)]
    pub profile: String,
    /// Only restore points of this application namespace (as on the source); without it,
    /// every application's, each on its own.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Keep at most the newest N restore points of each application.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,
    /// Remove restore points older than DURATION (e.g. 36h, 30d; at least 1m).
    #[arg(long, value_name = "DURATION", visible_alias = "max-age")]
    pub keep_within: Option<String>,
    /// Say what would be removed and freed, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn restore_points(
    connect: &ConnectArgs,
    args: RestorePointsArgs,
    format: Format,
) -> Result<()> {
    if let Some(RestorePointsCommand::Prune(a)) = args.command {
        return prune(connect, a, format).await;
    }
    let profile = args
        .profile
        .ok_or_else(|| Error::Usage("name the repository's profile with --profile".into()))?;
    let ferry = connect.ferry().await?;
    let repository = Some(RepositoryRef {
        profile: profile.clone(),
        repository_id: String::new(),
    });
    if let Some(id) = args.id {
        let rp = ferry
            .catalog()
            .get_restore_point(GetRestorePointRequest { repository, id })
            .await
            .map_err(|s| ferry.rpc_error("GetRestorePoint", s))?
            .into_inner();
        if format.structured() {
            return print_proto(&rp, "ferry.v1.GetRestorePointResponse", format);
        }
        let rp = rp.restore_point.unwrap_or_default();
        let app = rp.application.clone().unwrap_or_default();
        let source = rp.source.clone().unwrap_or_default();
        let mut text = format!(
            "restore point {}\n  namespace {}\n  taken {} on {} ({})\n  objects {}\n  job {}\n",
            rp.id,
            app.namespace,
            when(rp.created_at.as_ref()),
            source.cluster_name,
            source.kubernetes_version,
            rp.object_count,
            rp.job_id
        );
        let rows: Vec<Vec<String>> = rp
            .volumes
            .iter()
            .map(|v| {
                vec![
                    v.pvc_name.clone(),
                    v.storage_class.clone(),
                    v.files.to_string(),
                    bytes(v.data_bytes),
                    v.snapshot_id.clone(),
                ]
            })
            .collect();
        text.push_str(&table(
            &["CLAIM", "CLASS", "FILES", "DATA", "SNAPSHOT"],
            &rows,
        ));
        return print(&text);
    }
    let resp = ferry
        .catalog()
        .list_restore_points(ListRestorePointsRequest {
            repository,
            namespace: args.namespace.unwrap_or_default(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .map_err(|s| ferry.rpc_error("ListRestorePoints", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.ListRestorePointsResponse", format);
    }
    if resp.restore_points.is_empty() {
        return print(&format!("no restore points in profile {profile}\n"));
    }
    let rows: Vec<Vec<String>> = resp
        .restore_points
        .iter()
        .map(|rp| {
            vec![
                rp.id.clone(),
                rp.application.clone().unwrap_or_default().namespace,
                when(rp.created_at.as_ref()),
                rp.source.clone().unwrap_or_default().cluster_name,
                rp.object_count.to_string(),
                rp.job_id.clone(),
                rp.local_labels
                    .get("ferry.dev/import-policy")
                    .cloned()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print(&table(
        &[
            "ID",
            "NAMESPACE",
            "CREATED",
            "SOURCE",
            "OBJECTS",
            "JOB",
            "IMPORTED BY",
        ],
        &rows,
    ))
}

/// `ferry restore-points prune`: PruneRepository, printed.
async fn prune(connect: &ConnectArgs, a: PruneArgs, format: Format) -> Result<()> {
    let max_age = a.keep_within.as_deref().map(parse_duration).transpose()?;
    if a.keep_last.is_none() && max_age.is_none() {
        return Err(Error::Usage(
            "prune needs a limit: --keep-last N and/or --keep-within DURATION (it never \
             removes every restore point by default)"
                .into(),
        ));
    }
    let ferry = connect.ferry().await?;
    let resp = ferry
        .catalog()
        .prune_repository(PruneRepositoryRequest {
            repository: Some(RepositoryRef {
                profile: a.profile.clone(),
                repository_id: String::new(),
            }),
            namespace: a.namespace.clone().unwrap_or_default(),
            keep_last: a.keep_last.unwrap_or(0),
            max_age: max_age.map(proto_duration),
            dry_run: a.dry_run,
        })
        .await
        .map_err(|s| ferry.rpc_error("PruneRepository", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.PruneRepositoryResponse", format);
    }
    print(&prune_summary(&a.profile, &resp))
}

/// What a prune removed and kept, for people.
fn prune_summary(profile: &str, r: &PruneRepositoryResponse) -> String {
    let (remove, delete) = if r.dry_run {
        ("would remove", "would delete")
    } else {
        ("removed", "deleted")
    };
    let mut rows: Vec<(&str, &ferry_proto::v1::RestorePoint)> = r
        .restore_points_removed
        .iter()
        .map(|p| (remove, p))
        .chain(r.restore_points_kept.iter().map(|p| ("keep", p)))
        .collect();
    rows.sort_by(|a, b| {
        let key = |p: &ferry_proto::v1::RestorePoint| {
            (
                p.application.clone().unwrap_or_default().namespace,
                std::cmp::Reverse(p.created_at.map(|t| (t.seconds, t.nanos))),
            )
        };
        key(a.1).cmp(&key(b.1))
    });
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str(&format!(
            "no restore points in scope in profile {profile}\n"
        ));
    } else {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|(what, p)| {
                vec![
                    (*what).to_string(),
                    p.id.clone(),
                    p.application.clone().unwrap_or_default().namespace,
                    when(p.created_at.as_ref()),
                    if p.job_id.is_empty() {
                        "-".into()
                    } else {
                        p.job_id.clone()
                    },
                ]
            })
            .collect();
        out.push_str(&table(
            &["ACTION", "ID", "NAMESPACE", "CREATED", "JOB"],
            &table_rows,
        ));
    }
    out.push_str(&format!(
        "{remove} {} restore point(s) and {} snapshot(s), kept {}; {delete} {} pack(s), {} \
         freed ({} kept in {} pack(s)){}\n",
        r.restore_points_removed.len(),
        r.snapshots_removed,
        r.restore_points_kept.len(),
        r.packs_deleted,
        bytes(r.bytes_freed),
        bytes(r.bytes_kept),
        r.packs_kept,
        if r.dry_run {
            "; nothing was changed"
        } else {
            ""
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::ApplicationSelector;

    #[test]
    fn prune_summaries_say_what_went_and_what_stays() {
        let point = |id: &str, seconds: i64| ferry_proto::v1::RestorePoint {
            id: id.into(),
            application: Some(ApplicationSelector {
                namespace: "shop".into(),
                ..Default::default()
            }),
            created_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        };
        let r = PruneRepositoryResponse {
            restore_points_removed: vec![point("old", 100)],
            restore_points_kept: vec![point("new", 300), point("mid", 200)],
            snapshots_removed: 1,
            packs_deleted: 3,
            bytes_freed: 3 << 20,
            ..Default::default()
        };
        let text = prune_summary("out", &r);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("keep") && lines[1].contains("new"),
            "{text}"
        );
        assert!(lines[2].contains("mid"), "{text}");
        assert!(
            lines[3].starts_with("removed") && lines[3].contains("old"),
            "{text}"
        );
        assert!(
            text.contains(
                "removed 1 restore point(s) and 1 snapshot(s), kept 2; deleted 3 pack(s), \
                 3.0 MiB freed"
            ),
            "{text}"
        );
        let dry = PruneRepositoryResponse { dry_run: true, ..r };
        let text = prune_summary("out", &dry);
        assert!(text.contains("would remove 1"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
    }
}
