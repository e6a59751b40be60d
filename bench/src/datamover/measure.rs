//! Running a tool as a process and measuring it: wall time here, CPU seconds and peak RSS
//! from GNU time (the workspace forbids the unsafe code a wait4 call would need).

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub const GNU_TIME: &str = "/usr/bin/time";

/// A command line with its environment; `Display` shows it for logs.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

impl Cmd {
    pub fn new(program: &Path, cwd: &Path) -> Self {
        Cmd {
            program: program.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.to_owned(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn envs(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    fn line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.cwd).envs(self.env.iter().cloned());
        c.stdin(Stdio::null());
        c
    }
}

/// What one run cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// Runs `cmd` under GNU time, output appended to `log`. A non-zero exit is an error that
/// quotes the end of the log.
pub fn measured(cmd: &Cmd, log: &Path) -> Result<Usage> {
    let times = log.with_extension("time");
    let out = open_log(log, cmd)?;
    let start = Instant::now();
    let status = cmd
        .command(Path::new(GNU_TIME))
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(&times)
        .arg(&cmd.program)
        .args(&cmd.args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| {
            format!("starting {GNU_TIME}: install GNU time (apt-get install time, or bench/install-peers.sh)")
        })?;
    let wall_s = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("`{}` failed ({status}): {}", cmd.line(), tail(log));
    }
    let text = std::fs::read_to_string(&times)?;
    // GNU time writes a "Command exited with non-zero status" line first on failure; the
    // figures are always the last line.
    let last = text.lines().last().unwrap_or_default();
    let f: Vec<&str> = last.split_whitespace().collect();
    let parse = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unexpected GNU time output {last:?}"))
    };
    Ok(Usage {
        wall_s,
        cpu_s: parse(0)? + parse(1)?,
        peak_rss_kib: parse(2)? as u64,
    })
}

/// Runs `cmd` untimed (set-up steps), returning its stdout; stderr goes to `log`.
pub fn plain(cmd: &Cmd, log: &Path) -> Result<String> {
    let out = open_log(log, cmd)?;
    let output = cmd
        .command(&cmd.program)
        .args(&cmd.args)
        .stderr(out)
        .output()
        .with_context(|| format!("starting {}", cmd.program.display()))?;
    if !output.status.success() {
        bail!("`{}` failed ({}): {}", cmd.line(), output.status, tail(log));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn open_log(log: &Path, cmd: &Cmd) -> Result<File> {
    use std::io::Write;
    let mut f = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(f, "$ {}", cmd.line())?;
    Ok(f)
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(6);
    format!(
        "{} (full log: {})",
        lines[start..].join(" | "),
        log.display()
    )
}
