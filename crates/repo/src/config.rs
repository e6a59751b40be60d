//! The plaintext `config` object: format version, chunker parameters, KDF parameters
//! and the master key wrapped by each user key (the key slots).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::crypto::{KdfCost, KdfParams};
use crate::error::{Error, Result};
use crate::id::Id;

/// The format version this build writes. Version 2 stores large directories and long
/// content lists as runs (see `stored_tree`); this build reads versions 1 and 2 and
/// keeps writing version 1 repositories in version 1's form, so older builds can
/// still read them.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Key of the config object.
pub const CONFIG_KEY: &str = "config";

/// FastCDC (2020) sizes in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always "fastcdc-v2020" in format version 1.
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 4 KiB / 12 KiB / 96 KiB. Measured on bench-datamover's 1% in-place change
    /// (random 64 KiB-1 MiB regions), counting chunk data only: 1 MiB chunks store
    /// about 4x the changed bytes, 64 KiB chunks 1.20x, 16 KiB 1.07x, 12 KiB 1.06x,
    /// 8 KiB 1.05x; but 8 KiB cost 12% more CPU than 16 KiB on the first backup, so
    /// 12 KiB sits between. Small chunks pay off only because format 2 stores long content
    /// lists and large directories as runs (see `stored_tree`), so a change no longer
    /// rewrites a file's whole chunk list. The price is index memory, about 60 bytes
    /// per chunk (about 4 GiB per TiB of unique data); `ferry repo init --chunk-size`
    /// picks larger chunks for huge volumes.
    ///
    /// FastCDC 2020 rounds the average to a power of two for its cut mask (2^14 here),
    /// so with the 4 KiB minimum chunks of random data average about 18 KiB; the
    /// figures above are what these parameters do, whatever they are called.
    fn default() -> Self {
        ChunkerParams::fastcdc(4 * 1024, 12 * 1024, 96 * 1024)
    }
}

impl ChunkerParams {
    /// FastCDC 2020 with the given sizes.
    pub fn fastcdc(min_size: u32, avg_size: u32, max_size: u32) -> Self {
        ChunkerParams {
            algorithm: "fastcdc-v2020".into(),
            min_size,
            avg_size,
            max_size,
        }
    }

    /// Checks the sizes against what the FastCDC implementation accepts.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let bad = |d: String| Err(Error::invalid("chunker parameters", d));
        if self.algorithm != "fastcdc-v2020" {
            return bad(format!("unknown algorithm {:?}", self.algorithm));
        }
        if !(MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            || !(AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            || !(MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
        {
            return bad(format!(
                "sizes {}/{}/{} outside FastCDC's limits \
                 (min {MINIMUM_MIN}..={MINIMUM_MAX}, avg {AVERAGE_MIN}..={AVERAGE_MAX}, \
                 max {MAXIMUM_MIN}..={MAXIMUM_MAX})",
                self.min_size, self.avg_size, self.max_size
            ));
        }
        if !(self.min_size <= self.avg_size && self.avg_size <= self.max_size) {
            return bad("sizes must satisfy min <= avg <= max".into());
        }
        Ok(())
    }
}

/// One key slot: the master key sealed under the key-encryption key of one user key.
///
/// The metadata fields are additive: configs written before key slots have none of
/// them, and readers from then ignore them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Always "aes-256-gcm".
    pub algorithm: String,
    /// nonce || ciphertext || tag, hex.
    pub sealed: String,
    /// The user key's fingerprint (`k-` and 16 hex characters, see FORMAT.md); `None`
    /// in a repository made before key slots, until a key change records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// What the user called the key ("initial" for the key a repository was made with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When the slot was added.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub created: Option<OffsetDateTime>,
}

/// The repository's `config` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random repository id; stays the same for the repository's life.
    pub id: Id,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_size: u64,
    /// zstd level for blobs and metadata.
    pub compression_level: i32,
    /// Argon2id parameters shared by every key slot.
    pub kdf: KdfParams,
    /// The primary key slot. Readers from before key slots know only this one, so it
    /// always holds a key that is still valid (removing it promotes another).
    pub master_key: WrappedKey,
    /// Further key slots (`ferry repo key add`); absent when there are none, so a
    /// single-key config reads exactly as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_keys: Vec<WrappedKey>,
}

impl Config {
    /// Checks everything a reader relies on; `repo` names the repository in errors.
    pub(crate) fn validate(&self, repo: &str) -> Result<()> {
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&self.version) {
            return Err(Error::UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        self.chunker.validate()?;
        check_pack_size(self.pack_target_size)?;
        self.kdf.validate(repo)?;
        for slot in self.key_slots() {
            if slot.algorithm != "aes-256-gcm" {
                return Err(Error::corrupt(
                    "config",
                    format!("unknown key wrapping algorithm {:?}", slot.algorithm),
                ));
            }
        }
        Ok(())
    }

    /// Whether trees may be stored as runs (format 2 and later).
    pub(crate) fn stores_runs(&self) -> bool {
        self.version >= 2
    }

    /// Every key slot, the primary first.
    pub fn key_slots(&self) -> impl Iterator<Item = &WrappedKey> {
        std::iter::once(&self.master_key).chain(self.extra_keys.iter())
    }
}

fn check_pack_size(n: u64) -> Result<()> {
    if !(4 * 1024..=1024 * 1024 * 1024).contains(&n) {
        return Err(Error::invalid(
            "pack target size",
            format!("{n} bytes; choose between 4 KiB and 1 GiB"),
        ));
    }
    Ok(())
}

/// Settings for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_target_size: u64,
    pub compression_level: i32,
    pub kdf: KdfCost,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_target_size: 16 * 1024 * 1024,
            compression_level: 1,
            kdf: KdfCost::default(),
        }
    }
}

impl InitOptions {
    /// Tiny chunks, packs and KDF cost, so tests exercise many chunks and packs quickly.
    /// Not for real data: the KDF is cheap to brute-force.
    pub fn small_for_tests() -> Self {
        InitOptions {
            chunker: ChunkerParams::fastcdc(1024, 4096, 16 * 1024),
            pack_target_size: 64 * 1024,
            compression_level: 1,
            kdf: KdfCost {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 1,
            },
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        check_pack_size(self.pack_target_size)?;
        use crate::limits::{MAX_KDF_ITERATIONS, MAX_KDF_LANES, MAX_KDF_MEMORY_KIB};
        let kdf = &self.kdf;
        if !(8 * kdf.p_cost.max(1)..=MAX_KDF_MEMORY_KIB).contains(&kdf.m_cost_kib)
            || !(1..=MAX_KDF_ITERATIONS).contains(&kdf.t_cost)
            || !(1..=MAX_KDF_LANES).contains(&kdf.p_cost)
        {
            return Err(Error::invalid(
                "KDF cost",
                format!(
                    "{} KiB, {} passes, {} lanes; choose up to {MAX_KDF_MEMORY_KIB} KiB \
                     (at least 8 per lane), 1..={MAX_KDF_ITERATIONS} passes and \
                     1..={MAX_KDF_LANES} lanes, so every Ferry can open the repository",
                    kdf.m_cost_kib, kdf.t_cost, kdf.p_cost
                ),
            ));
        }
        if !(1..=19).contains(&self.compression_level) {
            return Err(Error::invalid(
                "compression level",
                format!("{}; choose 1..=19", self.compression_level),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_validation() {
        ChunkerParams::default().validate().unwrap();
        InitOptions::small_for_tests().validate().unwrap();
        assert!(ChunkerParams::fastcdc(10, 4096, 16384).validate().is_err());
        assert!(
            ChunkerParams::fastcdc(8192, 4096, 16384)
                .validate()
                .is_err()
        );
        assert!(
            ChunkerParams::fastcdc(1024, 4096, 64 * 1024 * 1024)
                .validate()
                .is_err()
        );
    }
}
