//! Embedded state for Ferry's services.
//!
//! Every service keeps its state in its own SQLite file under one data directory
//! (`<data-dir>/<service>.db`), opened through [`Store`], which applies the service's
//! schema migrations in order and runs every access as one transaction on the blocking
//! pool. Secrets such as a pair's credentials are sealed with [`SecretBox`] before they
//! are stored, under a key kept in `<data-dir>/secret.key`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_store::StoreError> {
//! const MIGRATIONS: &[&str] = &["CREATE TABLE pairs (id TEXT PRIMARY KEY, name TEXT NOT NULL)"];
//! let store = ferry_store::Store::open("/var/lib/ferry/pairing.db".as_ref(), MIGRATIONS).await?;
//! store
//!     .call(|tx| tx.execute("INSERT INTO pairs VALUES (?1, ?2)", ["p1", "prod"]))
//!     .await?;
//! # Ok(()) }
//! ```

pub mod page;
mod secret;
mod store;

pub use page::{BadPageToken, Page};
pub use rusqlite;
pub use secret::SecretBox;
pub use store::Store;

use std::path::PathBuf;

/// What can go wrong with a store or the secret box.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or set up.
    #[error("opening state database {path}: {source}; check that the data directory is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A schema migration failed; the database is left at the previous version.
    #[error("migrating state database {path} to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: usize,
        #[source]
        source: rusqlite::Error,
    },

    /// The database is newer than this build understands.
    #[error(
        "state database {path} has schema version {found}, this build knows up to {known}; \
         upgrade ferry or point it at another data directory"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },

    /// A query failed.
    #[error("state database {path}: {source}")]
    Query {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// Reading or writing the secret key file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The secret key file is not a key.
    #[error(
        "{path} is not a Ferry secret key (want 32 bytes): restore it from backup or remove it to start over (stored credentials are then lost)"
    )]
    BadKey { path: PathBuf },

    /// A sealed secret did not open: wrong key file, or the value was altered.
    #[error(
        "sealed {what} does not open with this data directory's secret key (wrong secret.key, or the value was altered)"
    )]
    Unseal { what: String },

    /// The blocking task running a query died: a bug.
    #[error("internal error in the state store: {0}")]
    Internal(String),
}

/// Result alias for the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
