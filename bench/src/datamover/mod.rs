//! `make bench-datamover`: Ferry's data mover against restic, rustic and kopia, on the
//! same generated data, in the same run, to a local directory and to the S3 server.
//!
//! Per tool and target: first backup, second backup with nothing changed, backup after
//! 1% of the bytes changed in place, restore of the latest snapshot (checked against the
//! source byte for byte). Tools run one after another, never at once.

mod dataset;
mod measure;
mod report;
mod rng;
mod tools;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use dataset::{DataSet, Digest};
use measure::Usage;
pub use report::Case;
use report::{Outcome, Report, Row};
pub use tools::Tool;
use tools::{Location, Repo, S3};

/// Seed of the 1% change, fixed so every run changes the same bytes.
const CHANGE_SEED: u64 = 0x0f_e77e;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
    S3,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::S3 => "s3",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Multiplies every size and file count of the data set (1.0 is about 1.2 GiB).
    pub scale: f64,
    /// Scratch space: data set, repositories, restores, logs.
    pub dir: PathBuf,
    /// Where the peers are installed (`<cache>/bench`).
    pub peers: PathBuf,
    pub tools: Vec<Tool>,
    pub targets: Vec<Target>,
    /// Drop the page cache before every timed step (needs write access to
    /// /proc/sys/vm/drop_caches); off by default because it is machine-wide.
    pub drop_caches: bool,
    /// Where restores go: a tmpfs by default (see [`default_restore_dir`]).
    pub restore_dir: PathBuf,
    /// Keep the local repositories after the run, to inspect what each tool stored.
    pub keep: bool,
}

impl Config {
    /// From `FERRY_BENCH_SCALE`, `FERRY_BENCH_DIR`, `FERRY_BENCH_TOOLS`,
    /// `FERRY_BENCH_TARGETS`, `FERRY_BENCH_DROP_CACHES`, `FERRY_BENCH_RESTORE_DIR`,
    /// `FERRY_BENCH_KEEP` and `FERRY_CACHE`.
    pub fn from_env() -> Result<Config> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let scale: f64 = var("FERRY_BENCH_SCALE")
            .map(|v| v.parse())
            .transpose()
            .context("FERRY_BENCH_SCALE must be a number such as 0.25 or 2")?
            .unwrap_or(1.0);
        if !(scale > 0.0 && scale <= 64.0) {
            bail!("FERRY_BENCH_SCALE must be in (0, 64], got {scale}");
        }
        let cache = ferry_testenv::cache_root().join("bench");
        let dir = var("FERRY_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join("run"));
        let tools = match var("FERRY_BENCH_TOOLS") {
            None => Tool::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .map(|n| {
                    Tool::ALL
                        .into_iter()
                        .find(|t| t.name() == n.trim())
                        .with_context(|| format!("FERRY_BENCH_TOOLS: unknown tool {n:?} (ferry, restic, rustic, kopia)"))
                })
                .collect::<Result<_>>()?,
        };
        let targets = match var("FERRY_BENCH_TARGETS") {
            None => vec![Target::Local, Target::S3],
            Some(list) => list
                .split(',')
                .map(|n| match n.trim() {
                    "local" => Ok(Target::Local),
                    "s3" => Ok(Target::S3),
                    other => bail!("FERRY_BENCH_TARGETS: unknown target {other:?} (local, s3)"),
                })
                .collect::<Result<_>>()?,
        };
        Ok(Config {
            scale,
            dir: absolute(&dir)?,
            peers: cache,
            tools,
            targets,
            drop_caches: var("FERRY_BENCH_DROP_CACHES").is_some_and(|v| v == "1"),
            restore_dir: match var("FERRY_BENCH_RESTORE_DIR") {
                Some(d) => absolute(Path::new(&d))?,
                None => default_restore_dir(&dir),
            },
            keep: var("FERRY_BENCH_KEEP").is_some_and(|v| v == "1"),
        })
    }
}

/// Restores go to a tmpfs when there is one. On a disk file system the time to create
/// 30,000 files depends on what the file system went through before: on this
/// machine's ext4 (no journal) a restore into a fresh directory took from 2.9 to 8 s
/// for the same snapshot, most of it in the kernel's inode allocator
/// (`find_inode_bit`, `recently_deleted`), depending on earlier creates and deletes
/// by whichever tool ran before. On tmpfs it takes the same time every run, so the
/// figures compare the tools, not the file system's history.
fn default_restore_dir(bench_dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let probe = shm.join(format!("ferry-bench-probe-{}", std::process::id()));
        if std::fs::create_dir(&probe).is_ok() {
            let _ = std::fs::remove_dir(&probe);
            return shm.join("ferry-bench-restore");
        }
    }
    bench_dir.join("restore")
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Runs the whole bench and prints the report; the last line printed is the `summary:`
/// line. Returns whether every Ferry step succeeded and every Ferry restore matched.
pub fn run(cfg: &Config) -> Result<bool> {
    let started = Instant::now();
    print_machine(cfg);
    let (tools, skipped) = locate_tools(cfg)?;
    let logs = cfg.dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let t = Instant::now();
    let (ds, reused) = DataSet::prepare(&cfg.dir.join("data"), cfg.scale)?;
    println!(
        "data set: {:.0} MiB in {} files at {} ({} in {:.1}s)",
        ds.bytes as f64 / MIB,
        ds.files.len(),
        ds.root.display(),
        if reused { "reused" } else { "generated" },
        t.elapsed().as_secs_f64()
    );
    for (kind, n, bytes) in ds.composition() {
        println!(
            "  {:<12} {n:>6} files {:>8.1} MiB",
            kind.label(),
            bytes as f64 / MIB
        );
    }
    let drop_caches = cfg.drop_caches && can_drop_caches();
    if drop_caches {
        println!("page cache: dropped before every timed step (cold reads)");
    } else {
        println!(
            "page cache: warm for every tool (an untimed read of the whole data set comes first; \
             FERRY_BENCH_DROP_CACHES=1 drops it instead where /proc/sys/vm/drop_caches is writable)"
        );
    }
    println!(
        "restores go to {} (FERRY_BENCH_RESTORE_DIR sets another place)",
        cfg.restore_dir.display()
    );
    let t = Instant::now();
    let original = dataset::digest(&ds.root)?;
    println!("warm-up read and digest: {:.1}s", t.elapsed().as_secs_f64());

    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    let mut changed_bytes = 0;
    // Kept alive until the end: dropping it stops MinIO.
    let mut _env = None;
    for &target in &cfg.targets {
        let s3 = if target == Target::S3 {
            let (env, s3) = start_s3(cfg, &rt)?;
            _env = Some(env);
            Some(s3)
        } else {
            None
        };
        let run = TargetRun {
            cfg,
            target,
            ds: &ds,
            original: &original,
            s3: s3.as_ref(),
            rt: &rt,
            logs: &logs,
            drop_caches,
        };
        changed_bytes = run.run(&tools, &mut rows)?;
    }

    let cx = report::Context {
        data_bytes: ds.bytes,
        changed_bytes,
        scale: cfg.scale,
        skipped,
    };
    let report = Report::new(&rows, &cx);
    println!();
    print!("{}", report.table());
    println!();
    print!("{}", report.ratio_table());
    println!();
    print!("{}", report.ferry_figures());
    println!(
        "logs: {}; whole bench {:.0}s; load average at the end {}",
        logs.display(),
        started.elapsed().as_secs_f64(),
        load_average()
    );
    println!("{}", report.summary());
    Ok(report.ferry_ok())
}

/// The tools to compare (each found, or skipped with the reason), Ferry's as a private
/// copy: Ferry is rebuilt often while people work, and the run keeps one binary.
#[allow(clippy::type_complexity)]
fn locate_tools(cfg: &Config) -> Result<(Vec<(Tool, PathBuf)>, Vec<(Tool, String)>)> {
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    for &tool in &cfg.tools {
        match tools::locate(tool, &cfg.peers) {
            Ok(bin) => {
                println!("{tool} {}: {}", tools::version(tool), bin.display());
                tools.push((tool, bin));
            }
            Err(why) => {
                println!("{tool} skipped: {why}");
                skipped.push((tool, why));
            }
        }
    }
    std::fs::create_dir_all(&cfg.dir)?;
    for (tool, bin) in tools.iter_mut().filter(|(t, _)| *t == Tool::Ferry) {
        let copy = cfg.dir.join("bin").join(tool.name());
        std::fs::create_dir_all(cfg.dir.join("bin"))?;
        std::fs::copy(&*bin, &copy)
            .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
        *bin = copy;
    }
    Ok((tools, skipped))
}

/// MinIO from the test environment (it stops when the returned environment is
/// dropped), and how the tools reach it.
fn start_s3(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
) -> Result<(ferry_testenv::TestEnv, (S3, aws_sdk_s3::Client))> {
    let dir = cfg.dir.join("testenv");
    let _ = std::fs::remove_dir_all(&dir);
    let spec = ferry_testenv::EnvSpec {
        clusters: vec![],
        s3: true,
        nodes_per_cluster: 0,
        previous_minor: None,
    };
    let env = rt
        .block_on(ferry_testenv::TestEnv::start(
            &spec,
            &dir,
            ferry_testenv::Lifetime::WithThisProcess,
        ))
        .context(
            "starting the S3 server (MinIO) of the test environment; `make testenv` builds it",
        )?;
    let info = env.s3()?.clone();
    println!("S3 server: {} bucket {}", info.endpoint, info.bucket);
    let s3 = S3 {
        endpoint: info.endpoint.clone(),
        region: info.region.clone(),
        bucket: info.bucket.clone(),
        access_key: info.access_key.clone(),
        secret_key: info.secret_key.clone(),
    };
    Ok((env, (s3, info.client())))
}

const MIB: f64 = 1024.0 * 1024.0;

fn print_machine(cfg: &Config) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(str::trim)
                    .map(str::to_owned)
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "bench-datamover {date}: {cores} cores ({cpu}), {mem_gib:.0} GiB RAM, load average {}, scale {}",
        load_average(),
        cfg.scale
    );
}

/// Other work on the machine skews wall times; the report says how busy it was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn can_drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// One target's four cases for every tool.
struct TargetRun<'a> {
    cfg: &'a Config,
    target: Target,
    ds: &'a DataSet,
    original: &'a Digest,
    s3: Option<&'a (S3, aws_sdk_s3::Client)>,
    rt: &'a tokio::runtime::Runtime,
    logs: &'a Path,
    drop_caches: bool,
}

impl TargetRun<'_> {
    /// Appends a row per tool and case; returns the bytes the 1% change overwrote.
    fn run(&self, tools: &[(Tool, PathBuf)], rows: &mut Vec<Row>) -> Result<u64> {
        let name = self.target.name();
        let work = self.cfg.dir.join("work").join(name);
        // Repositories of an earlier (perhaps interrupted) run go first.
        let _ = std::fs::remove_dir_all(&work);
        let run_id = format!("bench-{}", std::process::id());
        let mut repos = Vec::new();
        for (tool, bin) in tools {
            let location = match self.s3 {
                None => Location::Dir(work.join(tool.name()).join("repo")),
                Some((s3, _)) => Location::S3 {
                    s3: s3.clone(),
                    prefix: format!("{run_id}/{tool}"),
                },
            };
            let repo = Repo::new(*tool, bin, location, &work.join(tool.name()).join("state"))?;
            let log = self.log(*tool);
            let init = repo
                .init()
                .iter()
                .try_for_each(|c| measure::plain(c, &log).map(drop));
            match init {
                Ok(()) => repos.push(repo),
                Err(e) => {
                    println!("[{name}] {tool}: init failed: {e:#}");
                    for case in Case::ALL {
                        rows.push(self.row(case, *tool, Err(format!("init failed: {e:#}"))));
                    }
                }
            }
        }

        for case in [Case::FirstBackup, Case::SecondBackup] {
            for repo in &repos {
                rows.push(self.backup(case, repo));
            }
        }
        let mutation = dataset::mutate(self.ds, 0.01, CHANGE_SEED)?;
        let changed_bytes = mutation.changed_bytes;
        println!(
            "[{name}] changed {:.1} MiB in place in {} files",
            changed_bytes as f64 / MIB,
            mutation.files
        );
        // Also re-warms the changed files for every tool alike.
        let changed = dataset::digest(&self.ds.root)?;
        for repo in &repos {
            rows.push(self.backup(Case::ChangedBackup, repo));
        }
        for repo in &repos {
            rows.push(self.restore(Case::Restore, repo, &changed));
        }
        for repo in &repos {
            rows.push(self.restore(Case::RestoreDisk, repo, &changed));
        }
        dataset::revert(self.ds, mutation)?;
        let back = dataset::digest(&self.ds.root)?;
        if dataset::compare(self.original, &back).is_some() {
            bail!("the data set did not return to its original bytes after the 1% change");
        }
        // The next target starts clean; S3 prefixes go with the server.
        if self.cfg.keep {
            println!("[{name}] repositories kept under {}", work.display());
        } else {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(changed_bytes)
    }

    fn log(&self, tool: Tool) -> PathBuf {
        self.logs.join(format!("{}-{tool}.log", self.target.name()))
    }

    fn row(&self, case: Case, tool: Tool, result: Result<Outcome, String>) -> Row {
        Row {
            target: self.target.name(),
            case,
            tool,
            result,
        }
    }

    fn timed(&self, cmd: &measure::Cmd, tool: Tool) -> Result<Usage> {
        if self.drop_caches {
            let _ = std::process::Command::new("sync").status();
            let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
        }
        measure::measured(cmd, &self.log(tool))
    }

    fn backup(&self, case: Case, repo: &Repo) -> Row {
        let result = (|| {
            let before = self.repo_bytes(repo)?;
            let usage = self.timed(&repo.backup(&self.ds.root), repo.tool)?;
            let after = self.repo_bytes(repo)?;
            Ok(Outcome {
                usage,
                repo_bytes: after,
                added_bytes: after.saturating_sub(before),
                verified: None,
            })
        })();
        self.finish(case, repo.tool, result)
    }

    /// A restore into the restore directory, or (`Case::RestoreDisk`) into a directory
    /// on the bench directory's disk.
    fn restore(&self, case: Case, repo: &Repo, expected: &Digest) -> Row {
        let dest = match case {
            Case::RestoreDisk => self.cfg.dir.join("restore-disk"),
            _ => self.cfg.restore_dir.clone(),
        };
        let result = (|| {
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir_all(&dest)?;
            let usage = self.timed(&repo.restore(&self.ds.root, &dest), repo.tool)?;
            let verified = dataset::find_restored_root(&dest)
                .and_then(|root| dataset::digest(&root))
                .map_err(|e| format!("{e:#}"))
                .and_then(|got| match dataset::compare(expected, &got) {
                    None => Ok(()),
                    Some(diff) => Err(diff),
                });
            let _ = std::fs::remove_dir_all(&dest);
            Ok(Outcome {
                usage,
                repo_bytes: self.repo_bytes(repo)?,
                added_bytes: 0,
                verified: Some(verified),
            })
        })();
        self.finish(case, repo.tool, result)
    }

    fn finish(&self, case: Case, tool: Tool, result: Result<Outcome>) -> Row {
        let name = self.target.name();
        match &result {
            Ok(o) => println!(
                "[{name}] {:<15} {tool:<7} {:>7.2}s wall {:>7.2}s CPU {:>5.0} MiB RSS{}",
                case.key(),
                o.usage.wall_s,
                o.usage.cpu_s,
                o.usage.peak_rss_kib as f64 / 1024.0,
                match &o.verified {
                    Some(Ok(())) => "  restore equals source".to_owned(),
                    Some(Err(e)) => format!("  RESTORE DIFFERS: {e}"),
                    None => String::new(),
                }
            ),
            Err(e) => println!("[{name}] {:<15} {tool:<7} failed: {e:#}", case.key()),
        }
        self.row(case, tool, result.map_err(|e| format!("{e:#}")))
    }

    fn repo_bytes(&self, repo: &Repo) -> Result<u64> {
        match &repo.location {
            Location::Dir(d) => dir_bytes(d),
            Location::S3 { s3, prefix } => {
                let client = &self.s3.context("S3 repository without a server")?.1;
                self.rt.block_on(bucket_bytes(client, &s3.bucket, prefix))
            }
        }
    }
}

/// Apparent size of every file under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Sum of object sizes under `prefix/`.
async fn bucket_bytes(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<u64> {
    let mut total = 0u64;
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{prefix}/"))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("listing s3 bucket {bucket} under {prefix}/"))?;
        total += page
            .contents()
            .iter()
            .filter_map(|o| o.size())
            .map(|s| s.max(0) as u64)
            .sum::<u64>();
    }
    Ok(total)
}
