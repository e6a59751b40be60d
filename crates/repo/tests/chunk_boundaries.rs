//! Snapshot of the real chunker's cut points. Chunk boundaries are part of the format in
//! practice: if they move (a new fastcdc release, a changed gear seed or normalization),
//! every existing repository stops deduplicating against new backups. This test pins
//! them to `tests/snapshots/chunk_boundaries.txt`.
//!
//! Regenerate the file with `FERRY_BLESS=1 cargo test -p ferry-repo --test chunk_boundaries`
//! only when a change of cut points is intended (and say so in the format notes).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_repo::{ChunkerParams, InitOptions, chunk_boundaries};

/// xorshift64: input that never changes with a crate version, unlike `rand`'s generators.
fn xorshift_bytes(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One pinned case: which data, which parameters, which gear seed.
struct Case {
    name: &'static str,
    len: usize,
    data_seed: u64,
    params: ChunkerParams,
    gear_seed: u64,
}

fn cases() -> Vec<Case> {
    vec![
        // Large sizes (512 KiB / 1 MiB / 8 MiB, `init --chunk-size 1024`), with FastCDC's
        // own gear table and with a seeded one, as every real repository has. Pinned
        // here rather than taken from the default, so changing the default cannot
        // silently re-bless these cuts.
        Case {
            name: "default-sizes gear-seed-0",
            len: 16 << 20,
            data_seed: 0x9E37_79B9_7F4A_7C15,
            params: ChunkerParams::fastcdc(512 << 10, 1 << 20, 8 << 20),
            gear_seed: 0,
        },
        Case {
            name: "default-sizes gear-seed-f3a1",
            len: 16 << 20,
            data_seed: 0x9E37_79B9_7F4A_7C15,
            params: ChunkerParams::fastcdc(512 << 10, 1 << 20, 8 << 20),
            gear_seed: 0xF3A1_0C5E_77D2_9B41,
        },
        // The small sizes the other tests use: many boundaries from little data.
        Case {
            name: "test-sizes gear-seed-f3a1",
            len: 1 << 20,
            data_seed: 0x0123_4567_89AB_CDEF,
            params: InitOptions::small_for_tests().chunker,
            gear_seed: 0xF3A1_0C5E_77D2_9B41,
        },
    ]
}

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/chunk_boundaries.txt")
}

fn header(c: &Case) -> String {
    let p = &c.params;
    format!(
        "[{}: {} bytes of xorshift64 from {:#x}, {} {}/{}/{}, gear seed {:#x}]",
        c.name, c.len, c.data_seed, p.algorithm, p.min_size, p.avg_size, p.max_size, c.gear_seed
    )
}

fn render(results: &[(String, Vec<(u64, u64)>)]) -> String {
    let mut out = String::from(
        "# Chunk boundaries (offset length) of ferry-repo's chunker; see tests/chunk_boundaries.rs.\n\
         # Regenerate with FERRY_BLESS=1 only for an intended change of cut points.\n",
    );
    for (head, bounds) in results {
        out.push_str(head);
        out.push('\n');
        for (off, len) in bounds {
            out.push_str(&format!("{off} {len}\n"));
        }
    }
    out
}

fn parse(text: &str) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.starts_with('[') {
            current = Some(line.to_string());
            out.entry(line.to_string()).or_default();
            continue;
        }
        let head = current
            .clone()
            .expect("a boundary line before any [case] line");
        let mut it = line.split(' ').map(|n| n.parse::<u64>().expect("a number"));
        let pair = (it.next().expect("an offset"), it.next().expect("a length"));
        out.entry(head).or_default().push(pair);
    }
    out
}

#[test]
fn chunk_boundaries_match_the_snapshot() {
    let mut results = Vec::new();
    for c in cases() {
        let data = xorshift_bytes(c.len, c.data_seed);
        let bounds = chunk_boundaries(&data, &c.params, c.gear_seed).expect("valid params");
        // Sanity independent of the snapshot: contiguous, covering, within the sizes.
        let mut next = 0;
        for (i, &(off, len)) in bounds.iter().enumerate() {
            assert_eq!(off, next, "{}: gap or overlap at chunk {i}", c.name);
            assert!(len <= u64::from(c.params.max_size), "{}: chunk {i}", c.name);
            if i + 1 < bounds.len() {
                assert!(len >= u64::from(c.params.min_size), "{}: chunk {i}", c.name);
            }
            next = off + len;
        }
        assert_eq!(
            next, c.len as u64,
            "{}: chunks do not cover the input",
            c.name
        );
        assert!(
            bounds.len() >= 8,
            "{}: only {} chunks",
            c.name,
            bounds.len()
        );
        results.push((header(&c), bounds));
    }

    let path = snapshot_path();
    if std::env::var_os("FERRY_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("snapshot dir")).expect("mkdir snapshots");
        std::fs::write(&path, render(&results)).expect("write snapshot");
        eprintln!("wrote {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with FERRY_BLESS=1 cargo test -p ferry-repo --test chunk_boundaries",
            path.display()
        )
    });
    let expected = parse(&text);
    let actual: BTreeMap<String, Vec<(u64, u64)>> = results.into_iter().collect();
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "the snapshot's cases differ from the test's"
    );
    for (head, want) in &expected {
        let got = &actual[head];
        let first_diff = want.iter().zip(got).position(|(a, b)| a != b);
        assert!(
            want == got,
            "chunk boundaries moved for {head}: first difference at chunk {first_diff:?} \
             ({} expected, {} now). Cut points changed: existing repositories would stop \
             deduplicating. If intended, regenerate with FERRY_BLESS=1.",
            want.len(),
            got.len()
        );
    }
}

/// Inserts `extra` bytes at `at` and checks that only the chunk holding the edit (and at
/// most `slack` more) changed: chunks before it are identical, and from some chunk on
/// the new boundaries are the old ones shifted by the insertion's length.
fn assert_local_damage(c: &Case, at: usize, extra: &[u8], slack: usize) {
    let data = xorshift_bytes(c.len, c.data_seed);
    let before = chunk_boundaries(&data, &c.params, c.gear_seed).expect("valid params");
    let mut edited = data[..at].to_vec();
    edited.extend_from_slice(extra);
    edited.extend_from_slice(&data[at..]);
    let after = chunk_boundaries(&edited, &c.params, c.gear_seed).expect("valid params");
    let n = extra.len() as u64;

    let hit = before
        .iter()
        .position(|(off, len)| (*off..off + len).contains(&(at as u64)))
        .expect("edit inside the data");
    assert_eq!(
        before[..hit],
        after[..hit],
        "{}: chunks before the edit changed",
        c.name
    );
    // Find where the new list falls back into step with the old one.
    let shifted: Vec<(u64, u64)> = before.iter().map(|(o, l)| (o + n, *l)).collect();
    let resync = (hit..after.len()).find_map(|k| {
        let (off, _) = after[k];
        let j = shifted.iter().position(|(o, _)| *o == off)?;
        (after[k..] == shifted[j..]).then_some((k, j))
    });
    let (k, j) = resync.unwrap_or_else(|| {
        panic!(
            "{}: boundaries after the edit never fall back into step\nbefore {before:?}\nafter {after:?}",
            c.name
        )
    });
    assert!(
        k - hit <= 1 + slack && j - hit <= 1 + slack,
        "{}: the edit at {at} disturbed chunks {hit}..{k} (new) / {hit}..{j} (old)",
        c.name
    );
    assert!(
        after.len() - k >= before.len() / 2,
        "{}: too few chunks kept",
        c.name
    );
}

#[test]
fn insertion_near_the_start_moves_only_nearby_boundaries() {
    let extra = b"seven b";
    for c in cases() {
        // Inside the first chunk (shorter than any minimum size)...
        assert_local_damage(&c, 1000, extra, 0);
        // ...and after the first few chunks, where earlier boundaries must not move.
        let at = c.params.min_size as usize * 3 + 12_345;
        assert_local_damage(&c, at, extra, 1);
    }
}
