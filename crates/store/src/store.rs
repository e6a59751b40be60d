//! The SQLite store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, Transaction};

use crate::{Result, StoreError};

/// One service's database. Cheap to clone; accesses are serialised, which SQLite
/// would do for writers anyway, and a control plane's state is small.
#[derive(Clone, Debug)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to
    /// date: `migrations[i]` moves version `i` to `i + 1`, each in its own transaction.
    pub async fn open(path: &Path, migrations: &'static [&'static str]) -> Result<Store> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                    op: "creating data directory",
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let conn = Connection::open(&path).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
            Self::setup(conn, path, migrations)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory(migrations: &'static [&'static str]) -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Self::setup(conn, path, migrations)
    }

    fn setup(
        mut conn: Connection,
        path: PathBuf,
        migrations: &'static [&'static str],
    ) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // WAL: readers do not block the writer; NORMAL sync is durable across process
        // crashes, which is what job state needs. Waiting on a lock beats failing.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        let current: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(open_err)? as usize;
        if current > migrations.len() {
            return Err(StoreError::TooNew {
                path,
                found: current,
                known: migrations.len(),
            });
        }
        for (i, sql) in migrations.iter().enumerate().skip(current) {
            let version = i + 1;
            let migrate = |source| StoreError::Migrate {
                path: path.clone(),
                version,
                source,
            };
            let tx = conn.transaction().map_err(migrate)?;
            tx.execute_batch(sql).map_err(migrate)?;
            tx.pragma_update(None, "user_version", version as i64)
                .map_err(migrate)?;
            tx.commit().map_err(migrate)?;
            tracing::debug!(path = %path.display(), version, "state schema migrated");
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Runs `f` in one transaction on the blocking pool; commits if it returns `Ok`.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let query = |source| StoreError::Query {
                path: path.clone(),
                source,
            };
            let mut conn = conn.lock();
            let tx = conn.transaction().map_err(query)?;
            let out = f(&tx).map_err(query)?;
            tx.commit().map_err(query)?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[&str] = &["CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"];
    const V2: &[&str] = &[
        "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
        "ALTER TABLE t ADD COLUMN note TEXT NOT NULL DEFAULT ''",
    ];

    #[tokio::test]
    async fn migrates_forward_keeps_data_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/svc.db");
        let store = Store::open(&path, V1).await.expect("open v1");
        store
            .call(|tx| tx.execute("INSERT INTO t (k, v) VALUES ('a', 1)", []))
            .await
            .expect("insert");
        drop(store);

        let store = Store::open(&path, V2).await.expect("open v2");
        let (v, note): (i64, String) = store
            .call(|tx| {
                tx.query_row("SELECT v, note FROM t WHERE k = 'a'", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .await
            .expect("select");
        assert_eq!((v, note.as_str()), (1, ""));
        drop(store);

        let err = Store::open(&path, V1).await.expect_err("older build");
        assert!(
            matches!(
                err,
                StoreError::TooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_call_rolls_back() {
        let store = Store::open_in_memory(V1).expect("open");
        let err = store
            .call(|tx| {
                tx.execute("INSERT INTO t (k, v) VALUES ('a', 1)", [])?;
                tx.execute("INSERT INTO t (k, v) VALUES ('a', 2)", [])
            })
            .await
            .expect_err("duplicate key");
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        let n: i64 = store
            .call(|tx| tx.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .await
            .expect("count");
        assert_eq!(n, 0, "the first insert was rolled back");
    }
}
