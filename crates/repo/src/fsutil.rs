//! Small file-system helpers shared by backup and restore.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, SeekFrom, Timespec, Timestamps, UTIME_OMIT};

use crate::tree::{Name, Node, NodeKind};

/// Nanoseconds since the epoch from a (seconds, nanoseconds) pair.
fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node with the metadata `lstat` gives; content is filled in later.
pub(crate) fn node_from_metadata(name: Name, kind: NodeKind, md: &Metadata) -> Node {
    let mut n = Node::new(name, kind);
    n.mode = md.mode();
    n.uid = md.uid();
    n.gid = md.gid();
    n.mtime_ns = ns(md.mtime(), md.mtime_nsec());
    n.ctime_ns = ns(md.ctime(), md.ctime_nsec());
    n.size = if kind == NodeKind::File { md.size() } else { 0 };
    n.inode = md.ino();
    n.dev = md.dev();
    n
}

/// Byte ranges holding data, from SEEK_DATA/SEEK_HOLE. File systems (and block
/// devices) without hole support report the whole file as data, which is still right.
pub(crate) fn data_regions(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // ENXIO: no data past `pos`; the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, size)],
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(_) => return vec![(0, size)],
        };
        if end <= start {
            return vec![(0, size)];
        }
        out.push((start, end));
        pos = end;
    }
    out
}

/// Sets the modification time (access time left alone), not following symlinks.
pub(crate) fn set_mtime(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
}

/// Whether this process may restore ownership.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, Write};

    use super::*;

    #[test]
    fn finds_data_regions_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.seek(std::io::SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&p).unwrap();
        let regions = data_regions(&f, 8 << 20);
        let data: u64 = regions.iter().map(|(s, e)| e - s).sum();
        // Either the file system reports holes (a small data region) or it does not
        // (one region covering everything); both are correct.
        assert!(
            regions
                .iter()
                .any(|(s, e)| *s <= 4 << 20 && *e >= (4 << 20) + 4096)
        );
        assert!(data == 8 << 20 || data <= 1 << 20, "{regions:?}");
    }
}
