//! Entry points to every parser that reads repository data from outside the process,
//! for property tests that feed them random and mutated bytes. Not a stable API.
//!
//! Each refuses bad input with an [`Error`] and never panics. Bounds on memory: the
//! plaintext parsers allocate at most a small multiple of their input (every count
//! they read is checked against the bytes left before it sizes a buffer);
//! [`sealed_object`] allocates at most twice `max_len` plus its input, however far the
//! payload would decompress; [`config`] refuses input over
//! [`crate::limits::MAX_CONFIG_BYTES`] first.

use crate::config::Config;
use crate::crypto::{Keys, aad};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::IndexFile;
use crate::limits::MAX_CONFIG_BYTES;

/// A repository `config` object, with every check `open` makes before running the
/// KDF.
pub fn config(bytes: &[u8]) -> Result<Config> {
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::TooLarge {
            what: "the config object".into(),
            found: bytes.len() as u64,
            limit: MAX_CONFIG_BYTES,
            hint: "check who else writes to the store".into(),
        });
    }
    let config: Config =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt("config", e.to_string()))?;
    config.validate("the repository")?;
    Ok(config)
}

/// An opened pack header; the number of entries.
pub fn pack_header(plain: &[u8], blob_area: u64) -> Result<usize> {
    crate::pack::parse_header(plain, blob_area, &|| "pack header".into()).map(|e| e.len())
}

/// An opened index file; the number of blobs it lists.
pub fn index_file(plain: &[u8]) -> Result<usize> {
    let file: IndexFile =
        serde_json::from_slice(plain).map_err(|e| Error::corrupt("index", e.to_string()))?;
    Ok(file.packs.iter().map(|p| p.entries().len()).sum())
}

/// An opened tree blob (binary or JSON), validated as restore validates it; the number
/// of entries and runs.
pub fn tree_blob(plain: &[u8]) -> Result<usize> {
    crate::stored_tree::tree_blob_entries(plain, &Id::default())
}

/// An opened content-run blob; the number of parts and runs.
pub fn content_blob(plain: &[u8]) -> Result<usize> {
    crate::stored_tree::content_blob_parts(plain, &Id::default())
}

/// An opened restore-point manifest as the engine reads it; the snapshots it names.
pub fn restore_point(plain: &[u8]) -> Result<usize> {
    crate::restorepoint::parse_refs(plain)
}

/// An opened snapshot manifest.
pub fn snapshot(plain: &[u8]) -> Result<()> {
    serde_json::from_slice::<crate::snapshot::Snapshot>(plain)
        .map(|_| ())
        .map_err(|e| Error::corrupt("snapshot", e.to_string()))
}

/// The fixed key the sealing helpers below use.
fn keys() -> Result<Keys> {
    Keys::from_master(&[0x5a; 32])
}

/// Seals `plain` as an index file under a fixed test key, compressed when that helps.
pub fn seal_for_tests(plain: &[u8]) -> Result<Vec<u8>> {
    keys()?.seal_object(aad::INDEX, plain, 3)
}

/// Opens and decompresses a sealed object (under the fixed test key) of at most
/// `max_len` plaintext bytes; its length.
pub fn sealed_object(sealed: &[u8], max_len: usize) -> Result<usize> {
    keys()?
        .open_object(aad::INDEX, sealed, None, max_len, &|| "object".into())
        .map(|p| p.len())
}
