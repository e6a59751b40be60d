//! `ferry repo unlock [--remove-all]`: removes locks whose holders are gone (expired),
//! or with `--remove-all` every lock.

use clap::Args;
use ferry_repo::FoundLock;
use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::output::{print, print_json, rfc3339};
use crate::signal::or_interrupted;

/// Arguments of `ferry repo unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove live locks too. Only when no other ferry process uses the repository:
    /// a prune could then delete data a running backup relies on.
    #[arg(long)]
    pub remove_all: bool,
}

#[derive(Serialize)]
struct LockJson {
    key: String,
    hostname: Option<String>,
    pid: Option<u32>,
    purpose: Option<String>,
    exclusive: Option<bool>,
    created: Option<String>,
    expires: Option<String>,
    stale: bool,
}

impl From<&FoundLock> for LockJson {
    fn from(l: &FoundLock) -> Self {
        let i = l.info.as_ref();
        LockJson {
            key: l.key.clone(),
            hostname: i.map(|i| i.hostname.clone()),
            pid: i.map(|i| i.pid),
            purpose: i.map(|i| i.purpose.clone()),
            exclusive: i.map(|i| i.exclusive),
            created: i.map(|i| rfc3339(i.created)),
            expires: i.map(|i| rfc3339(i.expires)),
            stale: l.stale,
        }
    }
}

#[derive(Serialize)]
struct UnlockJson {
    removed: Vec<LockJson>,
    kept: Vec<LockJson>,
}

pub(crate) async fn run(args: UnlockArgs, ctx: &Ctx) -> Result<()> {
    let repo = ctx.open().await?;
    // Each removal stands on its own, so stopping between them is safe.
    let report = or_interrupted(&ctx.cancel, async {
        Ok(repo.unlock(args.remove_all).await?)
    })
    .await?;
    if ctx.json {
        return print_json(&UnlockJson {
            removed: report.removed.iter().map(Into::into).collect(),
            kept: report.kept.iter().map(Into::into).collect(),
        });
    }
    let mut out = String::new();
    for l in &report.removed {
        let why = if l.stale { "stale" } else { "live" };
        out.push_str(&format!("removed {why} lock {l}\n"));
    }
    for l in &report.kept {
        out.push_str(&format!("kept live lock {l}\n"));
    }
    out.push_str(&format!("{} lock(s) removed", report.removed.len()));
    if report.kept.is_empty() {
        out.push('\n');
    } else {
        out.push_str(&format!(
            ", {} live lock(s) kept; if their holders are gone, wait for them to expire or \
             pass --remove-all\n",
            report.kept.len()
        ));
    }
    print(&out)
}
