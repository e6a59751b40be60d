//! A repository in a local directory (or any mounted file system).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Op, check_key, check_range_len, check_size};

/// Stores each object as a file under `root`. `put` writes a temporary file in the
/// target directory, fsyncs it, renames it into place and fsyncs the directory, so a
/// crash leaves either the old object or the new one.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

const TMP_MARKER: &str = ".tmp-";

impl LocalBackend {
    /// A backend rooted at `root`; the directory is created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_err(&self, op: Op, key: &str, source: std::io::Error) -> BackendError {
        if source.kind() == std::io::ErrorKind::NotFound {
            return BackendError::NotFound {
                backend: self.describe(),
                key: key.to_string(),
            };
        }
        BackendError::Io {
            backend: self.describe(),
            op,
            key: key.to_string(),
            source,
        }
    }

    async fn blocking<T, F>(&self, op: Op, key: &str, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(PathBuf) -> std::io::Result<T> + Send + 'static,
    {
        check_key(&self.describe(), op, key)?;
        let path = self.root.join(key);
        match tokio::task::spawn_blocking(move || f(path)).await {
            Ok(r) => r.map_err(|e| self.io_err(op, key, e)),
            Err(e) => Err(self.io_err(op, key, std::io::Error::other(e.to_string()))),
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no parent"))?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("object path has no file name"))?
        .to_string_lossy();
    let suffix: [u8; 8] = crate::crypto::random_array().map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{name}{TMP_MARKER}{}", hex::encode(suffix)));
    let result = (|| {
        write_tmp(&tmp, data, direct_eligible(data))?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Objects this large (packs) are written with O_DIRECT when their buffer allows:
/// copying them into the page cache was a quarter of a backup's CPU, and a backup
/// should not push the applications' data out of the cache. Small objects stay
/// buffered, where O_DIRECT's synchronous device round trip would cost more.
const DIRECT_MIN: usize = 1 << 20;

/// O_DIRECT wants the buffer address, file offset and length aligned to the device's
/// logical block size; 4096 covers the usual 512 and 4096. The pack builder aligns
/// its buffers to this (`crate::pack::PACK_ALIGN`).
const DIRECT_ALIGN: usize = 4096;

fn direct_eligible(data: &[u8]) -> bool {
    cfg!(target_os = "linux")
        && data.len() >= DIRECT_MIN
        && data.as_ptr().addr().is_multiple_of(DIRECT_ALIGN)
}

/// Writes `data` to a new file at `tmp` and fsyncs it; with `direct`, tries O_DIRECT
/// first and falls back to a buffered write when the file system refuses it. Returns
/// whether O_DIRECT was used.
fn write_tmp(tmp: &Path, data: &[u8], direct: bool) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    if direct && write_direct(tmp, data)? {
        return Ok(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = direct;
    // `create` truncates whatever a refused direct attempt left.
    let mut f = fs::File::create(tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(false)
}

/// Writes the 4096-multiple prefix of `data` with O_DIRECT and the rest buffered, then
/// fsyncs. `Ok(false)` means the file system refused O_DIRECT (EINVAL: no support, as
/// on older tmpfs, or stricter alignment than ours) and the caller must rewrite.
#[cfg(target_os = "linux")]
fn write_direct(tmp: &Path, data: &[u8]) -> std::io::Result<bool> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};

    let refused =
        |e: &std::io::Error| e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error());
    let f = match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(OFlags::DIRECT.bits().cast_signed())
        .open(tmp)
    {
        Ok(f) => f,
        Err(e) if refused(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let (head, tail) = data.split_at(data.len() - data.len() % DIRECT_ALIGN);
    match f.write_all_at(head, 0) {
        Ok(()) => {}
        // A short write would also end here, at its next misaligned offset.
        Err(e) if refused(&e) => {
            tracing::trace!(path = %tmp.display(), "O_DIRECT write refused; writing buffered");
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    if !tail.is_empty() {
        // The tail is shorter than a block, which O_DIRECT cannot write.
        fcntl_setfl(&f, fcntl_getfl(&f)? - OFlags::DIRECT)?;
        f.write_all_at(tail, head.len() as u64)?;
    }
    // The size and block allocation are metadata, so sync_all rather than sync_data.
    f.sync_all()?;
    Ok(true)
}

fn list_dir(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(TMP_MARKER) {
            continue;
        }
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            list_dir(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let md = entry.metadata()?;
            out.push(ObjectInfo {
                key: rel,
                size: md.len(),
                modified: md.modified().ok().map(time::OffsetDateTime::from),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.blocking(Op::Put, key, move |path| write_atomic(&path, &data))
            .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.blocking(Op::Get, key, |path| fs::read(path).map(Bytes::from))
            .await
    }

    async fn get_at_most(&self, key: &str, limit: u64) -> Result<Bytes, BackendError> {
        let got = self
            .blocking(Op::Get, key, move |path| {
                let f = fs::File::open(path)?;
                let size = f.metadata()?.len();
                if size > limit {
                    return Ok(Err(size));
                }
                // The file may grow after the stat: read at most one byte past the limit.
                let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                f.take(limit + 1).read_to_end(&mut buf)?;
                Ok(Ok(Bytes::from(buf)))
            })
            .await?;
        let data = got.or_else(|size| {
            check_size(&self.describe(), Op::Get, key, size, limit).map(|()| Bytes::new())
        })?;
        check_size(&self.describe(), Op::Get, key, data.len() as u64, limit)?;
        Ok(data)
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, BackendError> {
        let got = self
            .blocking(Op::GetRange, key, move |path| {
                let mut f = fs::File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
                f.take(length).read_to_end(&mut buf)?;
                Ok(buf)
            })
            .await?;
        check_range_len(&self.describe(), key, offset, length, got.len())?;
        Ok(Bytes::from(got))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        // Listing walks the directory the prefix names (up to its last '/'), then
        // filters, so "packs/" and "snapshots/ab" both work.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let root = self.root.clone();
        let dir = if dir_part.is_empty() {
            root.clone()
        } else {
            check_key(&self.describe(), Op::List, dir_part)?;
            root.join(dir_part)
        };
        let prefix_owned = prefix.to_string();
        let res = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            list_dir(&root, &dir, &mut out)?;
            out.retain(|o| o.key.starts_with(&prefix_owned));
            Ok::<_, std::io::Error>(out)
        })
        .await
        .map_err(|e| self.io_err(Op::List, prefix, std::io::Error::other(e.to_string())))?;
        res.map_err(|e| self.io_err(Op::List, prefix, e))
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.blocking(Op::Delete, key, |path| match fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.blocking(Op::Head, key, |path| match fs::metadata(path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        super::super::conformance::run(&b).await;
        // No temporary files are left behind.
        let mut names = Vec::new();
        for e in fs::read_dir(dir.path().join("repo/packs/ab")).unwrap() {
            names.push(e.unwrap().file_name().to_string_lossy().to_string());
        }
        assert_eq!(names, vec!["ab01".to_string()]);
    }

    /// 5 MiB + 123 bytes of a non-repeating pattern, starting `offset` bytes past a
    /// 4096 boundary, in a buffer made the way the pack builder makes its own.
    fn large(offset: usize) -> Bytes {
        let len = (5 << 20) + 123;
        let (mut buf, pad) = crate::pack::aligned_vec(len + offset);
        buf.resize(pad + offset, 0);
        buf.extend((0..len).map(|i| (i % 251) as u8 ^ (i >> 12) as u8));
        Bytes::from(buf).slice(pad + offset..)
    }

    async fn put_and_read_back(root: &Path, data: Bytes) {
        let b = LocalBackend::new(root.join("repo"));
        b.put("packs/cd/cd01", data.clone()).await.unwrap();
        let back = b.get("packs/cd/cd01").await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "content differs");
        let names: Vec<_> = fs::read_dir(root.join("repo/packs/cd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["cd01".to_string()]);
    }

    #[tokio::test]
    async fn large_aligned_object_round_trips() {
        let data = large(0);
        assert!(direct_eligible(&data) || !cfg!(target_os = "linux"));
        let dir = tempfile::tempdir().unwrap();
        put_and_read_back(dir.path(), data).await;
    }

    #[tokio::test]
    async fn large_unaligned_object_round_trips() {
        let data = large(1);
        assert!(!direct_eligible(&data));
        let dir = tempfile::tempdir().unwrap();
        put_and_read_back(dir.path(), data).await;
    }

    #[tokio::test]
    async fn large_object_on_tmpfs_round_trips() {
        // tmpfs refused O_DIRECT before Linux 6.6; newer ones accept it.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        put_and_read_back(dir.path(), large(0)).await;
    }

    /// Forces the direct path onto a misaligned buffer, which block-device file
    /// systems refuse with EINVAL, so the buffered rewrite must take over (and
    /// truncate anything the refused attempt wrote).
    #[test]
    fn refused_direct_write_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("obj");
        fs::write(&tmp, vec![7u8; 7 << 20]).unwrap();
        let data = large(1);
        let direct = write_tmp(&tmp, &data, true).unwrap();
        assert_eq!(fs::read(&tmp).unwrap(), data.as_ref());
        // Aligned data through the same path is written in full too, whichever way.
        let data = large(0);
        let direct_aligned = write_tmp(&tmp, &data, true).unwrap();
        assert_eq!(fs::read(&tmp).unwrap(), data.as_ref());
        // Visible with --nocapture: which path each write took on this file system.
        eprintln!("misaligned used O_DIRECT: {direct}; aligned: {direct_aligned}");
    }
}
