//! The catalog's own key pairs for migration tokens: the import key (X25519; tokens
//! for this cluster are encrypted to it) and the signing key (Ed25519; tokens this
//! cluster issues are signed with it). Each is made once, on first use, and kept in
//! `catalog.db` with its private half sealed under the data directory's `secret.key`
//! ([`ferry_store::SecretBox`]); losing that file means making a new import key (and
//! new tokens for it) and a new signing key (pinned fingerprints change).

use ferry_store::SecretBox;
use ferry_token::{ImportKey, SigningKey, TokenError};
use zeroize::Zeroizing;

use crate::db::{Db, StoredKey};
use crate::error::CatalogError;

const IMPORT: &str = "import";
const SIGNING: &str = "signing";

/// Loads and creates the catalog's key pairs.
#[derive(Debug)]
pub(crate) struct Keys {
    db: Db,
    sealer: SecretBox,
}

/// A key pair and when it was made.
#[derive(Debug)]
pub(crate) struct Loaded<K> {
    pub key: K,
    pub created_at_ns: i64,
    /// Made by this call.
    pub created: bool,
}

/// The sealed value is bound to its row, so it cannot be swapped for the other key.
fn aad(purpose: &str) -> Vec<u8> {
    format!("catalog/key/{purpose}").into_bytes()
}

impl Keys {
    pub fn new(db: Db, sealer: SecretBox) -> Self {
        Keys { db, sealer }
    }

    /// The data directory's secret box, which also seals the agent's profile files.
    pub fn sealer(&self) -> &SecretBox {
        &self.sealer
    }

    /// The import key; made now if `create` and there is none. `None`: none and not
    /// asked to make one.
    pub async fn import_key(
        &self,
        create: bool,
    ) -> Result<Option<Loaded<ImportKey>>, CatalogError> {
        self.load_or_create(
            IMPORT,
            create,
            || {
                let key = ImportKey::generate()?;
                Ok((key.secret_bytes()?, key.public_key().to_text()))
            },
            ImportKey::from_secret_bytes,
        )
        .await
    }

    /// The signing key, made on first use.
    pub async fn signing_key(&self) -> Result<SigningKey, CatalogError> {
        let loaded = self
            .load_or_create(
                SIGNING,
                true,
                || {
                    let key = SigningKey::generate()?;
                    let public = key.public_key().fingerprint().to_string();
                    Ok((Zeroizing::new(key.pkcs8().to_vec()), public))
                },
                SigningKey::from_pkcs8,
            )
            .await?;
        loaded
            .map(|l| l.key)
            .ok_or_else(|| CatalogError::Internal("the signing key was not created".into()))
    }

    async fn load_or_create<K>(
        &self,
        purpose: &'static str,
        create: bool,
        generate: impl FnOnce() -> Result<(Zeroizing<Vec<u8>>, String), TokenError>,
        parse: impl Fn(&[u8]) -> Result<K, TokenError>,
    ) -> Result<Option<Loaded<K>>, CatalogError> {
        let mut created = false;
        let stored = match self.db.get_key(purpose).await? {
            Some(stored) => stored,
            None if !create => return Ok(None),
            None => {
                let (secret, public) = generate()?;
                let sealed = self.sealer.seal(&aad(purpose), &secret)?;
                let created_at_ns =
                    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos())
                        .unwrap_or(i64::MAX);
                // Two racing creators: one row wins and both use it.
                created = self
                    .db
                    .insert_key(StoredKey {
                        purpose,
                        sealed,
                        public,
                        created_at_ns,
                    })
                    .await?;
                self.db.get_key(purpose).await?.ok_or_else(|| {
                    CatalogError::Internal(format!("the {purpose} key vanished after storing it"))
                })?
            }
        };
        let secret = Zeroizing::new(self.sealer.open(
            &aad(purpose),
            &stored.sealed,
            &format!("catalog {purpose} key"),
        )?);
        let key = parse(&secret)?;
        if created {
            tracing::info!(purpose, public = %stored.public, "catalog key pair created");
        }
        Ok(Some(Loaded {
            key,
            created_at_ns: stored.created_at_ns,
            created,
        }))
    }
}
