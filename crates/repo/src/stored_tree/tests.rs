use super::*;
use crate::tree::NodeKind;

fn keys() -> Keys {
    Keys::from_master(&[7u8; 32]).unwrap()
}

fn file(name: &str, parts: usize, seed: u8) -> Node {
    let mut n = Node::new(name, NodeKind::File);
    n.content = (0..parts)
        .map(|i| ContentPart::Chunk {
            id: Id::of_content(&[seed, (i % 251) as u8, (i / 251) as u8, (i / 63001) as u8]),
            len: 1000 + i as u32 % 7,
        })
        .collect();
    n.size = n.content.iter().map(ContentPart::len).sum();
    n
}

fn big_tree(files: usize) -> Tree {
    Tree {
        nodes: (0..files)
            .map(|i| file(&format!("f{i:05}"), 1 + i % 3, i as u8))
            .collect(),
    }
}

#[test]
fn format_1_trees_are_stored_as_before() {
    let t = big_tree(100);
    let enc = encode_tree(&t, &keys(), false).unwrap();
    assert_eq!(enc.blobs.len(), 1);
    assert_eq!(enc.blobs[0].1, t.to_bytes().unwrap());
}

#[test]
fn small_trees_stay_one_blob() {
    let t = big_tree(TREE_INLINE_MAX);
    let enc = encode_tree(&t, &keys(), true).unwrap();
    assert_eq!(enc.blobs.len(), 1);
}

#[test]
fn one_changed_entry_rewrites_one_run_per_level() {
    let k = keys();
    let t = big_tree(1000);
    let before = encode_tree(&t, &k, true).unwrap();
    let old: std::collections::HashSet<Id> = before.blobs.iter().map(|b| b.0).collect();
    let all: usize = before.blobs.iter().map(|b| b.1.len()).sum();
    for i in (0..1000).step_by(37) {
        let mut t = t.clone();
        t.nodes[i].mtime_ns += 1;
        let after = encode_tree(&t, &k, true).unwrap();
        let new: Vec<&(Id, Vec<u8>)> = after.blobs.iter().filter(|b| !old.contains(&b.0)).collect();
        // The changed run and one list per level above it: 1,000 entries make
        // about 250 runs, 31 runs of runs, 4 of those, and the root.
        assert!(new.len() <= 5, "entry {i}: {} new blobs", new.len());
        // Boundaries come from names, not from what changed: none moved.
        assert_eq!(before.blobs.len(), after.blobs.len(), "entry {i}");
        let new_bytes: usize = new.iter().map(|b| b.1.len()).sum();
        assert!(
            new_bytes * 5 < all,
            "entry {i}: {new_bytes} of {all} bytes rewritten"
        );
    }
}

#[test]
fn json_blobs_of_the_first_format_2_writers_still_load() {
    let k = keys();
    let id = Id::from_bytes([1; 32]);
    let tree = StoredTree {
        nodes: Vec::new(),
        runs: vec![TreeRef { id, nodes: 3 }],
    };
    let json = serde_json::to_vec(&tree).unwrap();
    let back = parse_tree(&json, &k.blob_id(&json), "tree").unwrap();
    assert_eq!(back.runs, tree.runs);
    let content = StoredContent {
        parts: vec![ContentPart::Chunk { id, len: 9 }],
        runs: Vec::new(),
    };
    let json = serde_json::to_vec(&content).unwrap();
    let back = parse_content(&json, &id).unwrap();
    assert_eq!(back.parts, content.parts);
    // A blob of the wrong kind names the blob and what it found.
    let wrong = binary::encode_content(&content);
    let err = parse_tree(&wrong, &id, "tree run").unwrap_err().to_string();
    assert!(
        err.contains(&id.to_hex()) && err.contains("content run where a tree"),
        "{err}"
    );
}

#[test]
fn a_change_in_a_long_file_rewrites_a_few_content_runs() {
    let k = keys();
    let mut t = Tree {
        nodes: vec![file("image", 20_000, 1)],
    };
    let before = encode_tree(&t, &k, true).unwrap();
    t.nodes[0].content[10_000] = ContentPart::Chunk {
        id: Id::of_content(b"changed"),
        len: 1003,
    };
    let after = encode_tree(&t, &k, true).unwrap();
    let old: std::collections::HashSet<Id> = before.blobs.iter().map(|b| b.0).collect();
    let new: usize = after
        .blobs
        .iter()
        .filter(|b| !old.contains(&b.0))
        .map(|b| b.1.len())
        .sum();
    let all: usize = after.blobs.iter().map(|b| b.1.len()).sum();
    // 20,000 parts: ~625 runs, more than one level of refs.
    assert!(new * 20 < all, "{new} of {all} bytes rewritten");
}

#[test]
fn split_runs_cuts_at_boundaries_and_max() {
    let runs = split_runs((0..10).collect(), 4, |x| *x == 2);
    assert_eq!(runs, vec![vec![0, 1, 2], vec![3, 4, 5, 6], vec![7, 8, 9]]);
}
