//! Keys and sealing: argon2id turns the user's key into a key-encryption key, which
//! unwraps the random master key; BLAKE3 derives per-purpose subkeys from that; objects
//! are zstd-compressed (when it helps) and sealed with AES-256-GCM under random nonces.

use bytes::Bytes;
use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext: nonce + tag.
pub(crate) const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Additional authenticated data per object kind, so a sealed object cannot be passed
/// off as another kind (an index file as a snapshot, a tree blob as data).
pub(crate) mod aad {
    pub const MASTER_KEY: &[u8] = b"ferry/v1/master-key";
    pub const DATA_BLOB: &[u8] = b"ferry/v1/blob/data";
    pub const TREE_BLOB: &[u8] = b"ferry/v1/blob/tree";
    pub const PACK_HEADER: &[u8] = b"ferry/v1/pack-header";
    pub const INDEX: &[u8] = b"ferry/v1/index";
    pub const SNAPSHOT: &[u8] = b"ferry/v1/snapshot";
    pub const RESTORE_POINT: &[u8] = b"ferry/v1/restore-point";
}

const CONTEXT_ID_KEY: &str = "ferry 2025-01 repository v1 chunk id key";
const CONTEXT_DATA_KEY: &str = "ferry 2025-01 repository v1 data encryption key";
const CONTEXT_CHUNKER_SEED: &str = "ferry 2025-01 repository v1 chunker gear seed";
const CONTEXT_KEY_FINGERPRINT: &str = "ferry 2025-01 repository v1 user key fingerprint";

/// Hex characters of a key fingerprint after `k-`: 64 bits, so a handful of keys never
/// collide, while staying short enough to read out and type.
const FINGERPRINT_HEX: usize = 16;

/// The non-secret name of a user key in one repository: `k-` and 16 hex characters.
///
/// Derived from the KEK, not from the key bytes: the KEK costs an argon2id run per
/// guess, so the fingerprint gives no shortcut to guessing a passphrase that the
/// wrapped master key does not already give; and since the KDF salt is per repository,
/// one key has unrelated fingerprints in different repositories.
pub(crate) fn fingerprint(kek: &[u8; 32]) -> String {
    let digest = blake3::derive_key(CONTEXT_KEY_FINGERPRINT, kek);
    let mut out = String::with_capacity(2 + FINGERPRINT_HEX);
    out.push_str("k-");
    out.push_str(&hex::encode(&digest[..FINGERPRINT_HEX / 2]));
    out
}

/// Normalises a fingerprint as a person may type it (`K-ABCD…`, or without `k-`);
/// `None` when it cannot be one.
pub(crate) fn parse_fingerprint(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let hex_part = s.strip_prefix("k-").unwrap_or(&s);
    (hex_part.len() == FINGERPRINT_HEX && hex_part.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("k-{hex_part}"))
}

/// Fills an array from the system CSPRNG.
pub(crate) fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Error::Internal("the system random generator failed".into()))?;
    Ok(out)
}

thread_local! {
    /// Per-thread nonce generator: a random key from the OS and a counter.
    static NONCES: std::cell::RefCell<Option<([u8; 32], u64)>> =
        const { std::cell::RefCell::new(None) };
}

/// A fresh AES-GCM nonce: the keyed BLAKE3 of a per-thread counter under a random
/// per-thread key. The outputs are as unpredictable and as unlikely to collide as
/// 96 random bits, without a `getrandom` system call per blob (one per chunk cost
/// more than the chunk's AES-GCM).
fn next_nonce() -> Result<[u8; NONCE_LEN]> {
    NONCES.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (key, counter) = match slot.as_mut() {
            Some(s) => s,
            None => slot.insert((random_array()?, 0)),
        };
        *counter += 1;
        let hash = blake3::keyed_hash(key, &counter.to_le_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&hash.as_bytes()[..NONCE_LEN]);
        Ok(nonce)
    })
}

/// Argon2id cost and salt, stored in the config so `open` derives the same KEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always "argon2id" in format version 1.
    pub algorithm: String,
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Random salt, hex.
    pub salt: String,
}

/// Cost settings for a new repository's KDF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfCost {
    /// 64 MiB, 3 passes: well above OWASP's argon2id floor, about a second on one core.
    fn default() -> Self {
        KdfCost {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    pub(crate) fn new(cost: KdfCost) -> Result<Self> {
        let salt: [u8; 16] = random_array()?;
        Ok(KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib: cost.m_cost_kib,
            t_cost: cost.t_cost,
            p_cost: cost.p_cost,
            salt: hex::encode(salt),
        })
    }

    /// Checks the parameters against the bounds in [`crate::limits`]: the config is
    /// plain JSON, so whoever can write the bucket chooses them, and every Ferry that
    /// opens the repository would spend that memory and time. `repo` names the
    /// repository in errors.
    pub(crate) fn validate(&self, repo: &str) -> Result<()> {
        use crate::limits::{MAX_KDF_ITERATIONS, MAX_KDF_LANES, MAX_KDF_MEMORY_KIB};
        if self.algorithm != "argon2id" {
            return Err(Error::corrupt(
                format!("config in {repo}"),
                format!("unknown KDF {:?}", self.algorithm),
            ));
        }
        let hint = "Ferry never writes such a config: restore the config object from a \
                    copy, and check who else can write to the store";
        let bounds = [
            (
                "argon2id memory in KiB",
                self.m_cost_kib,
                MAX_KDF_MEMORY_KIB,
            ),
            ("argon2id passes", self.t_cost, MAX_KDF_ITERATIONS),
            ("argon2id lanes", self.p_cost, MAX_KDF_LANES),
        ];
        for (what, found, limit) in bounds {
            if found > limit {
                return Err(Error::TooLarge {
                    what: format!("the {what} of the config in {repo}"),
                    found: u64::from(found),
                    limit: u64::from(limit),
                    hint: hint.into(),
                });
            }
        }
        if self.salt.len() > 2 * crate::limits::MAX_KDF_SALT_BYTES {
            return Err(Error::TooLarge {
                what: format!("the KDF salt (hex characters) of the config in {repo}"),
                found: self.salt.len() as u64,
                limit: 2 * crate::limits::MAX_KDF_SALT_BYTES as u64,
                hint: hint.into(),
            });
        }
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32)).map_err(|e| {
            Error::corrupt(
                format!("config in {repo}"),
                format!("bad argon2 parameters: {e}"),
            )
        })?;
        Ok(())
    }

    /// Derives the key-encryption key from the user's key bytes.
    pub(crate) fn derive_kek(&self, user_key: &[u8]) -> Result<[u8; 32]> {
        // Checked again here, so no caller can reach argon2 with unbounded parameters.
        self.validate("the repository")?;
        let salt = hex::decode(&self.salt)
            .map_err(|e| Error::corrupt("config", format!("KDF salt is not hex: {e}")))?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::corrupt("config", format!("bad argon2 parameters: {e}")))?;
        let mut kek = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(user_key, &salt, &mut kek)
            .map_err(|e| Error::invalid("key", format!("argon2id failed: {e}")))?;
        Ok(kek)
    }
}

fn aes_key(bytes: &[u8; 32]) -> Result<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, bytes)
        .map_err(|_| Error::Internal("AES-256-GCM key setup failed".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals `plaintext` as nonce || ciphertext || tag.
pub(crate) fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce_bytes: [u8; NONCE_LEN] = random_array()?;
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| Error::Internal("AES-256-GCM seal failed".into()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens nonce || ciphertext || tag; `None` when the tag does not verify.
pub(crate) fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut body = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .ok()?
        .len();
    body.truncate(plain_len);
    Some(body)
}

/// Wraps a fresh master key under the KEK.
pub(crate) fn wrap_master_key(kek: &[u8; 32], master: &[u8; 32]) -> Result<Vec<u8>> {
    seal_with(&aes_key(kek)?, aad::MASTER_KEY, master)
}

/// Unwraps the master key; `None` means the KEK (so the user's key) is wrong.
pub(crate) fn unwrap_master_key(kek: &[u8; 32], wrapped: &[u8]) -> Result<Option<[u8; 32]>> {
    let Some(plain) = open_with(&aes_key(kek)?, aad::MASTER_KEY, wrapped) else {
        return Ok(None);
    };
    let master: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| Error::corrupt("config", "master key has the wrong length"))?;
    Ok(Some(master))
}

/// Subkeys derived from the master key.
pub struct Keys {
    id_key: [u8; 32],
    data: LessSafeKey,
    chunker_seed: u64,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    pub(crate) fn from_master(master: &[u8; 32]) -> Result<Self> {
        let id_key = blake3::derive_key(CONTEXT_ID_KEY, master);
        let data_key = blake3::derive_key(CONTEXT_DATA_KEY, master);
        let seed = blake3::derive_key(CONTEXT_CHUNKER_SEED, master);
        let mut seed8 = [0u8; 8];
        seed8.copy_from_slice(&seed[..8]);
        Ok(Keys {
            id_key,
            data: aes_key(&data_key)?,
            chunker_seed: u64::from_le_bytes(seed8),
        })
    }

    /// Keyed BLAKE3 of a blob's plaintext: equal content gives equal ids inside one
    /// repository, and ids reveal nothing without the key.
    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id::from_bytes(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// Seed of the FastCDC gear table, so chunk sizes do not fingerprint known files.
    pub(crate) fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        seal_with(&self.data, aad, plaintext)
    }

    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.data, aad, sealed)
    }

    /// Compresses (when it helps) and seals: nonce || AES-GCM(flag || payload) || tag,
    /// built in one buffer and encrypted in place, because on the backup path every
    /// extra copy of a chunk costs as much as hashing it.
    pub(crate) fn seal_object(&self, aad: &[u8], plaintext: &[u8], level: i32) -> Result<Vec<u8>> {
        let nonce_bytes = next_nonce()?;
        let mut out = encode_payload_after(&nonce_bytes, plaintext, level);
        let tag = self
            .data
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| Error::Internal("AES-256-GCM seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens and decompresses; `what` names the object in the error. Without an
    /// expected length the plaintext may be at most `max_len` bytes: decompression
    /// stops there, so a small hostile object cannot expand into gigabytes. A stored
    /// (uncompressed) payload is handed over as a view past its flag byte, never
    /// shifted or copied: on restore, a copy of every incompressible chunk saved.
    pub(crate) fn open_object(
        &self,
        aad: &[u8],
        sealed: &[u8],
        expected_len: Option<usize>,
        max_len: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Bytes> {
        let encoded = self
            .open(aad, sealed)
            .ok_or_else(|| Error::corrupt(what(), "authentication failed (bytes were altered)"))?;
        if encoded.first() == Some(&PAYLOAD_RAW) {
            let len = encoded.len() - 1;
            if let Some(n) = expected_len
                && len != n
            {
                return Err(Error::corrupt(
                    what(),
                    format!("length {len} differs from recorded {n}"),
                ));
            }
            if len > max_len {
                return Err(Error::corrupt(
                    what(),
                    format!("{len} bytes, over the limit of {max_len}"),
                ));
            }
            return Ok(Bytes::from(encoded).slice(1..));
        }
        decode_payload(&encoded, expected_len, max_len)
            .map(Bytes::from)
            .map_err(|detail| Error::corrupt(what(), detail))
    }
}

const PAYLOAD_RAW: u8 = 0;
const PAYLOAD_ZSTD: u8 = 1;

thread_local! {
    // A compression context and output buffer per thread: creating a context per chunk
    // costs more than compressing a small chunk, and a reused buffer is never zeroed.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `prefix` || flag byte || payload: zstd when it makes the bytes smaller, raw
/// otherwise (already compressed or random data costs one byte, not a bigger blob).
/// Room for the AES-GCM tag is reserved.
fn encode_payload_after(prefix: &[u8], plain: &[u8], level: i32) -> Vec<u8> {
    let raw = || {
        let mut out = Vec::with_capacity(prefix.len() + 1 + plain.len() + TAG_LEN);
        out.extend_from_slice(prefix);
        out.push(PAYLOAD_RAW);
        out.extend_from_slice(plain);
        out
    };
    if looks_random(plain) {
        return raw();
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _, _)| *l != level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(c) => *slot = Some((level, c, Vec::new())),
                Err(_) => return raw(),
            }
        }
        let Some((_, compressor, scratch)) = slot.as_mut() else {
            return raw();
        };
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(plain.len()));
        match compressor.compress_to_buffer(plain, scratch) {
            Ok(n) if n < plain.len() => {
                let mut out = Vec::with_capacity(prefix.len() + 1 + n + TAG_LEN);
                out.extend_from_slice(prefix);
                out.push(PAYLOAD_ZSTD);
                out.extend_from_slice(&scratch[..n]);
                out
            }
            _ => raw(),
        }
    })
}

/// Most bytes sampled by [`looks_random`].
const SAMPLE: usize = 4096;
/// Shorter chunks are always compressed: a sample of under 2 KiB says too little.
const MIN_SAMPLED_LEN: usize = 4096;

/// True when a sample from the middle of `data` has near-maximal byte entropy:
/// random, encrypted or already compressed data, which zstd would scan in full to
/// save nothing. Costs one histogram of at most 4 KiB, against compressing the chunk.
///
/// The sample is half the chunk, up to 4 KiB. The entropy measured on n random bytes
/// falls short of 8 bits by about 255 / (2 n ln 2) (0.045 at 4 KiB, 0.09 at 2 KiB),
/// so the threshold, 7.9 bits at 4 KiB, moves down by the difference for shorter
/// samples. Text measures about 5 bits, executables 6 to 7.
fn looks_random(data: &[u8]) -> bool {
    if data.len() < MIN_SAMPLED_LEN {
        return false;
    }
    let sample = SAMPLE.min(data.len() / 2);
    let start = data.len() / 2 - sample / 2;
    let sample = &data[start..start + sample];
    // Most chunks (text, executables) are told apart on the first KiB of the sample:
    // random bytes measure about 7.8 bits there, those below 7.5.
    if sample.len() > QUICK_SAMPLE && entropy(&sample[..QUICK_SAMPLE]) < QUICK_THRESHOLD {
        return false;
    }
    let n = sample.len() as f64;
    let shortfall = |n: f64| 255.0 / (2.0 * n * std::f64::consts::LN_2);
    entropy(sample) > 7.9 - (shortfall(n) - shortfall(SAMPLE as f64))
}

/// Bytes of the first look in [`looks_random`], and the entropy below which that look
/// alone decides.
const QUICK_SAMPLE: usize = 1024;
const QUICK_THRESHOLD: f64 = 7.5;

/// Shannon entropy of the bytes, in bits per byte.
fn entropy(sample: &[u8]) -> f64 {
    // Four histograms, so runs of one byte value (spaces in text) do not make each
    // increment wait for the previous one.
    let mut counts = [[0u32; 256]; 4];
    let quads = sample.chunks_exact(4);
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    for q in quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    // H = log2 n - (1/n) sum c log2 c, with c log2 c from a table.
    let table = &*C_LOG2_C;
    let sum: f64 = (0..256)
        .map(|i| (counts[0][i] + counts[1][i] + counts[2][i] + counts[3][i]) as usize)
        .map(|c| table.get(c).copied().unwrap_or_else(|| c_log2_c(c)))
        .sum();
    let n = sample.len() as f64;
    n.log2() - sum / n
}

fn c_log2_c(c: usize) -> f64 {
    if c == 0 {
        0.0
    } else {
        c as f64 * (c as f64).log2()
    }
}

/// `c log2 c` for every count a sample of [`SAMPLE`] bytes can give: 256 logarithms
/// per chunk cost as much as the histogram.
static C_LOG2_C: std::sync::LazyLock<Vec<f64>> =
    std::sync::LazyLock::new(|| (0..=SAMPLE).map(c_log2_c).collect());

/// Flag byte + payload, see [`encode_payload_after`].
#[cfg(test)]
pub(crate) fn encode_payload(plain: &[u8], level: i32) -> Vec<u8> {
    encode_payload_after(&[], plain, level)
}

fn decompress(payload: &[u8], len: usize) -> std::result::Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(payload, len).map_err(|e| format!("zstd: {e}")),
            None => Err("zstd: no decompression context".to_string()),
        }
    })
}

/// Decompresses a payload of unknown length, stopping one byte past `max_len`.
fn decompress_at_most(payload: &[u8], max_len: usize) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder =
        zstd::stream::read::Decoder::with_buffer(payload).map_err(|e| format!("zstd: {e}"))?;
    let mut out = Vec::new();
    decoder
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zstd: {e}"))?;
    if out.len() > max_len {
        return Err(format!(
            "decompresses to more than {max_len} bytes, the limit for such objects"
        ));
    }
    Ok(out)
}

/// Reverses [`encode_payload`], checking the length when the caller knows it, and
/// never producing more than `max_len` bytes.
pub(crate) fn decode_payload(
    encoded: &[u8],
    expected_len: Option<usize>,
    max_len: usize,
) -> std::result::Result<Vec<u8>, String> {
    let (&flag, payload) = encoded
        .split_first()
        .ok_or_else(|| "empty payload".to_string())?;
    if let Some(n) = expected_len
        && n > max_len
    {
        return Err(format!(
            "recorded length {n} is over the limit of {max_len}"
        ));
    }
    let plain = match flag {
        PAYLOAD_RAW if payload.len() > max_len => {
            return Err(format!(
                "{} bytes, over the limit of {max_len}",
                payload.len()
            ));
        }
        PAYLOAD_RAW => payload.to_vec(),
        PAYLOAD_ZSTD => match expected_len {
            Some(n) => decompress(payload, n)?,
            None => decompress_at_most(payload, max_len)?,
        },
        other => return Err(format!("unknown payload flag {other}")),
    };
    if let Some(n) = expected_len
        && plain.len() != n
    {
        return Err(format!("length {} differs from recorded {n}", plain.len()));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_master(&[7u8; 32]).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = keys();
        let sealed = k
            .seal_object(aad::INDEX, b"hello hello hello hello", 3)
            .unwrap();
        let back = k
            .open_object(aad::INDEX, &sealed, None, 1 << 20, &|| "x".into())
            .unwrap();
        assert_eq!(&back[..], b"hello hello hello hello");
        // Wrong kind of object: the AAD differs, so it must not open.
        assert!(
            k.open_object(aad::SNAPSHOT, &sealed, None, 1 << 20, &|| "x".into())
                .is_err()
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = k
            .open_object(aad::INDEX, &bad, None, 1 << 20, &|| "index/abc".into())
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { ref what, .. } if what == "index/abc"));
    }

    /// 64 MiB of zeros compress to a few KiB; decompressing them as a 1 MiB object
    /// stops at the limit instead of filling memory.
    #[test]
    fn metadata_that_decompresses_past_its_limit_is_refused() {
        let bomb = encode_payload(&vec![0u8; 64 << 20], 19);
        assert_eq!(bomb[0], PAYLOAD_ZSTD);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = decode_payload(&bomb, None, 1 << 20).unwrap_err();
        assert!(err.contains("more than 1048576 bytes"), "{err}");
        // A recorded length over the limit is refused before it sizes a buffer.
        let err = decode_payload(&bomb, Some(64 << 20), 1 << 20).unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
        // Within the limit it decodes.
        assert_eq!(
            decode_payload(&bomb, None, 64 << 20).unwrap().len(),
            64 << 20
        );
        let k = keys();
        let sealed = k.seal_object(aad::INDEX, &vec![0u8; 4 << 20], 3).unwrap();
        let err = k
            .open_object(aad::INDEX, &sealed, None, 1 << 20, &|| "index/i".into())
            .unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { ref what, .. } if what == "index/i"),
            "{err}"
        );
    }

    #[test]
    fn nonces_differ() {
        let k = keys();
        assert_ne!(
            k.seal(aad::INDEX, b"same").unwrap(),
            k.seal(aad::INDEX, b"same").unwrap()
        );
    }

    #[test]
    fn compression_is_skipped_when_useless() {
        let text = vec![b'a'; 10_000];
        let enc = encode_payload(&text, 3);
        assert_eq!(enc[0], PAYLOAD_ZSTD);
        assert!(enc.len() < 200);
        assert_eq!(decode_payload(&enc, Some(10_000), 1 << 20).unwrap(), text);

        let mut random = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        let enc = encode_payload(&random, 3);
        assert_eq!(enc[0], PAYLOAD_RAW);
        assert_eq!(enc.len(), random.len() + 1);
        assert!(decode_payload(&enc, Some(4095), 1 << 20).is_err());
    }

    #[test]
    fn only_near_random_data_skips_compression() {
        let mut random = vec![0u8; 64 * 1024];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut random)
            .unwrap();
        assert!(looks_random(&random));
        let text = b"SELECT id, name FROM users WHERE id = 42;\n".repeat(2000);
        assert!(!looks_random(&text));
        // Half random, half text: zstd still gains, so it must still be tried.
        let mut mixed = random[..32 * 1024].to_vec();
        mixed.extend_from_slice(&text[..32 * 1024]);
        let mid = mixed.len() / 2;
        mixed[mid - 2048..mid + 2048].copy_from_slice(&text[..4096]);
        assert!(!looks_random(&mixed));
        assert!(!looks_random(&random[..4095]), "too short to judge");
        // Chunks of 4-16 KiB (the default chunker's lower range) are judged on
        // smaller samples, with the threshold moved for their bias: every random
        // one is recognized, and text never.
        for len in [4096, 6000, 8192, 12_345, 16_384] {
            for i in 0..50u8 {
                let mut r = vec![0u8; len];
                aws_lc_rs::rand::SystemRandom::new().fill(&mut r).unwrap();
                assert!(looks_random(&r), "random {len} bytes (#{i}) not recognized");
            }
            assert!(
                !looks_random(&text[..len]),
                "text of {len} bytes taken as random"
            );
        }
        // Random data round-trips raw, text compressed.
        assert_eq!(encode_payload(&random, 1)[0], PAYLOAD_RAW);
        assert_eq!(encode_payload(&text, 1)[0], PAYLOAD_ZSTD);
    }

    #[test]
    fn nonces_never_repeat_within_or_across_threads() {
        let mine: Vec<[u8; NONCE_LEN]> = (0..50_000).map(|_| next_nonce().unwrap()).collect();
        let theirs: Vec<[u8; NONCE_LEN]> =
            std::thread::spawn(|| (0..50_000).map(|_| next_nonce().unwrap()).collect())
                .join()
                .unwrap();
        let all: std::collections::HashSet<_> = mine.iter().chain(theirs.iter()).collect();
        assert_eq!(all.len(), 100_000);
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = Keys::from_master(&[1u8; 32]).unwrap();
        let b = Keys::from_master(&[2u8; 32]).unwrap();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), Id::of_content(b"x"));
    }

    #[test]
    fn fingerprints_are_short_stable_and_parse_back() {
        let a = fingerprint(&[1u8; 32]);
        assert_eq!(a, fingerprint(&[1u8; 32]));
        assert_ne!(a, fingerprint(&[2u8; 32]));
        assert_eq!(a.len(), 2 + FINGERPRINT_HEX);
        assert!(a.starts_with("k-"));
        assert_eq!(parse_fingerprint(&a).as_deref(), Some(a.as_str()));
        assert_eq!(
            parse_fingerprint(&a[2..].to_ascii_uppercase()).as_deref(),
            Some(a.as_str())
        );
        assert_eq!(parse_fingerprint("k-12"), None);
        assert_eq!(parse_fingerprint("k-zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn master_key_wrap_detects_wrong_kek() {
        let master = [9u8; 32];
        let wrapped = wrap_master_key(&[1u8; 32], &master).unwrap();
        assert_eq!(
            unwrap_master_key(&[1u8; 32], &wrapped).unwrap(),
            Some(master)
        );
        assert_eq!(unwrap_master_key(&[2u8; 32], &wrapped).unwrap(), None);
    }
}
