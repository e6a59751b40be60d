//! Sealing secrets at rest: AES-256-GCM under a key file in the data directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::{Result, StoreError};

/// Seals and opens secrets (pair credentials, tokens) with the data directory's key.
pub struct SecretBox {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const KEY_FILE: &str = "secret.key";

impl SecretBox {
    /// Loads `<data_dir>/secret.key`, creating it (32 random bytes, mode 0600) on first
    /// use. Losing the file makes stored secrets unreadable, by design.
    pub fn load_or_create(data_dir: &Path) -> Result<SecretBox> {
        let path = data_dir.join(KEY_FILE);
        let io = |op, source| StoreError::Io {
            op,
            path: path.clone(),
            source,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(|e| io("creating data directory", e))?;
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| StoreError::Internal("no system randomness".into()))?;
                // create_new: two processes racing to create the key must not both win.
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path);
                match created {
                    Ok(mut f) => {
                        f.write_all(&key).map_err(|e| io("writing", e))?;
                        f.sync_all().map_err(|e| io("syncing", e))?;
                        key.to_vec()
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(&path).map_err(|e| io("reading", e))?
                    }
                    Err(e) => return Err(io("creating", e)),
                }
            }
            Err(e) => return Err(io("reading", e)),
        };
        Self::from_key(&bytes, path)
    }

    /// A box over a key held elsewhere (a Kubernetes Secret, a test).
    pub fn from_key(key: &[u8], origin: PathBuf) -> Result<SecretBox> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| StoreError::BadKey {
            path: origin.clone(),
        })?;
        Ok(SecretBox {
            key: LessSafeKey::new(unbound),
            path: origin,
        })
    }

    /// The key file this box was loaded from (or the origin given to [`SecretBox::from_key`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// nonce || ciphertext || tag. `aad` binds the value to its place (say, the pair
    /// id), so a sealed value copied into another row does not open.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Internal("no system randomness".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| StoreError::Internal("sealing failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens what [`SecretBox::seal`] produced; `what` names the value in the error.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        let unseal = || StoreError::Unseal {
            what: what.to_string(),
        };
        if sealed.len() < NONCE_LEN + 16 {
            return Err(unseal());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unseal())?;
        let mut body = body.to_vec();
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| unseal())?
            .len();
        body.truncate(n);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn seals_opens_and_binds_to_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SecretBox::load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = a.seal(b"pair/p1", b"token").expect("seal");
        assert!(!sealed.windows(5).any(|w| w == b"token"));

        let again = SecretBox::load_or_create(dir.path()).expect("load");
        assert_eq!(
            again.open(b"pair/p1", &sealed, "pair p1").expect("open"),
            b"token"
        );
        let err = again
            .open(b"pair/p2", &sealed, "pair p2")
            .expect_err("other row");
        assert!(err.to_string().contains("pair p2"), "{err}");

        let other = tempfile::tempdir().expect("tempdir");
        let stranger = SecretBox::load_or_create(other.path()).expect("create");
        assert!(stranger.open(b"pair/p1", &sealed, "pair p1").is_err());
    }
}
