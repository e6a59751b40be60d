//! The catalog's commands: `ferry profile` (how a cluster reaches a repository),
//! `ferry restore-points` (what a repository holds) and `ferry activate`.

use clap::{Args, Subcommand};
use ferry_proto::v1::{
    ActivateRequest, ApplicationSelector, CreateImportKeyRequest, CreateProfileRequest,
    DeleteProfileRequest, GetRestorePointRequest, ListProfilesRequest, ListRestorePointsRequest,
    ProfileKind, PruneRepositoryRequest, PruneRepositoryResponse, RepositoryRef, SecretRef,
    StorageBackend,
};

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::{enum_name, parse_duration, proto_duration, table, when};
use crate::output::{Format, bytes, print, print_proto};

/// `ferry profile` and its subcommands.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  kubectl -n ferry-system create secret generic s3 \\
      --from-literal=access_key_id=... --from-literal=secret_access_key=...
  kubectl -n ferry-system create secret generic repo-key --from-file=key=ferry.key
  ferry --context a profile create main --s3 http://minio:9000/ferry/main \\
      --credentials-secret s3 --key-secret repo-key --create-repository
  ferry --context a profile list")]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Save a profile after checking that it reaches its repository.
    Create(CreateProfileArgs),
    /// List profiles.
    List,
    /// Delete a profile (the repository stays).
    Delete {
        /// The profile's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateProfileArgs {
    /// Unique name on this cluster.
    pub name: String,
    /// What the profile is for.
    #[arg(long, value_enum, default_value_t = KindArg::Migration)]
    pub kind: KindArg,
    /// S3 location: http(s)://host:port/bucket[/prefix], or s3://bucket[/prefix] for AWS.
    #[arg(long, conflicts_with = "local")]
    pub s3: Option<String>,
    /// A directory instead of S3 (tests and single hosts).
    #[arg(long)]
    pub local: Option<std::path::PathBuf>,
    /// S3 region.
    #[arg(long, default_value = "")]
    pub region: String,
    /// Secret (NAME or NAMESPACE/NAME) with access_key_id and secret_access_key.
    #[arg(long)]
    pub credentials_secret: Option<String>,
    /// Secret (NAME or NAMESPACE/NAME) with key "key": the key wrapping the repository's
    /// master key. Without it (and without a token), a key is generated into the
    /// Secret <name>-key: back it up.
    #[arg(long)]
    pub key_secret: Option<String>,
    /// Create the repository if the location holds none.
    #[arg(long)]
    pub create_repository: bool,
    /// Export profiles: bind the profile to this application namespace, the only one its
    /// repository may hold; migration tokens are issued only for a bound profile (a
    /// token's key opens the whole repository). Give each namespace a prefix of its own.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Import profiles: the migration token an export printed; it brings the location
    /// and the repository key (give read-only credentials with --credentials-secret).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["s3", "local"])]
    pub migration_token_file: Option<std::path::PathBuf>,
    /// With --migration-token-file: accept the token only if the source's signing key
    /// has this fingerprint (SHA256:..., as `ferry export` printed it on the source).
    /// Required with a token unless --unsafe-skip-signer-verification is given.
    #[arg(long, value_name = "FINGERPRINT", requires = "migration_token_file")]
    pub expect_signer: Option<String>,
    /// With --migration-token-file: accept the token whoever signed it. Anyone who can
    /// hand you a token for this cluster's import key could then point the profile at a
    /// repository of theirs; check the signer the output names.
    #[arg(
        long,
        requires = "migration_token_file",
        conflicts_with = "expect_signer"
    )]
    pub unsafe_skip_signer_verification: bool,
    /// Do not verify the endpoint's TLS certificate (test setups only).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// Staging area for direct migrations (read-write from both clusters).
    Migration,
    /// Where a source writes restore points.
    Export,
    /// Where a destination reads restore points (read-only).
    Import,
}

fn secret_ref(flag: &str, text: &str) -> Result<SecretRef> {
    let (namespace, name) = match text.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), text.to_string()),
    };
    if name.is_empty() || name.contains('/') {
        return Err(Error::Usage(format!(
            "{flag} {text:?} is not NAME or NAMESPACE/NAME"
        )));
    }
    Ok(SecretRef { namespace, name })
}

/// http(s)://host:port/bucket/prefix → (endpoint, bucket, prefix); s3://bucket/prefix
/// → AWS's endpoint.
fn s3_location(text: &str) -> Result<(String, String, String)> {
    let bad = || {
        Error::Usage(format!(
            "--s3 {text:?} is not http(s)://host:port/bucket[/prefix] or s3://bucket[/prefix]"
        ))
    };
    let (endpoint, path) = if let Some(rest) = text.strip_prefix("s3://") {
        (String::new(), rest)
    } else {
        let scheme_end = text.find("://").ok_or_else(bad)? + 3;
        let rest = &text[scheme_end..];
        let slash = rest.find('/').ok_or_else(bad)?;
        (text[..scheme_end + slash].to_string(), &rest[slash + 1..])
    };
    let path = path.trim_matches('/');
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(bad());
    }
    Ok((endpoint, bucket.to_string(), prefix.to_string()))
}

/// `--expect-signer`, which only means something with a token and is needed with one
/// unless the check is skipped. (clap's `requires` is not enough: it lets the token file
/// be missing when --s3 or --local, which conflict with it, are given.)
fn expected_signer(a: &CreateProfileArgs) -> Result<String> {
    match (&a.expect_signer, &a.migration_token_file) {
        (Some(_), None) => Err(Error::Usage(
            "--expect-signer pins the signer of a migration token: give \
             --migration-token-file too"
                .into(),
        )),
        (None, Some(_)) if !a.unsafe_skip_signer_verification => Err(Error::Usage(
            "--migration-token-file needs --expect-signer FINGERPRINT: the source's signing \
             key, which `ferry export` printed there with the token (or give \
             --unsafe-skip-signer-verification to accept a token whoever signed it)"
                .into(),
        )),
        (fingerprint, _) => Ok(fingerprint.clone().unwrap_or_default()),
    }
}

pub async fn profile(connect: &ConnectArgs, args: ProfileArgs, format: Format) -> Result<()> {
    let ferry = connect.ferry().await?;
    match args.command {
        ProfileCommand::Create(a) => create_profile(&ferry, a, format).await,
        ProfileCommand::List => {
            let resp = ferry
                .catalog()
                .list_profiles(ListProfilesRequest::default())
                .await
                .map_err(|s| ferry.rpc_error("ListProfiles", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.ListProfilesResponse", format);
            }
            if resp.profiles.is_empty() {
                return print("no profiles; create one with: ferry profile create --help\n");
            }
            let rows: Vec<Vec<String>> = resp
                .profiles
                .iter()
                .map(|p| {
                    let location = if p.endpoint.is_empty() {
                        format!("{}/{}", p.bucket, p.prefix)
                    } else {
                        format!("{}/{}/{}", p.endpoint, p.bucket, p.prefix)
                    };
                    vec![
                        p.name.clone(),
                        enum_name(p.kind().as_str_name(), "PROFILE_KIND_"),
                        location.trim_end_matches('/').to_string(),
                        p.repository_id.clone(),
                        // Import profiles from a token: the source's signing key, to pin.
                        if p.token_signer_fingerprint.is_empty() {
                            "-".to_string()
                        } else {
                            p.token_signer_fingerprint.clone()
                        },
                    ]
                })
                .collect();
            print(&table(
                &["NAME", "KIND", "LOCATION", "REPOSITORY", "SIGNER"],
                &rows,
            ))
        }
        ProfileCommand::Delete { name } => {
            ferry
                .catalog()
                .delete_profile(DeleteProfileRequest { name: name.clone() })
                .await
                .map_err(|s| ferry.rpc_error("DeleteProfile", s))?;
            if format.structured() {
                return print("{}\n");
            }
            print(&format!(
                "deleted profile {name}; the repository is untouched\n"
            ))
        }
    }
}

/// `ferry profile create`.
async fn create_profile(
    ferry: &ferry_client::Ferry,
    a: CreateProfileArgs,
    format: Format,
) -> Result<()> {
    let migration_token = match &a.migration_token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                Error::Usage(format!(
                    "reading the migration token file {}: {e}",
                    path.display()
                ))
            })?
            .trim()
            .to_string(),
        None => String::new(),
    };
    let (backend, endpoint, bucket, prefix) = match (&a.s3, &a.local) {
        // The token names the location.
        _ if !migration_token.is_empty() => (
            StorageBackend::Unspecified,
            String::new(),
            String::new(),
            String::new(),
        ),
        (Some(s3), None) => {
            let (e, b, p) = s3_location(s3)?;
            (StorageBackend::S3, e, b, p)
        }
        (None, Some(dir)) => (
            StorageBackend::Local,
            String::new(),
            dir.display().to_string(),
            String::new(),
        ),
        _ => {
            return Err(Error::Usage(
                "give the repository's location with --s3 URL or --local DIR, or an \
                 import profile's --migration-token-file"
                    .into(),
            ));
        }
    };
    let expected_signer = expected_signer(&a)?;
    if a.insecure_skip_tls_verify {
        eprintln!(
            "ferry: warning: profile {} will not verify the TLS certificate of {endpoint}; \
             use this only in test setups",
            a.name
        );
    }
    let resp = ferry
        .catalog()
        .create_profile(CreateProfileRequest {
            name: a.name.clone(),
            kind: match a.kind {
                KindArg::Migration => ProfileKind::Migration,
                KindArg::Export => ProfileKind::Export,
                KindArg::Import => ProfileKind::Import,
            } as i32,
            backend: backend as i32,
            endpoint,
            bucket,
            prefix,
            region: a.region,
            credentials_secret: a
                .credentials_secret
                .as_deref()
                .map(|s| secret_ref("--credentials-secret", s))
                .transpose()?,
            verify_tls: Some(!a.insecure_skip_tls_verify),
            encryption_key_secret: a
                .key_secret
                .as_deref()
                .map(|s| secret_ref("--key-secret", s))
                .transpose()?,
            create_repository: a.create_repository,
            migration_token,
            expected_signer,
            unsafe_skip_signer_verification: a.unsafe_skip_signer_verification,
            namespace: a.namespace.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| ferry.rpc_error("CreateProfile", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.CreateProfileResponse", format);
    }
    for w in &resp.warnings {
        eprintln!("ferry: warning: {w}");
    }
    let p = resp.profile.unwrap_or_default();
    if !p.token_signer_fingerprint.is_empty() && a.expect_signer.is_none() {
        eprintln!(
            "ferry: warning: the signer was not checked; the migration token was signed by \
             {fp}: check it against what `ferry export` printed on the source, and pin it \
             for later tokens with --expect-signer {fp}",
            fp = p.token_signer_fingerprint
        );
    }
    print(&format!(
        "profile {} saved; repository {}{}\n",
        p.name,
        p.repository_id,
        if resp.repository_created {
            " (created)"
        } else {
            ""
        }
    ))
}

/// `ferry import-key`: this cluster's import key, created on first use. Its public
/// half goes to the source's `ferry export --recipient-key`, so only this cluster can
/// open the repository key inside the migration token.
pub async fn import_key(connect: &ConnectArgs, format: Format) -> Result<()> {
    let ferry = connect.ferry().await?;
    let resp = ferry
        .catalog()
        .create_import_key(CreateImportKeyRequest {})
        .await
        .map_err(|s| ferry.rpc_error("CreateImportKey", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.CreateImportKeyResponse", format);
    }
    let key = resp.key.unwrap_or_default();
    eprintln!(
        "import key {} ({}){}",
        key.fingerprint,
        when(key.created_at.as_ref()),
        if resp.created { ", created now" } else { "" }
    );
    // Only the key on stdout, for `--recipient-key-file`.
    print(&format!("{}\n", key.public_key))
}

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

/// `ferry activate`.
#[derive(Debug, Args)]
#[command(after_long_help = "Example: ferry --context b activate -n shop")]
pub struct ActivateArgs {
    /// Namespace of the migrated application on this cluster.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// Only workloads with these labels.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// Scales a migrated application's workloads up to their source replica counts, on the
/// cluster of `--context`.
pub async fn activate(connect: &ConnectArgs, args: ActivateArgs, format: Format) -> Result<()> {
    let ferry = connect.ferry().await?;
    let resp = ferry
        .transfer()
        .activate(ActivateRequest {
            cluster: Some(ferry_client::local_ref()),
            application: Some(ApplicationSelector {
                namespace: args.namespace.clone(),
                label_selector: args.selector.unwrap_or_default(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|s| ferry.rpc_error("Activate", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.ActivateResponse", format);
    }
    if resp.workloads.is_empty() {
        return print(&format!(
            "no workloads to activate in namespace {}\n",
            args.namespace
        ));
    }
    let rows: Vec<Vec<String>> = resp
        .workloads
        .iter()
        .map(|w| {
            let o = w.object.clone().unwrap_or_default();
            vec![
                format!("{}/{}", o.kind, o.name),
                enum_name(w.action().as_str_name(), "OBJECT_ACTION_"),
                w.reason.clone(),
            ]
        })
        .collect();
    print(&table(&["WORKLOAD", "ACTION", "DETAIL"], &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations() {
        assert_eq!(
            s3_location("http://127.0.0.1:9000/ferry/a/b").unwrap(),
            ("http://127.0.0.1:9000".into(), "ferry".into(), "a/b".into())
        );
        assert_eq!(
            s3_location("s3://bucket").unwrap(),
            (String::new(), "bucket".into(), String::new())
        );
        assert!(s3_location("http://host:9000").is_err());
        assert!(s3_location("bucket").is_err());
        assert_eq!(secret_ref("--x", "ns/n").unwrap().namespace, "ns");
        assert!(secret_ref("--x", "a/b/c").is_err());
    }

    #[test]
    fn a_pinned_signer_needs_a_migration_token() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::Cli::try_parse_from(
                ["ferry", "profile", "create", "in", "--kind", "import"]
                    .iter()
                    .chain(args),
            )
        };
        let cli = parse(&[
            "--migration-token-file",
            "token.txt",
            "--expect-signer",
            "SHA256:abc",
        ])
        .expect("parses");
        let crate::Command::Profile(ProfileArgs {
            command: ProfileCommand::Create(a),
        }) = cli.command
        else {
            panic!("not profile create");
        };
        assert_eq!(expected_signer(&a).expect("pinned"), "SHA256:abc");
        assert!(
            parse(&["--expect-signer", "SHA256:abc"]).is_err(),
            "--expect-signer without a token"
        );
        let cli = parse(&["--s3", "http://h:9000/b", "--expect-signer", "SHA256:abc"])
            .expect("clap lets this through");
        let crate::Command::Profile(ProfileArgs {
            command: ProfileCommand::Create(a),
        }) = cli.command
        else {
            panic!("not profile create");
        };
        let err = expected_signer(&a).expect_err("--expect-signer without a token");
        assert!(err.to_string().contains("--migration-token-file"), "{err}");

        // A token needs a pinned signer, or the check skipped by name.
        let create = |args: &[&str]| match parse(args).expect("parses").command {
            crate::Command::Profile(ProfileArgs {
                command: ProfileCommand::Create(a),
            }) => a,
            _ => panic!("not profile create"),
        };
        let a = create(&["--migration-token-file", "token.txt"]);
        let err = expected_signer(&a).expect_err("a token without a pin");
        assert!(
            err.to_string().contains("--expect-signer")
                && err
                    .to_string()
                    .contains("--unsafe-skip-signer-verification"),
            "{err}"
        );
        let a = create(&[
            "--migration-token-file",
            "token.txt",
            "--unsafe-skip-signer-verification",
        ]);
        assert_eq!(expected_signer(&a).expect("skipped"), "");
        assert!(
            parse(&[
                "--migration-token-file",
                "t",
                "--expect-signer",
                "SHA256:abc",
                "--unsafe-skip-signer-verification"
            ])
            .is_err(),
            "a pin and the skip"
        );
    }

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
