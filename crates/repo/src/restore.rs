//! Restore: trees are loaded and validated first (every name must stay inside the
//! target), then directories and symlinks are created, files are filled in parallel
//! from verified chunks (holes left unwritten, so sparse files stay sparse), hard links
//! are made, and metadata is applied last, deepest directories first.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::fsutil::{Beneath, fs_error, is_root, mtime_only};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::{BlobType, decode_blob, pack_key};
use crate::progress::{Counters, Reporter, RestoreProgress};
use crate::repository::Repository;
use crate::snapshot::RootMeta;
use crate::stored_tree::TreeReader;
use crate::tree::{ContentPart, Node, NodeKind};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};

/// Settings of one restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub progress: Option<watch::Sender<RestoreProgress>>,
    pub cancel: CancellationToken,
    /// Files filled at once.
    pub file_concurrency: usize,
    /// Range downloads in flight per file.
    pub download_concurrency: usize,
    /// Restore uid/gid; `None` means "when running as root".
    pub restore_ownership: Option<bool>,
    /// Flush every restored file to disk before reporting success (one `syncfs` of
    /// the target's file system at the end, not an fsync per file: tens of thousands
    /// of small files would each wait for the disk).
    pub fsync: bool,
    /// Keep setuid and setgid bits on restored files. Off by default: a snapshot is
    /// data from whoever could write the volume (or the repository), and a setuid
    /// program restored by a root agent would run as its owner on the node. For an
    /// administrator restoring a system image on purpose. Setgid on directories is
    /// always kept: it only sets the group of entries created inside. Restore never
    /// makes device nodes, FIFOs or sockets (backups do not record them; a device
    /// image is restored as a regular file holding its bytes).
    pub keep_setuid_setgid: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            progress: None,
            cancel: CancellationToken::new(),
            // Small files are mostly waiting on the store's latency, so many at once.
            file_concurrency: 16,
            download_concurrency: 4,
            restore_ownership: None,
            fsync: true,
            keep_setuid_setgid: false,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes_written: u64,
    pub bytes_downloaded: u64,
    pub duration: Duration,
}

const FILES_TOTAL: usize = 0;
const FILES_DONE: usize = 1;
const BYTES_TOTAL: usize = 2;
const BYTES_WRITTEN: usize = 3;
const BYTES_DOWNLOADED: usize = 4;
type RestoreCounters = Counters<5>;

/// Largest range fetched in one request when neighbouring chunks share a pack.
const MAX_RANGE: u64 = 8 * 1024 * 1024;
/// A file's chunks this close together in one pack are fetched with one request, the
/// bytes between them downloaded and dropped: to an S3 store a request costs about as
/// much as a few hundred KiB of transfer, and small chunks leave a file's chunks split
/// by other files' blobs and by chunks it shares with them. (Benchmark data set, 16 KiB
/// chunks: 5,100 requests for the large files with no gap, 560 with 64 KiB, 400 with
/// 256 KiB for 22% more bytes, 220 with 1 MiB for 41% more.)
const RANGE_GAP: u64 = 256 * 1024;
/// Bytes of fetched ranges held at once, downloading or waiting to be written, across
/// every file: bounds memory whatever the file and download concurrency. Ranges are
/// mostly 2 to 8 MiB, so this still keeps a dozen requests in flight; more only added
/// memory in measurements (a local repository fills any budget faster than files are
/// written).
const MAX_BYTES_IN_FLIGHT: u32 = 32 * 1024 * 1024;

#[derive(Debug, Default)]
struct Plan {
    /// Parents before children.
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    symlinks: Vec<(PathBuf, Node)>,
    hardlinks: Vec<(PathBuf, PathBuf, Node)>,
}

/// One chunk to write.
#[derive(Debug)]
struct Piece {
    file_offset: u64,
    id: Id,
    loc: BlobLocation,
}

/// Chunks stored close together in one pack, fetched with one range request.
#[derive(Debug)]
struct Group {
    pack: Id,
    start: u64,
    end: u64,
    pieces: Vec<Piece>,
}

/// Groups a file's chunks into range requests: in pack order, not file order (writes
/// are positional), so chunks the file repeats or that lie out of order in a pack
/// share a request, merging neighbours up to `gap` bytes apart and up to `MAX_RANGE`.
fn group_pieces(mut pieces: Vec<Piece>, gap: u64) -> Vec<Group> {
    pieces.sort_by_key(|p| (p.loc.pack, p.loc.offset, p.file_offset));
    let mut groups: Vec<Group> = Vec::new();
    for piece in pieces {
        let start = u64::from(piece.loc.offset);
        let end = start + u64::from(piece.loc.length);
        match groups.last_mut() {
            Some(g)
                if g.pack == piece.loc.pack
                    && start <= g.end + gap
                    && end.max(g.end) - g.start <= MAX_RANGE =>
            {
                g.end = g.end.max(end);
                g.pieces.push(piece);
            }
            _ => groups.push(Group {
                pack: piece.loc.pack,
                start,
                end,
                pieces: vec![piece],
            }),
        }
    }
    groups
}

/// Bytes of fetched ranges in memory; a range waits for room before it is requested.
struct Budget {
    sem: tokio::sync::Semaphore,
    total: u32,
}

impl Budget {
    fn new(total: u32) -> Self {
        Budget {
            sem: tokio::sync::Semaphore::new(total as usize),
            total,
        }
    }

    /// Room for `len` bytes, held until the permit is dropped. A range larger than the
    /// whole budget waits for all of it rather than forever.
    async fn reserve(&self, len: u64) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let n = u32::try_from(len).map_or(self.total, |n| n.min(self.total));
        self.sem
            .acquire_many(n)
            .await
            .map_err(|_| Error::Internal("restore budget closed".into()))
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| fs_error("restore", op, path, e)
}

/// Metadata to give one restored entry.
#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
}

/// How metadata is applied in this restore.
#[derive(Clone, Copy, Debug)]
struct MetaPolicy {
    ownership: bool,
    keep_setuid_setgid: bool,
}

impl MetaPolicy {
    /// The permission bits to set: setuid and setgid dropped unless asked for, setgid
    /// kept on directories.
    fn mode(&self, mode: u32, dir: bool) -> u32 {
        let mode = mode & 0o7777;
        match (self.keep_setuid_setgid, dir) {
            (true, _) => mode,
            (false, true) => mode & !0o4000,
            (false, false) => mode & !0o6000,
        }
    }

    /// Owner first (chown clears setuid bits), then mode, then mtime, all on an open
    /// descriptor: nothing is looked up by name, so nothing can be swapped in between.
    fn apply_fd(&self, fd: BorrowedFd<'_>, m: Meta, dir: bool, path: &Path) -> Result<()> {
        if self.ownership {
            rustix::fs::fchown(fd, Some(uid(m.uid)), Some(gid(m.gid)))
                .map_err(|e| io_err("chown", path)(e.into()))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.mode(m.mode, dir)))
            .map_err(|e| io_err("chmod", path)(e.into()))?;
        rustix::fs::futimens(fd, &mtime_only(m.mtime_ns))
            .map_err(|e| io_err("set mtime", path)(e.into()))
    }
}

fn uid(n: u32) -> Uid {
    Uid::from_raw(n)
}

fn gid(n: u32) -> Gid {
    Gid::from_raw(n)
}

impl Meta {
    fn of(node: &Node) -> Self {
        Meta {
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            mtime_ns: node.mtime_ns,
        }
    }
}

/// Creates a file for writing: never through a link, never over something there.
fn create_file(root: &Beneath, path: &Path) -> Result<fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
    root.open(root.rel(path), flags, Mode::from_raw_mode(0o600))
        .map(fs::File::from)
        .map_err(io_err("create file", path))
}

impl Repository {
    /// Restores a snapshot into `target`, which must be absent or an empty directory.
    pub async fn restore(
        &self,
        snapshot: &Id,
        target: &Path,
        options: RestoreOptions,
    ) -> Result<RestoreSummary> {
        let span = tracing::info_span!("restore", snapshot = %snapshot.short(), target = %target.display());
        async move {
            let counters: Arc<RestoreCounters> = RestoreCounters::new();
            let reporter = {
                let c = counters.clone();
                Reporter::spawn(options.progress.clone(), move |done| RestoreProgress {
                    files_total: c.get(FILES_TOTAL),
                    files_done: c.get(FILES_DONE),
                    bytes_total: c.get(BYTES_TOTAL),
                    bytes_written: c.get(BYTES_WRITTEN),
                    bytes_downloaded: c.get(BYTES_DOWNLOADED),
                    elapsed: c.elapsed(),
                    done,
                })
            };
            let result = self
                .restore_inner(snapshot, target, &options, &counters)
                .await;
            reporter.finish().await;
            if let Ok(s) = &result {
                tracing::info!(files = s.files, bytes = s.bytes_written, "restore complete");
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn restore_inner(
        &self,
        snapshot_id: &Id,
        target: &Path,
        options: &RestoreOptions,
        counters: &Arc<RestoreCounters>,
    ) -> Result<RestoreSummary> {
        // A handle opened before another process wrote this snapshot, or before a prune
        // replaced index files, would look blobs up in an outdated index.
        self.sync_index().await?;
        let snapshot = self.load_snapshot(snapshot_id).await?;
        prepare_target(target)?;
        // Every path below is resolved from this descriptor without following links.
        let root = Arc::new(Beneath::open_dir(target).map_err(io_err("open", target))?);
        let plan = self.plan(snapshot.tree, target, &options.cancel).await?;
        let policy = MetaPolicy {
            ownership: options.restore_ownership.unwrap_or_else(is_root),
            keep_setuid_setgid: options.keep_setuid_setgid,
        };

        let mut summary = RestoreSummary {
            files: plan.files.len() as u64,
            dirs: plan.dirs.len() as u64,
            symlinks: plan.symlinks.len() as u64,
            hardlinks: plan.hardlinks.len() as u64,
            ..Default::default()
        };
        counters.add(FILES_TOTAL, summary.files);
        counters.add(BYTES_TOTAL, plan.files.iter().map(|(_, n)| n.size).sum());

        let plan = Arc::new(plan);
        {
            let (plan, root) = (plan.clone(), root.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let private = Mode::from_raw_mode(0o700);
                for (path, _) in &plan.dirs {
                    root.at_parent(root.rel(path), |dir, name| {
                        rustix::fs::mkdirat(dir, name, private).map_err(Into::into)
                    })
                    .map_err(io_err("create directory", path))?;
                }
                for (path, node) in &plan.symlinks {
                    let link = node
                        .symlink_target
                        .as_ref()
                        .map(|t| t.to_os())
                        .unwrap_or_default();
                    root.at_parent(root.rel(path), |dir, name| {
                        rustix::fs::symlinkat(&link, dir, name).map_err(Into::into)
                    })
                    .map_err(io_err("create symlink", path))?;
                }
                Ok(())
            })
            .await
            .map_err(Error::join)??;
        }

        // Small files whose chunks sit in one stretch of a pack go in batches, one
        // request per batch; the rest are restored file by file.
        let mut singles: Vec<(usize, Vec<Group>, u64)> = Vec::new();
        let mut small: Vec<(usize, Group, u64)> = Vec::new();
        for (i, (path, node)) in plan.files.iter().enumerate() {
            let (mut groups, size) = self.groups_of(path, node)?;
            if let [g] = groups.as_slice()
                && g.end - g.start <= SMALL_FILE_RANGE
                && let Some(g) = groups.pop()
            {
                small.push((i, g, size));
            } else {
                singles.push((i, groups, size));
            }
        }
        small.sort_by_key(|(_, g, _)| (g.pack, g.start));
        let mut batches: Vec<SmallBatch> = Vec::new();
        for (i, g, size) in small {
            match batches.last_mut() {
                Some(b)
                    if b.pack == g.pack
                        && g.start <= b.end + BATCH_GAP
                        && g.end.max(b.end) - b.start <= MAX_RANGE =>
                {
                    b.end = b.end.max(g.end);
                    b.files.push((i, g, size));
                }
                _ => batches.push(SmallBatch {
                    pack: g.pack,
                    start: g.start,
                    end: g.end,
                    files: vec![(i, g, size)],
                }),
            }
        }
        enum Work {
            Batch(SmallBatch),
            File((usize, Vec<Group>, u64)),
        }
        impl Work {
            fn requests(&self) -> usize {
                match self {
                    Work::Batch(_) => 1,
                    Work::File((_, groups, _)) => groups.len(),
                }
            }
            fn download_bytes(&self) -> u64 {
                match self {
                    Work::Batch(b) => b.end - b.start,
                    Work::File((_, groups, _)) => groups.iter().map(|g| g.end - g.start).sum(),
                }
            }
        }
        let mut work: Vec<Work> = batches
            .into_iter()
            .map(Work::Batch)
            .chain(singles.into_iter().map(Work::File))
            .collect();
        // Largest first: a big file started last would finish alone, long after the
        // rest, with only its own few downloads in flight.
        work.sort_by_key(|w| std::cmp::Reverse(w.download_bytes()));
        tracing::debug!(
            requests = work.iter().map(Work::requests).sum::<usize>(),
            bytes = work.iter().map(Work::download_bytes).sum::<u64>(),
            "range requests planned"
        );
        let budget = &Budget::new(MAX_BYTES_IN_FLIGHT);
        futures::stream::iter(work)
            .map(|w| {
                let (plan, root) = (plan.clone(), root.clone());
                async move {
                    match w {
                        Work::Batch(b) => {
                            self.restore_batch(&plan, &root, policy, b, options, counters, budget)
                                .await
                        }
                        Work::File((i, groups, size)) => {
                            let (path, node) = &plan.files[i];
                            let file = Target {
                                root: &root,
                                path,
                                meta: Meta::of(node),
                                policy,
                            };
                            self.restore_file(file, groups, size, options, counters, budget)
                                .await
                        }
                    }
                }
            })
            .buffer_unordered(options.file_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }

        let root_meta = snapshot.root;
        let target_owned = target.to_path_buf();
        let meta_root = root.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let root = meta_root;
            for (path, first, _) in &plan.hardlinks {
                root.at_parent(root.rel(first), |from_dir, from| {
                    root.at_parent(root.rel(path), |to_dir, to| {
                        rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty())
                            .map_err(Into::into)
                    })
                })
                .map_err(io_err("create hard link", path))?;
            }
            // Files got theirs when written. Symlinks: owner and mtime only (Linux has
            // no mode of their own for them). Then directories deepest first, so
            // creating children no longer changes a parent's mtime.
            for (path, node) in &plan.symlinks {
                root.at_parent(root.rel(path), |dir, name| {
                    if policy.ownership {
                        rustix::fs::chownat(
                            dir,
                            name,
                            Some(uid(node.uid)),
                            Some(gid(node.gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )?;
                    }
                    let times = mtime_only(node.mtime_ns);
                    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
                    Ok(())
                })
                .map_err(io_err("set owner and mtime of", path))?;
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY;
            for (path, node) in plan.dirs.iter().rev() {
                let dir = root
                    .open(root.rel(path), flags, Mode::empty())
                    .map_err(io_err("open directory", path))?;
                policy.apply_fd(dir.as_fd(), Meta::of(node), true, path)?;
            }
            if let Some(RootMeta {
                mode,
                uid,
                gid,
                mtime_ns,
            }) = root_meta
            {
                let m = Meta {
                    mode,
                    uid,
                    gid,
                    mtime_ns,
                };
                policy.apply_fd(root.fd(), m, true, &target_owned)?;
            }
            Ok(())
        })
        .await
        .map_err(Error::join)??;

        if options.fsync {
            let target = target.to_path_buf();
            tokio::task::spawn_blocking(move || -> Result<()> {
                rustix::fs::syncfs(root.fd()).map_err(|e| Error::io("sync", &target, e.into()))
            })
            .await
            .map_err(Error::join)??;
        }

        summary.bytes_written = counters.get(BYTES_WRITTEN);
        summary.bytes_downloaded = counters.get(BYTES_DOWNLOADED);
        summary.duration = counters.elapsed();
        Ok(summary)
    }

    /// Loads every tree, validating names and checking that every chunk is indexed,
    /// before anything is written.
    async fn plan(&self, root: Id, target: &Path, cancel: &CancellationToken) -> Result<Plan> {
        let mut plan = Plan::default();
        let reader = &TreeReader::for_repository(self);
        let mut frontier = vec![(root, target.to_path_buf())];
        while !frontier.is_empty() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let trees: Vec<_> = futures::stream::iter(frontier)
                .map(|(id, dir)| async move {
                    if self.locate(&id).is_some_and(|l| l.kind != BlobType::Tree) {
                        return Err(Error::corrupt(
                            format!("tree {id}"),
                            "indexed as a data blob",
                        ));
                    }
                    let tree = reader.load(&id).await?.tree;
                    tree.validate(&id)?;
                    Ok::<_, Error>((tree, dir))
                })
                .buffered(8)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            for (tree, dir) in trees {
                for node in tree.nodes {
                    let path = dir.join(node.name.to_os());
                    match node.kind {
                        NodeKind::Dir => {
                            let sub = node.subtree.ok_or_else(|| {
                                Error::Internal("validated dir without subtree".into())
                            })?;
                            next.push((sub, path.clone()));
                            plan.dirs.push((path, node));
                        }
                        NodeKind::File | NodeKind::DeviceImage => {
                            for part in &node.content {
                                if let ContentPart::Chunk { id, .. } = part
                                    && self.locate(id).is_none()
                                {
                                    return Err(Error::NotFound {
                                        what: format!("chunk {id} of {}", path.display()),
                                        hint: "the repository is damaged; run `check`".into(),
                                    });
                                }
                            }
                            plan.files.push((path, node));
                        }
                        NodeKind::Symlink => plan.symlinks.push((path, node)),
                        NodeKind::Hardlink => {
                            let mut first = target.to_path_buf();
                            if let Some(t) = &node.link_target {
                                for c in t.as_bytes().split(|b| *b == b'/') {
                                    first.push(crate::tree::Name::new(c.to_vec()).to_os());
                                }
                            }
                            plan.hardlinks.push((path, first, node));
                        }
                    }
                }
            }
            frontier = next;
        }
        // A hard link may only point at a regular file this restore creates; otherwise
        // a crafted link through a restored symlink could pull in a file from outside.
        let files: std::collections::HashSet<&Path> =
            plan.files.iter().map(|(p, _)| p.as_path()).collect();
        for (path, first, node) in &plan.hardlinks {
            if !files.contains(first.as_path()) {
                return Err(Error::UnsafeName {
                    name: node
                        .link_target
                        .as_ref()
                        .map(|t| t.lossy())
                        .unwrap_or_default(),
                    tree: format!("hard link {}", path.display()),
                });
            }
        }
        Ok(plan)
    }

    /// The range requests for a file's chunks, and the file's size.
    fn groups_of(&self, path: &Path, node: &Node) -> Result<(Vec<Group>, u64)> {
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for part in &node.content {
            if let ContentPart::Chunk { id, .. } = part {
                let loc = self.locate(id).ok_or_else(|| Error::NotFound {
                    what: format!("chunk {id} of {}", path.display()),
                    hint: "the repository is damaged; run `check`".into(),
                })?;
                pieces.push(Piece {
                    file_offset: offset,
                    id: *id,
                    loc,
                });
            }
            offset += part.len();
        }
        Ok((group_pieces(pieces, RANGE_GAP), offset))
    }

    /// Downloads `start..end` of a pack, counting it. Backends promise exact ranges; a
    /// short answer is reported as such rather than sliced out of bounds later.
    async fn fetch_range(
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
    async fn restore_batch(
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
                let file = create_file(&root, path)?;
                let mut unfinished = Unfinished {
                    root: &root,
                    path,
                    done: false,
                };
                let written = write_pieces(
                    &repo,
                    &file,
                    path,
                    &batch.pack,
                    batch.start,
                    &data,
                    &group.pieces,
                )?;
                file.set_len(*size).map_err(io_err("truncate", path))?;
                policy.apply_fd(file.as_fd(), *meta, false, path)?;
                unfinished.done = true;
                counters.add(BYTES_WRITTEN, written);
                counters.add(FILES_DONE, 1);
            }
            Ok(())
        })
        .await
        .map_err(Error::join)?
    }

    async fn restore_file(
        &self,
        target: Target<'_>,
        groups: Vec<Group>,
        size: u64,
        options: &RestoreOptions,
        counters: &RestoreCounters,
        budget: &Budget,
    ) -> Result<()> {
        let path = target.path;
        let file = Arc::new(create_file(target.root, path)?);
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
                        write_pieces(&repo, &file, &path, &g.pack, g.start, &data, &g.pieces)
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
            file.set_len(size)
                .map_err(io_err("truncate", &path_owned))?;
            policy.apply_fd(file.as_fd(), meta, false, &path_owned)
        })
        .await
        .map_err(Error::join)??;
        unfinished.done = true;
        counters.add(FILES_DONE, 1);
        Ok(())
    }
}

/// Blocking: decodes the pieces of one range (which starts at pack offset `base`)
/// and writes them into `file`; returns the bytes written. Only the pieces' own bytes
/// are read from `data`, never what lies between them.
fn write_pieces(
    repo: &Repository,
    file: &std::fs::File,
    path: &Path,
    pack: &Id,
    base: u64,
    data: &[u8],
    pieces: &[Piece],
) -> Result<u64> {
    let mut written = 0;
    // Pieces come in pack order, so a chunk the file holds several times (repeated
    // blocks of an image) comes in a row, and is decoded once.
    let mut last: Option<(&Piece, Vec<u8>)> = None;
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
            file.write_all_at(plain, p.file_offset)
                .map_err(io_err("write", path))?;
            written += plain.len() as u64;
        }
    }
    Ok(written)
}

/// Small files whose chunks lie close together in one pack, fetched together.
#[derive(Debug)]
struct SmallBatch {
    pack: Id,
    start: u64,
    end: u64,
    /// (index into `Plan::files`, its one range, its size)
    files: Vec<(usize, Group, u64)>,
}

/// A small file's chunks may join a batch when they start within this many bytes of
/// the batch's end (the gap is downloaded and dropped).
const BATCH_GAP: u64 = 64 * 1024;
/// Files whose chunks span at most this much of one pack are restored in batches.
const SMALL_FILE_RANGE: u64 = 1024 * 1024;

/// Deletes a file being restored unless it was finished, so a failed or cancelled
/// restore never leaves a file of the right size with wrong or missing content
/// (ranges arrive out of order, and a sibling's failure drops this future mid-way).
struct Unfinished<'a> {
    root: &'a Beneath,
    path: &'a Path,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            // One unlink, by name in its own directory; the restore is failing anyway.
            let _ = self.root.at_parent(self.root.rel(self.path), |dir, name| {
                rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into)
            });
        }
    }
}

/// A file being restored: where, and the metadata it gets once written.
struct Target<'a> {
    root: &'a Beneath,
    path: &'a Path,
    meta: Meta,
    policy: MetaPolicy,
}

fn prepare_target(target: &Path) -> Result<()> {
    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::invalid(
                    "restore target",
                    format!(
                        "{} is not empty; restore into an empty or new directory",
                        target.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(io_err("create directory", target))
        }
        Err(e) => Err(Error::io("open restore target", target, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DynBackend, FaultyBackend, MemoryBackend, Op};
    use crate::config::InitOptions;
    use crate::pack::encode_blob;
    use crate::{BackupOptions, BlobType};

    fn piece(pack: u8, offset: u32, length: u32, file_offset: u32) -> Piece {
        Piece {
            file_offset: u64::from(file_offset),
            id: Id::of_content(&[pack, (offset >> 16) as u8, (offset >> 8) as u8]),
            loc: BlobLocation {
                pack: Id::of_content(&[pack]),
                pack_size: 64 << 20,
                kind: BlobType::Data,
                offset,
                length,
                raw_length: length,
            },
        }
    }

    /// (start, end, file offsets) of each request, in units of bytes.
    fn spans(groups: &[Group]) -> Vec<(u32, u32, Vec<u32>)> {
        let n = |x: u64| u32::try_from(x).expect("small test offsets");
        groups
            .iter()
            .map(|g| {
                let offsets = g.pieces.iter().map(|p| n(p.file_offset)).collect();
                (n(g.start), n(g.end), offsets)
            })
            .collect()
    }

    #[test]
    fn chunks_close_in_a_pack_share_a_request_in_any_file_order() {
        let k = 1024;
        // File order jumps around the pack, repeats a chunk, and leaves gaps of
        // 100 KiB (merged) and 300 KiB (not) between chunks.
        let pieces = vec![
            piece(1, 200 * k, 10 * k, 0),
            piece(1, 0, 10 * k, 10 * k),
            piece(1, 700 * k, 10 * k, 20 * k),
            piece(1, 0, 10 * k, 30 * k),
            piece(1, 110 * k, 10 * k, 40 * k),
        ];
        let groups = group_pieces(pieces, 256 * 1024);
        assert_eq!(
            spans(&groups),
            vec![
                (0, 210 * k, vec![10 * k, 30 * k, 40 * k, 0]),
                (700 * k, 710 * k, vec![20 * k]),
            ]
        );
        // Without a gap only touching chunks share a request.
        let pieces = vec![
            piece(1, 10 * k, 10 * k, 0),
            piece(1, 0, 10 * k, 10 * k),
            piece(1, 30 * k, 10 * k, 20 * k),
        ];
        assert_eq!(group_pieces(pieces, 0).len(), 2);
    }

    #[test]
    fn requests_stay_in_one_pack_and_under_the_largest_range() {
        let k = 1024;
        let mut pieces: Vec<Piece> = (0..100u32)
            .map(|i| piece(1, i * 128 * k, 128 * k, i * 128 * k))
            .collect();
        pieces.push(piece(2, 0, 10 * k, 1 << 30));
        let groups = group_pieces(pieces, 256 * 1024);
        assert_eq!(groups.len(), 3, "{:?}", spans(&groups));
        for g in &groups {
            assert!(g.end - g.start <= MAX_RANGE);
            assert!(g.pieces.iter().all(|p| p.loc.pack == g.pack));
        }
    }

    async fn test_repo(backend: DynBackend) -> Repository {
        Repository::init(backend, b"k", InitOptions::small_for_tests())
            .await
            .expect("init")
    }

    /// A range holding two sealed chunks with other bytes between them: only the
    /// chunks' plaintext lands in the file, a repeated chunk at each of its offsets,
    /// and holes stay unwritten.
    #[tokio::test]
    async fn bytes_between_chunks_are_never_written() {
        let repo = test_repo(Arc::new(MemoryBackend::new())).await;
        let keys = repo.crypto();
        let a = vec![b'a'; 3000];
        let b = vec![b'b'; 2000];
        let (ida, idb) = (keys.blob_id(&a), keys.blob_id(&b));
        let sa = encode_blob(keys, BlobType::Data, ida, &a, 1)
            .expect("seal")
            .bytes;
        let sb = encode_blob(keys, BlobType::Data, idb, &b, 1)
            .expect("seal")
            .bytes;
        let pack = Id::of_content(b"pack");
        let gap = vec![0xEE; 5000];
        let base = 100u64;
        let data = [sa.clone(), gap.clone(), sb.clone()].concat();
        let loc = |offset: usize, sealed: &[u8], raw: usize| BlobLocation {
            pack,
            pack_size: 1 << 20,
            kind: BlobType::Data,
            offset: (base as usize + offset) as u32,
            length: sealed.len() as u32,
            raw_length: raw as u32,
        };
        let la = loc(0, &sa, a.len());
        let lb = loc(sa.len() + gap.len(), &sb, b.len());
        // File: a, hole, b, a.
        let pieces = vec![
            Piece {
                file_offset: 0,
                id: ida,
                loc: la,
            },
            Piece {
                file_offset: 4000,
                id: idb,
                loc: lb,
            },
            Piece {
                file_offset: 6000,
                id: ida,
                loc: la,
            },
        ];
        let groups = group_pieces(pieces, RANGE_GAP);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.start, g.end), (base, base + data.len() as u64));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = fs::File::create(&path).expect("create");
        let written =
            write_pieces(&repo, &file, &path, &pack, g.start, &data, &g.pieces).expect("write");
        assert_eq!(written, 8000);
        let got = fs::read(&path).expect("read");
        let mut want = vec![0u8; 9000];
        want[..3000].copy_from_slice(&a);
        want[4000..6000].copy_from_slice(&b);
        want[6000..].copy_from_slice(&a);
        assert_eq!(got, want);

        // A damaged chunk inside a merged range is still caught, naming its pack.
        let mut bad = data.clone();
        bad[sa.len() + gap.len() + 10] ^= 1;
        let path2 = dir.path().join("g");
        let file2 = fs::File::create(&path2).expect("create");
        let err = write_pieces(&repo, &file2, &path2, &pack, g.start, &bad, &g.pieces)
            .expect_err("corrupt chunk");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&pack.to_hex()), "{err}");
    }

    /// A file that repeats a block many times between unique data (a disk image) is
    /// restored exactly, with about one request per pack rather than per repeat.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_blocks_restore_exactly_in_few_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).expect("mkdir");
        let mut seed = 7u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect()
        };
        let block = random(24 * 1024);
        let mut image = Vec::new();
        for _ in 0..20 {
            image.extend(random(6 * 1024));
            image.extend(&block);
            image.extend(vec![0u8; 20 * 1024]);
        }
        fs::write(src.join("image"), &image).expect("write");
        let faulty = FaultyBackend::wrap(Arc::new(MemoryBackend::new()));
        let backend: DynBackend = faulty.clone();
        let repo = test_repo(backend).await;
        let snapshot = repo
            .backup(&src, BackupOptions::default())
            .await
            .expect("backup")
            .snapshot_id;
        let before = faulty.calls(Op::GetRange);
        let dst = dir.path().join("dst");
        repo.restore(&snapshot, &dst, RestoreOptions::default())
            .await
            .expect("restore");
        let requests = faulty.calls(Op::GetRange) - before;
        assert_eq!(fs::read(dst.join("image")).expect("read"), image);
        // About 170 KiB stored in 64 KiB packs: 5 requests (trees included); fetched in
        // file order, merging only touching chunks, it took 28.
        assert!(requests <= 12, "{requests} range requests");
    }
}
