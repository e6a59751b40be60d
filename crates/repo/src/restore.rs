//! Restore: trees are loaded and validated first (every name must stay inside the
//! target), then directories and symlinks are created, files are filled in parallel
//! from verified chunks (holes left unwritten, so sparse files stay sparse), hard links
//! are made, and metadata is applied last, deepest directories first.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::fsutil::{is_root, set_mtime};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack::{BlobType, decode_blob, pack_key};
use crate::progress::{Counters, Reporter, RestoreProgress};
use crate::repository::Repository;
use crate::snapshot::RootMeta;
use crate::tree::{ContentPart, Node, NodeKind};

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

/// Chunks stored next to each other in one pack, fetched with one range request.
#[derive(Debug)]
struct Group {
    pack: Id,
    start: u64,
    end: u64,
    pieces: Vec<Piece>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
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
        let plan = self.plan(snapshot.tree, target, &options.cancel).await?;
        let ownership = options.restore_ownership.unwrap_or_else(is_root);

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
            let plan = plan.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                for (path, _) in &plan.dirs {
                    fs::create_dir(path).map_err(io_err("create directory", path))?;
                }
                for (path, node) in &plan.symlinks {
                    let link = node
                        .symlink_target
                        .as_ref()
                        .map(|t| t.to_os())
                        .unwrap_or_default();
                    std::os::unix::fs::symlink(&link, path)
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
        let work = batches
            .into_iter()
            .map(Work::Batch)
            .chain(singles.into_iter().map(Work::File));
        futures::stream::iter(work)
            .map(|w| {
                let plan = plan.clone();
                async move {
                    match w {
                        Work::Batch(b) => self.restore_batch(&plan, b, options, counters).await,
                        Work::File((i, groups, size)) => {
                            let path = &plan.files[i].0;
                            self.restore_file(path, groups, size, options, counters)
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
        tokio::task::spawn_blocking(move || -> Result<()> {
            for (path, first, _) in &plan.hardlinks {
                fs::hard_link(first, path).map_err(io_err("create hard link", path))?;
            }
            // Files, then symlinks (no mode: Linux has none of its own for them), then
            // directories deepest first, so creating children no longer changes a parent's mtime.
            let entries = (plan.files.iter().map(|e| (e, true)))
                .chain(plan.symlinks.iter().map(|e| (e, false)))
                .chain(plan.dirs.iter().rev().map(|e| (e, true)));
            for ((path, node), set_mode) in entries {
                apply_metadata(
                    path,
                    node.mode,
                    node.uid,
                    node.gid,
                    node.mtime_ns,
                    ownership,
                    set_mode,
                )?;
            }
            if let Some(RootMeta {
                mode,
                uid,
                gid,
                mtime_ns,
            }) = root_meta
            {
                apply_metadata(&target_owned, mode, uid, gid, mtime_ns, ownership, true)?;
            }
            Ok(())
        })
        .await
        .map_err(Error::join)??;

        if options.fsync {
            let target = target.to_path_buf();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let dir = fs::File::open(&target).map_err(io_err("open", &target))?;
                rustix::fs::syncfs(&dir).map_err(|e| Error::io("sync", &target, e.into()))
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
        let mut frontier = vec![(root, target.to_path_buf())];
        while !frontier.is_empty() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let trees: Vec<_> = futures::stream::iter(frontier)
                .map(|(id, dir)| async move {
                    let tree = self.load_tree(&id).await?;
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

    /// The range requests for a file's chunks (neighbours in one pack share one), and
    /// the file's size.
    fn groups_of(&self, path: &Path, node: &Node) -> Result<(Vec<Group>, u64)> {
        let mut groups: Vec<Group> = Vec::new();
        let mut offset = 0u64;
        for part in &node.content {
            if let ContentPart::Chunk { id, .. } = part {
                let loc = self.locate(id).ok_or_else(|| Error::NotFound {
                    what: format!("chunk {id} of {}", path.display()),
                    hint: "the repository is damaged; run `check`".into(),
                })?;
                let (start, end) = (
                    u64::from(loc.offset),
                    u64::from(loc.offset) + u64::from(loc.length),
                );
                let piece = Piece {
                    file_offset: offset,
                    id: *id,
                    loc,
                };
                match groups.last_mut() {
                    Some(g)
                        if g.pack == loc.pack && g.end == start && end - g.start <= MAX_RANGE =>
                    {
                        g.end = end;
                        g.pieces.push(piece);
                    }
                    _ => groups.push(Group {
                        pack: loc.pack,
                        start,
                        end,
                        pieces: vec![piece],
                    }),
                }
            }
            offset += part.len();
        }
        Ok((groups, offset))
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
    async fn restore_batch(
        &self,
        plan: &Plan,
        batch: SmallBatch,
        options: &RestoreOptions,
        counters: &Arc<RestoreCounters>,
    ) -> Result<()> {
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let data = self
            .fetch_range(&batch.pack, batch.start, batch.end, counters)
            .await?;
        let repo = self.clone();
        let counters = counters.clone();
        let paths: Vec<PathBuf> = batch
            .files
            .iter()
            .map(|(i, _, _)| plan.files[*i].0.clone())
            .collect();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for ((_, group, size), path) in batch.files.iter().zip(&paths) {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(io_err("create file", path))?;
                let mut unfinished = Unfinished { path, done: false };
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
        path: &Path,
        groups: Vec<Group>,
        size: u64,
        options: &RestoreOptions,
        counters: &RestoreCounters,
    ) -> Result<()> {
        // create_new: never follow or reuse something already at the path.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err("create file", path))?;
        let file = Arc::new(file);
        let mut unfinished = Unfinished { path, done: false };

        futures::stream::iter(groups)
            .map(|g| {
                let file = file.clone();
                async move {
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
        tokio::task::spawn_blocking(move || -> Result<()> {
            // Trailing holes: extend without writing, so the file stays sparse.
            file.set_len(size).map_err(io_err("truncate", &path_owned))
        })
        .await
        .map_err(Error::join)??;
        unfinished.done = true;
        counters.add(FILES_DONE, 1);
        Ok(())
    }
}

/// Blocking: decodes the pieces of one range (which starts at pack offset `base`)
/// and writes them into `file`; returns the bytes written.
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
    for p in pieces {
        if p.loc.kind != BlobType::Data {
            return Err(Error::corrupt(
                format!("chunk {} of {}", p.id, path.display()),
                "indexed as a tree blob",
            ));
        }
        let at = (u64::from(p.loc.offset) - base) as usize;
        let sealed = data.get(at..at + p.loc.length as usize).ok_or_else(|| {
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
        file.write_all_at(&plain, p.file_offset)
            .map_err(io_err("write", path))?;
        written += plain.len() as u64;
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
    path: &'a Path,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            // One unlink; the restore is failing anyway.
            let _ = fs::remove_file(self.path);
        }
    }
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

/// Owner first (chown clears setuid bits), then mode, then mtime.
fn apply_metadata(
    path: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ownership: bool,
    set_mode: bool,
) -> Result<()> {
    if ownership {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))?;
    }
    if set_mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err("chmod", path))?;
    }
    set_mtime(path, mtime_ns).map_err(io_err("set mtime", path))
}
