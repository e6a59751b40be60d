//! Helpers for driving the real `ferry` binary against real files.

// Each test binary uses a different subset; a failed setup step is a failed test.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod control;
pub mod metrics;
pub mod volumes;

/// CA certificates every `ferry` of this test process trusts (FERRY_CA_FILE).
static CA_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every later [`ferry`] trust the CAs in `path` (Ferries serving TLS).
pub fn trust_ca_file(path: &Path) {
    CA_FILE
        .set(path.to_owned())
        .expect("one CA file per test process");
}

/// `ferry` with no repository, key or log settings inherited from the caller.
pub fn ferry() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("FERRY_REPOSITORY")
        .env_remove("FERRY_KEY_FILE")
        .env_remove("RUST_LOG");
    if let Some(ca) = CA_FILE.get() {
        cmd.env("FERRY_CA_FILE", ca);
    }
    cmd
}

/// A repository location and key file for `ferry repo`.
#[derive(Debug, Clone)]
pub struct Repo {
    pub url: String,
    pub key: PathBuf,
}

impl Repo {
    /// A key file with 32 random bytes in `dir`, and the repository `url`.
    pub fn new(dir: &Path, url: impl Into<String>, seed: u64) -> Self {
        let key = dir.join(format!("key-{seed}"));
        fs::write(&key, random_bytes(32, seed)).unwrap();
        Repo {
            url: url.into(),
            key,
        }
    }

    /// `ferry repo -r URL --key-file KEY ARGS...`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = ferry();
        cmd.arg("repo")
            .arg("-r")
            .arg(&self.url)
            .arg("--key-file")
            .arg(&self.key)
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    /// A repository under a fresh prefix (named after `name`) of the test S3 bucket.
    pub fn on_s3(dir: &Path, s3: &ferry_testenv::S3Info, name: &str, seed: u64) -> Self {
        let prefix = ferry_testenv::unique_name(name);
        Repo::new(
            dir,
            format!("s3:{}/{}/{prefix}", s3.endpoint, s3.bucket),
            seed,
        )
    }

    /// [`Repo::cmd`] with the test S3 server's credentials passed the usual AWS way.
    pub fn s3_cmd(&self, s3: &ferry_testenv::S3Info, args: &[&str]) -> Command {
        let mut cmd = self.cmd(args);
        cmd.env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key)
            .env("AWS_REGION", &s3.region);
        cmd
    }
}

/// Runs `cmd` on a blocking thread: a child process blocks, so it stays off the
/// runtime's worker threads.
pub async fn run_blocking(mut cmd: Command) -> Run {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

/// A finished command with its output as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().expect("spawning ferry"))
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts exit status 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "ferry failed: {self:#?}");
        self
    }

    /// Asserts the exit status and returns self.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit status: {self:#?}");
        self
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:#?}"))
    }
}

/// A number from a JSON object, panicking with the object when it is absent.
#[track_caller]
pub fn num(v: &serde_json::Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field:?} in {v:#}"))
}

pub use ferry_testenv::random_bytes;

/// Writes a tree with text, random binaries, nested and empty directories, a
/// symlink, an empty file and varied modes. Returns the number of regular files.
pub fn make_tree(root: &Path, seed: u64) -> u64 {
    let mut files = 0;
    let mut write = |rel: &str, data: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        files += 1;
    };
    let text: String = (0..20_000)
        .map(|i| format!("line {i} of a log that compresses well\n"))
        .collect();
    write("text/app.log", text.as_bytes(), 0o644);
    write("text/README.md", b"# readme\nhello\n", 0o600);
    write("bin/tool", &random_bytes(3 << 20, seed), 0o755);
    write("a/b/c/d/deep.bin", &random_bytes(1 << 20, seed + 1), 0o640);
    write("a/b/small.txt", b"small", 0o644);
    write("empty-file", b"", 0o644);
    for i in 0..20 {
        write(
            &format!("many/f{i:02}"),
            format!("file number {i}\n").as_bytes(),
            0o644,
        );
    }
    fs::create_dir_all(root.join("a/empty-dir")).unwrap();
    std::os::unix::fs::symlink("../text/app.log", root.join("a/log-link")).unwrap();
    files
}

/// The bytes of every regular file under `root` (links not followed).
pub fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            total += tree_bytes(&entry.path());
        } else if kind.is_file() {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

/// Asserts that two trees hold the same names, kinds, modes, symlink targets and bytes.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let (na, nb) = (names(a), names(b));
    assert_eq!(na, nb, "entries of {} and {}", a.display(), b.display());
    for name in na {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "kind of {}", pb.display());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
            continue;
        }
        assert_eq!(
            ma.permissions().mode(),
            mb.permissions().mode(),
            "mode of {}",
            pb.display()
        );
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {} differs",
                pb.display()
            );
        }
    }
}

/// Pack files (`packs/<xx>/<64 hex>`) of a local repository, as (id, path).
pub fn packs(repo: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(repo.join("packs")) else {
        return out;
    };
    for d in dirs.flatten() {
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            // Skips the backend's temporary files (".<name>.tmp-…") mid-write.
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push((name, f.path()));
            }
        }
    }
    out
}
