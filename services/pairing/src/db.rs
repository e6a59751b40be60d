//! The service's state in `<data-dir>/pairing.db`: pending tokens (destination side) and
//! pairs (both sides). Secrets are sealed before they reach this module's callers' rows.

use ferry_proto::v1::{ClusterInfo, Pair, PairRole, PairStatus};
use ferry_store::Store;
use ferry_store::rusqlite::{self, OptionalExtension, Row, Transaction, params};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{PairingError, Result};

/// Schema versions in order; append, never edit.
pub(crate) const MIGRATIONS: &[&str] = &[r#"
-- Tokens this cluster issued as a destination. The row outlives its pair so that a second
-- use of the token is reported as such ("already used"), not as an unknown token.
CREATE TABLE tokens (
    token_id      TEXT PRIMARY KEY,
    pair_id       TEXT NOT NULL UNIQUE,
    pair_name     TEXT NOT NULL,
    digest        TEXT NOT NULL,       -- hex SHA-256 of the payload issued, to detect altered tokens
    destination   BLOB NOT NULL,       -- ClusterInfo (protobuf) as the token carries it
    credential    TEXT NOT NULL,       -- JSON: names of the Kubernetes objects behind the credential
    sealed_bearer BLOB,                -- sealed; NULL once the credential is revoked
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'used', 'expired')),
    used_at       INTEGER
);
CREATE INDEX tokens_pending ON tokens (state, expires_at);

CREATE TABLE pairs (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    role            INTEGER NOT NULL,  -- ferry.v1.PairRole
    token_id        TEXT NOT NULL,     -- after redemption it only authorises ForgetPair between the two sides
    source          BLOB NOT NULL,     -- ClusterInfo (protobuf)
    destination     BLOB NOT NULL,     -- ClusterInfo (protobuf)
    created_at      INTEGER NOT NULL,
    status          INTEGER NOT NULL,  -- ferry.v1.PairStatus
    last_checked_at INTEGER,
    sealed_credentials BLOB            -- source side: the destination's CA and bearer token, sealed
);
"#];

/// The Kubernetes objects behind a credential issued to a source (names only, no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IssuedCredential {
    pub namespace: String,
    pub service_account: String,
    /// The token Secret, for [`crate::CredentialKind::Secret`].
    pub secret: Option<String>,
    pub binding: String,
    /// Unix seconds when the credential stops working; none for Secret tokens.
    pub expires_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenState {
    Pending,
    Used,
    Expired,
}

impl TokenState {
    fn as_str(self) -> &'static str {
        match self {
            TokenState::Pending => "pending",
            TokenState::Used => "used",
            TokenState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> TokenState {
        match s {
            "used" => TokenState::Used,
            "expired" => TokenState::Expired,
            _ => TokenState::Pending,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct TokenRow {
    pub token_id: String,
    pub pair_id: String,
    pub pair_name: String,
    pub digest: String,
    pub destination: ClusterInfo,
    pub credential: IssuedCredential,
    pub sealed_bearer: Option<Vec<u8>>,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: TokenState,
    pub used_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub(crate) struct PairRow {
    pub id: String,
    pub name: String,
    pub role: PairRole,
    pub token_id: String,
    pub source: ClusterInfo,
    pub destination: ClusterInfo,
    pub created_at: i64,
    pub status: PairStatus,
    pub last_checked_at: Option<i64>,
    pub sealed_credentials: Option<Vec<u8>>,
}

pub(crate) fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

impl PairRow {
    pub fn to_proto(&self) -> Pair {
        Pair {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role as i32,
            source: Some(self.source.clone()),
            destination: Some(self.destination.clone()),
            created_at: Some(timestamp(self.created_at)),
            status: self.status as i32,
            last_checked_at: self.last_checked_at.map(timestamp),
        }
    }

    /// The cluster on the other side from this one.
    pub fn peer(&self) -> &ClusterInfo {
        match self.role {
            PairRole::Destination => &self.source,
            _ => &self.destination,
        }
    }
}

/// Why a redemption was refused; the caller turns it into a [`PairingError`] naming
/// this cluster.
#[derive(Debug)]
pub(crate) enum Refusal {
    Unknown,
    Altered,
    Used { used_at: Option<i64> },
    Expired { expires_at: i64 },
    NameTaken { name: String },
}

fn decode_cluster(idx: usize, bytes: &[u8]) -> rusqlite::Result<ClusterInfo> {
    ClusterInfo::decode(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, Box::new(e))
    })
}

const TOKEN_COLUMNS: &str = "token_id, pair_id, pair_name, digest, destination, credential, \
                             sealed_bearer, created_at, expires_at, state, used_at";

fn token_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let credential: String = r.get(5)?;
    let credential = serde_json::from_str(&credential).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(TokenRow {
        token_id: r.get(0)?,
        pair_id: r.get(1)?,
        pair_name: r.get(2)?,
        digest: r.get(3)?,
        destination: decode_cluster(4, &r.get::<_, Vec<u8>>(4)?)?,
        credential,
        sealed_bearer: r.get(6)?,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        state: TokenState::parse(&r.get::<_, String>(9)?),
        used_at: r.get(10)?,
    })
}

const PAIR_COLUMNS: &str = "id, name, role, token_id, source, destination, created_at, status, \
                            last_checked_at, sealed_credentials";

fn pair_row(r: &Row<'_>) -> rusqlite::Result<PairRow> {
    Ok(PairRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: PairRole::try_from(r.get::<_, i32>(2)?).unwrap_or(PairRole::Unspecified),
        token_id: r.get(3)?,
        source: decode_cluster(4, &r.get::<_, Vec<u8>>(4)?)?,
        destination: decode_cluster(5, &r.get::<_, Vec<u8>>(5)?)?,
        created_at: r.get(6)?,
        status: PairStatus::try_from(r.get::<_, i32>(7)?).unwrap_or(PairStatus::Unknown),
        last_checked_at: r.get(8)?,
        sealed_credentials: r.get(9)?,
    })
}

fn find_pair_tx(tx: &Transaction<'_>, pair: &str) -> rusqlite::Result<Option<PairRow>> {
    // Ids and names cannot collide: names are DNS labels, ids 32 hex digits that a name
    // check refuses (see service::validate_name).
    tx.query_row(
        &format!("SELECT {PAIR_COLUMNS} FROM pairs WHERE id = ?1 OR name = ?1"),
        [pair],
        pair_row,
    )
    .optional()
}

fn name_taken_tx(tx: &Transaction<'_>, name: &str, now: i64) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pairs WHERE name = ?1)
             OR EXISTS (SELECT 1 FROM tokens WHERE pair_name = ?1 AND state = 'pending'
                                               AND expires_at > ?2)",
        params![name, now],
        |r| r.get(0),
    )
}

fn insert_pair_tx(tx: &Transaction<'_>, p: &PairRow) -> rusqlite::Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO pairs ({PAIR_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            p.id,
            p.name,
            p.role as i32,
            p.token_id,
            p.source.encode_to_vec(),
            p.destination.encode_to_vec(),
            p.created_at,
            p.status as i32,
            p.last_checked_at,
            p.sealed_credentials,
        ],
    )?;
    Ok(())
}

/// Typed access to the pairing database of one cluster.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    store: Store,
    cluster: String,
}

impl Db {
    pub async fn open(data_dir: &std::path::Path, cluster: &str) -> Result<Db> {
        let store = Store::open(&data_dir.join("pairing.db"), MIGRATIONS)
            .await
            .map_err(|source| PairingError::Store {
                cluster: cluster.to_string(),
                source: Box::new(source),
            })?;
        Ok(Db {
            store,
            cluster: cluster.to_string(),
        })
    }

    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.store
            .call(f)
            .await
            .map_err(|source| PairingError::Store {
                cluster: self.cluster.clone(),
                source: Box::new(source),
            })
    }

    /// True if a pair or a live pending token already uses `name`.
    pub async fn name_taken(&self, name: &str, now: i64) -> Result<bool> {
        let name = name.to_string();
        self.call(move |tx| name_taken_tx(tx, &name, now)).await
    }

    /// Records a token just issued; refuses if its name was taken meanwhile.
    pub async fn insert_token(&self, t: TokenRow) -> Result<()> {
        let cluster = self.cluster.clone();
        let credential =
            serde_json::to_string(&t.credential).map_err(|e| PairingError::Internal {
                detail: format!("encoding credential names: {e}"),
            })?;
        self.call(move |tx| {
            if name_taken_tx(tx, &t.pair_name, t.created_at)? {
                return Ok(Err(PairingError::PairExists {
                    name: t.pair_name,
                    cluster,
                }));
            }
            tx.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    t.token_id,
                    t.pair_id,
                    t.pair_name,
                    t.digest,
                    t.destination.encode_to_vec(),
                    credential,
                    t.sealed_bearer,
                    t.created_at,
                    t.expires_at,
                    t.state.as_str(),
                    t.used_at,
                ],
            )?;
            Ok(Ok(()))
        })
        .await?
    }

    pub async fn token(&self, token_id: &str) -> Result<Option<TokenRow>> {
        let token_id = token_id.to_string();
        self.call(move |tx| {
            tx.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_id = ?1"),
                [token_id],
                token_row,
            )
            .optional()
        })
        .await
    }

    /// Pending tokens whose expiry has passed: their credentials are to be revoked.
    pub async fn expired_pending(&self, now: i64) -> Result<Vec<TokenRow>> {
        self.call(move |tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE state = 'pending' AND expires_at <= ?1"
            ))?;
            stmt.query_map([now], token_row)?.collect()
        })
        .await
    }

    /// Marks a pending token expired and forgets its bearer (its credential is revoked).
    pub async fn expire_token(&self, token_id: &str) -> Result<()> {
        let token_id = token_id.to_string();
        self.call(move |tx| {
            tx.execute(
                "UPDATE tokens SET state = 'expired', sealed_bearer = NULL
                 WHERE token_id = ?1 AND state = 'pending'",
                [token_id],
            )
        })
        .await
        .map(drop)
    }

    /// Redeems a token once: checks it and, in the same transaction, marks it used and
    /// records the pair on this (destination) side.
    pub async fn redeem(
        &self,
        token_id: &str,
        digest: &str,
        source: ClusterInfo,
        now: i64,
    ) -> Result<Result<PairRow, Refusal>> {
        let token_id = token_id.to_string();
        let digest = digest.to_string();
        self.call(move |tx| {
            let Some(t) = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_id = ?1"),
                    [&token_id],
                    token_row,
                )
                .optional()?
            else {
                return Ok(Err(Refusal::Unknown));
            };
            // Digest first: an altered copy of a used token is reported as altered.
            if !constant_time_eq(t.digest.as_bytes(), digest.as_bytes()) {
                return Ok(Err(Refusal::Altered));
            }
            match t.state {
                TokenState::Used => return Ok(Err(Refusal::Used { used_at: t.used_at })),
                TokenState::Expired => {
                    return Ok(Err(Refusal::Expired {
                        expires_at: t.expires_at,
                    }));
                }
                TokenState::Pending if t.expires_at <= now => {
                    return Ok(Err(Refusal::Expired {
                        expires_at: t.expires_at,
                    }));
                }
                TokenState::Pending => {}
            }
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM pairs WHERE name = ?1 OR id = ?2)",
                params![t.pair_name, t.pair_id],
                |r| r.get(0),
            )?;
            if exists {
                return Ok(Err(Refusal::NameTaken { name: t.pair_name }));
            }
            tx.execute(
                "UPDATE tokens SET state = 'used', used_at = ?2 WHERE token_id = ?1",
                params![token_id, now],
            )?;
            let pair = PairRow {
                id: t.pair_id,
                name: t.pair_name,
                role: PairRole::Destination,
                token_id: t.token_id,
                source,
                destination: t.destination,
                created_at: now,
                status: PairStatus::Unknown,
                last_checked_at: None,
                sealed_credentials: None,
            };
            insert_pair_tx(tx, &pair)?;
            Ok(Ok(pair))
        })
        .await
    }

    /// Stores a pair (source side); refuses a taken name or id.
    pub async fn insert_pair(&self, p: PairRow) -> Result<()> {
        let cluster = self.cluster.clone();
        self.call(move |tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM pairs WHERE name = ?1 OR id = ?2)",
                params![p.name, p.id],
                |r| r.get(0),
            )?;
            if exists {
                return Ok(Err(PairingError::PairExists {
                    name: p.name,
                    cluster,
                }));
            }
            insert_pair_tx(tx, &p)?;
            Ok(Ok(()))
        })
        .await?
    }

    /// A pair by id or name.
    pub async fn find_pair(&self, pair: &str) -> Result<Option<PairRow>> {
        let pair = pair.to_string();
        self.call(move |tx| find_pair_tx(tx, &pair)).await
    }

    /// Up to `limit` pairs named after `after`, ordered by name.
    pub async fn list_pairs(&self, after: Option<String>, limit: usize) -> Result<Vec<PairRow>> {
        self.call(move |tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {PAIR_COLUMNS} FROM pairs WHERE name > ?1 ORDER BY name LIMIT ?2"
            ))?;
            stmt.query_map(params![after.unwrap_or_default(), limit as i64], pair_row)?
                .collect()
        })
        .await
    }

    /// Removes a pair and, on the destination, the bearer of the token it came from.
    /// False if there was no such pair.
    pub async fn delete_pair(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.call(move |tx| {
            tx.execute(
                "UPDATE tokens SET sealed_bearer = NULL WHERE pair_id = ?1",
                [&id],
            )?;
            Ok(tx.execute("DELETE FROM pairs WHERE id = ?1", [&id])? > 0)
        })
        .await
    }

    /// Records a renewed credential's expiry on the destination's token row.
    pub async fn set_credential(
        &self,
        token_id: &str,
        credential: &IssuedCredential,
    ) -> Result<()> {
        let token_id = token_id.to_string();
        let credential = serde_json::to_string(credential).map_err(|e| PairingError::Internal {
            detail: format!("encoding credential names: {e}"),
        })?;
        self.call(move |tx| {
            tx.execute(
                "UPDATE tokens SET credential = ?2 WHERE token_id = ?1",
                params![token_id, credential],
            )
        })
        .await
        .map(drop)
    }

    /// Replaces a source pair's sealed credentials (a renewed token).
    pub async fn set_sealed_credentials(&self, id: &str, sealed: Vec<u8>) -> Result<()> {
        let id = id.to_string();
        self.call(move |tx| {
            tx.execute(
                "UPDATE pairs SET sealed_credentials = ?2 WHERE id = ?1",
                params![id, sealed],
            )
        })
        .await
        .map(drop)
    }

    /// Every pair this cluster is the source of.
    pub async fn source_pairs(&self) -> Result<Vec<PairRow>> {
        self.call(move |tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {PAIR_COLUMNS} FROM pairs WHERE role = ?1 ORDER BY name"
            ))?;
            stmt.query_map([PairRole::Source as i32], pair_row)?
                .collect()
        })
        .await
    }

    pub async fn set_status(&self, id: &str, status: PairStatus, checked_at: i64) -> Result<()> {
        let id = id.to_string();
        self.call(move |tx| {
            tx.execute(
                "UPDATE pairs SET status = ?2, last_checked_at = ?3 WHERE id = ?1",
                params![id, status as i32, checked_at],
            )
        })
        .await
        .map(drop)
    }
}

/// Comparison whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> ClusterInfo {
        ClusterInfo {
            name: name.into(),
            cluster_id: format!("{name}-uid"),
            api_server_url: "https://127.0.0.1:1".into(),
            ferry_endpoint: "127.0.0.1:2".into(),
            kubernetes_version: "v1.35.4".into(),
        }
    }

    fn token(id: &str, name: &str, expires_at: i64) -> TokenRow {
        TokenRow {
            token_id: id.into(),
            pair_id: format!("pair-of-{id}"),
            pair_name: name.into(),
            digest: "d1".into(),
            destination: info("b"),
            credential: IssuedCredential {
                namespace: "ferry-system".into(),
                service_account: "sa".into(),
                secret: Some("sa-token".into()),
                binding: "sa".into(),
                expires_at: None,
            },
            sealed_bearer: Some(vec![1, 2, 3]),
            created_at: 100,
            expires_at,
            state: TokenState::Pending,
            used_at: None,
        }
    }

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), "b").await.expect("open");
        (dir, db)
    }

    #[tokio::test]
    async fn a_token_redeems_once_and_only_with_its_digest() {
        let (_dir, db) = db().await;
        db.insert_token(token("t1", "prod", 1000))
            .await
            .expect("insert");
        assert!(db.name_taken("prod", 200).await.expect("taken"));
        assert!(
            !db.name_taken("prod", 1000)
                .await
                .expect("expired reservation")
        );

        let r = db.redeem("t1", "other", info("a"), 200).await.expect("db");
        assert!(matches!(r, Err(Refusal::Altered)), "{r:?}");
        let r = db.redeem("nope", "d1", info("a"), 200).await.expect("db");
        assert!(matches!(r, Err(Refusal::Unknown)), "{r:?}");

        let pair = db
            .redeem("t1", "d1", info("a"), 200)
            .await
            .expect("db")
            .expect("redeemed");
        assert_eq!(pair.role, PairRole::Destination);
        assert_eq!(pair.source.name, "a");
        let r = db.redeem("t1", "d1", info("a"), 201).await.expect("db");
        assert!(
            matches!(r, Err(Refusal::Used { used_at: Some(200) })),
            "{r:?}"
        );

        assert!(db.delete_pair(&pair.id).await.expect("delete"));
        let t = db.token("t1").await.expect("db").expect("row kept");
        assert!(t.sealed_bearer.is_none(), "bearer dropped with the pair");
        let r = db.redeem("t1", "d1", info("a"), 202).await.expect("db");
        assert!(matches!(r, Err(Refusal::Used { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn expired_tokens_are_refused_and_listed_for_revocation() {
        let (_dir, db) = db().await;
        db.insert_token(token("t1", "prod", 150))
            .await
            .expect("insert");
        let r = db.redeem("t1", "d1", info("a"), 150).await.expect("db");
        assert!(
            matches!(r, Err(Refusal::Expired { expires_at: 150 })),
            "{r:?}"
        );
        let expired = db.expired_pending(150).await.expect("list");
        assert_eq!(expired.len(), 1);
        db.expire_token("t1").await.expect("expire");
        assert!(db.expired_pending(150).await.expect("list").is_empty());
        let r = db.redeem("t1", "d1", info("a"), 10).await.expect("db");
        assert!(matches!(r, Err(Refusal::Expired { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn pairs_page_by_name() {
        let (_dir, db) = db().await;
        for (i, name) in ["c", "a", "b"].iter().enumerate() {
            db.insert_pair(PairRow {
                id: format!("id{i}"),
                name: (*name).into(),
                role: PairRole::Source,
                token_id: "t".into(),
                source: info("a"),
                destination: info("b"),
                created_at: 1,
                status: PairStatus::Unknown,
                last_checked_at: None,
                sealed_credentials: Some(vec![9]),
            })
            .await
            .expect("insert");
        }
        let first = db.list_pairs(None, 2).await.expect("page 1");
        let names: Vec<_> = first.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let rest = db.list_pairs(Some("b".into()), 2).await.expect("page 2");
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].name, "c");
        assert_eq!(
            db.find_pair("id1").await.expect("by id").map(|p| p.name),
            Some("a".into())
        );
        let dup = db
            .insert_pair(PairRow {
                id: "id9".into(),
                ..first[0].clone()
            })
            .await
            .expect_err("name taken");
        assert!(matches!(dup, PairingError::PairExists { .. }), "{dup}");
    }
}
