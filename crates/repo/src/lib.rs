//! Ferry's repository engine and data mover.
//!
//! A repository holds encrypted, deduplicated snapshots of directory trees and block
//! device images in any [`backend::Backend`] (a local directory, S3, memory). The
//! format is described in `FORMAT.md` next to this crate's `Cargo.toml`.
//!
//! ```no_run
//! # async fn demo() -> ferry_repo::Result<()> {
//! use std::sync::Arc;
//! use ferry_repo::{Repository, InitOptions, BackupOptions, RestoreOptions};
//! use ferry_repo::backend::LocalBackend;
//!
//! let backend = Arc::new(LocalBackend::new("/srv/repo"));
//! let repo = Repository::init(backend, b"key file bytes", InitOptions::default()).await?;
//! let done = repo.backup("/var/lib/data".as_ref(), BackupOptions::default()).await?;
//! repo.restore(&done.snapshot_id, "/restore/here".as_ref(), RestoreOptions::default()).await?;
//! let report = repo.check(true).await?;
//! assert!(report.is_ok());
//! # Ok(()) }
//! ```
//!
//! Keys in the store: `config`, `packs/<xx>/<id>`, `index/<id>`, `snapshots/<id>`,
//! `restorepoints/<application>/<id>`, `locks/<id>`. Writes go packs, then index, then snapshot, so a snapshot that can be
//! listed names only data that exists.
//!
//! Keys: the random master key is wrapped by one or more user keys (key slots in
//! `config`); [`Repository::add_key`], [`Repository::remove_key`] and
//! [`Repository::keys`] manage them, and a key that opens none gives
//! [`Error::WrongKey`] naming the keys that would.
//!
//! Retention: [`Repository::forget`] removes restore points and snapshots by a
//! [`ForgetPolicy`] (keep the last N, keep those younger than a duration, per
//! application), and [`Repository::prune`] then deletes the packs nothing uses
//! ([`Repository::forget_and_prune`] does both under one lock). Writers take shared
//! locks and prune an exclusive one, so a backup or restore-point commit running
//! alongside a prune either finishes intact or one side refuses with [`Error::Locked`];
//! [`Repository::unlock`] removes locks whose holders are gone.

pub mod backend;
mod backup;
mod check;
mod chunker;
mod config;
mod crypto;
mod error;
mod forget;
mod fsutil;
mod id;
mod index;
mod keys;
pub mod limits;
mod lock;
mod pack;
mod packer;
#[doc(hidden)]
pub mod parse;
mod progress;
mod prune;
mod repository;
mod restore;
mod restorepoint;
mod snapshot;
mod stored_tree;
mod tree;

pub use backup::{BackupOptions, BackupResult, WalkedSource};
pub use check::{CheckProblem, CheckReport};
#[doc(hidden)]
pub use chunker::chunk_boundaries;

pub use config::{CONFIG_KEY, ChunkerParams, Config, FORMAT_VERSION, InitOptions, WrappedKey};
pub use crypto::{KdfCost, KdfParams};
pub use error::{Error, Result};
pub use forget::{ForgetPolicy, ForgetReport, RestorePointEntry, SnapshotEntry};
pub use id::Id;
pub use index::{BlobLocation, index_key};
pub use keys::{KEY_CHANGE_PURPOSE, KeyInfo};
pub use lock::{DEFAULT_LOCK_TTL, DEFAULT_MAX_CLOCK_SKEW, FoundLock, LockInfo, UnlockReport};
pub use pack::{BlobType, pack_key};
pub use progress::{BackupProgress, RestoreProgress};
pub use prune::{PruneOptions, PruneReport};
pub use repository::Repository;
pub use restore::{RestoreOptions, RestoreSummary};
pub use restorepoint::restore_point_key;

pub use snapshot::{RootMeta, Snapshot, SnapshotSummary, snapshot_key};
pub use tree::{ContentPart, ContentRef, Name, Node, NodeKind, Tree, unsafe_name_reason};
