//! Blobs and packs. A blob is one chunk or tree, compressed when that helps and sealed
//! on its own; a pack is many sealed blobs, then a sealed header listing them, then the
//! header's length as 4 bytes little-endian.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::crypto::{Keys, aad};
use crate::error::{Error, Result};
use crate::id::Id;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File content (one chunk).
    Data,
    /// A serialized [`crate::tree::Tree`].
    Tree,
}

impl BlobType {
    fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }

    fn aad(self) -> &'static [u8] {
        match self {
            BlobType::Data => aad::DATA_BLOB,
            BlobType::Tree => aad::TREE_BLOB,
        }
    }
}

/// A sealed blob ready to be packed.
#[derive(Debug)]
pub(crate) struct EncodedBlob {
    pub id: Id,
    pub kind: BlobType,
    pub raw_length: u32,
    pub bytes: Vec<u8>,
}

/// Compresses (when it helps) and seals a blob whose id the caller computed.
pub(crate) fn encode_blob(
    keys: &Keys,
    kind: BlobType,
    id: Id,
    plain: &[u8],
    level: i32,
) -> Result<EncodedBlob> {
    let raw_length = u32::try_from(plain.len())
        .map_err(|_| Error::invalid("blob", format!("{} bytes is too large", plain.len())))?;
    Ok(EncodedBlob {
        id,
        kind,
        raw_length,
        bytes: keys.seal_object(kind.aad(), plain, level)?,
    })
}

/// Opens a blob and checks that its plaintext hashes to `id`.
pub(crate) fn decode_blob(
    keys: &Keys,
    kind: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
    pack: &Id,
) -> Result<bytes::Bytes> {
    let what = || format!("blob {} in pack {}", id.short(), pack);
    // The recorded length sizes the output buffer, so it is bounded before anything
    // is allocated for it.
    let plain = keys.open_object(
        kind.aad(),
        sealed,
        Some(raw_length as usize),
        crate::limits::MAX_BLOB_BYTES as usize,
        &what,
    )?;
    if keys.blob_id(&plain) != *id {
        return Err(Error::corrupt(what(), "content does not match its id"));
    }
    Ok(plain)
}

/// One blob's place in a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

const HEADER_VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// The key of a pack object.
pub fn pack_key(id: &Id) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{}", &hex[..2], hex)
}

/// Where a finished pack's first byte sits: a multiple of this address, so the local
/// backend can write the pack with O_DIRECT straight from its buffer.
pub(crate) const PACK_ALIGN: usize = 4096;

/// Room kept for the sealed header on top of the caller's capacity, so closing a pack
/// does not have to move the buffer: 45 bytes of header per blob, and packs of small
/// files or trees hold thousands of blobs. Pages never written cost no memory.
const HEADER_SLACK: usize = 1 << 20;

/// A bounded stock of large byte buffers for reuse: a fresh 16 MiB pack buffer (or
/// 4 MiB read block) costs a page fault and a zeroed page per 4 KiB on first write,
/// about as much as hashing the bytes. Buffers come back when their last user drops
/// them (see [`BufPool::bytes`]); beyond `max` idle ones they are freed.
#[derive(Debug)]
pub(crate) struct BufPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max: usize,
    /// Smaller buffers are neither handed out nor kept: malloc serves them well.
    min_capacity: usize,
}

impl BufPool {
    pub fn new(max: usize, min_capacity: usize) -> Arc<Self> {
        Arc::new(BufPool {
            idle: Mutex::new(Vec::new()),
            max,
            min_capacity,
        })
    }

    /// An empty buffer with room for at least `capacity` bytes.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        if capacity >= self.min_capacity {
            let mut idle = self.idle.lock();
            if let Some(i) = idle.iter().position(|b| b.capacity() >= capacity) {
                let mut buf = idle.swap_remove(i);
                buf.clear();
                return buf;
            }
        }
        Vec::with_capacity(capacity)
    }

    /// Keeps `buf` for a later [`BufPool::take`] when there is room.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < self.min_capacity {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.max {
            idle.push(buf);
        }
    }

    /// `buf[start..]` as `Bytes` without a copy; `buf` returns to the pool when the
    /// last clone or slice of it is dropped.
    pub fn bytes(self: &Arc<Self>, buf: Vec<u8>, start: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            start,
            pool: self.clone(),
        })
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().len()
    }
}

/// A pooled buffer lent out as `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    start: usize,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Accumulates blobs into one pack.
#[derive(Debug, Default)]
pub(crate) struct PackBuilder {
    /// `pad` filler bytes that put the pack on a [`PACK_ALIGN`] boundary, then the pack.
    buf: Vec<u8>,
    pad: usize,
    entries: Vec<PackEntry>,
    /// Where `buf` came from and returns to once the pack is stored.
    pool: Option<Arc<BufPool>>,
    /// BLAKE3 of the pack's first `hashed` bytes (a multiple of [`HASH_STEP`]), fed
    /// while the blobs are still in cache from being copied in, rather than in a
    /// pass over all 16 MiB at the end.
    hasher: blake3::Hasher,
    hashed: usize,
}

/// Bytes fed to the pack hash at once: a power of two of BLAKE3's 1 KiB chunks, so
/// every update is a whole subtree and keeps the wide SIMD path busy.
const HASH_STEP: usize = 64 << 10;

/// An empty buffer for at least `capacity` bytes whose length is `pad` filler bytes,
/// chosen so that the byte after them is [`PACK_ALIGN`]-aligned. The alignment holds
/// only while the Vec does not reallocate.
pub(crate) fn aligned_vec(capacity: usize) -> (Vec<u8>, usize) {
    align(Vec::with_capacity(capacity.saturating_add(PACK_ALIGN)))
}

/// Pads an empty buffer (with `PACK_ALIGN` bytes of room to spare) to the boundary.
fn align(mut buf: Vec<u8>) -> (Vec<u8>, usize) {
    let pad = (PACK_ALIGN - buf.as_ptr().addr() % PACK_ALIGN) % PACK_ALIGN;
    buf.resize(pad, 0);
    (buf, pad)
}

/// A closed pack: id is BLAKE3 of `data`, so anyone can check it without the key.
#[derive(Debug)]
pub(crate) struct FinishedPack {
    pub id: Id,
    pub data: Bytes,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// A builder whose buffer will not grow (and copy) while the pack fills.
    #[cfg(test)]
    pub fn with_capacity(bytes: usize) -> Self {
        let (buf, pad) = aligned_vec(bytes.saturating_add(HEADER_SLACK));
        PackBuilder {
            buf,
            pad,
            entries: Vec::new(),
            pool: None,
            hasher: blake3::Hasher::new(),
            hashed: 0,
        }
    }

    /// Like [`PackBuilder::with_capacity`], with a buffer from `pool` that goes back
    /// to it when the finished pack's data is dropped.
    pub fn with_capacity_in(bytes: usize, pool: &Arc<BufPool>) -> Self {
        let want = bytes
            .saturating_add(HEADER_SLACK)
            .saturating_add(PACK_ALIGN);
        let (buf, pad) = align(pool.take(want));
        PackBuilder {
            buf,
            pad,
            entries: Vec::new(),
            pool: Some(pool.clone()),
            hasher: blake3::Hasher::new(),
            hashed: 0,
        }
    }

    /// Bytes in the pack so far (not counting the filler).
    pub fn len(&self) -> usize {
        self.buf.len() - self.pad
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room for `extra` more bytes. Growing is done here rather than by Vec,
    /// whose reallocation would lose the alignment; it doubles, as Vec would.
    fn reserve(&mut self, extra: usize) {
        if self.buf.capacity() - self.buf.len() >= extra {
            return;
        }
        let want = self.len().saturating_add(extra).max(self.len() * 2);
        let (mut buf, pad) = aligned_vec(want);
        buf.extend_from_slice(&self.buf[self.pad..]);
        self.buf = buf;
        self.pad = pad;
    }

    pub fn add(&mut self, blob: EncodedBlob) -> Result<()> {
        // Offsets count from the pack's first byte, not the buffer's.
        let offset = u32::try_from(self.len())
            .map_err(|_| Error::Internal("pack grew past 4 GiB".into()))?;
        let length = u32::try_from(blob.bytes.len())
            .map_err(|_| Error::Internal("blob larger than 4 GiB".into()))?;
        self.reserve(blob.bytes.len());
        self.buf.extend_from_slice(&blob.bytes);
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            offset,
            length,
            raw_length: blob.raw_length,
        });
        let pending = self.len() - self.hashed;
        if pending >= HASH_STEP {
            let upto = self.hashed + (pending - pending % HASH_STEP);
            self.hasher
                .update(&self.buf[self.pad + self.hashed..self.pad + upto]);
            self.hashed = upto;
        }
        Ok(())
    }

    pub fn finish(mut self, keys: &Keys) -> Result<FinishedPack> {
        let entries = std::mem::take(&mut self.entries);
        let mut header = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
        header.push(HEADER_VERSION);
        header.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in &entries {
            header.push(e.kind.code());
            header.extend_from_slice(e.id.as_bytes());
            header.extend_from_slice(&e.offset.to_le_bytes());
            header.extend_from_slice(&e.length.to_le_bytes());
            header.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        // Ids do not compress, so the header is sealed without the compression attempt.
        let mut payload = Vec::with_capacity(header.len() + 1);
        payload.push(0);
        payload.extend_from_slice(&header);
        let sealed = keys.seal(aad::PACK_HEADER, &payload)?;
        self.reserve(sealed.len() + 4);
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let PackBuilder {
            buf,
            pad,
            pool,
            mut hasher,
            hashed,
            ..
        } = self;
        hasher.update(&buf[pad + hashed..]);
        let id = Id::from_bytes(*hasher.finalize().as_bytes());
        // Bytes takes the Vec over without copying, so the alignment survives.
        let data = match pool {
            Some(pool) => pool.bytes(buf, pad),
            None => Bytes::from(buf).slice(pad..),
        };
        Ok(FinishedPack { id, data, entries })
    }
}

/// Length of the sealed header, from a pack's last 4 bytes.
fn header_len_from_trailer(trailer: &[u8], pack: &Id, size: u64) -> Result<u64> {
    let arr: [u8; 4] = trailer
        .try_into()
        .map_err(|_| Error::corrupt(format!("pack {pack}"), "trailer is not 4 bytes"))?;
    let n = u64::from(u32::from_le_bytes(arr));
    if n + 4 > size {
        return Err(Error::corrupt(
            format!("pack {pack}"),
            format!("header length {n} exceeds pack size {size}"),
        ));
    }
    Ok(n)
}

/// Opens and parses a sealed header; checks that entries lie inside the blob area.
fn decode_header(keys: &Keys, sealed: &[u8], pack: &Id, blob_area: u64) -> Result<Vec<PackEntry>> {
    let what = || format!("header of pack {pack}");
    let max = crate::limits::MAX_PACK_HEADER_BYTES;
    let plain = keys.open_object(aad::PACK_HEADER, sealed, None, max, &what)?;
    parse_header(&plain, blob_area, &what)
}

/// Parses an opened header; checks that entries lie inside the blob area. Allocates
/// one entry per 45 bytes of `plain`, never more than the bytes hold.
pub(crate) fn parse_header(
    plain: &[u8],
    blob_area: u64,
    what: &dyn Fn() -> String,
) -> Result<Vec<PackEntry>> {
    if plain.len() < 5 || plain[0] != HEADER_VERSION {
        return Err(Error::corrupt(what(), "unknown header version"));
    }
    let count = u32::from_le_bytes([plain[1], plain[2], plain[3], plain[4]]) as usize;
    let body = &plain[5..];
    if body.len() != count.saturating_mul(ENTRY_LEN) {
        return Err(Error::corrupt(what(), "entry count does not match length"));
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut out = Vec::with_capacity(count);
    for e in body.chunks_exact(ENTRY_LEN) {
        let kind = BlobType::from_code(e[0])
            .ok_or_else(|| Error::corrupt(what(), format!("unknown blob type {}", e[0])))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[1..33]);
        let entry = PackEntry {
            id: Id::from_bytes(id),
            kind,
            offset: u32_at(e, 33),
            length: u32_at(e, 37),
            raw_length: u32_at(e, 41),
        };
        if u64::from(entry.offset) + u64::from(entry.length) > blob_area {
            return Err(Error::corrupt(what(), "an entry points past the blob area"));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Parses a whole downloaded pack, checking its id first.
#[cfg(test)]
pub(crate) fn parse_pack(keys: &Keys, data: &[u8], pack: &Id) -> Result<Vec<PackEntry>> {
    if Id::of_content(data) != *pack {
        return Err(Error::corrupt(
            format!("pack {pack}"),
            "content hash does not match its name",
        ));
    }
    parse_pack_entries(keys, data, pack)
}

/// Reads a stored pack's header with two ranged reads (trailer, then header), without
/// downloading its blobs.
pub(crate) async fn read_pack_header(
    repo: &crate::repository::Repository,
    pack: &Id,
    size: u64,
) -> Result<Vec<PackEntry>> {
    let key = pack_key(pack);
    if size < 4 {
        return Err(Error::corrupt(
            format!("pack {pack}"),
            "shorter than its trailer",
        ));
    }
    let trailer = repo.backend().get_range(&key, size - 4, 4).await?;
    let hlen = header_len_from_trailer(&trailer, pack, size)?;
    let hstart = size - 4 - hlen;
    let sealed = repo.backend().get_range(&key, hstart, hlen).await?;
    decode_header(repo.crypto(), &sealed, pack, hstart)
}

/// Reads the header of a whole downloaded pack without checking the pack's hash, so
/// a damaged pack can still name its intact and broken blobs.
pub(crate) fn parse_pack_entries(keys: &Keys, data: &[u8], pack: &Id) -> Result<Vec<PackEntry>> {
    let size = data.len() as u64;
    if size < 4 {
        return Err(Error::corrupt(
            format!("pack {pack}"),
            "shorter than its trailer",
        ));
    }
    let hlen = header_len_from_trailer(&data[data.len() - 4..], pack, size)?;
    let hstart = data.len() - 4 - hlen as usize;
    decode_header(keys, &data[hstart..data.len() - 4], pack, hstart as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_corruption() {
        let keys = Keys::from_master(&[3u8; 32]).unwrap();
        let mut b = PackBuilder::default();
        let blobs: Vec<Vec<u8>> = vec![vec![1u8; 5000], b"tree json".to_vec(), vec![]];
        for (i, plain) in blobs.iter().enumerate() {
            let kind = if i == 1 {
                BlobType::Tree
            } else {
                BlobType::Data
            };
            let id = keys.blob_id(plain);
            b.add(encode_blob(&keys, kind, id, plain, 3).unwrap())
                .unwrap();
        }
        let pack = b.finish(&keys).unwrap();
        let entries = parse_pack(&keys, &pack.data, &pack.id).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, plain) in entries.iter().zip(&blobs) {
            let sealed = &pack.data[e.offset as usize..(e.offset + e.length) as usize];
            let back = decode_blob(&keys, e.kind, &e.id, sealed, e.raw_length, &pack.id).unwrap();
            assert_eq!(&back, plain);
            // The wrong type (AAD) must not open.
            let other = if e.kind == BlobType::Data {
                BlobType::Tree
            } else {
                BlobType::Data
            };
            assert!(decode_blob(&keys, other, &e.id, sealed, e.raw_length, &pack.id).is_err());
        }
        assert!(
            pack.entries[0].length < 200,
            "5000 equal bytes should compress"
        );

        let mut bad = pack.data.to_vec();
        bad[10] ^= 0xff;
        let err = parse_pack(&keys, &bad, &pack.id).unwrap_err();
        assert!(err.to_string().contains(&pack.id.to_hex()), "{err}");
        assert_eq!(pack_key(&pack.id)[6..8], pack.id.to_hex()[..2]);
    }

    fn sample_blobs(keys: &Keys, n: usize) -> Vec<EncodedBlob> {
        (0..n)
            .map(|i| {
                let plain: Vec<u8> = (0..3000 + i * 7).map(|j| (j * 31 + i) as u8).collect();
                encode_blob(keys, BlobType::Data, keys.blob_id(&plain), &plain, 3).unwrap()
            })
            .collect()
    }

    #[test]
    fn finished_pack_is_aligned_and_independent_of_capacity() {
        let keys = Keys::from_master(&[4u8; 32]).unwrap();
        // Sealing draws random nonces, so every builder gets the same sealed blobs.
        let blobs = sample_blobs(&keys, 40);
        let mut packs = Vec::new();
        // Roomy, tight (grows while filling and again for the header), and default.
        for mut b in [
            PackBuilder::with_capacity(1 << 20),
            PackBuilder::with_capacity(10),
            PackBuilder::default(),
        ] {
            for blob in &blobs {
                b.add(EncodedBlob {
                    id: blob.id,
                    kind: blob.kind,
                    raw_length: blob.raw_length,
                    bytes: blob.bytes.clone(),
                })
                .unwrap();
            }
            let pack = b.finish(&keys).unwrap();
            assert_eq!(pack.data.as_ptr().addr() % PACK_ALIGN, 0);
            assert_eq!(Id::of_content(&pack.data), pack.id);
            assert_eq!(
                parse_pack(&keys, &pack.data, &pack.id).unwrap(),
                pack.entries
            );
            // Offsets count from the pack's first byte, filler excluded.
            assert_eq!(pack.entries[0].offset, 0);
            packs.push(pack);
        }
        // Headers are sealed with a random nonce, so compare the blob areas and entries.
        let area = |p: &FinishedPack| {
            let last = p.entries.last().unwrap();
            p.data[..(last.offset + last.length) as usize].to_vec()
        };
        for p in &packs[1..] {
            assert_eq!(p.entries, packs[0].entries);
            assert_eq!(area(p), area(&packs[0]));
        }
    }

    #[test]
    fn empty_pack_is_aligned() {
        let keys = Keys::from_master(&[5u8; 32]).unwrap();
        let pack = PackBuilder::default().finish(&keys).unwrap();
        assert_eq!(pack.data.as_ptr().addr() % PACK_ALIGN, 0);
        assert!(parse_pack(&keys, &pack.data, &pack.id).unwrap().is_empty());
    }

    #[test]
    fn pool_reuses_and_bounds_its_buffers() {
        let pool = BufPool::new(2, 1000);
        // Too small to pool: neither taken from nor kept.
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.idle(), 0);
        let mut a = pool.take(5000);
        a.extend_from_slice(b"abc");
        let a_ptr = a.as_ptr();
        let bytes = pool.bytes(a, 1);
        assert_eq!(&bytes[..], b"bc");
        let slice = bytes.slice(1..2);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a slice still holds the buffer");
        drop(slice);
        assert_eq!(pool.idle(), 1);
        // A request it fits gets the same buffer back, emptied.
        let mut b = pool.take(4000);
        assert_eq!(b.as_ptr(), a_ptr);
        assert!(b.is_empty());
        b.extend_from_slice(&[1, 2, 3]);
        // One larger than any idle buffer is a fresh allocation.
        pool.give(b);
        assert_eq!(pool.take(1 << 20).capacity(), 1 << 20);
        assert_eq!(pool.idle(), 1);
        for _ in 0..5 {
            pool.give(Vec::with_capacity(2000));
        }
        assert_eq!(pool.idle(), 2, "at most `max` idle buffers");
    }

    #[test]
    fn pooled_packs_hash_incrementally_like_one_shot() {
        let keys = Keys::from_master(&[6u8; 32]).unwrap();
        let pool = BufPool::new(2, 1 << 20);
        let blob: Vec<u8> = (0..70_001u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for round in 0..3 {
            let mut b = PackBuilder::with_capacity_in(4 << 20, &pool);
            assert_eq!(pool.idle(), 0);
            // Odd sizes, so hashing steps fall inside blobs; past the capacity once.
            let count = if round == 1 { 90 } else { 40 };
            for i in 0..count {
                b.add(EncodedBlob {
                    id: Id::of_content(&[i as u8]),
                    kind: BlobType::Data,
                    raw_length: 1,
                    bytes: blob[..blob.len() - i * 13].to_vec(),
                })
                .unwrap();
            }
            let pack = b.finish(&keys).unwrap();
            assert_eq!(Id::of_content(&pack.data), pack.id);
            assert_eq!(pack.data.as_ptr().addr() % PACK_ALIGN, 0);
            assert_eq!(
                parse_pack(&keys, &pack.data, &pack.id).unwrap(),
                pack.entries
            );
            // Storing done: the buffer goes back for the next pack to take.
            drop(pack);
            assert_eq!(pool.idle(), 1, "round {round}");
        }
    }

    #[test]
    fn aligned_vec_pads_to_the_boundary() {
        for cap in [0, 1, 4095, 4096, 5 << 20] {
            let (buf, pad) = aligned_vec(cap);
            assert_eq!(buf.len(), pad);
            assert!(pad < PACK_ALIGN);
            assert!(buf.capacity() - pad >= cap);
            assert_eq!((buf.as_ptr().addr() + pad) % PACK_ALIGN, 0);
        }
    }
}
