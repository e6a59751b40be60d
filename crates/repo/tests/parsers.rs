//! Every parser that reads repository data from outside gets random bytes and mutated
//! valid inputs: none panics, and none allocates past its stated bound (see
//! `ferry_repo::parse`). Allocations are counted by a capped global allocator: a parser
//! over its bound makes the allocation fail, which aborts this test binary.
//!
//! One test runs every property in turn, so no other test allocates while a cap is
//! set. PROPTEST_CASES sets the cases per property (default 256):
//! `PROPTEST_CASES=10000 cargo test --release -p ferry-repo --test parsers`.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::alloc::System;

use cap::Cap;
use ferry_repo::parse;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Runs `f` with at most `bound` more bytes allocatable than now.
fn within<T>(bound: usize, f: impl FnOnce() -> T) -> T {
    let base = ALLOC.allocated();
    ALLOC.set_limit(base + bound).unwrap();
    let out = f();
    ALLOC.set_limit(usize::MAX).unwrap();
    out
}

/// The stated bound of the plaintext parsers: a small multiple of the input.
fn plain_bound(input: usize) -> usize {
    16 * input + (1 << 20)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// Flips, inserts, deletes and overwrites bytes of `valid` as `ops` say.
fn mutate(valid: &[u8], ops: &[(u8, u16, u8)]) -> Vec<u8> {
    let mut v = valid.to_vec();
    for &(op, at, byte) in ops {
        let i = usize::from(at) % (v.len() + 1);
        match op % 5 {
            0 if i < v.len() => v[i] ^= 1 << (byte % 8),
            1 => v.insert(i, byte),
            2 if i < v.len() => {
                v.remove(i);
            }
            3 if i < v.len() => v[i] = byte,
            // A long run of one byte: counts and lengths read from it come out huge.
            _ => v
                .splice(i..i, std::iter::repeat_n(0xff, usize::from(byte % 16)))
                .for_each(drop),
        }
    }
    v
}

/// Valid inputs to mutate, one or more per parser.
struct Seeds {
    config: Vec<u8>,
    header: Vec<u8>,
    index: Vec<u8>,
    trees: Vec<Vec<u8>>,
    restore_point: Vec<u8>,
    snapshot: Vec<u8>,
}

fn seeds() -> Seeds {
    let config = br#"{"version":2,"id":"4f1c8e7d2b9a6c3e5f0d1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d","created":"2025-06-01T10:00:00Z","chunker":{"algorithm":"fastcdc-v2020","min_size":4096,"avg_size":12288,"max_size":98304},"pack_target_size":16777216,"compression_level":1,"kdf":{"algorithm":"argon2id","m_cost_kib":65536,"t_cost":3,"p_cost":1,"salt":"00112233445566778899aabbccddeeff"},"master_key":{"algorithm":"aes-256-gcm","sealed":"00"}}"#.to_vec();
    let mut header = vec![1u8, 2, 0, 0, 0];
    for i in 0..2u8 {
        header.push(i % 2);
        header.extend_from_slice(&[i; 32]);
        header.extend_from_slice(&(u32::from(i) * 100).to_le_bytes());
        header.extend_from_slice(&100u32.to_le_bytes());
        header.extend_from_slice(&120u32.to_le_bytes());
    }
    let id = "ab".repeat(32);
    let index = format!(
        r#"{{"packs":[{{"id":"{id}","size":4096,"blobs":[{{"id":"{id}","type":"data","offset":0,"length":100,"raw_length":120}},{{"id":"{id}","type":"tree","offset":100,"length":50,"raw_length":50}}]}}]}}"#
    )
    .into_bytes();
    let json_tree = {
        use ferry_repo::{ContentPart, Id, Node, NodeKind, Tree};
        let chunk = Id::parse(&id).unwrap();
        let mut file = Node::new("a", NodeKind::File);
        file.content = vec![
            ContentPart::Chunk { id: chunk, len: 3 },
            ContentPart::Hole { hole: 5 },
        ];
        file.size = 8;
        let mut dir = Node::new("d", NodeKind::Dir);
        dir.subtree = Some(chunk);
        let mut link = Node::new("l", NodeKind::Symlink);
        link.symlink_target = Some("../x".into());
        serde_json::to_vec(&Tree {
            nodes: vec![file, dir, link],
        })
        .unwrap()
    };
    // A binary tree blob: magic, no runs, one entry (name, kind, flags, 8 varints).
    let binary_tree = vec![
        0xf1, 0, 1, 1, b'a', 0, 0, 0xa4, 0x83, 0x02, 0, 0, 2, 0, 0, 5, 0,
    ];
    let restore_point = format!(
        r#"{{"created_at":"2025-06-01T10:00:00Z","volumes":[{{"pvc":"data","snapshot_id":"{id}"}}],"captured":{{"objects":[]}}}}"#
    )
    .into_bytes();
    let snapshot = serde_json::to_vec(&ferry_repo::Snapshot {
        time: time::OffsetDateTime::UNIX_EPOCH,
        hostname: "h".into(),
        paths: vec!["/v".into()],
        tags: Vec::new(),
        parent: None,
        tree: ferry_repo::Id::parse(&id).unwrap(),
        root: None,
        summary: Default::default(),
    })
    .unwrap();
    Seeds {
        config,
        header,
        index,
        trees: vec![json_tree, binary_tree],
        restore_point,
        snapshot,
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..2048)
}

fn ops() -> impl Strategy<Value = Vec<(u8, u16, u8)>> {
    proptest::collection::vec(any::<(u8, u16, u8)>(), 1..12)
}

/// Runs `check` on random bytes and on mutations of each seed, `cases()` times each.
fn property(name: &str, seeds: &[Vec<u8>], check: impl Fn(&[u8])) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let started = std::time::Instant::now();
    TestRunner::new(config.clone())
        .run(&bytes(), |b| {
            check(&b);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}, random bytes: {e}"));
    for seed in seeds {
        TestRunner::new(config.clone())
            .run(&ops(), |o| {
                check(&mutate(seed, &o));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}, mutated: {e}"));
    }
    eprintln!(
        "{name}: {} cases in {:?}",
        cases() as usize * (1 + seeds.len()),
        started.elapsed()
    );
}

#[test]
fn parsers_never_panic_or_allocate_past_their_bounds() {
    let s = seeds();
    // The seeds themselves parse (or the mutations would say little).
    parse::config(&s.config).unwrap();
    assert_eq!(parse::pack_header(&s.header, 4096).unwrap(), 2);
    assert_eq!(parse::index_file(&s.index).unwrap(), 2);
    assert_eq!(parse::tree_blob(&s.trees[0]).unwrap(), 3);
    assert_eq!(parse::restore_point(&s.restore_point).unwrap(), 1);
    parse::snapshot(&s.snapshot).unwrap();

    property("repository config", std::slice::from_ref(&s.config), |b| {
        within(plain_bound(b.len()), || {
            let _ = parse::config(b);
        });
    });
    property("pack header", std::slice::from_ref(&s.header), |b| {
        within(plain_bound(b.len()), || {
            let _ = parse::pack_header(b, 1 << 30);
        });
    });
    property("index file", std::slice::from_ref(&s.index), |b| {
        within(plain_bound(b.len()), || {
            let _ = parse::index_file(b);
        });
    });
    property("tree blob", &s.trees, |b| {
        within(plain_bound(b.len()), || {
            let _ = parse::tree_blob(b);
            let _ = parse::content_blob(b);
        });
    });
    property(
        "restore-point manifest",
        std::slice::from_ref(&s.restore_point),
        |b| {
            within(plain_bound(b.len()), || {
                let _ = parse::restore_point(b);
            });
        },
    );
    property(
        "snapshot manifest",
        std::slice::from_ref(&s.snapshot),
        |b| {
            within(plain_bound(b.len()), || {
                let _ = parse::snapshot(b);
            });
        },
    );
    // Sealed objects: a small one that would decompress to 256 MiB, and a text one.
    let max = 1 << 20;
    let sealed = vec![
        parse::seal_for_tests(&vec![0u8; 256 << 20]).unwrap(),
        parse::seal_for_tests(&s.index.repeat(50)).unwrap(),
    ];
    assert!(sealed[0].len() < 64 << 10);
    assert!(parse::sealed_object(&sealed[0], max).is_err());
    property("sealed object", &sealed, |b| {
        within(2 * max + 2 * b.len() + (1 << 20), || {
            let _ = parse::sealed_object(b, max);
        });
    });
}
