//! Content-defined chunking with FastCDC (2020): cut points depend on the bytes around
//! them, so an insertion moves only the chunks it touches.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use fastcdc::v2020::{MASKS, Normalization, cut_gear, get_gear_with_seed, logarithm2};

use crate::config::ChunkerParams;
use crate::pack::BufPool;

/// Splits a stream into chunks. `seed` keys the gear table (derived from the master
/// key), so two repositories cut the same file differently. Call
/// [`ChunkerParams::validate`] first: FastCDC panics on out-of-range sizes.
///
/// Reads large blocks and cuts each block in one pass; chunks are zero-copy slices
/// of the block. (fastcdc's own `StreamCDC` shifts and re-zeroes its whole max-size
/// buffer after every chunk, which cost several times the hashing and compression.)
///
/// `len_hint` is how many bytes the reader will give (the file's size): small files
/// get a buffer of their size, not a block. Blocks come from `pool` when given and
/// return to it once every chunk cut from them is dropped.
///
/// Blocks are filled with `read_to_end`, which does not zero them first when the
/// reader reads into uninitialised memory itself (`File`, `Take`, `&[u8]`); a
/// wrapper that implements only `read` costs a zeroing pass per block.
pub(crate) fn chunks<R: Read>(
    reader: R,
    params: &ChunkerParams,
    seed: u64,
    len_hint: u64,
    pool: Option<&Arc<BufPool>>,
) -> impl Iterator<Item = std::io::Result<Bytes>> {
    // One byte more than the hint, so a file read whole also sees its end.
    let block =
        block_size(params).min(usize::try_from(len_hint.saturating_add(1)).unwrap_or(usize::MAX));
    chunks_in_blocks(reader, params, seed, block, pool.cloned())
}

/// Bytes read at once from a large file: several max-size chunks, so the undecided
/// tail copied over to the next block is small next to the block.
pub(crate) fn block_size(params: &ChunkerParams) -> usize {
    (params.max_size as usize * 2).max(4 << 20)
}

fn chunks_in_blocks<R: Read>(
    reader: R,
    params: &ChunkerParams,
    seed: u64,
    block: usize,
    pool: Option<Arc<BufPool>>,
) -> Chunker<R> {
    Chunker {
        reader,
        buf: Bytes::new(),
        cuts: VecDeque::new(),
        eof: false,
        gear: Gear::new(params, seed),
        // At least one byte, or nothing is ever read.
        block: block.max(1),
        pool,
    }
}

struct Chunker<R> {
    reader: R,
    /// Bytes read and not yet handed out; starts at a cut point.
    buf: Bytes,
    /// Lengths of decided chunks at the front of `buf`.
    cuts: VecDeque<usize>,
    eof: bool,
    gear: Arc<Gear>,
    block: usize,
    pool: Option<Arc<BufPool>>,
}

/// FastCDC 2020 (normalization level 1) with a seeded gear table, as
/// `fastcdc::v2020::FastCDC::with_level_and_seed` sets it up, built once per thread
/// rather than per block (that builds and copies two tables per call).
#[derive(Debug)]
pub(crate) struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
    min: usize,
    avg: usize,
    max: usize,
}

thread_local! {
    /// The last table built on this thread: every file gets a chunker, and building
    /// the tables (two 2 KiB copies) per small file adds up.
    static LAST_GEAR: std::cell::RefCell<Option<(u64, ChunkerParams, Arc<Gear>)>> =
        const { std::cell::RefCell::new(None) };
}

impl Gear {
    fn new(params: &ChunkerParams, seed: u64) -> Arc<Self> {
        LAST_GEAR.with(|cell| {
            let mut last = cell.borrow_mut();
            if let Some((s, p, g)) = last.as_ref()
                && *s == seed
                && p == params
            {
                return g.clone();
            }
            let bits = logarithm2(params.avg_size);
            let norm = Normalization::Level1.bits();
            let (gear, gear_ls) = get_gear_with_seed(seed);
            let g = Arc::new(Gear {
                gear,
                gear_ls,
                mask_s: MASKS[(bits + norm) as usize],
                mask_l: MASKS[(bits - norm) as usize],
                min: params.min_size as usize,
                avg: params.avg_size as usize,
                max: params.max_size as usize,
            });
            *last = Some((seed, params.clone(), g.clone()));
            g
        })
    }

    /// Length of the chunk that starts `src`.
    fn cut(&self, src: &[u8]) -> usize {
        cut_gear(
            src,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        )
        .1
    }
}

impl<R: Read> Chunker<R> {
    /// Reads until the buffer holds a block or the source ends.
    fn fill(&mut self) -> std::io::Result<()> {
        let start = self.buf.len();
        // Called only when no cut could be decided, so always read more: a tail as
        // long as a block (a file that grew past its size hint) must still progress.
        let want = if start < self.block {
            self.block
        } else {
            start + self.block
        };
        // A new buffer each time: chunks handed out still point into the old one.
        let mut next = match &self.pool {
            Some(pool) => pool.take(want),
            None => Vec::with_capacity(want),
        };
        next.extend_from_slice(&self.buf);
        // read_to_end retries on EINTR and keeps what it read before an error.
        let result = (&mut self.reader)
            .take((want - start) as u64)
            .read_to_end(&mut next);
        if result.is_ok() && next.len() < want {
            self.eof = true;
        }
        self.buf = match &self.pool {
            Some(pool) => pool.bytes(next, 0),
            None => Bytes::from(next),
        };
        result.map(|_| ())
    }

    /// Decides the cut points in the buffer. A cut at the very end of the buffer is
    /// only real at the end of the source or at the maximum size; otherwise the tail
    /// waits for more data, so the cuts are exactly those of a streaming chunker.
    fn cut(&mut self) {
        let len = self.buf.len();
        let mut start = 0;
        while start < len {
            let end = start + self.gear.cut(&self.buf[start..]);
            if end <= start {
                break;
            }
            if end == len && !self.eof && end - start < self.gear.max {
                break;
            }
            self.cuts.push_back(end - start);
            start = end;
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = std::io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(n) = self.cuts.pop_front() {
                return Some(Ok(self.buf.split_to(n)));
            }
            if self.eof && self.buf.is_empty() {
                return None;
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
            self.cut();
            if self.cuts.is_empty() && self.eof && !self.buf.is_empty() {
                // Defensive: the cut function always decides at the end of the source.
                let n = self.buf.len();
                self.cuts.push_back(n);
            }
        }
    }
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
    for chunk in chunks(data, params, seed, data.len() as u64, None) {
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

    use fastcdc::v2020::FastCDC;
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
        chunks(
            Cursor::new(data.to_vec()),
            &params(),
            seed,
            data.len() as u64,
            None,
        )
        .map(|c| c.map(|b| b.to_vec()))
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

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Cutting block by block, whatever the block and read sizes, gives exactly the
        /// cuts of one pass over the whole input.
        #[test]
        fn blocks_cut_like_one_pass(
            seed in any::<u8>(),
            len in 0usize..400_000,
            block in 16_384usize..100_000,
            step in 1usize..70_000,
        ) {
            let data = pseudo_random(len, seed);
            let p = params();
            let whole: Vec<usize> = FastCDC::with_level_and_seed(
                &data, p.min_size, p.avg_size, p.max_size, Normalization::Level1, 5,
            )
            .map(|c| c.length)
            .collect();
            // Pooled blocks (kept below, so reused) must cut the same as fresh ones.
            let pool = BufPool::new(2, 0);
            let mut held = Vec::new();
            let got: Vec<usize> = chunks_in_blocks(
                Trickle { data: &data, step }, &p, 5, block, Some(pool.clone()),
            )
            .map(|c| c.map(|b| { let n = b.len(); if held.len() < 3 { held.push(b) } n }))
            .collect::<std::io::Result<_>>()
            .unwrap();
            prop_assert_eq!(&got, &whole);
            prop_assert_eq!(held.concat(), data[..held.iter().map(Bytes::len).sum::<usize>()].to_vec());
        }
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
            // a few chunks after it, until a cut point falls where it fell before (cut
            // points within the minimum size of the last cut are skipped, so resyncing
            // can take a few chunks): the damage does not grow with the file.
            let new_chunks = after.iter().filter(|c| !before.contains(c)).count();
            let bound = 6 + insert.len() / params().min_size as usize;
            prop_assert!(new_chunks <= bound, "{} new chunks of {}", new_chunks, after.len());
            prop_assert!(shared_fraction(&before, &after) > 0.8);
        }
    }
}
