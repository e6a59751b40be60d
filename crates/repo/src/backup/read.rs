//! Reading and chunking: files read by a few blocking readers, small ones in batches;
//! chunks hashed, compressed and sealed on the blocking pool, and sent to the packer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::chunker;
use crate::error::{Error, Result};
use crate::fsutil::Beneath;

use crate::pack::{BlobType, BufPool, EncodedBlob, encode_blob};
use crate::packer::Dedup;
use crate::repository::Repository;
use crate::tree::{ContentPart, NodeKind};
use rustix::fs::{Mode, OFlags};

use super::walk::{io_err, rel_path};
use super::{BYTES_NEW, BYTES_READ, BackupCounters, CHUNKS_NEW, CHUNKS_REUSED, FILES_DONE};

/// Shared state of the read/chunk stage.
pub(super) struct Ctx {
    pub(super) repo: Repository,
    pub(super) dedup: Dedup,
    pub(super) cpu: Semaphore,
    pub(super) cpu_concurrency: usize,
    pub(super) packer_tx: mpsc::Sender<Vec<EncodedBlob>>,
    pub(super) counters: Arc<BackupCounters>,
    pub(super) cancel: CancellationToken,
    /// Read blocks of large files, reused once their chunks are sealed.
    pub(super) read_blocks: Arc<BufPool>,
    /// The source directory, set once walked (see [`Walk::root`]).
    pub(super) root: std::sync::OnceLock<Option<Arc<Beneath>>>,
}

pub(super) const PACKER_GONE: &str = "packer stopped";

pub(super) enum ChunkMsg {
    Data(bytes::Bytes),
    Hole(u64),
}

/// Opens a file to read. Under a source directory, by its relative name with no link
/// followed anywhere; non-blocking, so a FIFO swapped in cannot stall the reader.
pub(super) fn open_for_reading(ctx: &Ctx, job: &FileJob) -> Result<File> {
    let path = &job.path;
    match ctx.root.get().and_then(Option::as_ref) {
        Some(root) if !job.rel.is_empty() => {
            let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
            root.open(rel_path(&job.rel), flags, Mode::empty())
                .map(File::from)
                .map_err(io_err("open", path))
        }
        _ => File::open(path).map_err(io_err("open", path)),
    }
}

/// Blocking: reads a file region by region and sends chunks and holes in order.
pub(super) fn read_chunks(
    ctx: &Ctx,
    job: &FileJob,
    mut send: impl FnMut(ChunkMsg) -> Result<()>,
) -> Result<()> {
    let (repo, counters, cancel) = (&ctx.repo, &*ctx.counters, &ctx.cancel);
    let (path, kind) = (job.path.as_path(), job.kind);
    let mut file = open_for_reading(ctx, job)?;
    let (size, allocated) = if kind == NodeKind::DeviceImage {
        let s = file.seek(SeekFrom::End(0)).map_err(io_err("seek", path))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek", path))?;
        (s, false)
    } else {
        let md = file.metadata().map_err(io_err("stat", path))?;
        // The walk saw a regular file; a device or FIFO swapped in since is not read
        // (a device node in a volume could name the host's disk).
        if !md.file_type().is_file() {
            return Err(Error::Swapped {
                operation: "backup",
                path: path.to_path_buf(),
                found: "a special file (device, FIFO or socket)",
            });
        }
        (md.len(), md.blocks().saturating_mul(512) >= md.len())
    };
    // A file with as many blocks as bytes has no holes worth finding: skip the
    // SEEK_DATA/SEEK_HOLE probes (two system calls per file, which for 30,000 small
    // files cost more than reading them). Zero chunks still become holes.
    let regions = if size == 0 {
        Vec::new()
    } else if allocated {
        vec![(0, size)]
    } else {
        crate::fsutil::data_regions(&file, size)
    };
    let params = &repo.config().chunker;
    let seed = repo.crypto().chunker_seed();
    let mut pos = 0u64;
    for (start, end) in regions {
        if start > pos {
            send(ChunkMsg::Hole(start - pos))?;
        }
        // A file read whole starts where it was opened (SEEK_DATA probes move the
        // offset, so only without them).
        if !(allocated && start == 0) {
            file.seek(SeekFrom::Start(start))
                .map_err(io_err("seek", path))?;
        }
        // The bare `Take<&File>`: the chunker then reads into its buffers without
        // zeroing them first. Bytes read are counted per chunk.
        let reader = (&file).take(end - start);
        let mut read = 0u64;
        let pool = Some(&ctx.read_blocks);
        for chunk in chunker::chunks(reader, params, seed, end - start, pool) {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let chunk = chunk.map_err(io_err("read", path))?;
            read += chunk.len() as u64;
            counters.add(BYTES_READ, chunk.len() as u64);
            send(ChunkMsg::Data(chunk))?;
        }
        // A file that shrank while being read ends early; record what was read.
        pos = start + read;
        if read < end - start {
            return Ok(());
        }
    }
    if size > pos {
        send(ChunkMsg::Hole(size - pos))?;
    }
    Ok(())
}

/// Files up to this size are read, chunked, hashed, compressed and sealed in batches,
/// each batch in one blocking task: passing each of thousands of small files through
/// a channel and separate CPU tasks costs more thread hand-offs than the work itself.
pub(super) const INLINE_FILE_MAX: u64 = 4 << 20;
/// A batch of small files ends after this many bytes or files.
pub(super) const BATCH_BYTES: u64 = 8 << 20;
pub(super) const BATCH_FILES: usize = 256;
/// A large file's chunks go to the CPU stage in runs of about this many bytes.
pub(super) const CPU_BATCH_BYTES: usize = 2 << 20;

/// One file to read: its entry, its path for messages and its name under the source.
pub(super) struct FileJob {
    pub(super) idx: usize,
    pub(super) path: PathBuf,
    pub(super) rel: Vec<u8>,
    pub(super) kind: NodeKind,
}

/// Work for the read stage: a batch of small files, or one large file.
pub(super) enum ReadJob {
    Small(Vec<FileJob>),
    Large(FileJob),
}

impl Ctx {
    /// Blocking CPU work on one chunk: zero check, keyed hash, dedup, compress, seal.
    pub(super) fn seal_chunk(&self, data: &[u8]) -> Result<(ContentPart, Option<EncodedBlob>)> {
        let len = data.len() as u32;
        // All-zero chunks become holes: restore leaves them sparse, and block
        // device images (no SEEK_HOLE) get the same benefit.
        if is_zero(data) {
            return Ok((
                ContentPart::Hole {
                    hole: u64::from(len),
                },
                None,
            ));
        }
        let keys = self.repo.crypto();
        let id = keys.blob_id(data);
        let blob = if self.dedup.claim(&id) {
            self.counters.add(CHUNKS_NEW, 1);
            self.counters.add(BYTES_NEW, u64::from(len));
            let level = self.repo.config().compression_level;
            Some(encode_blob(keys, BlobType::Data, id, data, level)?)
        } else {
            self.counters.add(CHUNKS_REUSED, 1);
            None
        };
        Ok((ContentPart::Chunk { id, len }, blob))
    }

    /// Hands sealed blobs to the packer, waiting while it is behind.
    pub(super) async fn to_packer(&self, blobs: Vec<EncodedBlob>) -> Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        self.packer_tx
            .send(blobs)
            .await
            .map_err(|_| Error::Internal(PACKER_GONE.into()))
    }

    /// Turns one message of the read stage into a content part, sealing new data.
    pub(super) fn seal_msg(
        &self,
        msg: ChunkMsg,
        parts: &mut Vec<ContentPart>,
        blobs: &mut Vec<EncodedBlob>,
    ) -> Result<()> {
        match msg {
            ChunkMsg::Hole(n) => parts.push(ContentPart::Hole { hole: n }),
            ChunkMsg::Data(d) => {
                let (part, blob) = self.seal_chunk(&d)?;
                parts.push(part);
                blobs.extend(blob);
            }
        }
        Ok(())
    }

    /// Runs `work` in one blocking task under a CPU permit, then hands the blobs it
    /// sealed to the packer (outside the permit, so a slow upload does not hold a core).
    pub(super) async fn on_cpu<T, F>(self: &Arc<Self>, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Ctx, &mut Vec<EncodedBlob>) -> Result<T> + Send + 'static,
    {
        let permit = self
            .cpu
            .acquire()
            .await
            .map_err(|_| Error::Internal("CPU semaphore closed".into()))?;
        let ctx = self.clone();
        let (out, blobs) = tokio::task::spawn_blocking(move || {
            let mut blobs = Vec::new();
            work(&ctx, &mut blobs).map(|out| (out, blobs))
        })
        .await
        .map_err(Error::join)??;
        drop(permit);
        self.to_packer(blobs).await?;
        Ok(out)
    }

    /// Seals a run of a large file's chunks in one blocking task: one hand-off per
    /// megabyte or so instead of one per chunk.
    pub(super) async fn process_batch(
        self: Arc<Self>,
        batch: Vec<ChunkMsg>,
    ) -> Result<Vec<ContentPart>> {
        self.on_cpu(move |ctx, blobs| {
            let mut parts = Vec::with_capacity(batch.len());
            for msg in batch {
                ctx.seal_msg(msg, &mut parts, blobs)?;
            }
            Ok(parts)
        })
        .await
    }

    /// A batch of small files, start to finish in one blocking task under one CPU
    /// permit.
    pub(super) async fn read_small_files(
        self: Arc<Self>,
        batch: Vec<FileJob>,
    ) -> Result<Vec<(usize, Vec<ContentPart>)>> {
        self.on_cpu(move |ctx, blobs| {
            let mut files = Vec::with_capacity(batch.len());
            for job in batch {
                let mut parts = Vec::new();
                read_chunks(ctx, &job, |msg| ctx.seal_msg(msg, &mut parts, blobs))?;
                ctx.counters.add(FILES_DONE, 1);
                files.push((job.idx, merge_holes(parts)));
            }
            Ok(files)
        })
        .await
    }

    pub(super) async fn read_file(
        self: Arc<Self>,
        job: FileJob,
    ) -> Result<(usize, Vec<ContentPart>)> {
        let idx = job.idx;
        // Batches of a few chunks flow to the CPU stage; the bounded channel holds the
        // reader back when sealing falls behind.
        let (tx, rx) = mpsc::channel::<Vec<ChunkMsg>>(2);
        let reader = {
            let ctx = self.clone();
            tokio::task::spawn_blocking(move || {
                let mut batch: Vec<ChunkMsg> = Vec::new();
                let mut batch_bytes = 0usize;
                let send = |b: Vec<ChunkMsg>| tx.blocking_send(b).map_err(|_| Error::Cancelled);
                read_chunks(&ctx, &job, |msg| {
                    if let ChunkMsg::Data(d) = &msg {
                        batch_bytes += d.len();
                    }
                    batch.push(msg);
                    if batch_bytes >= CPU_BATCH_BYTES {
                        batch_bytes = 0;
                        send(std::mem::take(&mut batch))?;
                    }
                    Ok(())
                })?;
                if !batch.is_empty() {
                    send(batch)?;
                }
                Ok::<(), Error>(())
            })
        };
        let parts: Result<Vec<Vec<ContentPart>>> = ReceiverStream::new(rx)
            .map(|batch| self.clone().process_batch(batch))
            .buffered(self.cpu_concurrency.max(1))
            .try_collect()
            .await;
        let parts = parts.map(|p| p.into_iter().flatten().collect::<Vec<_>>());
        // On a processing error the stream is dropped, so the reader stops at its
        // next send; its own error then adds nothing.
        let read = reader.await.map_err(Error::join)?;
        let parts = parts?;
        read?;
        self.counters.add(FILES_DONE, 1);
        Ok((idx, merge_holes(parts)))
    }
}

/// True when every byte is zero. Compares 64-byte blocks with one vector OR each
/// rather than byte by byte: zero chunks are maximal (96 KiB) and scanned in full.
pub(super) fn is_zero(data: &[u8]) -> bool {
    let blocks = data.chunks_exact(64);
    let rest = blocks.remainder();
    rest.iter().all(|b| *b == 0)
        && blocks
            .into_iter()
            .all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0)
}

pub(super) fn merge_holes(parts: Vec<ContentPart>) -> Vec<ContentPart> {
    let mut out: Vec<ContentPart> = Vec::with_capacity(parts.len());
    for p in parts {
        if let (ContentPart::Hole { hole: n }, Some(ContentPart::Hole { hole: prev })) =
            (&p, out.last_mut())
        {
            *prev += n;
            continue;
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_checks_every_byte() {
        assert!(is_zero(&[]));
        for len in [1, 63, 64, 65, 200, 96 * 1024] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v), "{len}");
            // One set bit anywhere (in a 64-byte block or the remainder) counts.
            for at in [0, len / 2, len - 1] {
                v[at] = 0x80;
                assert!(!is_zero(&v), "{len} {at}");
                v[at] = 0;
            }
        }
    }
}
