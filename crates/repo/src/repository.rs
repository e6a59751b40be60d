//! The repository handle: init/open, the index, and reading and writing objects.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, DynBackend};
use crate::config::{CONFIG_KEY, Config, FORMAT_VERSION, InitOptions};
use crate::crypto::{self, KdfParams, Keys, aad};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobLocation, Index, IndexFile, index_key};
use crate::keys::{INITIAL_LABEL, Opened, new_slot, open_slots, write_config};
use crate::lock::{DEFAULT_LOCK_TTL, LockGuard, LockKind};
use crate::pack::{BlobType, EncodedBlob, decode_blob, encode_blob, pack_key};
use crate::packer::Packer;
use crate::snapshot::{Snapshot, snapshot_key};
use crate::stored_tree::{TreeReader, encode_tree};
use crate::tree::Tree;

/// An open repository. Cheap to clone; clones share the index.
#[derive(Clone, Debug)]
pub struct Repository {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: DynBackend,
    config: Config,
    keys: Keys,
    /// Kept to wrap it for keys added later (`add_key`).
    master: MasterKey,
    /// Fingerprint of the user key this handle was opened with.
    fingerprint: String,
    /// The sealed hex of the slot that key opened, to find that slot again in a config
    /// (made before key slots) that records no fingerprint for it.
    opened_sealed: String,
    index: RwLock<Index>,
}

/// The raw master key, never printed.
struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Concurrent index-file downloads when opening.
/// Listings of index/ tried when files vanish while they are read (a concurrent prune).
const INDEX_RELIST_ATTEMPTS: u32 = 4;
const LOAD_CONCURRENCY: usize = 8;

impl Repository {
    /// Creates a repository: a random master key wrapped by a key derived from
    /// `user_key` (the bytes of a key file; a passphrase works too), in a key slot
    /// labelled "initial". [`Repository::add_key`] adds further keys.
    pub async fn init(backend: DynBackend, user_key: &[u8], options: InitOptions) -> Result<Self> {
        options.validate()?;
        if user_key.is_empty() {
            return Err(Error::invalid(
                "key",
                "the key is empty; use a key file with content",
            ));
        }
        if backend.exists(CONFIG_KEY).await? {
            return Err(Error::AlreadyExists {
                repo: backend.describe(),
            });
        }
        let master: [u8; 32] = crypto::random_array()?;
        let kdf = KdfParams::new(options.kdf)?;
        let kek = derive_kek(kdf.clone(), user_key).await?;
        let created = OffsetDateTime::now_utc();
        let slot = new_slot(&kek, &master, INITIAL_LABEL, created)?;
        let config = Config {
            version: FORMAT_VERSION,
            id: Id::random()?,
            created,
            chunker: options.chunker,
            pack_target_size: options.pack_target_size,
            compression_level: options.compression_level,
            kdf,
            master_key: slot.clone(),
            extra_keys: Vec::new(),
        };
        write_config(&backend, &config).await?;
        tracing::info!(repo = %backend.describe(), id = %config.id.short(), "repository initialised");
        let opened = Opened {
            master,
            fingerprint: crypto::fingerprint(&kek),
            sealed: slot.sealed,
        };
        Self::from_parts(backend, config, opened)
    }

    /// Opens a repository and loads its index. A key that opens none of the
    /// repository's key slots gives [`Error::WrongKey`], which lists the keys that would.
    pub async fn open(backend: DynBackend, user_key: &[u8]) -> Result<Self> {
        let config = read_config(&backend).await?;
        let kek = derive_kek(config.kdf.clone(), user_key).await?;
        let opened = open_slots(&config, &kek, &backend.describe())?;
        let repo = Self::from_parts(backend, config, opened)?;
        repo.reload_index().await?;
        Ok(repo)
    }

    fn from_parts(backend: DynBackend, config: Config, opened: Opened) -> Result<Self> {
        Ok(Repository {
            inner: Arc::new(Inner {
                backend,
                config,
                keys: Keys::from_master(&opened.master)?,
                master: MasterKey(opened.master),
                fingerprint: opened.fingerprint,
                opened_sealed: opened.sealed,
                index: RwLock::new(Index::default()),
            }),
        })
    }

    /// The repository's config as read when opening. Its key slots may have changed
    /// since; [`Repository::keys`] reads them afresh.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn master_key(&self) -> &[u8; 32] {
        &self.inner.master.0
    }

    pub(crate) fn opened_fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    pub(crate) fn opened_sealed(&self) -> &str {
        &self.inner.opened_sealed
    }

    /// The storage backend.
    pub fn backend(&self) -> &DynBackend {
        &self.inner.backend
    }

    pub(crate) fn crypto(&self) -> &Keys {
        &self.inner.keys
    }

    /// Bytes of the repository's packs in the store, as its index lists them (read
    /// again first, so packs other writers added since this handle opened count).
    pub async fn size_bytes(&self) -> Result<u64> {
        self.sync_index().await?;
        Ok(self.inner.index.read().pack_bytes())
    }

    /// Number of blobs in the loaded index.
    pub fn index_len(&self) -> usize {
        self.inner.index.read().len()
    }

    pub(crate) fn index_contains(&self, id: &Id) -> bool {
        self.inner.index.read().contains(id)
    }

    pub(crate) fn has_pack(&self, pack: &Id) -> bool {
        self.inner.index.read().has_pack(pack)
    }

    pub(crate) fn locate(&self, id: &Id) -> Option<BlobLocation> {
        self.inner.index.read().get(id)
    }

    pub(crate) fn add_to_index(&self, id: Id, file: &IndexFile) {
        let mut idx = self.inner.index.write();
        idx.add_file(id);
        for p in &file.packs {
            idx.add_pack(p.id, p.size, &p.entries());
        }
    }

    /// Brings the loaded index up to date after taking a writer lock: loads index files
    /// written since, and when any loaded file is gone (a prune rewrote it, and may
    /// have deleted packs it named) reloads everything. Without this a writer that
    /// opened the repository before a prune would deduplicate against deleted packs.
    pub(crate) async fn sync_index(&self) -> Result<()> {
        let listed: HashSet<Id> = self
            .backend()
            .list("index/")
            .await?
            .iter()
            .filter_map(|o| Id::parse(o.key.trim_start_matches("index/")).ok())
            .collect();
        let (gone, new): (bool, Vec<Id>) = {
            let idx = self.inner.index.read();
            let loaded = idx.files();
            (
                !loaded.is_subset(&listed),
                listed.difference(loaded).copied().collect(),
            )
        };
        if gone {
            tracing::info!(
                "index files were replaced since the repository was opened; reloading the index"
            );
            return self.reload_index().await;
        }
        let loaded: Vec<(Id, Result<IndexFile>)> = futures::stream::iter(new)
            .map(|id| async move {
                (
                    id,
                    self.load_object::<IndexFile>(&index_key(&id), aad::INDEX, &id)
                        .await,
                )
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        for (id, r) in loaded {
            match r {
                Ok(file) => self.add_to_index(id, &file),
                // Same policy as `reload_index`: damage is skipped and logged.
                Err(e @ Error::Corrupt { .. }) => {
                    tracing::error!(index = %id, error = %e, "skipping a damaged index file; run `check`");
                }
                // Replaced by a prune since it was listed.
                Err(e) if e.is_not_found() => return self.reload_index().await,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Re-reads every index file (to see other writers' new packs).
    ///
    /// A damaged index file does not make the repository unusable: it is skipped with
    /// an error in the log, `check` names it, snapshots it does not cover still restore,
    /// and the next backup re-indexes its packs from their own headers. A file that
    /// could not be fetched (network, permissions) fails the call instead, since
    /// carrying on would only hide the outage.
    pub async fn reload_index(&self) -> Result<()> {
        let mut attempts = 0;
        let (index, errors) = loop {
            let (index, errors) = self.load_index_files().await?;
            // An index file listed but gone by the time it was read was replaced by a
            // prune, which writes the new files before deleting the old: a fresh listing
            // has them.
            attempts += 1;
            if attempts < INDEX_RELIST_ATTEMPTS && errors.iter().any(|(_, e)| e.is_not_found()) {
                tracing::info!("index files changed while loading; listing them again");
                continue;
            }
            break (index, errors);
        };
        for (id, e) in errors {
            if !matches!(e, Error::Corrupt { .. }) {
                return Err(e);
            }
            tracing::error!(index = %id, error = %e, "skipping a damaged index file; run `check`");
        }
        *self.inner.index.write() = index;
        Ok(())
    }

    /// Loads all index files, returning the ones that failed separately (for check).
    pub(crate) async fn load_index_files(&self) -> Result<(Index, Vec<(Id, Error)>)> {
        let listed = self.backend().list("index/").await?;
        let results: Vec<(Id, Result<IndexFile>)> = futures::stream::iter(listed)
            .map(|obj| async move {
                let name = obj.key.trim_start_matches("index/");
                let id = match Id::parse(name) {
                    Ok(id) => id,
                    Err(_) => {
                        return (
                            Id::default(),
                            Err(Error::corrupt(
                                obj.key.clone(),
                                "unexpected object name in index/",
                            )),
                        );
                    }
                };
                (
                    id,
                    self.load_object::<IndexFile>(&index_key(&id), aad::INDEX, &id)
                        .await,
                )
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        let mut index = Index::default();
        let mut errors = Vec::new();
        for (id, r) in results {
            match r {
                Ok(file) => {
                    index.add_file(id);
                    for p in &file.packs {
                        index.add_pack(p.id, p.size, &p.entries());
                    }
                }
                Err(e) => errors.push((id, e)),
            }
        }
        Ok((index, errors))
    }

    /// Reads a sealed JSON object whose name is the BLAKE3 of its bytes.
    pub(crate) async fn load_object<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
        aad: &'static [u8],
        id: &Id,
    ) -> Result<T> {
        let limit = if aad == aad::INDEX {
            crate::limits::MAX_INDEX_BYTES
        } else {
            crate::limits::MAX_MANIFEST_BYTES
        };
        let raw = (self.backend().get_at_most(key, limit as u64).await).map_err(|e| match e {
            BackendError::NotFound { .. } => Error::NotFound {
                what: key.to_string(),
                hint: "it may have been removed; run `check`".into(),
            },
            e => e.into(),
        })?;
        let repo = self.clone();
        let (key, id) = (key.to_string(), *id);
        tokio::task::spawn_blocking(move || {
            if Id::of_content(&raw) != id {
                return Err(Error::corrupt(key, "content hash does not match its name"));
            }
            let what = || key.clone();
            let plain = repo.crypto().open_object(aad, &raw, None, limit, &what)?;
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt(key.clone(), e.to_string()))
        })
        .await
        .map_err(Error::join)?
    }

    /// Seals a JSON object and stores it under `prefix/<BLAKE3 of the sealed bytes>`.
    pub(crate) async fn save_object<T: Serialize>(
        &self,
        prefix: &str,
        aad: &'static [u8],
        value: &T,
    ) -> Result<Id> {
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::Internal(format!("serializing {prefix}: {e}")))?;
        let sealed = self
            .crypto()
            .seal_object(aad, &json, self.config().compression_level)?;
        let id = Id::of_content(&sealed);
        self.backend()
            .put(&format!("{prefix}/{id}"), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// Reads and verifies one blob (decrypt, decompress, recompute the id).
    pub async fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id).ok_or_else(|| Error::NotFound {
            what: format!("blob {id}"),
            hint: "the index does not list it; run `check`".into(),
        })?;
        self.read_blob_at(id, &loc).await
    }

    pub(crate) async fn read_blob_at(&self, id: &Id, loc: &BlobLocation) -> Result<Vec<u8>> {
        let raw = self
            .backend()
            .get_range(
                &pack_key(&loc.pack),
                u64::from(loc.offset),
                u64::from(loc.length),
            )
            .await?;
        let repo = self.clone();
        let (id, loc) = (*id, *loc);
        tokio::task::spawn_blocking(move || {
            decode_blob(
                repo.crypto(),
                loc.kind,
                &id,
                &raw,
                loc.raw_length,
                &loc.pack,
            )
            .map(Vec::from)
        })
        .await
        .map_err(Error::join)?
    }

    /// Loads a tree with every run resolved (not validated; restore and check
    /// validate).
    pub async fn load_tree(&self, id: &Id) -> Result<Tree> {
        let loc = self.locate(id);
        if loc.is_some_and(|l| l.kind != BlobType::Tree) {
            return Err(Error::corrupt(
                format!("tree {id}"),
                "indexed as a data blob",
            ));
        }
        Ok(TreeReader::single(self).load(id).await?.tree)
    }

    /// Every tree blob of the loaded index, for a [`TreeReader`].
    pub(crate) fn tree_blob_locations(&self) -> Vec<(Id, BlobLocation)> {
        self.inner
            .index
            .read()
            .blobs()
            .filter(|(_, l)| l.kind == BlobType::Tree)
            .collect()
    }

    /// Stores a tree (packed, uploaded and indexed before this returns) and returns
    /// its id. Backup writes its trees itself; this is for tools and tests.
    pub async fn save_tree(&self, tree: &Tree) -> Result<Id> {
        let encoded = encode_tree(tree, self.crypto(), self.config().stores_runs())?;
        let mut blobs = Vec::with_capacity(encoded.blobs.len());
        for (id, bytes) in &encoded.blobs {
            blobs.push(encode_blob(
                self.crypto(),
                BlobType::Tree,
                *id,
                bytes,
                self.config().compression_level,
            )?);
        }
        let root = encoded.root;
        let lock = self.writer_lock("save tree").await?;
        let result = async {
            self.sync_index().await?;
            let packer = Packer::spawn(
                self.clone(),
                1,
                CancellationToken::new(),
                Some(lock.lease()),
            );
            let mut claimed = HashSet::new();
            let new: Vec<EncodedBlob> = blobs
                .into_iter()
                .filter(|b| !self.index_contains(&b.id) && claimed.insert(b.id))
                .collect();
            let sent = packer.sender().send(new).await;
            packer.finish().await?;
            sent.map_err(|_| Error::Internal("packer stopped early".into()))?;
            Ok(root)
        }
        .await;
        lock.release_quietly().await;
        result
    }

    /// Takes a shared (writer) lock with the default lifetime.
    pub(crate) async fn writer_lock(&self, purpose: &str) -> Result<LockGuard> {
        LockGuard::acquire(
            self.backend().clone(),
            purpose,
            LockKind::Shared,
            DEFAULT_LOCK_TTL,
            None,
        )
        .await
    }

    /// Stores a snapshot manifest under a writer lock; call only after its trees and
    /// data are indexed. Fails with [`Error::NotFound`] when its root tree is not in
    /// the index (any more: a prune may have removed a tree no snapshot used yet).
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        let lock = self.writer_lock("save snapshot").await?;
        let result = async {
            self.sync_index().await?;
            if !self.index_contains(&snapshot.tree) {
                return Err(Error::NotFound {
                    what: format!("tree {} of the new snapshot", snapshot.tree),
                    hint: "store the tree again (a prune removes trees no snapshot uses)".into(),
                });
            }
            lock.ensure_live()?;
            self.save_snapshot_unlocked(snapshot).await
        }
        .await;
        lock.release_quietly().await;
        result
    }

    /// Stores a snapshot manifest; the caller holds a writer lock.
    pub(crate) async fn save_snapshot_unlocked(&self, snapshot: &Snapshot) -> Result<Id> {
        self.save_object("snapshots", aad::SNAPSHOT, snapshot).await
    }

    /// Loads one snapshot.
    pub async fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        self.load_object(&snapshot_key(id), aad::SNAPSHOT, id).await
    }

    /// Ids of all snapshots, unsorted, without loading them.
    pub async fn snapshot_ids(&self) -> Result<Vec<Id>> {
        let listed = self.backend().list("snapshots/").await?;
        Ok(listed
            .iter()
            .filter_map(|o| Id::parse(o.key.trim_start_matches("snapshots/")).ok())
            .collect())
    }

    /// All snapshots, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        let ids = self.snapshot_ids().await?;
        let mut out: Vec<(Id, Snapshot)> = futures::stream::iter(ids)
            .map(|id| async move { self.load_snapshot(&id).await.map(|s| (id, s)) })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves "latest" or a unique hex prefix of a snapshot id.
    pub async fn resolve_snapshot(&self, spec: &str) -> Result<Id> {
        if spec == "latest" {
            return self
                .snapshots()
                .await?
                .pop()
                .map(|(id, _)| id)
                .ok_or_else(|| Error::NotFound {
                    what: "any snapshot".into(),
                    hint: "run a backup first".into(),
                });
        }
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<Id> = self
            .snapshot_ids()
            .await?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec_l))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NotFound {
                what: format!("snapshot {spec:?}"),
                hint: "list snapshots to see the ids".into(),
            }),
            _ => Err(Error::invalid(
                "snapshot id",
                format!(
                    "{spec:?} matches {} snapshots; give more characters",
                    matches.len()
                ),
            )),
        }
    }
}

/// Reads, parses and checks the config object.
pub(crate) async fn read_config(backend: &DynBackend) -> Result<Config> {
    let raw = match backend
        .get_at_most(CONFIG_KEY, crate::limits::MAX_CONFIG_BYTES)
        .await
    {
        Ok(b) => b,
        Err(BackendError::NotFound { .. }) => {
            return Err(Error::NotFound {
                what: format!("repository config in {}", backend.describe()),
                hint: "check the repository URL, or initialise a repository there first".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let config: Config = serde_json::from_slice(&raw)
        .map_err(|e| Error::corrupt(format!("config in {}", backend.describe()), e.to_string()))?;
    config.validate(&backend.describe())?;
    Ok(config)
}

/// Bounds the memory key derivations take together (see [`crate::limits`]).
static KDF_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(crate::limits::MAX_CONCURRENT_KDF);

pub(crate) async fn derive_kek(kdf: KdfParams, user_key: &[u8]) -> Result<[u8; 32]> {
    let user_key = user_key.to_vec();
    let _slot = KDF_SLOTS
        .acquire()
        .await
        .map_err(|_| Error::Internal("the key derivation slots were closed".into()))?;
    // argon2id is deliberately slow: keep it off the reactor.
    tokio::task::spawn_blocking(move || kdf.derive_kek(&user_key))
        .await
        .map_err(Error::join)?
}
