//! A real local repository damaged on disk the ways storage fails: a flipped byte in a
//! pack, a truncated pack, a deleted pack, a deleted or corrupted index file. Each time
//! `check` must name the broken object, restoring the snapshot that needs it must fail
//! with an error (never a panic, never a file that looks complete), and a snapshot
//! whose data lives elsewhere must still restore.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use ferry_repo::backend::{DynBackend, FaultRule, FaultyBackend, LocalBackend, Op};
use ferry_repo::{
    BackupOptions, BackupResult, CheckProblem, CheckReport, ContentPart, Error, Id, NodeKind,
    Repository, RestoreOptions, index_key, pack_key,
};

/// Two snapshots of unrelated data in one repository with small packs: A (about ten
/// packs, so two index files) and B.
struct Fixture {
    tmp: tempfile::TempDir,
    backend: DynBackend,
    /// The handle that wrote both snapshots.
    repo: Repository,
    src_a: PathBuf,
    src_b: PathBuf,
    a: BackupResult,
    b: BackupResult,
    packs_a: BTreeSet<Id>,
    indexes_a: Vec<Id>,
    /// Every blob either snapshot references -> the pack holding it.
    pack_of: BTreeMap<Id, Id>,
    /// Chunk ids of A's `a.bin`.
    chunks_a_bin: BTreeSet<Id>,
    /// A pack of A holding chunks of `a.bin` and no tree.
    victim: Id,
}

const A_BIN: usize = 600_000;

async fn ids_under(backend: &DynBackend, prefix: &str) -> BTreeSet<Id> {
    backend
        .list(prefix)
        .await
        .expect("list")
        .iter()
        .map(|o| {
            o.key
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("object name is an id")
        })
        .collect()
}

/// Tree ids and (path, chunk id) pairs of a snapshot.
async fn blobs_of(repo: &Repository, root: Id) -> (BTreeSet<Id>, Vec<(String, Id)>) {
    let mut trees = BTreeSet::new();
    let mut chunks = Vec::new();
    let mut stack = vec![(root, String::new())];
    while let Some((id, dir)) = stack.pop() {
        trees.insert(id);
        for node in repo.load_tree(&id).await.expect("load tree").nodes {
            let path = format!("{dir}{}", node.name.lossy());
            if node.kind == NodeKind::Dir {
                stack.push((node.subtree.expect("dir subtree"), format!("{path}/")));
            }
            for part in &node.content {
                if let ContentPart::Chunk { id, .. } = part {
                    chunks.push((path.clone(), *id));
                }
            }
        }
    }
    (trees, chunks)
}

impl Fixture {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src_a = tmp.path().join("src_a");
        fs::create_dir_all(src_a.join("sub")).expect("mkdir");
        fs::write(src_a.join("a.bin"), random_bytes(A_BIN, 101)).expect("write");
        fs::write(src_a.join("notes.txt"), "a's notes\n".repeat(300)).expect("write");
        fs::write(src_a.join("sub/c.bin"), random_bytes(20_000, 103)).expect("write");
        let src_b = tmp.path().join("src_b");
        fs::create_dir_all(&src_b).expect("mkdir");
        fs::write(src_b.join("b.bin"), random_bytes(150_000, 202)).expect("write");
        fs::write(src_b.join("other.txt"), "b only\n".repeat(50)).expect("write");
        // Old mtimes, so a file restore leaves behind cannot carry the source's by chance.
        for (i, f) in ["a.bin", "notes.txt", "sub/c.bin"].iter().enumerate() {
            set_mtime(&src_a.join(f), 1_000_000_000 + i as u64, 0);
        }
        set_mtime(&src_b.join("b.bin"), 1_000_000_100, 0);

        let backend: DynBackend = Arc::new(LocalBackend::new(tmp.path().join("repo")));
        let repo = init(backend.clone()).await;
        assert!(repo.config().pack_target_size <= 64 * 1024);
        // One pack in flight at a time, so packs are indexed in the order they were cut:
        // a.bin's data first, trees last, and the first index file holds data only.
        // With parallel uploads, under load, every index could hold some tree.
        let serial = BackupOptions {
            read_concurrency: 1,
            cpu_concurrency: 1,
            upload_concurrency: 1,
            ..BackupOptions::default()
        };
        let a = repo.backup(&src_a, serial).await.expect("backup A");
        let packs_a = ids_under(&backend, "packs/").await;
        let indexes_a: Vec<Id> = ids_under(&backend, "index/").await.into_iter().collect();
        let b = repo
            .backup(&src_b, BackupOptions::default())
            .await
            .expect("backup B");
        let packs_b: BTreeSet<Id> = ids_under(&backend, "packs/")
            .await
            .difference(&packs_a)
            .copied()
            .collect();
        assert!(packs_a.len() >= 9, "A should span two index files");
        assert!(indexes_a.len() >= 2, "{indexes_a:?}");
        assert!(!packs_b.is_empty());

        // Which pack holds which blob: the pack headers are encrypted, so ask the
        // engine. With reads of one pack failing, exactly that pack's blobs fail to load.
        let faulty = FaultyBackend::wrap(backend.clone());
        let probe = Repository::open(faulty.clone(), KEY).await.expect("open");
        let (trees_a, chunks_a) = blobs_of(&probe, a.snapshot.tree).await;
        let (trees_b, chunks_b) = blobs_of(&probe, b.snapshot.tree).await;
        let mut unmapped: BTreeSet<Id> = trees_a
            .iter()
            .chain(&trees_b)
            .copied()
            .chain(chunks_a.iter().chain(&chunks_b).map(|(_, id)| *id))
            .collect();
        let mut pack_of = BTreeMap::new();
        for pack in packs_a.iter().chain(&packs_b) {
            faulty.add_rule(FaultRule::on(Op::GetRange).key_contains(pack.to_hex()));
            for blob in unmapped.clone() {
                if probe.read_blob(&blob).await.is_err() {
                    pack_of.insert(blob, *pack);
                    unmapped.remove(&blob);
                }
            }
            faulty.clear_rules();
        }
        assert!(unmapped.is_empty(), "blobs in no pack: {unmapped:?}");
        // The two snapshots share no pack, so damage to one cannot reach the other.
        for t in &trees_a {
            assert!(packs_a.contains(&pack_of[t]));
        }
        for (_, c) in &chunks_a {
            assert!(packs_a.contains(&pack_of[c]));
        }
        for id in trees_b.iter().chain(chunks_b.iter().map(|(_, c)| c)) {
            assert!(packs_b.contains(&pack_of[id]));
        }

        let chunks_a_bin: BTreeSet<Id> = chunks_a
            .iter()
            .filter(|(p, _)| p == "a.bin")
            .map(|(_, c)| *c)
            .collect();
        let tree_packs: BTreeSet<Id> = trees_a.iter().map(|t| pack_of[t]).collect();
        // The data pack with the most chunks of a.bin: a middle piece of the file.
        let victim = packs_a
            .iter()
            .filter(|p| !tree_packs.contains(p))
            .max_by_key(|p| chunks_a_bin.iter().filter(|c| pack_of[*c] == **p).count())
            .copied()
            .expect("a data-only pack");
        assert!(chunks_a_bin.iter().any(|c| pack_of[c] == victim));

        let report = repo.check(true).await.expect("check");
        assert!(
            report.is_ok() && report.unindexed_packs.is_empty(),
            "{report}"
        );
        Fixture {
            tmp,
            backend,
            repo,
            src_a,
            src_b,
            a,
            b,
            packs_a,
            indexes_a,
            pack_of,
            chunks_a_bin,
            victim,
        }
    }

    fn file(&self, key: &str) -> PathBuf {
        self.tmp.path().join("repo").join(key)
    }

    /// A fresh handle, as the next process would open the damaged repository.
    async fn reopen(&self) -> Repository {
        Repository::open(self.backend.clone(), KEY)
            .await
            .expect("open the damaged repository")
    }

    /// Restoring A fails with an error; restoring B still gives B back exactly.
    async fn restore_a_fails_and_b_succeeds(
        &self,
        repo: &Repository,
        round: &str,
    ) -> (Error, PathBuf) {
        let dst_a = self.tmp.path().join(format!("dst_a{round}"));
        let err = repo
            .restore(&self.a.snapshot_id, &dst_a, RestoreOptions::default())
            .await
            .expect_err("restoring the damaged snapshot must fail");
        let dst_b = self.tmp.path().join(format!("dst_b{round}"));
        repo.restore(&self.b.snapshot_id, &dst_b, RestoreOptions::default())
            .await
            .expect("the undamaged snapshot restores");
        assert_same_tree(&self.src_b, &dst_b);
        (err, dst_a)
    }

    fn problems_name_only(&self, report: &CheckReport, pack: Id) {
        assert!(!report.is_ok(), "damage not found");
        for p in &report.problems {
            assert_eq!(p.pack(), Some(pack), "problem about another object: {p}");
        }
        assert!(report.to_string().contains(&pack_key(&pack)), "{report}");
    }
}

/// After a failed restore, a file whose data was damaged must not pass for a good copy:
/// restore deletes every file it could not finish.
fn assert_unfinished_file_removed(dst: &Path, rel: &str) {
    let d = dst.join(rel);
    assert!(
        fs::symlink_metadata(&d).is_err(),
        "{rel}: a file restore could not finish was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_a_pack_is_named_and_restore_fails() {
    let fx = Fixture::new().await;
    let key = pack_key(&fx.victim);
    let mut bytes = fs::read(fx.file(&key)).expect("read pack");
    // Byte 100 lies in the pack's first blob: every sealed chunk is over 1 KiB.
    bytes[100] ^= 0x20;
    fs::write(fx.file(&key), &bytes).expect("write pack");
    let repo = fx.reopen().await;

    // Same size, same name: the structural check compares only existence and sizes,
    // so it cannot see a changed byte without downloading the pack.
    let report = repo.check(false).await.expect("check");
    assert!(report.is_ok(), "{report}");

    let report = repo.check(true).await.expect("check --read-data");
    fx.problems_name_only(&report, fx.victim);
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            CheckProblem::PackCorrupt { pack, .. } if *pack == fx.victim
        )),
        "{report}"
    );
    let corrupt_blobs: Vec<Id> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            CheckProblem::BlobCorrupt { pack, blob, .. } if *pack == fx.victim => Some(*blob),
            _ => None,
        })
        .collect();
    assert_eq!(corrupt_blobs.len(), 1, "one blob was damaged: {report}");
    assert_eq!(fx.pack_of[&corrupt_blobs[0]], fx.victim);
    assert!(fx.chunks_a_bin.contains(&corrupt_blobs[0]), "{report}");

    let (err, dst_a) = fx.restore_a_fails_and_b_succeeds(&repo, "").await;
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&fx.victim.to_hex()), "{err}");
    assert_unfinished_file_removed(&dst_a, "a.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_pack_is_named_and_restore_fails() {
    let fx = Fixture::new().await;
    let key = pack_key(&fx.victim);
    let size = fs::metadata(fx.file(&key)).expect("stat").len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(fx.file(&key))
        .expect("open pack");
    f.set_len(size / 2).expect("truncate");
    drop(f);
    let repo = fx.reopen().await;

    // The index records each pack's size, so the structural check sees it.
    let report = repo.check(false).await.expect("check");
    assert_eq!(
        report.problems,
        vec![CheckProblem::PackSizeMismatch {
            pack: fx.victim,
            expected: size,
            actual: size / 2
        }],
        "{report}"
    );

    let report = repo.check(true).await.expect("check --read-data");
    fx.problems_name_only(&report, fx.victim);
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            CheckProblem::PackCorrupt { pack, .. } if *pack == fx.victim
        )),
        "{report}"
    );

    let (err, dst_a) = fx.restore_a_fails_and_b_succeeds(&repo, "").await;
    // The chunks past the cut cannot be read in full: a short read, never a short chunk.
    assert!(
        matches!(err, Error::Backend(_) | Error::Corrupt { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&fx.victim.to_hex()), "{err}");
    assert_unfinished_file_removed(&dst_a, "a.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pack_is_named_and_restore_fails() {
    let fx = Fixture::new().await;
    fs::remove_file(fx.file(&pack_key(&fx.victim))).expect("delete pack");
    let repo = fx.reopen().await;

    let report = repo.check(false).await.expect("check");
    assert_eq!(
        report.problems,
        vec![CheckProblem::PackMissing { pack: fx.victim }],
        "{report}"
    );
    // Reading data adds nothing: a missing pack has no data to read.
    let report = repo.check(true).await.expect("check --read-data");
    assert_eq!(
        report.problems,
        vec![CheckProblem::PackMissing { pack: fx.victim }],
        "{report}"
    );

    let (err, dst_a) = fx.restore_a_fails_and_b_succeeds(&repo, "").await;
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&fx.victim.to_hex()), "{err}");
    assert_unfinished_file_removed(&dst_a, "a.bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_index_file_is_found_and_restore_fails() {
    let fx = Fixture::new().await;
    let aside = fx.tmp.path().join("aside");
    let hide = |id: &Id| fs::rename(fx.file(&index_key(id)), &aside).expect("hide index");
    let unhide = |id: &Id| fs::rename(&aside, fx.file(&index_key(id))).expect("put index back");
    // Which of A's index files A's trees need (the root tree, and in format 2 the runs
    // of a.bin's content list, which may sit in a pack of another index): try without
    // each.
    let mut needed = Vec::new();
    for id in &fx.indexes_a {
        hide(id);
        let repo = fx.reopen().await;
        let root_lost = repo.read_blob(&fx.a.snapshot.tree).await.is_err();
        let tree_lost = repo.load_tree(&fx.a.snapshot.tree).await.is_err();
        unhide(id);
        needed.push((*id, root_lost, tree_lost));
    }
    let root_index = needed
        .iter()
        .find(|(_, root_lost, _)| *root_lost)
        .map(|(id, ..)| *id)
        .expect("an index lists the root tree");
    let data_index = needed
        .iter()
        .find(|(.., tree_lost)| !*tree_lost)
        .map(|(id, ..)| *id)
        .expect("A has an index of data packs only");

    // Both ways: an index of data packs only, then the one with the root tree.
    for (round, gone) in [("data", data_index), ("root", root_index)] {
        hide(&gone);
        let repo = fx.reopen().await;

        // Nothing names index files (they are found by listing), so a deleted one
        // cannot be reported by id. What check can say, and does: the packs it listed
        // are now unindexed, and the snapshot's blobs in them are missing.
        let report = repo.check(false).await.expect("check");
        let orphaned: BTreeSet<Id> = report.unindexed_packs.iter().copied().collect();
        assert!(!orphaned.is_empty(), "{round}: {report}");
        assert!(orphaned.is_subset(&fx.packs_a), "{round}: {report}");
        assert!(!report.is_ok(), "{round}: {report}");
        let mut missing = BTreeSet::new();
        for p in &report.problems {
            match p {
                CheckProblem::BlobMissing { snapshot, blob, .. } => {
                    assert_eq!(*snapshot, fx.a.snapshot_id, "{round}: {p}");
                    assert!(orphaned.contains(&fx.pack_of[blob]), "{round}: {p}");
                    missing.insert(*blob);
                }
                other => panic!("{round}: unexpected problem: {other}"),
            }
        }
        if gone == root_index {
            // Nothing below a tree that is not indexed can be walked.
            assert_eq!(missing, BTreeSet::from([fx.a.snapshot.tree]), "{report}");
        } else {
            // Every chunk of a.bin in the orphaned packs is named.
            let expected: BTreeSet<Id> = fx
                .chunks_a_bin
                .iter()
                .filter(|c| orphaned.contains(&fx.pack_of[*c]))
                .copied()
                .collect();
            assert!(!expected.is_empty(), "{report}");
            assert!(expected.is_subset(&missing), "{report}");
        }
        // Reading data cannot add anything about packs no index describes.
        let read = repo.check(true).await.expect("check --read-data");
        assert_eq!(read.problems, report.problems, "{round}: {read}");
        assert_eq!(read.unindexed_packs, report.unindexed_packs);

        let (err, dst_a) = fx.restore_a_fails_and_b_succeeds(&repo, round).await;
        assert!(err.is_not_found(), "{round}: {err}");
        // Restore checks that every chunk is indexed before writing anything.
        let written: Vec<_> = fs::read_dir(&dst_a)
            .map(|d| d.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default();
        assert!(
            written.is_empty(),
            "{round}: restore wrote {written:?} first"
        );
        unhide(&gone);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_index_file_is_named() {
    let fx = Fixture::new().await;
    let victim = fx.indexes_a[0];
    let path = fx.file(&index_key(&victim));
    let mut bytes = fs::read(&path).expect("read index");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&path, &bytes).expect("write index");

    // Opening skips the damaged index file instead of refusing the whole repository.
    let reopened = fx.reopen().await;

    // Both a handle opened before the damage (a running agent) and a fresh one name
    // it: check re-reads the index files from the store.
    for (repo, read_data) in [(&fx.repo, false), (&fx.repo, true), (&reopened, true)] {
        let report = repo.check(read_data).await.expect("check");
        assert!(
            report.problems.iter().any(|p| matches!(
                p,
                CheckProblem::IndexUnreadable { index, .. } if *index == victim
            )),
            "{report}"
        );
        for p in &report.problems {
            match p {
                CheckProblem::IndexUnreadable { index, .. } => assert_eq!(*index, victim),
                CheckProblem::BlobMissing { snapshot, blob, .. } => {
                    assert_eq!(*snapshot, fx.a.snapshot_id, "{p}");
                    assert!(fx.packs_a.contains(&fx.pack_of[blob]), "{p}");
                }
                other => panic!("unexpected problem: {other}"),
            }
        }
        assert!(!report.unindexed_packs.is_empty(), "{report}");
    }

    // With the index file skipped, A lacks chunks and fails; B restores.
    let (err, _) = fx
        .restore_a_fails_and_b_succeeds(&reopened, "-before")
        .await;
    assert!(err.is_not_found(), "{err}");

    // The next backup re-indexes the packs from their own headers: A restores again.
    reopened
        .backup(&fx.src_b, BackupOptions::default())
        .await
        .expect("backup after the damage");
    let dst = fx.tmp.path().join("dst_a-healed");
    reopened
        .restore(&fx.a.snapshot_id, &dst, RestoreOptions::default())
        .await
        .expect("A restores once its packs are indexed again");
    assert_same_tree(&fx.src_a, &dst);
}
