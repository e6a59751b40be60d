//! A repository in a local directory (or any mounted file system).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, BackendError, ObjectInfo, Op, check_key, check_range_len};

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
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
}
