//! Content-defined chunking with FastCDC (2020): cut points depend on the bytes around
//! them, so an insertion moves only the chunks it touches.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};

use crate::config::ChunkerParams;

/// Splits a stream into chunks. `seed` keys the gear table (derived from the master
/// key), so two repositories cut the same file differently. Call
/// [`ChunkerParams::validate`] first: FastCDC panics on out-of-range sizes.
pub(crate) fn chunks<R: Read>(
    reader: R,
    params: &ChunkerParams,
    seed: u64,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    StreamCDC::with_level_and_seed(
        reader,
        params.min_size,
        params.avg_size,
        params.max_size,
        Normalization::Level1,
        seed,
    )
    .map(|r| match r {
        Ok(c) => Ok(c.data),
        Err(fastcdc::v2020::Error::IoError(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    })
}

/// `(offset, length)` of every chunk the real chunker cuts from `data`. Only for the
/// chunk-boundary snapshot test in `tests/`; not a stable API.
#[doc(hidden)]
pub fn chunk_boundaries(
    data: &[u8],
    params: &ChunkerParams,
    seed: u64,
) -> crate::error::Result<Vec<(u64, u64)>> {
    // FastCDC panics on out-of-range sizes.
    params.validate()?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    for chunk in chunks(data, params, seed) {
        let len = chunk
            .map_err(|e| crate::error::Error::Internal(e.to_string()))?
            .len() as u64;
        out.push((offset, len));
        offset += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams::fastcdc(1024, 4096, 16 * 1024)
    }

    fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn cut(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
        chunks(Cursor::new(data.to_vec()), &params(), seed)
            .collect::<std::io::Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn chunks_cover_input_within_bounds() {
        let data = pseudo_random(300_000, 1);
        let cs = cut(&data, 0);
        assert_eq!(cs.concat(), data);
        let p = params();
        for c in &cs[..cs.len() - 1] {
            assert!(c.len() >= p.min_size as usize && c.len() <= p.max_size as usize);
        }
        // About avg-sized on random data.
        assert!(
            cs.len() > 300_000 / 16_384 && cs.len() < 300_000 / 1024,
            "{}",
            cs.len()
        );
        assert!(cut(&[], 0).is_empty());
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo_random(200_000, 2);
        let a: Vec<usize> = cut(&data, 1).iter().map(Vec::len).collect();
        let b: Vec<usize> = cut(&data, 2).iter().map(Vec::len).collect();
        assert_ne!(a, b);
    }

    fn shared_fraction(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
        let set: HashSet<&Vec<u8>> = a.iter().collect();
        b.iter().filter(|c| set.contains(c)).count() as f64 / b.len() as f64
    }

    #[test]
    fn front_insertion_keeps_most_chunks() {
        let data = pseudo_random(400_000, 3);
        let before = cut(&data, 7);
        let mut shifted = b"a few new bytes at the very front".to_vec();
        shifted.extend_from_slice(&data);
        let after = cut(&shifted, 7);
        let frac = shared_fraction(&before, &after);
        assert!(frac > 0.9, "only {frac} of chunks shared");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn insertion_anywhere_keeps_most_chunks(
            seed in any::<u8>(),
            insert in proptest::collection::vec(any::<u8>(), 1..2000),
            at_permille in 0usize..1000,
        ) {
            let data = pseudo_random(256 * 1024, seed);
            let before = cut(&data, 11);
            let at = data.len() * at_permille / 1000;
            let mut changed = data[..at].to_vec();
            changed.extend_from_slice(&insert);
            changed.extend_from_slice(&data[at..]);
            let after = cut(&changed, 11);
            prop_assert_eq!(after.concat(), changed);
            // An edit disturbs the chunk it lands in, the inserted bytes themselves and
            // at most a few chunks after it: the damage does not grow with the file.
            let new_chunks = after.iter().filter(|c| !before.contains(c)).count();
            let bound = 4 + insert.len() / params().min_size as usize;
            prop_assert!(new_chunks <= bound, "{} new chunks of {}", new_chunks, after.len());
            prop_assert!(shared_fraction(&before, &after) > 0.8);
        }
    }
}
