//! `ferry repo key` against a local-directory repository: the real binary, real files.
//! Changing the key keeps earlier snapshots readable; a wrong key says which keys work.

// The setup helpers below are test code too: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn rotate_the_key_and_keep_every_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1);
    let url = tmp.path().join("repo");
    let url = url.to_str().unwrap();
    let a = Repo::new(tmp.path(), url, 1);
    let b = Repo::new(tmp.path(), url, 2);
    let c = Repo::new(tmp.path(), url, 3);

    a.run(&["init"]).ok();
    let first = a
        .run(&["--json", "backup", src.to_str().unwrap()])
        .ok()
        .json();
    let snap_a = first["snapshot_id"].as_str().unwrap().to_string();

    let listed = a.run(&["key", "list", "--json"]).ok().json();
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["label"], "initial");
    assert_eq!(listed[0]["in_use"], true);
    assert_eq!(listed[0]["primary"], true);
    let fp_a = listed[0]["fingerprint"].as_str().unwrap().to_string();
    assert!(fp_a.starts_with("k-") && fp_a.len() == 18, "{fp_a}");

    // Add B: stdout is its fingerprint, for scripts.
    let added = a
        .run(&[
            "key",
            "add",
            "--new-key-file",
            b.key.to_str().unwrap(),
            "--label",
            "rotated",
        ])
        .ok();
    let fp_b = added.stdout.trim().to_string();
    assert!(fp_b.starts_with("k-") && fp_b != fp_a, "{added:#?}");
    assert!(added.stderr.contains("rotated"), "{added:#?}");

    // The table marks the key in use.
    let table = b.run(&["key", "list"]).ok().stdout;
    let star = table
        .lines()
        .find(|l| l.starts_with('*'))
        .unwrap_or_else(|| panic!("no key marked in use:\n{table}"));
    assert!(star.contains(&fp_b) && star.contains("rotated"), "{table}");
    assert!(
        table.contains(&fp_a) && table.contains("initial"),
        "{table}"
    );
    assert!(table.contains("2 key(s)"), "{table}");

    // C opens nothing: exit 12, naming C's fingerprint and both keys, no key bytes.
    let r = c.run(&["snapshots"]).code(12);
    assert!(r.stderr.contains("wrong key"), "{r:#?}");
    assert!(r.stderr.contains(&format!("{fp_a} \"initial\"")), "{r:#?}");
    assert!(r.stderr.contains(&format!("{fp_b} \"rotated\"")), "{r:#?}");
    assert!(r.stderr.contains("ferry repo key add"), "{r:#?}");

    // B restores what was backed up under A, byte for byte, and backs up itself.
    let dst = tmp.path().join("dst-a");
    b.run(&["restore", &snap_a, "--target", dst.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &dst);
    std::fs::write(src.join("new-under-b"), b"written with key B").unwrap();
    b.run(&["backup", src.to_str().unwrap()]).ok();

    // Removing the key in use needs another key; B removes A.
    let r = a.run(&["key", "remove", &fp_a]).code(1);
    assert!(r.stderr.contains("key in use"), "{r:#?}");
    assert!(r.stderr.contains(&fp_b), "{r:#?}");
    let removed = b.run(&["key", "remove", &fp_a]).ok();
    assert!(removed.stdout.contains(&fp_a), "{removed:#?}");

    // A now fails, saying B is the key that works.
    let r = a.run(&["snapshots"]).code(12);
    assert!(
        r.stderr.contains(&format!("this key (fingerprint {fp_a})")),
        "{r:#?}"
    );
    assert!(r.stderr.contains(&format!("{fp_b} \"rotated\"")), "{r:#?}");
    assert!(!r.stderr.contains("initial"), "{r:#?}");

    // Both snapshots restore with B, and the repository checks clean.
    let snaps = b.run(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps:#}");
    let dst = tmp.path().join("dst-latest");
    b.run(&["restore", "latest", "--target", dst.to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &dst);
    let check = b.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("no problems found"), "{check:#?}");

    // The last key cannot go, even with another key file given.
    let r = b
        .run(&[
            "key",
            "remove",
            &fp_b,
            "--other-key-file",
            c.key.to_str().unwrap(),
        ])
        .code(1);
    assert!(r.stderr.contains("only key"), "{r:#?}");
}

#[test]
fn key_mistakes_have_their_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("repo");
    let url = url.to_str().unwrap();
    let a = Repo::new(tmp.path(), url, 1);
    let b = Repo::new(tmp.path(), url, 2);
    a.run(&["init"]).ok();

    // Usage: a malformed fingerprint, the same key again, a missing new key file.
    let r = a.run(&["key", "remove", "k-12"]).code(2);
    assert!(r.stderr.contains("fingerprint"), "{r:#?}");
    let r = a
        .run(&["key", "add", "--new-key-file", a.key.to_str().unwrap()])
        .code(2);
    assert!(r.stderr.contains("already"), "{r:#?}");
    let missing = tmp.path().join("nope.key");
    let r = a
        .run(&["key", "add", "--new-key-file", missing.to_str().unwrap()])
        .code(1);
    assert!(r.stderr.contains("does not exist"), "{r:#?}");
    let r = a.run(&["key", "add"]).code(2);
    assert!(r.stderr.contains("--new-key-file"), "{r:#?}");

    // Without --label, the file's name labels the key.
    let added = a
        .run(&[
            "--json",
            "key",
            "add",
            "--new-key-file",
            b.key.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(added["label"], "key-2");
    assert_eq!(added["in_use"], false);
    let fp_b = added["fingerprint"].as_str().unwrap().to_string();

    // An unknown fingerprint is not "no repository" (10): 1, listing the keys.
    let r = a.run(&["key", "remove", "k-0000000000000000"]).code(1);
    assert!(r.stderr.contains(&fp_b), "{r:#?}");

    // The key in use goes when another key that stays is given.
    let fp_a = a.run(&["key", "list", "--json"]).ok().json()[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let removed = a
        .run(&[
            "--json",
            "key",
            "remove",
            &fp_a,
            "--other-key-file",
            b.key.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(removed["fingerprint"], fp_a.as_str());
    assert_eq!(removed["in_use"], true);
    a.run(&["snapshots"]).code(12);
    b.run(&["snapshots"]).ok();
}
