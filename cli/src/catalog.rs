//! The catalog's commands: `ferry profile` (how a cluster reaches a repository),
//! and `ferry activate`; `ferry restore-points` is in [`crate::restore_points`].

use clap::{Args, Subcommand};
use ferry_proto::v1::{
    ActivateRequest, ApplicationSelector, CreateImportKeyRequest, CreateProfileRequest,
    DeleteProfileRequest, ListProfilesRequest, ProfileKind, SecretRef, StorageBackend,
};

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::{enum_name, table, when};
use crate::output::{Format, print, print_proto};

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
}
