//! Bounds on what the engine takes from outside the process. A repository's bucket may
//! be writable by others (a source cluster writes what a destination reads, and the
//! config is plain JSON), so every size or cost read from it is checked against one of
//! these before memory or time is spent on it. FORMAT.md lists them.

/// The `config` object: a few key slots of JSON.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A lock object.
pub const MAX_LOCK_BYTES: u64 = 1 << 20;
/// An index file, stored or decompressed. Writers put at most 64 packs in one (prune),
/// about 5 MiB of JSON with default chunks and packs; packs of 1 GiB with tiny chunks
/// come closest to this.
pub const MAX_INDEX_BYTES: usize = 512 << 20;
/// A snapshot or restore-point manifest, stored or decompressed.
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// A pack's sealed header (45 bytes per blob).
pub const MAX_PACK_HEADER_BYTES: usize = 512 << 20;
/// One blob's plaintext: chunks are at most 16 MiB (FastCDC's largest maximum); format 1
/// trees hold a whole directory inline.
pub const MAX_BLOB_BYTES: u32 = 128 << 20;
/// A whole pack, downloaded by check and prune: the largest target size (1 GiB) plus
/// the blob that crossed it and the header.
pub const MAX_PACK_BYTES: u64 = (1 << 30) + (1 << 30);

/// Argon2id memory per key derivation: 4x the default. Every Ferry that opens the
/// repository spends it, so a config asking for gigabytes is refused.
pub const MAX_KDF_MEMORY_KIB: u32 = 256 * 1024;
/// Argon2id passes: with the largest memory about 15 s of one core.
pub const MAX_KDF_ITERATIONS: u32 = 10;
/// Argon2id lanes.
pub const MAX_KDF_LANES: u32 = 16;
/// Argon2id derivations running at once in one process; more wait their turn (first
/// come, first served) rather than fail, so a burst of opens, such as several profile
/// checks, costs at most this many times the memory above, never one per caller.
pub const MAX_CONCURRENT_KDF: usize = 2;
/// KDF salt, in bytes (16 are written).
pub const MAX_KDF_SALT_BYTES: usize = 64;
