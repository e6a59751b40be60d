//! An in-memory backend for tests and dry runs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use time::OffsetDateTime;

use super::{Backend, BackendError, ObjectInfo, Op, check_key, check_range_len};

/// Objects in a map with the time each was written; cloning the `Bytes` is cheap, so
/// reads do not copy.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    objects: RwLock<BTreeMap<String, (Bytes, OffsetDateTime)>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces an object's bytes without any checks: lets tests corrupt a repository.
    pub fn overwrite_raw(&self, key: &str, data: Bytes) {
        self.objects
            .write()
            .insert(key.to_string(), (data, OffsetDateTime::now_utc()));
    }

    fn not_found(&self, key: &str) -> BackendError {
        BackendError::NotFound {
            backend: self.describe(),
            key: key.to_string(),
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        check_key(&self.describe(), Op::Put, key)?;
        self.objects
            .write()
            .insert(key.to_string(), (data, OffsetDateTime::now_utc()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        check_key(&self.describe(), Op::Get, key)?;
        self.objects
            .read()
            .get(key)
            .map(|(data, _)| data.clone())
            .ok_or_else(|| self.not_found(key))
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, BackendError> {
        let all = self.get(key).await?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
        let end = usize::try_from(offset.saturating_add(length))
            .unwrap_or(usize::MAX)
            .min(all.len());
        let got = all.slice(start..end);
        check_range_len(&self.describe(), key, offset, length, got.len())?;
        Ok(got)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        Ok(self
            .objects
            .read()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (data, modified))| ObjectInfo {
                key: k.clone(),
                size: data.len() as u64,
                modified: Some(*modified),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        check_key(&self.describe(), Op::Delete, key)?;
        self.objects.write().remove(key);
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        check_key(&self.describe(), Op::Head, key)?;
        Ok(self
            .objects
            .read()
            .get(key)
            .map(|(data, _)| data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run(&MemoryBackend::new()).await;
    }
}
