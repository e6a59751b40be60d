//! The data set every tool backs up: generated here from fixed seeds, so every run and
//! every machine sees the same bytes; the 1% in-place change; and tree digests to check
//! restores byte for byte.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::rng::Rng;

/// A file at the top of every data set; a restore is found (wherever a tool puts the
/// absolute source path under its target) by looking for it.
pub const MARKER: &str = ".ferry-bench-root";
/// Bump when generation changes, so a cached data set from an older bench is rebuilt.
const GENERATOR: &str = "ferry-bench data v1";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Log-like text, compresses about 4x.
    Text,
    /// Executable-like: opcode-ish bytes, string tables, zero padding, packed resources.
    Binary,
    /// Tens of thousands of files of 128 B to 16 KiB.
    Small,
    /// One disk-image-like file: runs of zeros, repeated blocks, random blocks.
    Image,
    /// Incompressible files.
    Random,
    Marker,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Binary => "bin",
            Kind::Small => "small",
            Kind::Image => "image",
            Kind::Random => "random",
            Kind::Marker => "",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Text => "text files",
            Kind::Binary => "binaries",
            Kind::Small => "small files",
            Kind::Image => "disk image",
            Kind::Random => "random data",
            Kind::Marker => "marker",
        }
    }

    fn of(rel: &Path) -> Kind {
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        [
            Kind::Text,
            Kind::Binary,
            Kind::Small,
            Kind::Image,
            Kind::Random,
        ]
        .into_iter()
        .find(|k| k.dir() == top)
        .unwrap_or(Kind::Marker)
    }
}

#[derive(Debug, Clone)]
pub struct FileEntry {
    pub rel: PathBuf,
    pub size: u64,
    pub kind: Kind,
}

#[derive(Debug)]
pub struct DataSet {
    pub root: PathBuf,
    pub files: Vec<FileEntry>,
    pub bytes: u64,
}

impl DataSet {
    /// The data set for `scale` at `root`: reused when a complete, unmodified one is
    /// there, generated otherwise. Returns whether it was reused.
    pub fn prepare(root: &Path, scale: f64) -> Result<(DataSet, bool)> {
        let stamp = format!("{GENERATOR} scale={scale}\n");
        let complete = fs::read_to_string(root.join(MARKER)).is_ok_and(|s| s == stamp);
        if complete && !dirty_flag(root).exists() {
            return Ok((DataSet::scan(root)?, true));
        }
        if root.exists() {
            fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
        }
        fs::create_dir_all(root)?;
        generate(root, scale)?;
        // Written last: its presence means the generation finished.
        fs::write(root.join(MARKER), stamp)?;
        let _ = fs::remove_file(dirty_flag(root));
        Ok((DataSet::scan(root)?, false))
    }

    fn scan(root: &Path) -> Result<DataSet> {
        let mut files = Vec::new();
        walk(root, Path::new(""), &mut |rel, meta| {
            if meta.is_file() {
                files.push(FileEntry {
                    rel: rel.to_owned(),
                    size: meta.len(),
                    kind: Kind::of(rel),
                });
            }
            Ok(())
        })?;
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        let bytes = files.iter().map(|f| f.size).sum();
        Ok(DataSet {
            root: root.to_owned(),
            files,
            bytes,
        })
    }

    /// Files and bytes per kind, for the report.
    pub fn composition(&self) -> Vec<(Kind, u64, u64)> {
        let mut by: BTreeMap<Kind, (u64, u64)> = BTreeMap::new();
        for f in &self.files {
            let e = by.entry(f.kind).or_default();
            e.0 += 1;
            e.1 += f.size;
        }
        by.into_iter()
            .filter(|(k, _)| *k != Kind::Marker)
            .map(|(k, (n, b))| (k, n, b))
            .collect()
    }
}

/// Outside the data set (so no tool backs it up): present while a change is applied.
fn dirty_flag(root: &Path) -> PathBuf {
    root.with_extension("dirty")
}

fn walk(
    root: &Path,
    rel: &Path,
    f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>,
) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let meta = e.metadata()?;
        f(&rel, &meta)?;
        if meta.is_dir() {
            walk(root, &rel, f)?;
        }
    }
    Ok(())
}

fn generate(root: &Path, scale: f64) -> Result<()> {
    let sized = |mib: u64| ((mib * MIB) as f64 * scale) as u64;
    let count = |n: u64| ((n as f64 * scale).round() as u64).max(1);

    // Text: log-like files of 16 KiB to 4 MiB, 200 MiB in all.
    let mut rng = Rng::new(1);
    let mut buf = Vec::new();
    let (mut total, mut i) = (0, 0);
    while total < sized(200) {
        let size = rng.log_range(16 * KIB, 4 * MIB);
        buf.clear();
        fill_text(&mut rng, &mut buf, size as usize);
        write_file(
            &root.join(format!("text/{:02}/log-{i:05}.txt", i / 50)),
            &buf,
        )?;
        total += size;
        i += 1;
    }

    // Binaries: 64 KiB to 16 MiB, 160 MiB in all.
    let mut rng = Rng::new(2);
    let (mut total, mut i) = (0, 0);
    while total < sized(160) {
        let size = rng.log_range(64 * KIB, 16 * MIB);
        buf.clear();
        fill_binary(&mut rng, &mut buf, size as usize);
        write_file(&root.join(format!("bin/lib-{i:04}.so")), &buf)?;
        total += size;
        i += 1;
    }

    // Many small files, 100 to a directory: text, binary and random mixed.
    let mut rng = Rng::new(3);
    for i in 0..count(30_000) {
        let size = rng.log_range(128, 16 * KIB) as usize;
        buf.clear();
        let pick = rng.range(0, 100);
        let name = if pick < 60 {
            fill_text(&mut rng, &mut buf, size);
            "txt"
        } else if pick < 75 {
            fill_binary(&mut rng, &mut buf, size);
            "bin"
        } else {
            buf.resize(size, 0);
            rng.fill(&mut buf);
            "dat"
        };
        let path = format!("small/{:02}/{:02}/f{i:06}.{name}", i / 2000, (i / 100) % 20);
        write_file(&root.join(path), &buf)?;
    }

    // The disk image: extents of 64 KiB to 4 MiB, each zeros, a copy of one of eight
    // template blocks (so dedup has something to find), random, or file-like content.
    let mut rng = Rng::new(4);
    let mut templates = Vec::new();
    for _ in 0..8 {
        let mut t = Vec::new();
        fill_binary(&mut rng, &mut t, MIB as usize);
        templates.push(t);
    }
    let path = root.join("image/disk.img");
    fs::create_dir_all(path.parent().unwrap_or(root))?;
    let mut out = BufWriter::with_capacity(4 * MIB as usize, File::create(&path)?);
    let size = sized(512) / (4 * KIB) * (4 * KIB);
    let mut written = 0;
    while written < size {
        let len = (rng.log_range(64 * KIB, 4 * MIB) / (4 * KIB) * (4 * KIB)).min(size - written);
        buf.clear();
        let pick = rng.range(0, 100);
        if pick < 35 {
            buf.resize(len as usize, 0);
        } else if pick < 60 {
            let t = &templates[rng.range(0, 8) as usize];
            while buf.len() < len as usize {
                let take = (len as usize - buf.len()).min(t.len());
                buf.extend_from_slice(&t[..take]);
            }
        } else if pick < 85 {
            buf.resize(len as usize, 0);
            rng.fill(&mut buf);
        } else if pick < 93 {
            fill_text(&mut rng, &mut buf, len as usize);
        } else {
            fill_binary(&mut rng, &mut buf, len as usize);
        }
        out.write_all(&buf)?;
        written += len;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    // Random data: four files, half, a quarter and two eighths of 256 MiB.
    let mut rng = Rng::new(5);
    for (i, share) in [2u64, 4, 8, 8].into_iter().enumerate() {
        let path = root.join(format!("random/blob-{i}.bin"));
        fs::create_dir_all(path.parent().unwrap_or(root))?;
        let mut out = BufWriter::with_capacity(4 * MIB as usize, File::create(&path)?);
        let mut left = sized(256) / share;
        buf.resize(4 * MIB as usize, 0);
        while left > 0 {
            let n = left.min(4 * MIB) as usize;
            rng.fill(&mut buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

const WORDS: &[&str] = &[
    "request",
    "response",
    "volume",
    "snapshot",
    "cluster",
    "replica",
    "pod",
    "node",
    "backup",
    "restore",
    "checkpoint",
    "segment",
    "index",
    "commit",
    "transaction",
    "latency",
    "timeout",
    "retry",
    "connection",
    "session",
    "user",
    "tenant",
    "order",
    "invoice",
    "payment",
    "shipment",
    "warehouse",
    "customer",
    "account",
    "balance",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "with",
    "on",
    "from",
    "after",
    "before",
    "completed",
    "started",
    "failed",
    "queued",
    "accepted",
    "rejected",
    "updated",
    "deleted",
    "created",
    "scheduled",
    "evicted",
    "mounted",
    "written",
    "read",
    "flushed",
    "compacted",
    "merged",
    "split",
    "leader",
    "follower",
    "elected",
    "heartbeat",
    "lease",
    "bytes",
    "rows",
    "pages",
    "blocks",
    "keys",
    "values",
    "entries",
    "records",
    "ms",
    "postgres",
    "mysql",
    "redis",
    "kafka",
    "etcd",
    "minio",
    "nginx",
    "grpc",
    "http",
    "GET",
    "PUT",
    "POST",
    "DELETE",
    "/api/v1/orders",
    "/healthz",
    "/metrics",
    "200",
    "404",
    "500",
    "503",
    "ok",
    "error",
    "warning",
    "slow",
    "query",
    "vacuum",
    "wal",
];
const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"];
const SOURCES: &[&str] = &[
    "api-gateway",
    "order-service",
    "db-writer",
    "cache",
    "scheduler",
    "billing",
    "ingest-worker",
    "auth",
];

/// Appends exactly `len` bytes of log-like lines.
fn fill_text(rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        let r = rng.next_u64();
        let _ = write!(
            out,
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} {}[{}]:",
            1 + r % 12,
            1 + (r >> 4) % 28,
            (r >> 9) % 24,
            (r >> 14) % 60,
            (r >> 20) % 60,
            (r >> 26) % 1000,
            LEVELS[((r >> 36) % LEVELS.len() as u64) as usize],
            SOURCES[((r >> 40) % SOURCES.len() as u64) as usize],
            (r >> 44) % 64,
        );
        for _ in 0..rng.range(4, 16) {
            out.push(b' ');
            out.extend_from_slice(WORDS[rng.range(0, WORDS.len() as u64) as usize].as_bytes());
        }
        if rng.chance(0.5) {
            let _ = write!(out, " id={:016x}", rng.next_u64());
        }
        out.push(b'\n');
    }
    out.truncate(end);
}

/// Appends exactly `len` bytes shaped like an executable: opcode-like bytes (few distinct
/// values, many zeros), string tables, zero padding and packed (random) resources.
fn fill_binary(rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
    const OPS: [u8; 32] = [
        0x48, 0x89, 0x8b, 0xe8, 0xc3, 0x55, 0x5d, 0x83, 0xc4, 0xec, 0x0f, 0x84, 0x85, 0x74, 0x75,
        0xeb, 0xff, 0x31, 0xc0, 0x01, 0x39, 0x3b, 0x8d, 0x45, 0xf8, 0x4c, 0x24, 0x10, 0x08, 0x20,
        0x90, 0xcc,
    ];
    let end = out.len() + len;
    while out.len() < end {
        let seg = (rng.log_range(512, 64 * KIB) as usize).min(end - out.len());
        let pick = rng.range(0, 100);
        if pick < 50 {
            let start = out.len();
            out.resize(start + seg, 0);
            for c in out[start..].chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                for (b, x) in c.iter_mut().zip(r) {
                    *b = if x < 80 { 0 } else { OPS[(x & 31) as usize] };
                }
            }
        } else if pick < 60 {
            out.resize(out.len() + seg, 0);
        } else if pick < 80 {
            fill_text(rng, out, seg);
        } else {
            let start = out.len();
            out.resize(start + seg, 0);
            rng.fill(&mut out[start..]);
        }
    }
}

/// One in-place overwrite, with the bytes it replaced so it can be undone.
#[derive(Debug)]
struct Change {
    rel: PathBuf,
    offset: u64,
    original: Vec<u8>,
}

/// The 1% change: applied in place, then reverted so the next target starts from the
/// same data.
#[derive(Debug)]
pub struct Mutation {
    changes: Vec<Change>,
    pub changed_bytes: u64,
    pub files: usize,
}

/// Overwrites `fraction` of the data set's bytes in place with random bytes (which no
/// tool can compress or dedup, so "uploaded vs changed" is a fair measure): contiguous,
/// 4 KiB-aligned regions of 64 KiB to 1 MiB spread over the disk image (45%), the random
/// files (20%), binaries (15%) and text (15%), and parts of small files (5%).
pub fn mutate(ds: &DataSet, fraction: f64, seed: u64) -> Result<Mutation> {
    fs::write(dirty_flag(&ds.root), b"a change is applied\n")?;
    let mut rng = Rng::new(seed);
    let budget = (ds.bytes as f64 * fraction) as u64;
    let shares = [
        (Kind::Image, 0.45),
        (Kind::Random, 0.20),
        (Kind::Binary, 0.15),
        (Kind::Text, 0.15),
        (Kind::Small, 0.05),
    ];
    let mut regions: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    let mut planned = 0;
    for (kind, share) in shares {
        let files: Vec<usize> = (0..ds.files.len())
            .filter(|&i| ds.files[i].kind == kind && ds.files[i].size >= 4 * KIB)
            .collect();
        if files.is_empty() {
            continue;
        }
        // The last share takes whatever rounding left over.
        let target = if kind == Kind::Small {
            budget - planned.min(budget)
        } else {
            (budget as f64 * share) as u64
        };
        let mut spent = 0;
        let mut attempts = 0;
        while spent < target && attempts < 100_000 {
            attempts += 1;
            let i = files[rng.range(0, files.len() as u64) as usize];
            let size = ds.files[i].size;
            let want = if kind == Kind::Small {
                size * rng.range(25, 101) / 100
            } else {
                rng.range(64 * KIB, MIB + 1) / (4 * KIB) * (4 * KIB)
            };
            let len = want.min(target - spent).min(size).max(1);
            let offset = rng.range(0, size - len + 1) / (4 * KIB) * (4 * KIB);
            let taken = regions.entry(i).or_default();
            if taken
                .iter()
                .any(|&(o, l)| offset < o + l && o < offset + len)
            {
                continue;
            }
            taken.push((offset, len));
            spent += len;
        }
        planned += spent;
    }

    let mut changes = Vec::new();
    let mut changed_bytes = 0;
    for (&i, list) in &regions {
        let rel = &ds.files[i].rel;
        let path = ds.root.join(rel);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {} to change it", path.display()))?;
        for &(offset, len) in list {
            let mut original = vec![0; len as usize];
            file.read_exact_at(&mut original, offset)?;
            let mut new = vec![0; len as usize];
            rng.fill(&mut new);
            file.write_all_at(&new, offset)?;
            changed_bytes += len;
            changes.push(Change {
                rel: rel.clone(),
                offset,
                original,
            });
        }
    }
    Ok(Mutation {
        changes,
        changed_bytes,
        files: regions.len(),
    })
}

/// Puts the original bytes back.
pub fn revert(ds: &DataSet, m: Mutation) -> Result<()> {
    for c in m.changes {
        let path = ds.root.join(&c.rel);
        let file = OpenOptions::new().write(true).open(&path)?;
        file.write_all_at(&c.original, c.offset)
            .with_context(|| format!("reverting {}", path.display()))?;
    }
    fs::remove_file(dirty_flag(&ds.root))?;
    Ok(())
}

/// Every directory and file under a root: for files, size and BLAKE3 of the contents.
pub type Digest = BTreeMap<PathBuf, Option<(u64, [u8; 32])>>;

/// Digests a tree. Reading every byte is also the warm-up read that gives every tool the
/// same page cache.
pub fn digest(root: &Path) -> Result<Digest> {
    let mut out = Digest::new();
    let mut buf = vec![0; MIB as usize];
    walk(root, Path::new(""), &mut |rel, meta| {
        if meta.is_dir() {
            out.insert(rel.to_owned(), None);
        } else if meta.is_file() {
            let mut hasher = blake3::Hasher::new();
            let mut f = File::open(root.join(rel))?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            out.insert(
                rel.to_owned(),
                Some((meta.len(), *hasher.finalize().as_bytes())),
            );
        } else {
            bail!(
                "unexpected entry {} (not a file or directory)",
                rel.display()
            );
        }
        Ok(())
    })?;
    Ok(out)
}

/// Where a restore put the data set: the directory holding the marker, however deep the
/// tool nested the source path under its target.
pub fn find_restored_root(target: &Path) -> Result<PathBuf> {
    let mut queue = std::collections::VecDeque::from([target.to_owned()]);
    while let Some(dir) = queue.pop_front() {
        if dir.join(MARKER).is_file() {
            return Ok(dir);
        }
        for e in fs::read_dir(&dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                queue.push_back(e.path());
            }
        }
    }
    bail!("no {MARKER} anywhere under {}", target.display())
}

/// `None` when equal; otherwise the first few differences.
pub fn compare(expected: &Digest, actual: &Digest) -> Option<String> {
    let mut diffs = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => diffs.push(format!("{} missing", path.display())),
            Some(got) if got != want => diffs.push(format!("{} differs", path.display())),
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        diffs.push(format!("{} unexpected", path.display()));
    }
    if diffs.is_empty() {
        return None;
    }
    let n = diffs.len();
    diffs.truncate(3);
    Some(format!("{n} differences, e.g. {}", diffs.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_mutation_reverts() -> Result<()> {
        let tmp = std::env::temp_dir().join(format!("ferry-bench-ds-{}", std::process::id()));
        let (a, b) = (tmp.join("a"), tmp.join("b"));
        let (da, reused) = DataSet::prepare(&a, 0.002)?;
        assert!(!reused);
        let (_db, _) = DataSet::prepare(&b, 0.002)?;
        let (before, other) = (digest(&a)?, digest(&b)?);
        assert_eq!(compare(&before, &other), None);
        assert!(da.files.len() > 50, "{} files", da.files.len());

        let m = mutate(&da, 0.01, 9)?;
        let want = da.bytes / 100;
        assert!(m.changed_bytes <= want && m.changed_bytes * 10 >= want * 9);
        assert!(compare(&before, &digest(&a)?).is_some());
        revert(&da, m)?;
        assert_eq!(compare(&before, &digest(&a)?), None);
        assert!(
            DataSet::prepare(&a, 0.002)?.1,
            "unchanged data set is reused"
        );
        fs::remove_dir_all(&tmp)?;
        Ok(())
    }
}
