//! Repacking: the used blobs of mostly unused packs are copied, verified, into new packs,
//! so the old packs can go like unused ones.

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;

use super::mark::Loaded;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::lock::LockGuard;
use crate::pack::{EncodedBlob, PackEntry, decode_blob, pack_key};
use crate::packer::Packer;
use crate::repository::Repository;

/// For each pack to repack, the entries to copy: used blobs not kept in another pack
/// that stays, each copied once.
pub(super) fn plan_copies(
    loaded: &Loaded,
    repack: &[usize],
    pack_live: &[bool],
    live: &HashSet<Id>,
) -> Vec<(usize, Vec<usize>)> {
    let repacking: HashSet<usize> = repack.iter().copied().collect();
    let stays_elsewhere = |id: &Id| {
        let first = loaded.first.get(id).map(|&(p, _)| p);
        first
            .into_iter()
            .chain(loaded.dups.get(id).into_iter().flatten().copied())
            .any(|p| pack_live[p] && !repacking.contains(&p))
    };
    let mut copied: HashSet<Id> = HashSet::new();
    repack
        .iter()
        .map(|&pos| {
            let entries = loaded.packs[pos]
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| live.contains(&e.id) && !stays_elsewhere(&e.id))
                .filter(|(_, e)| copied.insert(e.id))
                .map(|(i, _)| i)
                .collect();
            (pos, entries)
        })
        .collect()
}

/// What a repack did.
#[derive(Debug, Default)]
pub(super) struct Repacked {
    /// Packs left as they were because they did not verify.
    pub kept: HashSet<usize>,
    /// Index files written for the new packs.
    pub index_ids: Vec<Id>,
}

impl Repository {
    /// Copies the planned blobs into new packs, one old pack downloaded at a time; each
    /// blob is decrypted and checked against its id first, so damage is never copied
    /// (a pack that does not verify is kept as it is and named in the log). The new
    /// packs and their index files are stored before this returns.
    pub(super) async fn repack(
        &self,
        loaded: &Loaded,
        copies: &[(usize, Vec<usize>)],
        lock: &LockGuard,
        cancel: &CancellationToken,
    ) -> Result<Repacked> {
        let packer = Packer::spawn(self.clone(), 2, cancel.child_token(), Some(lock.lease()));
        let counters = packer.counters.clone();
        let tx = packer.sender();
        let mut kept = HashSet::new();
        let mut failed: Option<Error> = None;
        for (pos, entries) in copies {
            if cancel.is_cancelled() {
                failed = Some(Error::Cancelled);
                break;
            }
            let p = &loaded.packs[*pos];
            let data = match (self.backend())
                .get_at_most(&pack_key(&p.id), crate::limits::MAX_PACK_BYTES)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            };
            let wanted: Vec<PackEntry> = entries.iter().map(|&i| p.entries[i].clone()).collect();
            let (repo, pack) = (self.clone(), p.id);
            // Hashing and decrypting a pack is CPU work.
            let verified = tokio::task::spawn_blocking(move || -> Result<Vec<EncodedBlob>> {
                if Id::of_content(&data) != pack {
                    return Err(Error::corrupt(
                        pack_key(&pack),
                        "content hash does not match its name",
                    ));
                }
                wanted
                    .into_iter()
                    .map(|e| {
                        let start = e.offset as usize;
                        let sealed =
                            data.get(start..start + e.length as usize).ok_or_else(|| {
                                Error::corrupt(
                                    pack_key(&pack),
                                    "an indexed blob lies outside the pack",
                                )
                            })?;
                        decode_blob(repo.crypto(), e.kind, &e.id, sealed, e.raw_length, &pack)?;
                        Ok(EncodedBlob {
                            id: e.id,
                            kind: e.kind,
                            raw_length: e.raw_length,
                            bytes: sealed.to_vec(),
                        })
                    })
                    .collect()
            })
            .await
            .map_err(Error::join)?;
            match verified {
                Ok(blobs) => {
                    if !blobs.is_empty() && tx.send(blobs).await.is_err() {
                        // The packer stopped; `finish` says why.
                    }
                }
                Err(e) => {
                    tracing::warn!(pack = %p.id, error = %e, "not repacking a pack that does not verify; run `ferry repo check --read-data`");
                    kept.insert(*pos);
                }
            }
        }
        drop(tx);
        let finished = packer.finish().await;
        if let Some(e) = failed {
            return Err(e);
        }
        finished?;
        let index_ids = counters.index_ids.lock().clone();
        tracing::info!(
            packs = copies.len() - kept.len(),
            new_packs = counters.packs.load(std::sync::atomic::Ordering::Relaxed),
            "repacked mostly unused packs"
        );
        Ok(Repacked { kept, index_ids })
    }
}
