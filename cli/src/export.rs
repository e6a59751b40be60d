//! `ferry export` and `ferry restore`: a migration in two halves through a shared
//! bucket. The source's Ferry writes a restore point to an export profile's repository
//! and hands over a migration token; the destination's Ferry restores a restore point
//! from its own (read-only) profile of the same repository.

use std::path::PathBuf;

use clap::Args;
use ferry_client::{ClientError, local_ref};
use ferry_proto::v1::{
    ApplicationSelector, JobReport, RepositoryRef, StartExportRequest, StartRestoreRequest,
};
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::mappings;
use crate::migrate::{ApplyArgs, FollowArgs, SelectorArgs, VolumeArgs};
use crate::output::{Format, print};
use crate::watch::{detached, finish, finish_on_stderr, follow};

/// `ferry export`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context a export -n shop --profile exports --recipient-key-file b-import.pub > token.txt
  ferry --context a export -n shop --profile exports --tag release=v42 --quiesce
  ferry --context a export -n shop --profile exports --dry-run

With a recipient key the migration token alone goes to stdout and the report to stderr;
without one the restore point id is in the report. Ctrl-C stops following and leaves
the job running (exit status 14; `ferry jobs cancel JOB_ID` stops it); with
--cancel-on-interrupt it cancels the job instead.")]
pub struct ExportArgs {
    #[command(flatten)]
    pub app: SelectorArgs,
    /// Export profile of the repository the restore point is written to.
    #[arg(long)]
    pub profile: String,
    #[command(flatten)]
    pub recipient: RecipientArgs,
    /// A label stored with the restore point (KEY=VALUE); repeat for more.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Scale the application's workloads to zero while their volumes are copied, for a
    /// consistent copy; they scale back afterwards, also on failure.
    #[arg(long)]
    pub quiesce: bool,
    #[command(flatten)]
    pub volumes: VolumeArgs,
    /// Report what would be exported, writing nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// Whom a migration token is made for: the destination's public import key.
#[derive(Debug, Args)]
pub struct RecipientArgs {
    /// File holding the destination's public import key (`ferry import-key` there): the
    /// migration token is made for it. Administrators only: the token carries the key
    /// of the profile's repository.
    #[arg(long, value_name = "FILE", conflicts_with = "recipient_key")]
    pub recipient_key_file: Option<PathBuf>,
    /// The destination's public import key as text.
    #[arg(long, value_name = "KEY")]
    pub recipient_key: Option<String>,
}

impl RecipientArgs {
    /// The recipient's key, from the flag or the file; None when neither is given.
    pub(crate) fn key(&self) -> Result<Option<String>> {
        let key = match (&self.recipient_key, &self.recipient_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!(
                    "--recipient-key-file {}: {e}; give the public key file the destination's \
                     catalog printed",
                    path.display()
                ))
            })?,
            (None, None) => return Ok(None),
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::Usage(
                "the recipient key is empty; give the destination's public import key".into(),
            ));
        }
        Ok(Some(key.to_owned()))
    }
}

impl ExportArgs {
    fn request(&self) -> Result<StartExportRequest> {
        Ok(StartExportRequest {
            source: None,
            application: Some(self.app.selector()?),
            repository: Some(repository(&self.profile)),
            tags: mappings("--tag", &self.tags)?,
            dry_run: self.dry_run,
            schedule_id: String::new(),
            recipient_key: self.recipient.key()?.unwrap_or_default(),
            quiesce_source: self.quiesce,
            volumes: self.volumes.options(),
        })
    }
}

/// `ferry restore`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context b restore --profile imports --restore-point 3f9c…e1
  ferry --context b restore --profile imports --restore-point 3f9c…e1 \\
      --namespace-map shop=shop-copy --storage-class-map fast=standard --no-start
  ferry --context b restore --profile imports --restore-point 3f9c…e1 -l app=db --dry-run

List restore points with `ferry restore-points`. Volume data is restored before any
object is applied; a repository that cannot be read fails the job with nothing applied.
Ctrl-C stops following and leaves the job running (exit status 14; `ferry jobs cancel
JOB_ID` stops it); with --cancel-on-interrupt it cancels the job instead.")]
pub struct RestoreArgs {
    /// Profile of the repository holding the restore point (an import profile).
    #[arg(long)]
    pub profile: String,
    /// Id of the restore point to restore.
    #[arg(long, value_name = "ID")]
    pub restore_point: String,
    /// The namespace the restore point was exported from; a check, since a restore
    /// point holds one namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Restore only objects with these labels, e.g. "app=shop,tier!=cache".
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub apply: ApplyArgs,
    #[command(flatten)]
    pub volumes: VolumeArgs,
    /// Report what would happen, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
}

impl RestoreArgs {
    fn request(&self) -> Result<StartRestoreRequest> {
        let narrowed = self.namespace.is_some() || self.selector.is_some();
        Ok(StartRestoreRequest {
            destination: Some(local_ref()),
            repository: Some(repository(&self.profile)),
            restore_point_id: self.restore_point.clone(),
            application: narrowed.then(|| ApplicationSelector {
                namespace: self.namespace.clone().unwrap_or_default(),
                label_selector: self.selector.clone().unwrap_or_default(),
                ..Default::default()
            }),
            apply: Some(self.apply.options()?),
            dry_run: self.dry_run,
            schedule_id: String::new(),
            request_id: String::new(),
            volumes: self.volumes.options(),
        })
    }
}

fn repository(profile: &str) -> RepositoryRef {
    RepositoryRef {
        profile: profile.to_owned(),
        repository_id: String::new(),
    }
}

/// The job a command starts.
enum Start {
    Export(StartExportRequest),
    Restore(StartRestoreRequest),
}

/// Starts the job on the command's Ferry and follows it to its report; None when the
/// command detached (the job's id is printed then).
async fn start_and_follow(
    connect: &ConnectArgs,
    start: Start,
    follow_args: &FollowArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<Option<JobReport>> {
    let ferry = connect.ferry().await?;
    let mut transfer = ferry.transfer();
    let (call, answer) = match start {
        Start::Export(r) => ("StartExport", transfer.start_export(r).await),
        Start::Restore(r) => ("StartRestore", transfer.start_restore(r).await),
    };
    let job = answer
        .map_err(|s| ferry.rpc_error(call, s))?
        .into_inner()
        .job
        .ok_or_else(|| ClientError::Protocol {
            endpoint: ferry.endpoint().to_owned(),
            problem: format!("{call} answered without a job"),
        })?;
    let job = ferry.job(&job.id);
    if follow_args.detach {
        detached(&job, format)?;
        return Ok(None);
    }
    Ok(Some(
        follow(&job, &cancel, follow_args.on_interrupt()).await?,
    ))
}

pub async fn export(
    connect: &ConnectArgs,
    args: ExportArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<()> {
    let req = args.request()?;
    let wants_token = !req.recipient_key.is_empty() && !req.dry_run;
    let started = start_and_follow(connect, Start::Export(req), &args.follow, cancel, format);
    let Some(report) = started.await? else {
        return Ok(());
    };
    let all_objects = args.follow.show_objects || args.dry_run;
    if !wants_token || format.structured() {
        return finish(&report, all_objects, format);
    }
    // `ferry export ... > token.txt`: the token alone on stdout.
    finish_on_stderr(&report, all_objects)?;
    if report.migration_token.is_empty() {
        return Err(Error::JobEnded {
            id: report.job_id.clone(),
            state: "without a migration token".into(),
        });
    }
    print_token(&report.migration_token)
}

/// A migration token alone on stdout (`> token.txt`), and on stderr the signer the
/// destination pins (`ferry profile create ... --expect-signer`).
pub(crate) fn print_token(token: &str) -> Result<()> {
    match ferry_token::signer_of(token) {
        Ok(signer) => eprintln!(
            "migration token signed by {fp} (this cluster's signing key); on the destination: \
             ferry profile create NAME --kind import --migration-token-file FILE \
             --expect-signer {fp}",
            fp = signer.fingerprint()
        ),
        Err(e) => eprintln!("ferry: warning: cannot read the token's signer: {e}"),
    }
    print(&format!("{token}\n"))
}

pub async fn restore(
    connect: &ConnectArgs,
    args: RestoreArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<()> {
    let req = args.request()?;
    let started = start_and_follow(connect, Start::Restore(req), &args.follow, cancel, format);
    match started.await? {
        Some(report) => finish(&report, args.follow.show_objects || args.dry_run, format),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
            .expect("parses")
            .command
    }

    #[test]
    fn export_and_restore_flags_make_their_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("b.pub");
        std::fs::write(&key, "ferry-import-key:b:0123\n").expect("key file");
        let key = key.display().to_string();
        let Command::Export(args) = parse(&[
            "export",
            "-n",
            "shop",
            "--profile",
            "exports",
            "--recipient-key-file",
            &key,
            "--tag",
            "release=v42",
            "--quiesce",
        ]) else {
            panic!("not export");
        };
        let req = args.request().expect("request");
        assert_eq!(req.application.expect("app").namespace, "shop");
        assert_eq!(req.repository.expect("repo").profile, "exports");
        assert_eq!(req.recipient_key, "ferry-import-key:b:0123");
        assert_eq!(req.tags["release"], "v42");
        assert!(req.quiesce_source);
        assert!(
            Cli::try_parse_from([
                "ferry",
                "export",
                "-n",
                "shop",
                "--profile",
                "p",
                "--recipient-key",
                "k",
                "--recipient-key-file",
                &key
            ])
            .is_err(),
            "one recipient key only"
        );

        let Command::Restore(args) = parse(&[
            "restore",
            "--profile",
            "imports",
            "--restore-point",
            "abc",
            "--namespace-map",
            "shop=shop-copy",
            "--no-start",
        ]) else {
            panic!("not restore");
        };
        let req = args.request().expect("request");
        assert_eq!(req.restore_point_id, "abc");
        assert!(req.application.is_none(), "nothing narrowed");
        assert_eq!(req.destination, Some(local_ref()));
        let apply = req.apply.expect("apply");
        assert_eq!(apply.namespace_mapping["shop"], "shop-copy");
        assert!(!apply.start_applications);
    }
}
