//! Starting and stopping the environment's processes.
//!
//! Test processes end in many ways (success, panic, a failed assertion that aborts, a
//! killed CI job), and none of them runs destructors of statics. So children started for
//! tests get `PR_SET_PDEATHSIG=SIGKILL` through `setpriv`: the kernel kills them when
//! the thread that forked them ends. That signal is tied to the forking *thread*, not the
//! process, so every child is forked by one supervisor thread that lives as long as the
//! process. Children started for `make dev-up` are detached into their own session
//! instead and stopped later by pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a started process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel when this process ends, however it ends (tests).
    WithThisProcess,
    /// Left running in its own session until stopped by pid (`make dev-up`).
    Detached,
}

type SpawnReply = mpsc::SyncSender<std::io::Result<Child>>;

fn supervisor() -> &'static mpsc::SyncSender<(Command, SpawnReply)> {
    static SUPERVISOR: OnceLock<mpsc::SyncSender<(Command, SpawnReply)>> = OnceLock::new();
    SUPERVISOR.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<(Command, SpawnReply)>(0);
        std::thread::Builder::new()
            .name("ferry-testenv-supervisor".into())
            .spawn(move || {
                // The sender lives in a static and is never dropped, so this loop (and
                // with it the parent thread of every child) lasts until the process ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the supervisor thread");
        tx
    })
}

/// A process of the environment, with its log file.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub program: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program args` with `envs`, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: &Path,
        lifetime: Lifetime,
    ) -> Result<Proc> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io("opening log", log))?;
        let err = out.try_clone().map_err(Error::io("opening log", log))?;
        let mut cmd = match lifetime {
            Lifetime::WithThisProcess => {
                let mut c = Command::new("setpriv");
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            Lifetime::Detached => {
                let mut c = Command::new("setsid");
                c.arg(program);
                c
            }
        };
        cmd.args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let spawned = match lifetime {
            Lifetime::WithThisProcess => {
                let (reply_tx, reply_rx) = mpsc::sync_channel(1);
                supervisor()
                    .send((cmd, reply_tx))
                    .map_err(|_| std::io::Error::other("supervisor thread is gone"))
                    .and_then(|()| {
                        reply_rx
                            .recv()
                            .map_err(|_| std::io::Error::other("supervisor thread is gone"))?
                    })
            }
            Lifetime::Detached => cmd.spawn(),
        };
        let child = spawned.map_err(|source| Error::Spawn {
            component: name.to_owned(),
            program: program.to_owned(),
            source,
        })?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Proc {
            name: name.to_owned(),
            program: program.to_owned(),
            log: log.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                component: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
            Err(e) => Err(Error::io("waiting for", &self.program)(e)),
        }
    }

    pub fn not_ready(&self, waited: Duration) -> Error {
        Error::NotReady {
            component: self.name.clone(),
            seconds: waited.as_secs(),
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// Stops the process now and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Lets the process run on after this handle is gone (for `ferry-testenv up`).
    pub fn release(self) -> u32 {
        let pid = self.child.id();
        std::mem::forget(self);
        pid
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let all: Vec<&str> = buf.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                // The state field follows the parenthesised command name; Z is a zombie.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state != "Z")
            })
            .unwrap_or(false)
}

/// Sends SIGTERM to each pid, waits up to `grace` for them to go, then SIGKILLs the rest.
pub fn stop_pids(pids: &[u32], grace: Duration) {
    let signal = |sig: &str, pid: u32| {
        let _ = Command::new("kill")
            .args([sig, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    };
    for &pid in pids {
        if pid_alive(pid) {
            signal("-TERM", pid);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| pid_alive(p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids {
        if pid_alive(pid) {
            signal("-KILL", pid);
        }
    }
}
