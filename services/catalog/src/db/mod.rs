//! The catalog's state in `<data-dir>/catalog.db`: profiles, and the index of restore
//! points per repository. The index is a cache of the repositories (they are the truth):
//! rows are added when restore points are read and replaced wholesale by RebuildIndex.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ferry_store::Store;
use ferry_store::rusqlite::{self, OptionalExtension, params};

use crate::error::CatalogError;
use crate::restore_points::IndexedRestorePoint;

const MIGRATIONS: &[&str] = &[
    // v1. Secrets are stored by reference only: the catalog never holds credentials.
    "CREATE TABLE profiles (
        name TEXT PRIMARY KEY,
        kind INTEGER NOT NULL,
        backend INTEGER NOT NULL,
        endpoint TEXT NOT NULL,
        bucket TEXT NOT NULL,
        prefix TEXT NOT NULL,
        region TEXT NOT NULL,
        credentials_namespace TEXT NOT NULL,
        credentials_name TEXT NOT NULL,
        verify_tls INTEGER NOT NULL,
        key_namespace TEXT NOT NULL,
        key_name TEXT NOT NULL,
        repository_id TEXT NOT NULL,
        created_at_ns INTEGER NOT NULL
    );
    CREATE TABLE restore_points (
        repository_id TEXT NOT NULL,
        id TEXT NOT NULL,
        application TEXT NOT NULL,
        created_at_ns INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        volumes TEXT NOT NULL,
        tags TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (repository_id, id)
    );
    CREATE INDEX restore_points_newest ON restore_points (repository_id, created_at_ns, id);
    CREATE INDEX restore_points_by_application ON restore_points (application, created_at_ns);",
    // v2. Migration tokens: the fingerprint of the key that signed an import profile's
    // token, and this catalog's own key pairs (import: X25519, signing: Ed25519), their
    // private halves sealed with the data directory's secret key.
    "ALTER TABLE profiles ADD COLUMN token_signer TEXT NOT NULL DEFAULT '';
    CREATE TABLE keys (
        purpose TEXT PRIMARY KEY,
        sealed BLOB NOT NULL,
        public TEXT NOT NULL,
        created_at_ns INTEGER NOT NULL
    );",
    // v3. Labels this catalog keeps on restore points beside the repositories (an import
    // profile cannot write to its repository): not part of the index, which RebuildIndex
    // replaces, so they stay until the restore point leaves the repository.
    "CREATE TABLE restore_point_labels (
        repository_id TEXT NOT NULL,
        id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (repository_id, id, key)
    );",
    // v4. A migration token makes one profile and reads only what it names: the
    // namespace and restore point an import profile's token named, and the ids of the
    // tokens this catalog accepted (kept past their profile's deletion, so a token is never
    // used twice; dropped once the token has expired).
    "ALTER TABLE profiles ADD COLUMN token_namespace TEXT NOT NULL DEFAULT '';
    ALTER TABLE profiles ADD COLUMN token_restore_point TEXT NOT NULL DEFAULT '';
    CREATE TABLE used_tokens (
        id TEXT PRIMARY KEY,
        profile TEXT NOT NULL,
        used_at_ns INTEGER NOT NULL,
        expires_at_ns INTEGER NOT NULL
    );",
    // v5. Export profiles bound to one application namespace, the only ones migration
    // tokens are issued for (a token's key opens the whole repository).
    "ALTER TABLE profiles ADD COLUMN namespace TEXT NOT NULL DEFAULT '';",
];

/// A migration token this catalog already accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UsedToken {
    /// The profile it made (which may have been deleted since).
    pub profile: String,
    pub used_at_ns: i64,
}

/// What [`Db::insert_profile`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    Yes,
    /// A profile of that name exists.
    NameTaken,
    /// The profile's token was used before.
    TokenUsed(UsedToken),
}

/// The token an import profile is made from, recorded with it.
#[derive(Clone, Debug)]
pub(crate) struct TokenUse {
    /// [`ferry_token::Opened::id`].
    pub id: String,
    pub expires_at_ns: i64,
}

/// One of the catalog's own key pairs, as stored.
#[derive(Clone, Debug)]
pub(crate) struct StoredKey {
    /// `import` or `signing`.
    pub purpose: &'static str,
    /// The private half, sealed (see `keys.rs`).
    pub sealed: Vec<u8>,
    /// The public half as text.
    pub public: String,
    pub created_at_ns: i64,
}

/// A Secret by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecretName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A stored profile (proto enums kept as their numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProfileRecord {
    pub name: String,
    pub kind: i32,
    pub backend: i32,
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub credentials: Option<SecretName>,
    pub verify_tls: bool,
    pub key_secret: SecretName,
    pub repository_id: String,
    pub created_at_ns: i64,
    /// Import profiles made from a migration token: the signer's fingerprint; else empty.
    pub token_signer: String,
    /// Import profiles made from a migration token: the one namespace whose restore
    /// points the profile reads; else empty (no limit).
    pub token_namespace: String,
    /// Import profiles made from a token that named one restore point: its id; else empty.
    pub token_restore_point: String,
    /// Export profiles bound to one application namespace: it; else empty.
    pub namespace: String,
}

impl ProfileRecord {
    /// What of its repository the profile may read.
    pub fn reads_only(&self) -> ferry_profile::ReadScope {
        ferry_profile::ReadScope::from_parts(&self.token_namespace, &self.token_restore_point)
    }
}

const PROFILE_COLUMNS: &str = "name, kind, backend, endpoint, bucket, prefix, region, \
     credentials_namespace, credentials_name, verify_tls, key_namespace, key_name, \
     repository_id, created_at_ns, token_signer, token_namespace, token_restore_point, namespace";

fn profile_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProfileRecord> {
    let cred_ns: String = r.get(7)?;
    let cred_name: String = r.get(8)?;
    Ok(ProfileRecord {
        name: r.get(0)?,
        kind: r.get(1)?,
        backend: r.get(2)?,
        endpoint: r.get(3)?,
        bucket: r.get(4)?,
        prefix: r.get(5)?,
        region: r.get(6)?,
        credentials: (!cred_name.is_empty()).then_some(SecretName {
            namespace: cred_ns,
            name: cred_name,
        }),
        verify_tls: r.get(9)?,
        key_secret: SecretName {
            namespace: r.get(10)?,
            name: r.get(11)?,
        },
        repository_id: r.get(12)?,
        created_at_ns: r.get(13)?,
        token_signer: r.get(14)?,
        token_namespace: r.get(15)?,
        token_restore_point: r.get(16)?,
        namespace: r.get(17)?,
    })
}

fn used_token(tx: &rusqlite::Transaction<'_>, id: &str) -> rusqlite::Result<Option<UsedToken>> {
    tx.query_row(
        "SELECT profile, used_at_ns FROM used_tokens WHERE id = ?1",
        [id],
        |r| {
            Ok(UsedToken {
                profile: r.get(0)?,
                used_at_ns: r.get(1)?,
            })
        },
    )
    .optional()
}

/// One index row as stored: JSON columns still as text, decoded outside the
/// transaction so a bad row is reported as such, not as a database failure.
struct RawRestorePoint {
    id: String,
    application: String,
    created_at_ns: i64,
    job_id: String,
    volumes: String,
    tags: String,
    detail: String,
    local_labels: BTreeMap<String, String>,
}

const RP_COLUMNS: &str = "id, application, created_at_ns, job_id, volumes, tags, detail";

fn rp_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRestorePoint> {
    Ok(RawRestorePoint {
        id: r.get(0)?,
        application: r.get(1)?,
        created_at_ns: r.get(2)?,
        job_id: r.get(3)?,
        volumes: r.get(4)?,
        tags: r.get(5)?,
        detail: r.get(6)?,
        local_labels: BTreeMap::new(),
    })
}

/// The local labels of one restore point.
fn labels_of(
    tx: &rusqlite::Transaction<'_>,
    repository_id: &str,
    id: &str,
) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt = tx.prepare_cached(
        "SELECT key, value FROM restore_point_labels WHERE repository_id = ?1 AND id = ?2",
    )?;
    stmt.query_map(params![repository_id, id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Drops the labels of restore points no longer indexed for `repository_id`.
fn drop_orphan_labels(tx: &rusqlite::Transaction<'_>, repository_id: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM restore_point_labels WHERE repository_id = ?1 AND NOT EXISTS
            (SELECT 1 FROM restore_points r
             WHERE r.repository_id = ?1 AND r.id = restore_point_labels.id)",
        [repository_id],
    )?;
    Ok(())
}

impl RawRestorePoint {
    fn decode(self) -> Result<IndexedRestorePoint, CatalogError> {
        let bad = |what: &str, e: serde_json::Error| {
            CatalogError::Internal(format!(
                "index row of restore point {} has unreadable {what} ({e}); run RebuildIndex",
                self.id
            ))
        };
        Ok(IndexedRestorePoint {
            volumes: serde_json::from_str(&self.volumes).map_err(|e| bad("volumes", e))?,
            tags: serde_json::from_str(&self.tags).map_err(|e| bad("tags", e))?,
            detail: serde_json::from_str(&self.detail).map_err(|e| bad("detail", e))?,
            id: self.id,
            application: self.application,
            created_at_ns: self.created_at_ns,
            job_id: self.job_id,
            local_labels: self.local_labels,
        })
    }
}

/// An index row ready to insert.
struct EncodedRestorePoint {
    id: String,
    application: String,
    created_at_ns: i64,
    job_id: String,
    volumes: String,
    tags: String,
    detail: String,
}

fn encode(rp: &IndexedRestorePoint) -> Result<EncodedRestorePoint, CatalogError> {
    let json = |v: Result<String, serde_json::Error>| {
        v.map_err(|e| CatalogError::Internal(format!("encoding restore point {}: {e}", rp.id)))
    };
    Ok(EncodedRestorePoint {
        id: rp.id.clone(),
        application: rp.application.clone(),
        created_at_ns: rp.created_at_ns,
        job_id: rp.job_id.clone(),
        volumes: json(serde_json::to_string(&rp.volumes))?,
        tags: json(serde_json::to_string(&rp.tags))?,
        detail: json(serde_json::to_string(&rp.detail))?,
    })
}

fn insert_rp(
    tx: &rusqlite::Transaction<'_>,
    repository_id: &str,
    rp: &EncodedRestorePoint,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT OR REPLACE INTO restore_points
            (repository_id, id, application, created_at_ns, job_id, volumes, tags, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            repository_id,
            rp.id,
            rp.application,
            rp.created_at_ns,
            rp.job_id,
            rp.volumes,
            rp.tags,
            rp.detail
        ],
    )
}

/// Typed access to the catalog's database.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    store: Store,
}

impl Db {
    pub async fn open(data_dir: &Path) -> Result<Db, CatalogError> {
        let store = Store::open(&data_dir.join("catalog.db"), MIGRATIONS).await?;
        Ok(Db { store })
    }

    /// The use of migration token `id`, if this catalog accepted it before. Drops the
    /// records of tokens expired by `now_ns` first: those are refused as expired anyway.
    pub async fn used_token(
        &self,
        id: &str,
        now_ns: i64,
    ) -> Result<Option<UsedToken>, CatalogError> {
        let id = id.to_string();
        let now = now_ns;
        Ok(self
            .store
            .call(move |tx| {
                tx.execute("DELETE FROM used_tokens WHERE expires_at_ns < ?1", [now])?;
                used_token(tx, &id)
            })
            .await?)
    }

    /// Inserts a profile, and with `token` records that token as used, in one
    /// transaction: two requests with one token make one profile.
    pub async fn insert_profile(
        &self,
        p: ProfileRecord,
        token: Option<TokenUse>,
    ) -> Result<Inserted, CatalogError> {
        Ok(self
            .store
            .call(move |tx| {
                if let Some(t) = &token
                    && let Some(used) = used_token(tx, &t.id)?
                {
                    return Ok(Inserted::TokenUsed(used));
                }
                let (cred_ns, cred_name) = p
                    .credentials
                    .map(|s| (s.namespace, s.name))
                    .unwrap_or_default();
                let n = tx.execute(
                    &format!(
                        "INSERT OR IGNORE INTO profiles ({PROFILE_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                                 ?16, ?17, ?18)"
                    ),
                    params![
                        p.name,
                        p.kind,
                        p.backend,
                        p.endpoint,
                        p.bucket,
                        p.prefix,
                        p.region,
                        cred_ns,
                        cred_name,
                        p.verify_tls,
                        p.key_secret.namespace,
                        p.key_secret.name,
                        p.repository_id,
                        p.created_at_ns,
                        p.token_signer,
                        p.token_namespace,
                        p.token_restore_point,
                        p.namespace
                    ],
                )?;
                if n != 1 {
                    return Ok(Inserted::NameTaken);
                }
                if let Some(t) = token {
                    tx.execute(
                        "INSERT INTO used_tokens (id, profile, used_at_ns, expires_at_ns)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![t.id, p.name, p.created_at_ns, t.expires_at_ns],
                    )?;
                }
                Ok(Inserted::Yes)
            })
            .await?)
    }

    pub async fn get_profile(&self, name: &str) -> Result<Option<ProfileRecord>, CatalogError> {
        let name = name.to_string();
        Ok(self
            .store
            .call(move |tx| {
                tx.query_row(
                    &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE name = ?1"),
                    [name],
                    profile_from_row,
                )
                .optional()
            })
            .await?)
    }

    /// Profiles ordered by name, after `after`, at most `limit`.
    pub async fn list_profiles(
        &self,
        kind: Option<i32>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ProfileRecord>, CatalogError> {
        Ok(self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {PROFILE_COLUMNS} FROM profiles
                     WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR name > ?2)
                     ORDER BY name LIMIT ?3"
                ))?;
                stmt.query_map(params![kind, after, limit as i64], profile_from_row)?
                    .collect()
            })
            .await?)
    }

    /// Removes a profile and the index rows of its repository when no other profile
    /// reaches that repository; returns the removed profile.
    pub async fn delete_profile(&self, name: &str) -> Result<Option<ProfileRecord>, CatalogError> {
        let name = name.to_string();
        Ok(self
            .store
            .call(move |tx| {
                let Some(p) = tx
                    .query_row(
                        &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE name = ?1"),
                        [&name],
                        profile_from_row,
                    )
                    .optional()?
                else {
                    return Ok(None);
                };
                tx.execute("DELETE FROM profiles WHERE name = ?1", [&name])?;
                tx.execute(
                    "DELETE FROM restore_points WHERE repository_id = ?1
                     AND NOT EXISTS (SELECT 1 FROM profiles WHERE repository_id = ?1)",
                    [&p.repository_id],
                )?;
                drop_orphan_labels(tx, &p.repository_id)?;
                Ok(Some(p))
            })
            .await?)
    }

    /// Ids indexed for a repository (of one application, if given).
    pub async fn indexed_ids(
        &self,
        repository_id: &str,
        application: Option<&str>,
    ) -> Result<HashSet<String>, CatalogError> {
        let repository_id = repository_id.to_string();
        let application = application.map(str::to_string);
        Ok(self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT id FROM restore_points
                     WHERE repository_id = ?1 AND (?2 IS NULL OR application = ?2)",
                )?;
                stmt.query_map(params![repository_id, application], |r| r.get(0))?
                    .collect()
            })
            .await?)
    }

    /// Adds or replaces `upsert` and removes `remove` from a repository's index.
    pub async fn update_index(
        &self,
        repository_id: &str,
        remove: Vec<String>,
        upsert: &[IndexedRestorePoint],
    ) -> Result<(), CatalogError> {
        let rows: Vec<EncodedRestorePoint> = upsert.iter().map(encode).collect::<Result<_, _>>()?;
        let repository_id = repository_id.to_string();
        self.store
            .call(move |tx| {
                for id in &remove {
                    tx.execute(
                        "DELETE FROM restore_points WHERE repository_id = ?1 AND id = ?2",
                        params![repository_id, id],
                    )?;
                    tx.execute(
                        "DELETE FROM restore_point_labels WHERE repository_id = ?1 AND id = ?2",
                        params![repository_id, id],
                    )?;
                }
                for rp in &rows {
                    insert_rp(tx, &repository_id, rp)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Replaces a repository's whole index in one transaction.
    pub async fn replace_index(
        &self,
        repository_id: &str,
        rows: &[IndexedRestorePoint],
    ) -> Result<(), CatalogError> {
        let rows: Vec<EncodedRestorePoint> = rows.iter().map(encode).collect::<Result<_, _>>()?;
        let repository_id = repository_id.to_string();
        self.store
            .call(move |tx| {
                tx.execute(
                    "DELETE FROM restore_points WHERE repository_id = ?1",
                    [&repository_id],
                )?;
                for rp in &rows {
                    insert_rp(tx, &repository_id, rp)?;
                }
                // Labels outlive a rebuild, not the restore point.
                drop_orphan_labels(tx, &repository_id)?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Sets (or, with an empty value, removes) local labels of an indexed restore point;
    /// false when the index does not hold it.
    pub async fn set_labels(
        &self,
        repository_id: &str,
        id: &str,
        labels: Vec<(String, String)>,
    ) -> Result<bool, CatalogError> {
        let repository_id = repository_id.to_string();
        let id = id.to_string();
        Ok(self
            .store
            .call(move |tx| {
                let indexed = tx
                    .query_row(
                        "SELECT 1 FROM restore_points WHERE repository_id = ?1 AND id = ?2",
                        params![repository_id, id],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !indexed {
                    return Ok(false);
                }
                for (key, value) in &labels {
                    if value.is_empty() {
                        tx.execute(
                            "DELETE FROM restore_point_labels
                             WHERE repository_id = ?1 AND id = ?2 AND key = ?3",
                            params![repository_id, id, key],
                        )?;
                    } else {
                        tx.execute(
                            "INSERT OR REPLACE INTO restore_point_labels
                                (repository_id, id, key, value) VALUES (?1, ?2, ?3, ?4)",
                            params![repository_id, id, key, value],
                        )?;
                    }
                }
                Ok(true)
            })
            .await?)
    }

    /// Restore points newest first, strictly after the `(created_at_ns, id)` cursor.
    pub async fn restore_points_page(
        &self,
        repository_id: &str,
        application: Option<&str>,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<IndexedRestorePoint>, CatalogError> {
        let repository_id = repository_id.to_string();
        let application = application.map(str::to_string);
        let (after_ns, after_id) = match after {
            Some((ns, id)) => (Some(ns), Some(id)),
            None => (None, None),
        };
        let raw = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {RP_COLUMNS} FROM restore_points
                     WHERE repository_id = ?1 AND (?2 IS NULL OR application = ?2)
                       AND (?3 IS NULL OR created_at_ns < ?3 OR (created_at_ns = ?3 AND id < ?4))
                     ORDER BY created_at_ns DESC, id DESC LIMIT ?5"
                ))?;
                let mut rows = stmt
                    .query_map(
                        params![repository_id, application, after_ns, after_id, limit as i64],
                        rp_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for row in &mut rows {
                    row.local_labels = labels_of(tx, &repository_id, &row.id)?;
                }
                Ok(rows)
            })
            .await?;
        raw.into_iter().map(RawRestorePoint::decode).collect()
    }

    /// One indexed restore point.
    pub async fn restore_point(
        &self,
        repository_id: &str,
        id: &str,
    ) -> Result<Option<IndexedRestorePoint>, CatalogError> {
        let repository_id = repository_id.to_string();
        let id = id.to_string();
        let raw = self
            .store
            .call(move |tx| {
                let mut row = tx
                    .query_row(
                        &format!(
                            "SELECT {RP_COLUMNS} FROM restore_points \
                             WHERE repository_id = ?1 AND id = ?2"
                        ),
                        params![repository_id, id],
                        rp_from_row,
                    )
                    .optional()?;
                if let Some(row) = &mut row {
                    row.local_labels = labels_of(tx, &repository_id, &row.id)?;
                }
                Ok(row)
            })
            .await?;
        raw.map(RawRestorePoint::decode).transpose()
    }

    /// The newest indexed restore point time of each of `applications`, over every
    /// repository.
    pub async fn newest_by_application(
        &self,
        applications: Vec<String>,
    ) -> Result<HashMap<String, i64>, CatalogError> {
        Ok(self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT max(created_at_ns) FROM restore_points WHERE application = ?1",
                )?;
                let mut out = HashMap::new();
                for app in applications {
                    let newest: Option<i64> = stmt.query_row([&app], |r| r.get(0))?;
                    if let Some(ns) = newest {
                        out.insert(app, ns);
                    }
                }
                Ok(out)
            })
            .await?)
    }

    /// The key pair stored for `purpose`, if any.
    pub async fn get_key(&self, purpose: &'static str) -> Result<Option<StoredKey>, CatalogError> {
        Ok(self
            .store
            .call(move |tx| {
                tx.query_row(
                    "SELECT sealed, public, created_at_ns FROM keys WHERE purpose = ?1",
                    [purpose],
                    |r| {
                        Ok(StoredKey {
                            purpose,
                            sealed: r.get(0)?,
                            public: r.get(1)?,
                            created_at_ns: r.get(2)?,
                        })
                    },
                )
                .optional()
            })
            .await?)
    }

    /// Stores `key` unless its purpose has one; `false` when it had.
    pub async fn insert_key(&self, key: StoredKey) -> Result<bool, CatalogError> {
        let n = self
            .store
            .call(move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO keys (purpose, sealed, public, created_at_ns)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![key.purpose, key.sealed, key.public, key.created_at_ns],
                )
            })
            .await?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests;
