//! `ferry repo`: the data mover on its own, with restic's habits: `-r REPO`, a key
//! file, `init`, `backup`, `snapshots`, `restore`, `check`, `forget`, `prune`,
//! `unlock`, `key`, and exit statuses scripts can branch on. One module per subcommand; this one holds the shared options and
//! opening the repository.

mod backup;
mod check;
mod forget;
mod init;
mod key;
mod prune;
mod restore;
mod snapshots;
mod unlock;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ferry_repo::Repository;
use ferry_repo::backend::{DynBackend, open_backend};
use tokio_util::sync::CancellationToken;

pub use backup::BackupArgs;
pub use check::CheckArgs;
pub use forget::ForgetArgs;
pub use init::InitArgs;
pub use key::{AddArgs as KeyAddArgs, KeyArgs, KeyCommand, RemoveArgs as KeyRemoveArgs};
pub use prune::{PruneArgs, PruneLimits};
pub use restore::RestoreArgs;
pub use snapshots::SnapshotsArgs;
pub use unlock::UnlockArgs;

use crate::error::{Error, Result};
use crate::signal::or_interrupted;

const REPO_HELP: &str = concat!(
    "Examples:
  head -c 32 /dev/urandom > ferry.key
  ferry repo -r /srv/backups --key-file ferry.key init
  ferry repo -r /srv/backups --key-file ferry.key backup /var/lib/data
  ferry repo -r /srv/backups --key-file ferry.key snapshots
  ferry repo -r /srv/backups --key-file ferry.key restore latest --target /tmp/data
  ferry repo -r /srv/backups --key-file ferry.key check --read-data
  ferry repo -r /srv/backups --key-file ferry.key forget --keep-last 7 --keep-within 30d --prune
  ferry repo -r /srv/backups --key-file ferry.key unlock
  ferry repo -r /srv/backups --key-file ferry.key key add --new-key-file new.key --label rotated
  ferry repo -r /srv/backups --key-file new.key key remove k-0123456789abcdef

S3: -r s3:http(s)://host:port/bucket/prefix (or s3://bucket/prefix for AWS), with
credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.

",
    exit_codes_help!()
);

/// Options shared by every `ferry repo` subcommand.
#[derive(Debug, Args)]
#[command(after_long_help = REPO_HELP)]
pub struct RepoArgs {
    /// The repository: a directory, or s3:http(s)://host:port/bucket/prefix.
    #[arg(
        short = 'r',
        long = "repo",
        value_name = "REPO",
        env = "FERRY_REPOSITORY",
        global = true
    )]
    pub repo: Option<String>,

    /// A file whose bytes are the key (it wraps the repository's master key).
    #[arg(long, value_name = "FILE", env = "FERRY_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,

    /// Print one JSON value on stdout at the end instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: RepoCommand,
}

/// The `ferry repo` subcommands.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repository; prints its id.
    Init(InitArgs),
    /// Back up a directory, a file or a block device as a new snapshot.
    Backup(BackupArgs),
    /// List snapshots, oldest first.
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot into an empty or new directory.
    Restore(RestoreArgs),
    /// Check the repository's structure, and with --read-data every stored byte.
    Check(CheckArgs),
    /// Remove restore points and snapshots a retention policy does not keep.
    Forget(ForgetArgs),
    /// Delete the data no snapshot uses (refuses while another process holds a lock).
    Prune(PruneArgs),
    /// Remove stale locks left by processes that are gone.
    Unlock(UnlockArgs),
    /// List, add or remove the keys that open the repository.
    Key(KeyArgs),
}

/// What every subcommand gets: where the repository is, the key, the output form and
/// the cancellation token.
#[derive(Debug)]
pub(crate) struct Ctx {
    url: String,
    key_file: PathBuf,
    key: Vec<u8>,
    json: bool,
    cancel: CancellationToken,
}

/// Runs one `ferry repo` subcommand.
pub async fn run(args: RepoArgs, cancel: CancellationToken) -> Result<()> {
    let url = args.repo.filter(|r| !r.is_empty()).ok_or_else(|| {
        Error::Usage(
            "no repository given: pass -r/--repo REPO (a directory or \
             s3:http(s)://host:port/bucket/prefix) or set FERRY_REPOSITORY"
                .into(),
        )
    })?;
    let key_file = args.key_file.ok_or_else(|| {
        Error::Usage(
            "no key file given: pass --key-file FILE or set FERRY_KEY_FILE; for a new \
             repository create one with: head -c 32 /dev/urandom > ferry.key"
                .into(),
        )
    })?;
    let key = read_key(&key_file)?;
    let ctx = Ctx {
        url,
        key_file,
        key,
        json: args.json,
        cancel,
    };
    match args.command {
        RepoCommand::Init(a) => init::run(a, &ctx).await,
        RepoCommand::Backup(a) => backup::run(a, &ctx).await,
        RepoCommand::Snapshots(a) => snapshots::run(a, &ctx).await,
        RepoCommand::Restore(a) => restore::run(a, &ctx).await,
        RepoCommand::Check(a) => check::run(a, &ctx).await,
        RepoCommand::Forget(a) => forget::run(a, &ctx).await,
        RepoCommand::Prune(a) => prune::run(a, &ctx).await,
        RepoCommand::Unlock(a) => unlock::run(a, &ctx).await,
        RepoCommand::Key(a) => key::run(a, &ctx).await,
    }
}

/// The repository's side of a wrong key, by fingerprints and labels (never key bytes).
fn wrong_key_detail(fingerprint: &str, keys: &[ferry_repo::KeyInfo]) -> String {
    let listed: Vec<String> = keys.iter().map(ToString::to_string).collect();
    format!(
        "this key (fingerprint {fingerprint}) opens none of the repository's keys: {}; use \
         one of those keys, or add this key with `ferry repo key add` using a key that works",
        listed.join(", ")
    )
}

fn read_key(path: &Path) -> Result<Vec<u8>> {
    let problem = |p: String| Error::KeyFile {
        path: path.to_path_buf(),
        problem: p,
    };
    let key = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => problem("does not exist".into()),
        _ => problem(format!("cannot be read: {e}")),
    })?;
    if key.is_empty() {
        return Err(problem("is empty".into()));
    }
    Ok(key)
}

impl Ctx {
    fn backend(&self) -> Result<DynBackend> {
        open_backend(&self.url).map_err(|e| match e {
            // A malformed URL or missing S3 credentials: the caller's input.
            ferry_repo::Error::Invalid { .. } => Error::Usage(e.to_string()),
            e => e.into(),
        })
    }

    /// Opens the repository, telling "not there" and "wrong key" apart for the exit status.
    async fn open(&self) -> Result<Repository> {
        let backend = self.backend()?;
        or_interrupted(&self.cancel, async {
            Repository::open(backend, &self.key)
                .await
                .map_err(|e| match e {
                    ferry_repo::Error::NotFound { .. } => Error::RepositoryNotFound {
                        repo: self.url.clone(),
                    },
                    ferry_repo::Error::WrongKey {
                        fingerprint, keys, ..
                    } => {
                        // The error names the file; which keys would work is said here,
                        // since a key may have been changed since this file was current.
                        eprintln!("ferry: {}", wrong_key_detail(&fingerprint, &keys));
                        Error::WrongKey {
                            repo: self.url.clone(),
                            key_file: self.key_file.clone(),
                        }
                    }
                    e => e.into(),
                })
        })
        .await
    }

    /// Maps an engine error after a cancellable step: once the token fired, whatever
    /// the engine stopped with is reported as the interruption.
    fn interrupted_or(&self, e: ferry_repo::Error) -> Error {
        if self.cancel.is_cancelled() {
            Error::Interrupted
        } else {
            e.into()
        }
    }
}
