use super::fill::{OutFile, write_pieces};
use super::plan::{Group, MAX_RANGE, Piece, RANGE_GAP, group_pieces};
use super::*;
use crate::backend::{DynBackend, FaultyBackend, MemoryBackend, Op};
use crate::config::InitOptions;
use crate::index::BlobLocation;
use crate::pack::encode_blob;
use crate::{BackupOptions, BlobType};

fn piece(pack: u8, offset: u32, length: u32, file_offset: u32) -> Piece {
    Piece {
        file_offset: u64::from(file_offset),
        id: Id::of_content(&[pack, (offset >> 16) as u8, (offset >> 8) as u8]),
        loc: BlobLocation {
            pack: Id::of_content(&[pack]),
            pack_size: 64 << 20,
            kind: BlobType::Data,
            offset,
            length,
            raw_length: length,
        },
    }
}

/// (start, end, file offsets) of each request, in units of bytes.
fn spans(groups: &[Group]) -> Vec<(u32, u32, Vec<u32>)> {
    let n = |x: u64| u32::try_from(x).expect("small test offsets");
    groups
        .iter()
        .map(|g| {
            let offsets = g.pieces.iter().map(|p| n(p.file_offset)).collect();
            (n(g.start), n(g.end), offsets)
        })
        .collect()
}

#[test]
fn chunks_close_in_a_pack_share_a_request_in_any_file_order() {
    let k = 1024;
    // File order jumps around the pack, repeats a chunk, and leaves gaps of
    // 100 KiB (merged) and 300 KiB (not) between chunks.
    let pieces = vec![
        piece(1, 200 * k, 10 * k, 0),
        piece(1, 0, 10 * k, 10 * k),
        piece(1, 700 * k, 10 * k, 20 * k),
        piece(1, 0, 10 * k, 30 * k),
        piece(1, 110 * k, 10 * k, 40 * k),
    ];
    let groups = group_pieces(pieces, 256 * 1024);
    assert_eq!(
        spans(&groups),
        vec![
            (0, 210 * k, vec![10 * k, 30 * k, 40 * k, 0]),
            (700 * k, 710 * k, vec![20 * k]),
        ]
    );
    // Without a gap only touching chunks share a request.
    let pieces = vec![
        piece(1, 10 * k, 10 * k, 0),
        piece(1, 0, 10 * k, 10 * k),
        piece(1, 30 * k, 10 * k, 20 * k),
    ];
    assert_eq!(group_pieces(pieces, 0).len(), 2);
}

#[test]
fn requests_stay_in_one_pack_and_under_the_largest_range() {
    let k = 1024;
    let mut pieces: Vec<Piece> = (0..100u32)
        .map(|i| piece(1, i * 128 * k, 128 * k, i * 128 * k))
        .collect();
    pieces.push(piece(2, 0, 10 * k, 1 << 30));
    let groups = group_pieces(pieces, 256 * 1024);
    assert_eq!(groups.len(), 3, "{:?}", spans(&groups));
    for g in &groups {
        assert!(g.end - g.start <= MAX_RANGE);
        assert!(g.pieces.iter().all(|p| p.loc.pack == g.pack));
    }
}

async fn test_repo(backend: DynBackend) -> Repository {
    Repository::init(backend, b"k", InitOptions::small_for_tests())
        .await
        .expect("init")
}

/// A range holding two sealed chunks with other bytes between them: only the
/// chunks' plaintext lands in the file, a repeated chunk at each of its offsets,
/// and holes stay unwritten.
#[tokio::test]
async fn bytes_between_chunks_are_never_written() {
    let repo = test_repo(Arc::new(MemoryBackend::new())).await;
    let keys = repo.crypto();
    let a = vec![b'a'; 3000];
    let b = vec![b'b'; 2000];
    let (ida, idb) = (keys.blob_id(&a), keys.blob_id(&b));
    let sa = encode_blob(keys, BlobType::Data, ida, &a, 1)
        .expect("seal")
        .bytes;
    let sb = encode_blob(keys, BlobType::Data, idb, &b, 1)
        .expect("seal")
        .bytes;
    let pack = Id::of_content(b"pack");
    let gap = vec![0xEE; 5000];
    let base = 100u64;
    let data = [sa.clone(), gap.clone(), sb.clone()].concat();
    let loc = |offset: usize, sealed: &[u8], raw: usize| BlobLocation {
        pack,
        pack_size: 1 << 20,
        kind: BlobType::Data,
        offset: (base as usize + offset) as u32,
        length: sealed.len() as u32,
        raw_length: raw as u32,
    };
    let la = loc(0, &sa, a.len());
    let lb = loc(sa.len() + gap.len(), &sb, b.len());
    // File: a, hole, b, a.
    let pieces = vec![
        Piece {
            file_offset: 0,
            id: ida,
            loc: la,
        },
        Piece {
            file_offset: 4000,
            id: idb,
            loc: lb,
        },
        Piece {
            file_offset: 6000,
            id: ida,
            loc: la,
        },
    ];
    let groups = group_pieces(pieces, RANGE_GAP);
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!((g.start, g.end), (base, base + data.len() as u64));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    let file = OutFile::from(fs::File::create(&path).expect("create"));
    let range = (&pack, g.start, &data[..]);
    let written = write_pieces(&repo, &file, &path, range, &g.pieces, false).expect("write");
    assert_eq!(written, 8000);
    let got = fs::read(&path).expect("read");
    let mut want = vec![0u8; 9000];
    want[..3000].copy_from_slice(&a);
    want[4000..6000].copy_from_slice(&b);
    want[6000..].copy_from_slice(&a);
    assert_eq!(got, want);

    // Patching a file that holds them: nothing differs, nothing is written; one byte
    // changed on disk costs its page (here its whole 3000-byte chunk), and no more.
    let rw = OutFile::from(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open"),
    );
    let again = write_pieces(&repo, &rw, &path, range, &g.pieces, true).expect("patch");
    assert_eq!(again, 0);
    std::os::unix::fs::FileExt::write_all_at(&rw.file, &[!want[100]], 100).expect("change");
    let patched = write_pieces(&repo, &rw, &path, range, &g.pieces, true).expect("patch");
    assert_eq!(patched, 3000);
    assert_eq!(fs::read(&path).expect("read"), want);

    // A damaged chunk inside a merged range is still caught, naming its pack.
    let mut bad = data.clone();
    bad[sa.len() + gap.len() + 10] ^= 1;
    let path2 = dir.path().join("g");
    let file2 = OutFile::from(fs::File::create(&path2).expect("create"));
    let err = write_pieces(
        &repo,
        &file2,
        &path2,
        (&pack, g.start, &bad),
        &g.pieces,
        false,
    )
    .expect_err("corrupt chunk");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&pack.to_hex()), "{err}");
}

/// Chunks that follow each other in the file are written together: a run longer than
/// the most buffers or bytes of one write is split, and every byte lands at its place.
#[tokio::test]
async fn long_runs_of_chunks_are_written_whole() {
    let repo = test_repo(Arc::new(MemoryBackend::new())).await;
    let keys = repo.crypto();
    let pack = Id::of_content(b"pack");
    // 700 chunks of 3001 bytes (over 256 buffers and 256 KiB per write), each different.
    let chunks: Vec<Vec<u8>> = (0..700u32)
        .map(|i| (0..3001u32).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect();
    let (mut data, mut pieces) = (Vec::new(), Vec::new());
    for (i, c) in chunks.iter().enumerate() {
        let id = keys.blob_id(c);
        let sealed = encode_blob(keys, BlobType::Data, id, c, 1)
            .expect("seal")
            .bytes;
        pieces.push(Piece {
            file_offset: (i * c.len()) as u64,
            id,
            loc: BlobLocation {
                pack,
                pack_size: 64 << 20,
                kind: BlobType::Data,
                offset: data.len() as u32,
                length: sealed.len() as u32,
                raw_length: c.len() as u32,
            },
        });
        data.extend_from_slice(&sealed);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    let out = OutFile::from(fs::File::create(&path).expect("create"));
    let written =
        write_pieces(&repo, &out, &path, (&pack, 0, &data), &pieces, false).expect("write");
    let want = chunks.concat();
    assert_eq!(written, want.len() as u64);
    assert_eq!(fs::read(&path).expect("read"), want);
}

/// A file that repeats a block many times between unique data (a disk image) is
/// restored exactly, with about one request per pack rather than per repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_blocks_restore_exactly_in_few_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let mut seed = 7u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect()
    };
    let block = random(24 * 1024);
    let mut image = Vec::new();
    for _ in 0..20 {
        image.extend(random(6 * 1024));
        image.extend(&block);
        image.extend(vec![0u8; 20 * 1024]);
    }
    fs::write(src.join("image"), &image).expect("write");
    let faulty = FaultyBackend::wrap(Arc::new(MemoryBackend::new()));
    let backend: DynBackend = faulty.clone();
    let repo = test_repo(backend).await;
    let snapshot = repo
        .backup(&src, BackupOptions::default())
        .await
        .expect("backup")
        .snapshot_id;
    let before = faulty.calls(Op::GetRange);
    let dst = dir.path().join("dst");
    repo.restore(&snapshot, &dst, RestoreOptions::default())
        .await
        .expect("restore");
    let requests = faulty.calls(Op::GetRange) - before;
    assert_eq!(fs::read(dst.join("image")).expect("read"), image);
    // About 170 KiB stored in 64 KiB packs: 5 requests (trees included); fetched in
    // file order, merging only touching chunks, it took 28.
    assert!(requests <= 12, "{requests} range requests");
}
