//! The packer: gathers sealed blobs into packs, uploads several packs at once, and
//! writes index files only after the packs they describe are stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::crypto::aad;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IndexFile, IndexFilePack, index_key};
use crate::lock::Lease;
use crate::pack::{BufPool, EncodedBlob, PackBuilder, PackEntry, pack_key};
use crate::repository::Repository;

/// Index files are written after this many packs (and at the end), so a crashed run
/// leaves most of its uploaded packs indexed for the next run to reuse.
pub(crate) const INDEX_FLUSH_PACKS: usize = 8;

/// Upload counters, readable while the packer runs.
#[derive(Debug, Default)]
pub(crate) struct PackerCounters {
    pub packs: AtomicU64,
    pub bytes: AtomicU64,
    pub indexes: AtomicU64,
    /// The index files written, for prune's check that nothing else changed.
    pub index_ids: Mutex<Vec<Id>>,
}

/// Deduplication within one writer session: an id is "claimed" by the first producer
/// that sees it, so concurrent workers never upload the same chunk twice.
#[derive(Debug)]
pub(crate) struct Dedup {
    repo: Repository,
    claimed: Mutex<HashSet<Id>>,
}

impl Dedup {
    pub fn new(repo: Repository) -> Self {
        Dedup {
            repo,
            claimed: Mutex::new(HashSet::new()),
        }
    }

    /// True when the caller should store the blob: it is neither in the repository nor
    /// already claimed in this session.
    pub fn claim(&self, id: &Id) -> bool {
        if self.repo.index_contains(id) {
            return false;
        }
        self.claimed.lock().insert(*id)
    }
}

/// A running packer task.
#[derive(Debug)]
pub(crate) struct Packer {
    tx: mpsc::Sender<Vec<EncodedBlob>>,
    task: JoinHandle<Result<()>>,
    pub counters: Arc<PackerCounters>,
}

impl Packer {
    /// Starts a packer. With a `lease`, every index file is written only while the
    /// writer's lock is still live: an index file is what lets other writers reuse the
    /// packs it names, so it must not appear after a prune may have run.
    pub fn spawn(
        repo: Repository,
        uploads_in_flight: usize,
        cancel: CancellationToken,
        lease: Option<Lease>,
    ) -> Self {
        // Blobs travel in batches (a producer's whole run of work, a megabyte or so),
        // so the packer wakes once per batch rather than once per 16 KiB chunk. A few
        // batches of slack: producers block here when uploads fall behind.
        let (tx, rx) = mpsc::channel(4);
        let counters = Arc::new(PackerCounters::default());
        let task = tokio::spawn(run(
            repo,
            rx,
            uploads_in_flight.max(1),
            counters.clone(),
            cancel,
            lease,
        ));
        Packer { tx, task, counters }
    }

    pub fn sender(&self) -> mpsc::Sender<Vec<EncodedBlob>> {
        self.tx.clone()
    }

    /// Closes the input and waits until every pack and index file is stored.
    pub async fn finish(self) -> Result<()> {
        drop(self.tx);
        self.task.await.map_err(Error::join)?
    }
}

struct State {
    repo: Repository,
    lease: Option<Lease>,
    counters: Arc<PackerCounters>,
    uploads: JoinSet<Result<(Id, u64, Vec<PackEntry>)>>,
    pending: Vec<IndexFilePack>,
}

impl State {
    fn start_upload(&mut self, builder: PackBuilder) {
        let repo = self.repo.clone();
        self.uploads.spawn(async move {
            let keys_repo = repo.clone();
            // Sealing the header and hashing a 16 MiB pack is CPU work.
            let pack = tokio::task::spawn_blocking(move || builder.finish(keys_repo.crypto()))
                .await
                .map_err(Error::join)??;
            let size = pack.data.len() as u64;
            repo.backend().put(&pack_key(&pack.id), pack.data).await?;
            Ok((pack.id, size, pack.entries))
        });
    }

    async fn on_uploaded(
        &mut self,
        joined: std::result::Result<Result<(Id, u64, Vec<PackEntry>)>, tokio::task::JoinError>,
    ) -> Result<()> {
        let (id, size, entries) = joined.map_err(Error::join)??;
        self.counters.packs.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(size, Ordering::Relaxed);
        tracing::debug!(pack = %id.short(), size, blobs = entries.len(), "pack stored");
        self.pending.push(IndexFilePack::new(id, size, &entries));
        if self.pending.len() >= INDEX_FLUSH_PACKS {
            self.flush_index().await?;
        }
        Ok(())
    }

    async fn flush_index(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(lease) = &self.lease {
            lease.ensure_live()?;
        }
        let file = IndexFile {
            packs: std::mem::take(&mut self.pending),
        };
        match store_index(&self.repo, &file).await {
            Ok(id) => self.counters.index_ids.lock().push(id),
            Err(e) => {
                // Keep the entries so a later flush (or the failure path) can retry them.
                self.pending = file.packs;
                return Err(e);
            }
        }
        self.counters.indexes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a failure: let uploads already in flight finish, index the ones that
    /// made it, so a re-run does not upload them again.
    async fn salvage(&mut self) {
        while let Some(joined) = self.uploads.join_next().await {
            if let Ok(Ok((id, size, entries))) = joined {
                self.pending.push(IndexFilePack::new(id, size, &entries));
            }
        }
        if let Err(e) = self.flush_index().await {
            tracing::warn!(error = %e, "could not index packs uploaded before the failure");
        }
    }
}

/// Seals and stores an index file, then adds it to the in-memory index.
async fn store_index(repo: &Repository, file: &IndexFile) -> Result<Id> {
    let id = write_index_file(repo, file).await?;
    repo.add_to_index(id, file);
    Ok(id)
}

/// Seals and stores an index file; returns its id.
pub(crate) async fn write_index_file(repo: &Repository, file: &IndexFile) -> Result<Id> {
    let json = serde_json::to_vec(file)
        .map_err(|e| Error::Internal(format!("serializing an index: {e}")))?;
    let sealing = repo.clone();
    let sealed = tokio::task::spawn_blocking(move || {
        let level = sealing.config().compression_level;
        sealing.crypto().seal_object(aad::INDEX, &json, level)
    })
    .await
    .map_err(Error::join)??;
    let id = Id::of_content(&sealed);
    repo.backend()
        .put(&index_key(&id), Bytes::from(sealed))
        .await?;
    Ok(id)
}

/// Pack headers read at once while adopting.
const ADOPT_CONCURRENCY: usize = 8;

/// Indexes packs that are stored but listed in no index file: what a writer killed
/// between uploading packs and writing their index left behind. Their blobs then count
/// as stored, so the next backup does not upload them again. A pack whose header does
/// not open is left alone (`check` reports it; prune reclaims it). A pack another
/// writer is about to index may be indexed twice, which the index tolerates.
/// Returns how many packs were adopted.
pub(crate) async fn adopt_unindexed_packs(repo: &Repository) -> Result<usize> {
    let listed = repo.backend().list("packs/").await?;
    let orphans: Vec<(Id, u64)> = listed
        .iter()
        .filter_map(|o| {
            let id = Id::parse(o.key.rsplit('/').next()?).ok()?;
            (!repo.has_pack(&id)).then_some((id, o.size))
        })
        .collect();
    if orphans.is_empty() {
        return Ok(0);
    }
    let headers: Vec<Option<IndexFilePack>> = futures::stream::iter(orphans)
        .map(|(id, size)| async move {
            match crate::pack::read_pack_header(repo, &id, size).await {
                Ok(entries) => Some(IndexFilePack::new(id, size, &entries)),
                Err(e) => {
                    tracing::warn!(pack = %id, error = %e, "unindexed pack not adopted");
                    None
                }
            }
        })
        .buffer_unordered(ADOPT_CONCURRENCY)
        .collect()
        .await;
    let file = IndexFile {
        packs: headers.into_iter().flatten().collect(),
    };
    let adopted = file.packs.len();
    if adopted > 0 {
        store_index(repo, &file).await?;
        tracing::info!(
            packs = adopted,
            "indexed packs an interrupted backup left behind"
        );
    }
    Ok(adopted)
}

/// The largest sealed data blob: a maximal chunk stored raw, plus framing.
fn repo_max_blob(repo: &Repository) -> usize {
    repo.config().chunker.max_size as usize + 64
}

async fn run(
    repo: Repository,
    mut rx: mpsc::Receiver<Vec<EncodedBlob>>,
    max_uploads: usize,
    counters: Arc<PackerCounters>,
    cancel: CancellationToken,
    lease: Option<Lease>,
) -> Result<()> {
    let target = repo.config().pack_target_size as usize;
    let mut st = State {
        repo,
        lease,
        counters,
        uploads: JoinSet::new(),
        pending: Vec::new(),
    };
    // Room for the target plus one maximal sealed chunk, so a pack never reallocates.
    let capacity = target + repo_max_blob(&st.repo);
    // Stored packs hand their buffers back for the next packs. Two idle ones cover
    // the gap between an upload finishing and the next pack starting.
    let pool = BufPool::new(2, capacity);
    let mut builder = PackBuilder::with_capacity_in(capacity, &pool);
    let result: Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                Some(joined) = st.uploads.join_next(), if !st.uploads.is_empty() => {
                    st.on_uploaded(joined).await?;
                }
                msg = rx.recv() => match msg {
                    Some(batch) => {
                        for blob in batch {
                            builder.add(blob)?;
                            if builder.len() >= target {
                                let full = std::mem::replace(
                                    &mut builder,
                                    PackBuilder::with_capacity_in(capacity, &pool),
                                );
                                st.start_upload(full);
                                // Backpressure: at most `max_uploads` packs in memory/in
                                // flight.
                                while st.uploads.len() >= max_uploads {
                                    if let Some(joined) = st.uploads.join_next().await {
                                        st.on_uploaded(joined).await?;
                                    }
                                }
                            }
                        }
                    }
                    None => break,
                },
            }
        }
        if !builder.is_empty() {
            st.start_upload(std::mem::take(&mut builder));
        }
        while let Some(joined) = st.uploads.join_next().await {
            st.on_uploaded(joined).await?;
        }
        st.flush_index().await
    }
    .await;
    if result.is_err() {
        st.salvage().await;
    }
    result
}
