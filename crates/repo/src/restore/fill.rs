//! Filling files: ranges of packs fetched within a memory budget, their chunks
//! verified and written at their offsets (holes left unwritten), a batch of small files
//! per request.

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::entries::{Meta, MetaPolicy, Target, Unfinished, create_file};
use super::plan::{FileWork, Group, Piece, Plan, SmallBatch};
use super::{BYTES_DOWNLOADED, BYTES_WRITTEN, FILES_DONE, RestoreCounters, RestoreOptions, io_err};
use crate::error::{Error, Result};
use crate::fsutil::Beneath;
use crate::id::Id;
use crate::pack::{BlobType, decode_blob, pack_key};
use crate::repository::Repository;

/// Bytes of fetched ranges held at once, downloading or waiting to be written, across
/// every file: bounds memory whatever the file and download concurrency. Ranges are
/// mostly 2 to 8 MiB, so this still keeps a dozen requests in flight; more only added
/// memory in measurements (a local repository fills any budget faster than files are
/// written).
pub(super) const MAX_BYTES_IN_FLIGHT: u32 = 32 * 1024 * 1024;

/// Bytes of fetched ranges in memory; a range waits for room before it is requested.
pub(super) struct Budget {
    pub(super) sem: tokio::sync::Semaphore,
    pub(super) total: u32,
}

impl Budget {
    pub(super) fn new(total: u32) -> Self {
        Budget {
            sem: tokio::sync::Semaphore::new(total as usize),
            total,
        }
    }

    /// Room for `len` bytes, held until the permit is dropped. A range larger than the
    /// whole budget waits for all of it rather than forever.
    pub(super) async fn reserve(&self, len: u64) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let n = u32::try_from(len).map_or(self.total, |n| n.min(self.total));
        self.sem
            .acquire_many(n)
            .await
            .map_err(|_| Error::Internal("restore budget closed".into()))
    }
}

impl Repository {
    /// Downloads `start..end` of a pack, counting it. Backends promise exact ranges; a
    /// short answer is reported as such rather than sliced out of bounds later.
    pub(super) async fn fetch_range(
        &self,
        pack: &Id,
        start: u64,
        end: u64,
        counters: &RestoreCounters,
    ) -> Result<bytes::Bytes> {
        let len = end - start;
        let data = self
            .backend()
            .get_range(&pack_key(pack), start, len)
            .await?;
        counters.add(BYTES_DOWNLOADED, data.len() as u64);
        if data.len() as u64 != len {
            return Err(Error::corrupt(
                format!("pack {pack}"),
                format!("range read returned {} bytes instead of {len}", data.len()),
            ));
        }
        Ok(data)
    }

    /// Fetches a run of small files' chunks from one pack with one range request and
    /// writes every file. Backups store small files one after another, so a restore
    /// of thousands of them makes a few hundred requests instead of thousands.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn restore_batch(
        &self,
        plan: &Plan,
        root: &Arc<Beneath>,
        policy: MetaPolicy,
        batch: SmallBatch,
        options: &RestoreOptions,
        counters: &Arc<RestoreCounters>,
        budget: &Budget,
    ) -> Result<()> {
        let _room = budget.reserve(batch.end - batch.start).await?;
        // After the wait for room, which may be long.
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let data = self
            .fetch_range(&batch.pack, batch.start, batch.end, counters)
            .await?;
        let repo = self.clone();
        let counters = counters.clone();
        let paths: Vec<(PathBuf, Meta)> = batch
            .files
            .iter()
            .map(|(i, _, _)| (plan.files[*i].0.clone(), Meta::of(&plan.files[*i].1)))
            .collect();
        let root = root.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for ((_, group, size), (path, meta)) in batch.files.iter().zip(&paths) {
                let out = OutFile::from(create_file(&root, path)?);
                let mut unfinished = Unfinished {
                    root: &root,
                    path,
                    done: false,
                };
                let written = write_pieces(
                    &repo,
                    &out,
                    path,
                    (&batch.pack, batch.start, &data),
                    &group.pieces,
                    false,
                )?;
                if data_end(std::slice::from_ref(group)) < *size {
                    out.file.set_len(*size).map_err(io_err("truncate", path))?;
                }
                policy.apply_fd(out.file.as_fd(), *meta, false, path)?;
                unfinished.done = true;
                counters.add(BYTES_WRITTEN, written);
                counters.add(FILES_DONE, 1);
            }
            Ok(())
        })
        .await
        .map_err(Error::join)?
    }

    pub(super) async fn restore_file(
        &self,
        target: Target<'_>,
        work: FileWork,
        options: &RestoreOptions,
        counters: &RestoreCounters,
        budget: &Budget,
    ) -> Result<()> {
        let path = target.path;
        let FileWork {
            groups,
            size,
            patch,
            ..
        } = work;
        // A new file already ends where its last chunk does; only a trailing hole, or a
        // patched file (which may be longer now), needs its length set.
        let set_len = patch || data_end(&groups) < size;
        let file = Arc::new(OutFile::from(match patch {
            true => open_to_patch(target.root, path)?,
            false => create_file(target.root, path)?,
        }));
        let mut unfinished = Unfinished {
            root: target.root,
            path,
            done: false,
        };

        futures::stream::iter(groups)
            .map(|g| {
                let file = file.clone();
                async move {
                    let _room = budget.reserve(g.end - g.start).await?;
                    if options.cancel.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    let data = self.fetch_range(&g.pack, g.start, g.end, counters).await?;
                    let repo = self.clone();
                    let path = path.to_path_buf();
                    let written = tokio::task::spawn_blocking(move || {
                        let range = (&g.pack, g.start, &data[..]);
                        write_pieces(&repo, &file, &path, range, &g.pieces, patch)
                    })
                    .await
                    .map_err(Error::join)??;
                    counters.add(BYTES_WRITTEN, written);
                    Ok::<_, Error>(())
                }
            })
            .buffer_unordered(options.download_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;

        let path_owned = path.to_path_buf();
        let (meta, policy) = (target.meta, target.policy);
        tokio::task::spawn_blocking(move || -> Result<()> {
            // Trailing holes: extend without writing, so the file stays sparse.
            if set_len {
                file.file
                    .set_len(size)
                    .map_err(io_err("truncate", &path_owned))?;
            }
            policy.apply_fd(file.file.as_fd(), meta, false, &path_owned)
        })
        .await
        .map_err(Error::join)??;
        unfinished.done = true;
        counters.add(FILES_DONE, 1);
        Ok(())
    }
}

/// Where the last chunk of these groups ends in the file.
fn data_end(groups: &[Group]) -> u64 {
    groups
        .iter()
        .flat_map(|g| &g.pieces)
        .map(|p| p.file_offset + u64::from(p.loc.raw_length))
        .max()
        .unwrap_or(0)
}

/// A file the previous restore left, opened to write the chunks it lacks in place
/// (never through a link: the target was walked without following any), and to read
/// what is there first, so only the pages that differ are written.
fn open_to_patch(root: &Beneath, path: &Path) -> Result<std::fs::File> {
    root.open(
        root.rel(path),
        rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    )
    .map(std::fs::File::from)
    .map_err(io_err("open to patch", path))
}

/// The unit a patched file is compared and written in: a page, what a small change
/// inside a chunk (a database page, a log append) touches.
const PATCH_PAGE: usize = 4096;

/// Blocking: decodes the pieces of one range (`data`, which starts at offset `base` of
/// `pack`) and writes them into `file`; returns the bytes written. Only the pieces' own
/// bytes are read from `data`, never what lies between them. With `patch` (a file the
/// last restore left), what the file holds at each piece's place is read first and
/// only the pages that differ are written: a chunk changed in one page costs a page.
pub(super) fn write_pieces(
    repo: &Repository,
    out: &OutFile,
    path: &Path,
    (pack, base, data): (&Id, u64, &[u8]),
    pieces: &[Piece],
    patch: bool,
) -> Result<u64> {
    let mut written = 0;
    // Pieces come in pack order, so a chunk the file holds several times (repeated
    // blocks of an image) comes in a row, and is decoded once.
    let mut last: Option<(&Piece, Bytes)> = None;
    let mut run = Run::default();
    for p in pieces {
        if p.loc.kind != BlobType::Data {
            return Err(Error::corrupt(
                format!("chunk {} of {}", p.id, path.display()),
                "indexed as a tree blob",
            ));
        }
        let reuse = last
            .as_ref()
            .is_some_and(|(q, _)| q.id == p.id && q.loc == p.loc);
        if !reuse {
            let at = u64::from(p.loc.offset)
                .checked_sub(base)
                .and_then(|at| usize::try_from(at).ok());
            let sealed = at
                .and_then(|at| data.get(at..at.checked_add(p.loc.length as usize)?))
                .ok_or_else(|| {
                    Error::corrupt(format!("pack {pack}"), "range shorter than its chunks")
                })?;
            let plain = decode_blob(
                repo.crypto(),
                BlobType::Data,
                &p.id,
                sealed,
                p.loc.raw_length,
                pack,
            )?;
            last = Some((p, plain));
        }
        if let Some((_, plain)) = &last {
            if patch {
                written += write_changed_pages(&out.file, path, plain, p.file_offset)?;
                continue;
            }
            if run.end() != Some(p.file_offset) {
                written += run.flush(out, path)?;
            }
            run.push(p.file_offset, plain.clone());
            if run.is_full() {
                written += run.flush(out, path)?;
            }
        }
    }
    written += run.flush(out, path)?;
    Ok(written)
}

/// A file being written by several range downloads at once. Their writes take turns
/// here: the kernel serialises writes to one file anyway, and a writer waiting on the
/// file's lock in the kernel spins on a core that could be decoding the next range.
#[derive(Debug)]
pub(super) struct OutFile {
    pub(super) file: std::fs::File,
    writing: parking_lot::Mutex<()>,
}

impl From<std::fs::File> for OutFile {
    fn from(file: std::fs::File) -> Self {
        OutFile {
            file,
            writing: parking_lot::Mutex::new(()),
        }
    }
}

/// Largest write: decoded chunks that follow each other in the file are written
/// together, one system call per 256 KiB instead of one per 12 KiB chunk.
const RUN_BYTES: usize = 256 << 10;
/// Most buffers in one write, well under the kernel's IOV_MAX of 1024.
const RUN_BUFFERS: usize = 256;

/// Decoded chunks that follow each other in the file, not written yet.
#[derive(Default)]
struct Run {
    offset: u64,
    len: usize,
    bufs: Vec<Bytes>,
}

impl Run {
    /// Where the next chunk must start to join this run.
    fn end(&self) -> Option<u64> {
        (!self.bufs.is_empty()).then_some(self.offset + self.len as u64)
    }

    fn push(&mut self, offset: u64, chunk: Bytes) {
        if self.bufs.is_empty() {
            self.offset = offset;
        }
        self.len += chunk.len();
        self.bufs.push(chunk);
    }

    fn is_full(&self) -> bool {
        self.len >= RUN_BYTES || self.bufs.len() >= RUN_BUFFERS
    }

    /// Writes the run with as few `pwritev` calls as the kernel allows (short writes
    /// continue where they stopped); returns the bytes written.
    fn flush(&mut self, out: &OutFile, path: &Path) -> Result<u64> {
        if self.bufs.is_empty() {
            return Ok(0);
        }
        let _turn = out.writing.lock();
        let (mut first, mut skip, mut at) = (0usize, 0usize, self.offset);
        while first < self.bufs.len() {
            let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&self.bufs[first][skip..])
                .chain(self.bufs[first + 1..].iter().map(|b| &b[..]))
                .map(std::io::IoSlice::new)
                .collect();
            let mut n = match rustix::io::pwritev(&out.file, &slices, at) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(io_err("write", path)(e));
                }
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_err("write", path)(e.into())),
            };
            at += n as u64;
            while n > 0 {
                let left = self.bufs[first].len() - skip;
                if n < left {
                    skip += n;
                    n = 0;
                } else {
                    n -= left;
                    first += 1;
                    skip = 0;
                }
            }
        }
        let len = self.len as u64;
        self.bufs.clear();
        self.len = 0;
        Ok(len)
    }
}

/// Writes the pages of `plain` that differ from what `file` holds at `offset` (runs of
/// them in one write); what lies past the file's end differs. Returns the bytes written.
fn write_changed_pages(
    file: &std::fs::File,
    path: &Path,
    plain: &[u8],
    offset: u64,
) -> Result<u64> {
    let mut on_disk = vec![0u8; plain.len()];
    let mut have = 0;
    while have < on_disk.len() {
        match file.read_at(&mut on_disk[have..], offset + have as u64) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read", path)(e)),
        }
    }
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let pages = plain.len().div_ceil(PATCH_PAGE);
    for page in 0..=pages {
        let differs = page < pages && {
            let (start, end) = (
                page * PATCH_PAGE,
                ((page + 1) * PATCH_PAGE).min(plain.len()),
            );
            end > have || plain[start..end] != on_disk[start..end]
        };
        match (differs, run) {
            (true, None) => run = Some(page * PATCH_PAGE),
            (false, Some(start)) => {
                let end = (page * PATCH_PAGE).min(plain.len());
                file.write_all_at(&plain[start..end], offset + start as u64)
                    .map_err(io_err("write", path))?;
                written += (end - start) as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}
