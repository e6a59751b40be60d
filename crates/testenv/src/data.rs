//! Test data.

use rand::{RngCore, SeedableRng};

/// `len` bytes that look random and are the same for the same `seed`, so a failing
/// test can be run again on the same data.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
