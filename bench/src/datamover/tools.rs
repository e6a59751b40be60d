//! The tools under test and how each is driven: Ferry through its `ferry repo` command,
//! the peers through theirs, each with its own repository, cache and config per target.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::measure::Cmd;

/// The same secret for every tool: restic and rustic take it from the environment,
/// kopia too, Ferry from a key file.
const PASSWORD: &str = "ferry-bench-correct-horse-battery-staple";

/// The pinned peer versions; the installer reads the same file.
const PEERS_ENV: &str = include_str!("../../peers.env");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tool {
    Ferry,
    Restic,
    Rustic,
    Kopia,
}

impl Tool {
    pub const ALL: [Tool; 4] = [Tool::Ferry, Tool::Restic, Tool::Rustic, Tool::Kopia];
    pub const PEERS: [Tool; 3] = [Tool::Restic, Tool::Rustic, Tool::Kopia];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Ferry => "ferry",
            Tool::Restic => "restic",
            Tool::Rustic => "rustic",
            Tool::Kopia => "kopia",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

fn pinned(key: &str) -> &'static str {
    PEERS_ENV
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("unknown")
}

/// The version the cache directory is keyed by.
pub fn version(tool: Tool) -> &'static str {
    match tool {
        Tool::Ferry => "workspace",
        // The Debian revision is not part of the tool's version.
        Tool::Restic => pinned("RESTIC_DEB_VERSION")
            .split('-')
            .next()
            .unwrap_or("unknown"),
        Tool::Rustic => pinned("RUSTIC_VERSION"),
        Tool::Kopia => pinned("KOPIA_VERSION"),
    }
}

/// Where a tool's binary is, or why it cannot run.
pub fn locate(tool: Tool, cache: &Path) -> std::result::Result<PathBuf, String> {
    let name = tool.name();
    if tool == Tool::Ferry {
        if let Some(p) = std::env::var_os("FERRY_BIN") {
            return Ok(PathBuf::from(p));
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest.parent().unwrap_or(manifest);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|d| workspace.join(d))
            .unwrap_or_else(|| workspace.join("target"));
        let bin = target.join("release").join("ferry");
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "not built at {}: run `cargo build --release -p ferry-cli` (or set FERRY_BIN)",
                bin.display()
            ))
        };
    }
    let dir = cache.join(format!("{name}-{}", version(tool)));
    let bin = dir.join("bin").join(name);
    if bin.is_file() {
        return Ok(bin);
    }
    let skipped = cache.join(format!("{name}-{}.skipped", version(tool)));
    match std::fs::read_to_string(&skipped) {
        Ok(why) => Err(why.trim().replace('\n', " | ")),
        Err(_) => Err(format!(
            "not installed at {}: run bench/install-peers.sh",
            bin.display()
        )),
    }
}

/// The S3 server, as every tool needs to be told about it.
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

/// Where a repository lives.
#[derive(Debug, Clone)]
pub enum Location {
    Dir(PathBuf),
    /// Under `prefix` in the bucket.
    S3 {
        s3: S3,
        prefix: String,
    },
}

/// One tool's repository on one target, with the tool's own state (cache, config) beside
/// it and never inside it, so repository sizes count only the repository.
#[derive(Debug)]
pub struct Repo {
    pub tool: Tool,
    pub bin: PathBuf,
    pub location: Location,
    pub state: PathBuf,
}

impl Repo {
    pub fn new(tool: Tool, bin: &Path, location: Location, state: &Path) -> Result<Repo> {
        for d in ["cache", "config", "logs"] {
            std::fs::create_dir_all(state.join(d))
                .with_context(|| format!("creating {}", state.join(d).display()))?;
        }
        if tool == Tool::Ferry {
            std::fs::write(state.join("key"), format!("{PASSWORD}\n"))?;
        }
        Ok(Repo {
            tool,
            bin: bin.to_owned(),
            location,
            state: state.to_owned(),
        })
    }

    /// restic-style URL, as Ferry and restic take it.
    fn url(&self) -> String {
        match &self.location {
            Location::Dir(d) => d.display().to_string(),
            Location::S3 { s3, prefix } => format!("s3:{}/{}/{prefix}", s3.endpoint, s3.bucket),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
        let state = self.state.display().to_string();
        match self.tool {
            Tool::Ferry => {}
            Tool::Restic => set("RESTIC_PASSWORD", PASSWORD),
            Tool::Rustic => {
                set("RUSTIC_PASSWORD", PASSWORD);
                set("RUSTIC_CACHE_DIR", &format!("{state}/cache"));
                // Never a profile of the person running the bench.
                set("XDG_CONFIG_HOME", &format!("{state}/config"));
            }
            Tool::Kopia => {
                set("KOPIA_PASSWORD", PASSWORD);
                set("KOPIA_CHECK_FOR_UPDATES", "false");
                set("KOPIA_LOG_DIR", &format!("{state}/logs"));
            }
        }
        if let Location::S3 { s3, prefix } = &self.location {
            if self.tool == Tool::Rustic {
                // rustic reaches S3 through its OpenDAL backend, configured by OPENDAL_*.
                set("OPENDAL_ENDPOINT", &s3.endpoint);
                set("OPENDAL_BUCKET", &s3.bucket);
                set("OPENDAL_ROOT", &format!("/{prefix}"));
                set("OPENDAL_REGION", &s3.region);
                set("OPENDAL_ACCESS_KEY_ID", &s3.access_key);
                set("OPENDAL_SECRET_ACCESS_KEY", &s3.secret_key);
            } else {
                set("AWS_ACCESS_KEY_ID", &s3.access_key);
                set("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
                set("AWS_REGION", &s3.region);
                set("AWS_DEFAULT_REGION", &s3.region);
            }
        }
        env
    }

    fn cmd(&self) -> Cmd {
        let env = self.env();
        let state = &self.state;
        let c = Cmd::new(&self.bin, state).envs(&env);
        match self.tool {
            Tool::Ferry => c
                .args(["repo", "-r"])
                .arg(self.url())
                .arg("--key-file")
                .arg(state.join("key")),
            Tool::Restic => c
                .arg("-r")
                .arg(self.url())
                .arg("--cache-dir")
                .arg(state.join("cache")),
            Tool::Rustic => {
                let repo = match &self.location {
                    Location::Dir(d) => d.display().to_string(),
                    Location::S3 { .. } => "opendal:s3".to_owned(),
                };
                c.arg("-r").arg(repo).arg("--no-progress")
            }
            Tool::Kopia => c
                .arg("--config-file")
                .arg(state.join("config/kopia.config")),
        }
    }

    /// Set-up commands (untimed): create the repository.
    pub fn init(&self) -> Vec<Cmd> {
        match self.tool {
            Tool::Ferry | Tool::Restic | Tool::Rustic => vec![self.cmd().arg("init")],
            Tool::Kopia => {
                let create = self.cmd().args(["repository", "create"]);
                let create = match &self.location {
                    Location::Dir(d) => create.arg("filesystem").arg("--path").arg(d),
                    Location::S3 { s3, prefix } => create
                        .args(["s3", "--bucket", &s3.bucket, "--prefix"])
                        .arg(format!("{prefix}/"))
                        .arg("--endpoint")
                        .arg(s3.endpoint.trim_start_matches("http://"))
                        .args(["--disable-tls", "--region", &s3.region])
                        .args(["--access-key", &s3.access_key])
                        .args(["--secret-access-key", &s3.secret_key]),
                };
                vec![
                    create
                        .arg("--cache-directory")
                        .arg(self.state.join("cache")),
                    // kopia alone compresses nothing by default; the others all use zstd.
                    self.cmd()
                        .args(["policy", "set", "--global", "--compression", "zstd"]),
                ]
            }
        }
    }

    /// Backs up `data`; an earlier snapshot of the same path is the parent.
    pub fn backup(&self, data: &Path) -> Cmd {
        match self.tool {
            Tool::Ferry | Tool::Restic | Tool::Rustic => self.cmd().arg("backup").arg(data),
            Tool::Kopia => self.cmd().args(["snapshot", "create"]).arg(data),
        }
    }

    /// Restores the latest snapshot of `data` into the empty directory `dest`.
    pub fn restore(&self, data: &Path, dest: &Path) -> Cmd {
        match self.tool {
            // Ferry's CLI ends a restore with a sync of the file system by default; the
            // peers leave their writes to the kernel's writeback, so every tool is
            // timed to the same point (on a disk the sync alone takes about a second).
            Tool::Ferry => self
                .cmd()
                .args(["restore", "latest", "--no-fsync", "--target"])
                .arg(dest),
            Tool::Restic => self.cmd().args(["restore", "latest", "--target"]).arg(dest),
            Tool::Rustic => self.cmd().args(["restore", "latest"]).arg(dest),
            // A source path restores its latest snapshot.
            Tool::Kopia => self.cmd().args(["snapshot", "restore"]).arg(data).arg(dest),
        }
    }
}
