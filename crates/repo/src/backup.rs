//! Backup: walk → read → chunk → hash → compress → encrypt → pack → upload.
//!
//! The walk records metadata for every entry (memory grows with the entry count, not
//! with bytes). Unchanged files are then matched against the parent snapshot. Files
//! left to read are chunked by a few blocking readers; chunks are hashed, compressed
//! and sealed on the blocking pool under a semaphore sized to the cores; sealed blobs
//! flow through bounded channels into the packer, which keeps several uploads in flight.
//! Trees are written bottom-up after the files, the snapshot last.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chunker;
use crate::error::{Error, Result};
use crate::fsutil::{Beneath, fs_error, node_from_metadata, node_from_stat};

use crate::id::Id;
use crate::lock::{Lease, LockGuard, LockKind, hostname};
use crate::pack::{BlobType, BufPool, EncodedBlob, encode_blob};
use crate::packer::{Dedup, Packer};
use crate::progress::{BackupProgress, Counters, Reporter};
use crate::repository::Repository;
use crate::snapshot::{RootMeta, Snapshot, SnapshotSummary};
use crate::stored_tree::{TreeReader, encode_tree};
use crate::tree::{ContentPart, Name, Node, NodeKind, Tree};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};

/// Settings of one backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Snapshot to compare against: files with the same size, mtime, ctime and inode
    /// reuse its chunk lists without being read.
    pub parent: Option<Id>,
    pub tags: Vec<String>,
    /// Recorded host name; defaults to this machine's.
    pub hostname: Option<String>,
    /// Receives progress about five times a second and a final update.
    pub progress: Option<watch::Sender<BackupProgress>>,
    /// Cancels the backup; nothing visible (no snapshot) is left behind.
    pub cancel: CancellationToken,
    /// Files read at once.
    pub read_concurrency: usize,
    /// Chunks hashed, compressed and sealed at once.
    pub cpu_concurrency: usize,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
    /// Lifetime of the writer lock between refreshes.
    pub lock_ttl: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BackupOptions {
            parent: None,
            tags: Vec::new(),
            hostname: None,
            progress: None,
            cancel: CancellationToken::new(),
            read_concurrency: 2,
            cpu_concurrency: cores,
            upload_concurrency: 4,
            lock_ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupResult {
    pub snapshot_id: Id,
    pub snapshot: Snapshot,
}

// Counter slots.
const FILES_TOTAL: usize = 0;
const FILES_DONE: usize = 1;
const FILES_UNCHANGED: usize = 2;
const BYTES_TOTAL: usize = 3;
const BYTES_READ: usize = 4;
const BYTES_NEW: usize = 5;
const CHUNKS_NEW: usize = 6;
const CHUNKS_REUSED: usize = 7;
const TREES_NEW: usize = 8;
/// Files the parent snapshot has under the same name whose content had to be re-read.
const FILES_CHANGED: usize = 9;
/// Plaintext bytes of new tree blobs (directories and content runs).
const TREE_BYTES_NEW: usize = 10;
type BackupCounters = Counters<11>;

/// One walked entry. Index 0 is the (virtual) root; children always come after their
/// parent, so walking the arena backwards visits children before parents.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// '/'-joined names from the snapshot root.
    rel: Vec<u8>,
    node: Node,
    children: Vec<usize>,
    needs_read: bool,
}

struct Walk {
    entries: Vec<Entry>,
    root_meta: Option<RootMeta>,
    skipped: u64,
    /// The source directory, under which every entry is opened without following links
    /// (`None` for a single file or device).
    root: Option<Arc<Beneath>>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| fs_error("backup", op, path, e)
}

fn rustix_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> Error + 'a {
    move |e| fs_error("backup", op, path, e.into())
}

/// An entry's '/'-joined name from the snapshot root as a relative path.
fn rel_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

/// Makes the entry for `name` in the open directory `dir` (at `path` for messages);
/// `None` for kinds a snapshot does not hold. The entry itself is never followed.
fn make_child_entry(
    dir: &OwnedFd,
    path: PathBuf,
    name: &OsStr,
    parent_rel: &[u8],
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<Option<Entry>> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(rustix_err("stat", &path))?;
    let rel = join_rel(parent_rel, name.as_bytes());
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        FileType::RegularFile => NodeKind::File,
        _ => {
            tracing::warn!(path = %path.display(), "skipping special file (socket, fifo or device)");
            return Ok(None);
        }
    };
    let mut node = node_from_stat(Name::from_os(name), kind, &st);
    if kind == NodeKind::Symlink {
        let target =
            rustix::fs::readlinkat(dir, name, Vec::new()).map_err(rustix_err("readlink", &path))?;
        node.symlink_target = Some(Name::new(target.into_bytes()));
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    let (dev, ino, nlink) = (st.st_dev as u64, st.st_ino as u64, st.st_nlink as u64);
    if kind == NodeKind::File && nlink > 1 {
        match links.get(&(dev, ino)) {
            Some(first) => {
                node.kind = NodeKind::Hardlink;
                node.link_target = Some(Name::new(first.clone()));
            }
            None => {
                links.insert((dev, ino), rel.clone());
            }
        }
    }
    let needs_read = node.kind == NodeKind::File;
    Ok(Some(Entry {
        path,
        rel,
        node,
        children: Vec::new(),
        needs_read,
    }))
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// Makes the entry for one path; `None` for kinds a snapshot does not hold.
fn make_entry(
    path: PathBuf,
    name: Name,
    parent_rel: &[u8],
    top_level_file: bool,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<Option<Entry>> {
    let md = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
    let ft = md.file_type();
    let rel = join_rel(parent_rel, name.as_bytes());
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_file() {
        NodeKind::File
    } else if ft.is_block_device() && top_level_file {
        NodeKind::DeviceImage
    } else {
        tracing::warn!(path = %path.display(), "skipping special file (socket, fifo or device)");
        return Ok(None);
    };
    let mut node = node_from_metadata(name, kind, &md);
    if kind == NodeKind::Symlink {
        let target = fs::read_link(&path).map_err(io_err("readlink", &path))?;
        node.symlink_target = Some(Name::from_os(target.as_os_str()));
    }
    if kind == NodeKind::File && md.nlink() > 1 {
        match links.get(&(md.dev(), md.ino())) {
            Some(first) => {
                node.kind = NodeKind::Hardlink;
                node.link_target = Some(Name::new(first.clone()));
            }
            None => {
                links.insert((md.dev(), md.ino()), rel.clone());
            }
        }
    }
    let needs_read = matches!(node.kind, NodeKind::File | NodeKind::DeviceImage);
    Ok(Some(Entry {
        path,
        rel,
        node,
        children: Vec::new(),
        needs_read,
    }))
}

fn walk(source: &Path, cancel: &CancellationToken) -> Result<Walk> {
    // The source itself is followed when it is a symlink: /dev/disk/by-id/… names
    // are symlinks to the block device users mean.
    let md = fs::metadata(source).map_err(io_err("stat", source))?;
    let mut links = HashMap::new();
    let mut entries = vec![Entry {
        path: source.to_path_buf(),
        rel: Vec::new(),
        node: Node::new("", NodeKind::Dir),
        children: Vec::new(),
        needs_read: false,
    }];
    let mut skipped = 0;
    if !md.is_dir() {
        let name = source.file_name().ok_or_else(|| {
            Error::invalid("source", format!("{} has no file name", source.display()))
        })?;
        let resolved = fs::canonicalize(source).map_err(io_err("resolve", source))?;
        match make_entry(resolved, Name::from_os(name), b"", true, &mut links)? {
            Some(e) => {
                entries.push(e);
                entries[0].children.push(1);
            }
            None => {
                return Err(Error::invalid(
                    "source",
                    format!(
                        "{} is not a regular file, directory or block device",
                        source.display()
                    ),
                ));
            }
        }
        return Ok(Walk {
            entries,
            root_meta: None,
            skipped,
            root: None,
        });
    }
    // The directory itself is not followed either: a volume is never a link.
    let root = Beneath::open_dir(source).map_err(io_err("open", source))?;
    let root_meta = RootMeta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    };
    let mut stack = vec![0usize];
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    while let Some(dir_idx) = stack.pop() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let dir_path = entries[dir_idx].path.clone();
        let parent_rel = entries[dir_idx].rel.clone();
        // Opened from the root by its relative name, refusing any link on the way: a
        // directory swapped for a link after it was listed is an error, not a way out.
        let dir = root
            .open(
                rel_path(&parent_rel),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .map_err(io_err("open directory", &dir_path))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut listing = RawDir::new(dir.as_fd(), &mut buf);
        while let Some(e) = listing.next() {
            let e = e.map_err(rustix_err("list directory", &dir_path))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let name = OsStr::from_bytes(&name);
            let path = dir_path.join(name);
            let Some(entry) = make_child_entry(&dir, path, name, &parent_rel, &mut links)? else {
                skipped += 1;
                continue;
            };
            let is_dir = entry.node.kind == NodeKind::Dir;
            entries.push(entry);
            let idx = entries.len() - 1;
            entries[dir_idx].children.push(idx);
            if is_dir {
                subdirs.push(idx);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Walk {
        entries,
        root_meta: Some(root_meta),
        skipped,
        root: Some(Arc::new(root)),
    })
}

/// Takes content from the parent snapshot for files that did not change.
async fn match_parent(
    repo: &Repository,
    parent_tree: Id,
    entries: &mut [Entry],
    counters: &BackupCounters,
) -> Result<()> {
    let reader = &TreeReader::for_repository(repo);
    let mut frontier = vec![(0usize, parent_tree)];
    while !frontier.is_empty() {
        let loaded: Vec<(usize, Tree)> = futures::stream::iter(frontier)
            .map(|(idx, tree_id)| async move { reader.load(&tree_id).await.map(|t| (idx, t.tree)) })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (dir_idx, tree) in loaded {
            let by_name: HashMap<&Name, &Node> = tree.nodes.iter().map(|n| (&n.name, n)).collect();
            for &child in &entries[dir_idx].children.clone() {
                let e = &mut entries[child];
                let Some(old) = by_name.get(&e.node.name) else {
                    continue;
                };
                match e.node.kind {
                    NodeKind::Dir => {
                        if let (NodeKind::Dir, Some(sub)) = (old.kind, old.subtree) {
                            next.push((child, sub));
                        }
                    }
                    NodeKind::File => {
                        let unchanged = old.kind == NodeKind::File
                            && old.size == e.node.size
                            && old.mtime_ns == e.node.mtime_ns
                            && old.ctime_ns == e.node.ctime_ns
                            && old.inode == e.node.inode
                            && old.content.iter().all(|p| match p {
                                ContentPart::Chunk { id, .. } => repo.index_contains(id),
                                ContentPart::Hole { .. } => true,
                            });
                        if unchanged {
                            e.node.content = old.content.clone();
                            e.needs_read = false;
                            counters.add(FILES_UNCHANGED, 1);
                            counters.add(FILES_DONE, 1);
                        } else if old.kind == NodeKind::File {
                            counters.add(FILES_CHANGED, 1);
                        }
                    }
                    _ => {}
                }
            }
        }
        frontier = next;
    }
    Ok(())
}

/// Shared state of the read/chunk stage.
struct Ctx {
    repo: Repository,
    dedup: Dedup,
    cpu: Semaphore,
    cpu_concurrency: usize,
    packer_tx: mpsc::Sender<Vec<EncodedBlob>>,
    counters: Arc<BackupCounters>,
    cancel: CancellationToken,
    /// Read blocks of large files, reused once their chunks are sealed.
    read_blocks: Arc<BufPool>,
    /// The source directory, set once walked (see [`Walk::root`]).
    root: std::sync::OnceLock<Option<Arc<Beneath>>>,
}

const PACKER_GONE: &str = "packer stopped";

enum ChunkMsg {
    Data(bytes::Bytes),
    Hole(u64),
}

/// Opens a file to read. Under a source directory, by its relative name with no link
/// followed anywhere; non-blocking, so a FIFO swapped in cannot stall the reader.
fn open_for_reading(ctx: &Ctx, job: &FileJob) -> Result<File> {
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
fn read_chunks(
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
const INLINE_FILE_MAX: u64 = 4 << 20;
/// A batch of small files ends after this many bytes or files.
const BATCH_BYTES: u64 = 8 << 20;
const BATCH_FILES: usize = 256;
/// A large file's chunks go to the CPU stage in runs of about this many bytes.
const CPU_BATCH_BYTES: usize = 2 << 20;

/// One file to read: its entry, its path for messages and its name under the source.
struct FileJob {
    idx: usize,
    path: PathBuf,
    rel: Vec<u8>,
    kind: NodeKind,
}

/// Work for the read stage: a batch of small files, or one large file.
enum ReadJob {
    Small(Vec<FileJob>),
    Large(FileJob),
}

impl Ctx {
    /// Blocking CPU work on one chunk: zero check, keyed hash, dedup, compress, seal.
    fn seal_chunk(&self, data: &[u8]) -> Result<(ContentPart, Option<EncodedBlob>)> {
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
    async fn to_packer(&self, blobs: Vec<EncodedBlob>) -> Result<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        self.packer_tx
            .send(blobs)
            .await
            .map_err(|_| Error::Internal(PACKER_GONE.into()))
    }

    /// Turns one message of the read stage into a content part, sealing new data.
    fn seal_msg(
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
    async fn on_cpu<T, F>(self: &Arc<Self>, work: F) -> Result<T>
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
    async fn process_batch(self: Arc<Self>, batch: Vec<ChunkMsg>) -> Result<Vec<ContentPart>> {
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
    async fn read_small_files(
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

    async fn read_file(self: Arc<Self>, job: FileJob) -> Result<(usize, Vec<ContentPart>)> {
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
fn is_zero(data: &[u8]) -> bool {
    let blocks = data.chunks_exact(64);
    let rest = blocks.remainder();
    rest.iter().all(|b| *b == 0)
        && blocks
            .into_iter()
            .all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0)
}

fn merge_holes(parts: Vec<ContentPart>) -> Vec<ContentPart> {
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

/// Blocking: serializes trees bottom-up and sends the new ones to the packer.
fn build_trees(
    entries: &mut [Entry],
    repo: &Repository,
    dedup: &Dedup,
    counters: &BackupCounters,
    tx: &mpsc::Sender<Vec<EncodedBlob>>,
) -> Result<Id> {
    for idx in (0..entries.len()).rev() {
        if entries[idx].node.kind != NodeKind::Dir {
            continue;
        }
        let nodes: Vec<Node> = entries[idx]
            .children
            .iter()
            .map(|&c| entries[c].node.clone())
            .collect();
        let tree = Tree { nodes };
        let encoded = encode_tree(&tree, repo.crypto(), repo.config().stores_runs())?;
        let mut new = Vec::new();
        for (blob_id, bytes) in &encoded.blobs {
            if dedup.claim(blob_id) {
                counters.add(TREES_NEW, 1);
                counters.add(TREE_BYTES_NEW, bytes.len() as u64);
                let blob = encode_blob(
                    repo.crypto(),
                    BlobType::Tree,
                    *blob_id,
                    bytes,
                    repo.config().compression_level,
                )?;
                new.push(blob);
            }
        }
        if !new.is_empty() {
            tx.blocking_send(new)
                .map_err(|_| Error::Internal(PACKER_GONE.into()))?;
        }
        let id = encoded.root;
        entries[idx].node.subtree = Some(id);
        // Children are no longer needed once their parent's tree is built.
        entries[idx].children = Vec::new();
    }
    entries[0]
        .node
        .subtree
        .ok_or_else(|| Error::Internal("root tree missing".into()))
}

impl Repository {
    /// Backs up a directory tree or a single file (a block device is read as an
    /// image). The snapshot becomes visible only after every pack and index it needs.
    pub async fn backup(&self, source: &Path, options: BackupOptions) -> Result<BackupResult> {
        let span = tracing::info_span!("backup", source = %source.display());
        async move {
            let lock = LockGuard::acquire(
                self.backend().clone(),
                "backup",
                LockKind::Shared,
                options.lock_ttl,
                None,
            )
            .await?;
            let result = async {
                // The index loaded at open may predate a prune; deduplicating against
                // it could reference deleted packs.
                self.sync_index().await?;
                crate::packer::adopt_unindexed_packs(self).await?;
                self.backup_locked(source, &options, &lock.lease()).await
            }
            .await;
            lock.release_quietly().await;
            result
        }
        .instrument(span)
        .await
    }

    async fn backup_locked(
        &self,
        source: &Path,
        options: &BackupOptions,
        lease: &Lease,
    ) -> Result<BackupResult> {
        let counters: Arc<BackupCounters> = BackupCounters::new();
        let cancel = options.cancel.clone();
        let packer = Packer::spawn(
            self.clone(),
            options.upload_concurrency,
            cancel.child_token(),
            Some(lease.clone()),
        );
        let reporter = {
            let (c, p) = (counters.clone(), packer.counters.clone());
            Reporter::spawn(options.progress.clone(), move |done| BackupProgress {
                files_total: c.get(FILES_TOTAL),
                files_done: c.get(FILES_DONE),
                files_unchanged: c.get(FILES_UNCHANGED),
                bytes_total: c.get(BYTES_TOTAL),
                bytes_read: c.get(BYTES_READ),
                bytes_new: c.get(BYTES_NEW),
                bytes_uploaded: p.bytes.load(Ordering::Relaxed),
                chunks_new: c.get(CHUNKS_NEW),
                chunks_reused: c.get(CHUNKS_REUSED),
                packs_uploaded: p.packs.load(Ordering::Relaxed),
                elapsed: c.elapsed(),
                done,
            })
        };
        let ctx = Arc::new(Ctx {
            repo: self.clone(),
            dedup: Dedup::new(self.clone()),
            cpu: Semaphore::new(options.cpu_concurrency.max(1)),
            cpu_concurrency: options.cpu_concurrency.max(1),
            packer_tx: packer.sender(),
            counters: counters.clone(),
            cancel: cancel.clone(),
            // About the blocks in flight: one being read and a few being sealed per
            // file read at once.
            read_blocks: BufPool::new(
                2 * options.read_concurrency.max(1),
                chunker::block_size(&self.config().chunker),
            ),
            root: std::sync::OnceLock::new(),
        });
        let packer_counters = packer.counters.clone();
        // `produce` consumes the context so every sender to the packer is gone before
        // `finish` waits for the channel to close.
        let produced = self.produce(source, options, ctx).await;
        // The packer flushes what it has either way, so packs already uploaded are
        // indexed for the next run; its error is the root cause when it stopped first.
        let packed = packer.finish().await;
        let outcome = match (produced, packed) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
            (Err(e), Err(pe)) => match &e {
                Error::Internal(m) if m == PACKER_GONE => Err(pe),
                _ => Err(e),
            },
        };
        let result = match outcome {
            Ok(_) if cancel.is_cancelled() => Err(Error::Cancelled),
            Ok((tree, mut summary, root_meta)) => {
                summary.files_read = counters.get(FILES_DONE) - counters.get(FILES_UNCHANGED);
                summary.files_unchanged = counters.get(FILES_UNCHANGED);
                summary.files_changed = counters.get(FILES_CHANGED);
                summary.bytes_read = counters.get(BYTES_READ);
                summary.bytes_new = counters.get(BYTES_NEW);
                summary.chunks_new = counters.get(CHUNKS_NEW);
                summary.chunks_reused = counters.get(CHUNKS_REUSED);
                summary.trees_new = counters.get(TREES_NEW);
                summary.tree_bytes_new = counters.get(TREE_BYTES_NEW);
                summary.bytes_uploaded = packer_counters.bytes.load(Ordering::Relaxed);
                summary.packs_uploaded = packer_counters.packs.load(Ordering::Relaxed);
                summary.duration_ms = counters.elapsed().as_millis() as u64;
                let path = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
                let snapshot = Snapshot {
                    time: OffsetDateTime::now_utc(),
                    hostname: options.hostname.clone().unwrap_or_else(hostname),
                    paths: vec![path.to_string_lossy().into_owned()],
                    tags: options.tags.clone(),
                    parent: options.parent,
                    tree,
                    root: root_meta,
                    summary,
                };
                // The snapshot is the commit: only while no prune can have run.
                lease.ensure_live()?;
                let snapshot_id = self.save_snapshot_unlocked(&snapshot).await?;
                tracing::info!(
                    snapshot = %snapshot_id.short(),
                    files = snapshot.summary.files,
                    bytes_new = snapshot.summary.bytes_new,
                    bytes_uploaded = snapshot.summary.bytes_uploaded,
                    "backup complete"
                );
                Ok(BackupResult {
                    snapshot_id,
                    snapshot,
                })
            }
            Err(e) => Err(e),
        };
        reporter.finish().await;
        result
    }

    async fn produce(
        &self,
        source: &Path,
        options: &BackupOptions,
        ctx: Arc<Ctx>,
    ) -> Result<(Id, SnapshotSummary, Option<RootMeta>)> {
        let src = source.to_path_buf();
        let cancel = ctx.cancel.clone();
        let Walk {
            mut entries,
            root_meta,
            skipped,
            root,
        } = tokio::task::spawn_blocking(move || walk(&src, &cancel))
            .await
            .map_err(Error::join)??;
        let _ = ctx.root.set(root);
        if skipped > 0 {
            tracing::warn!(skipped, "special files were not backed up");
        }
        let mut summary = SnapshotSummary::default();
        for e in &entries[1..] {
            match e.node.kind {
                NodeKind::File | NodeKind::DeviceImage => {
                    summary.files += 1;
                    ctx.counters.add(BYTES_TOTAL, e.node.size);
                }
                NodeKind::Dir => summary.dirs += 1,
                NodeKind::Symlink => summary.symlinks += 1,
                NodeKind::Hardlink => summary.hardlinks += 1,
            }
        }
        ctx.counters.add(FILES_TOTAL, summary.files);

        if let Some(parent) = options.parent {
            let snap = self.load_snapshot(&parent).await?;
            match_parent(self, snap.tree, &mut entries, &ctx.counters).await?;
        }

        // Small files go in batches, large ones one by one through the shared CPU
        // stage; as many batches or files are in flight as there are cores.
        let mut jobs: Vec<ReadJob> = Vec::new();
        let mut batch: Vec<FileJob> = Vec::new();
        let mut batch_bytes = 0u64;
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.needs_read) {
            let job = FileJob {
                idx: i,
                path: e.path.clone(),
                rel: e.rel.clone(),
                kind: e.node.kind,
            };
            if e.node.kind == NodeKind::File && e.node.size <= INLINE_FILE_MAX {
                batch.push(job);
                batch_bytes += e.node.size;
                if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_FILES {
                    jobs.push(ReadJob::Small(std::mem::take(&mut batch)));
                    batch_bytes = 0;
                }
            } else {
                jobs.push(ReadJob::Large(job));
            }
        }
        if !batch.is_empty() {
            jobs.push(ReadJob::Small(batch));
        }
        let in_flight = options.read_concurrency.max(options.cpu_concurrency).max(1);
        let read: Vec<Vec<(usize, Vec<ContentPart>)>> = futures::stream::iter(jobs)
            .map(|job| {
                let ctx = ctx.clone();
                async move {
                    match job {
                        ReadJob::Small(batch) => ctx.read_small_files(batch).await,
                        ReadJob::Large(job) => Ok(vec![ctx.read_file(job).await?]),
                    }
                }
            })
            .buffer_unordered(in_flight)
            .try_collect()
            .await?;
        let read = read.into_iter().flatten();
        for (idx, parts) in read {
            let node = &mut entries[idx].node;
            node.size = parts.iter().map(ContentPart::len).sum();
            node.content = parts;
        }
        if ctx.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        summary.bytes_total = entries
            .iter()
            .filter(|e| matches!(e.node.kind, NodeKind::File | NodeKind::DeviceImage))
            .map(|e| e.node.size)
            .sum();

        let tree = tokio::task::spawn_blocking(move || {
            build_trees(
                &mut entries,
                &ctx.repo,
                &ctx.dedup,
                &ctx.counters,
                &ctx.packer_tx,
            )
        })
        .await
        .map_err(Error::join)??;
        Ok((tree, summary, root_meta))
    }
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
