//! `ferry repo check [--read-data]`: lists every problem, naming the pack, index or
//! snapshot; a non-zero exit status when there is any.

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::error::{Error, Result};
use crate::output::{print, print_json};

/// Arguments of `ferry repo check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also download every pack and decrypt and verify every chunk.
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Serialize)]
struct ProblemJson {
    message: String,
    /// The pack the problem is about, when it is about one.
    pack: Option<String>,
}

#[derive(Serialize)]
struct CheckJson {
    ok: bool,
    read_data: bool,
    problems: Vec<ProblemJson>,
    unindexed_packs: Vec<String>,
    snapshots_checked: u64,
    trees_checked: u64,
    packs_checked: u64,
    packs_read: u64,
    blobs_read: u64,
    blobs_checked: u64,
    bytes_read: u64,
}

pub(crate) async fn run(args: CheckArgs, ctx: &Ctx) -> Result<()> {
    let repo = ctx.open().await?;
    // Check only reads, so stopping it at any point is safe.
    let report =
        crate::signal::or_interrupted(&ctx.cancel, async { Ok(repo.check(args.read_data).await?) })
            .await?;
    if ctx.json {
        print_json(&CheckJson {
            ok: report.is_ok(),
            read_data: args.read_data,
            problems: report
                .problems
                .iter()
                .map(|p| ProblemJson {
                    message: p.to_string(),
                    pack: p.pack().map(|id| id.to_hex()),
                })
                .collect(),
            unindexed_packs: report.unindexed_packs.iter().map(|p| p.to_hex()).collect(),
            snapshots_checked: report.snapshots_checked,
            trees_checked: report.trees_checked,
            packs_checked: report.packs_checked,
            packs_read: report.packs_read,
            blobs_read: report.blobs_read,
            blobs_checked: report.blobs_checked,
            bytes_read: report.bytes_read,
        })?;
    } else {
        let mut text = report.to_string();
        if !report.unindexed_packs.is_empty() {
            text.push_str(&format!(
                "note: {} pack(s) are in no index (left by an interrupted backup); they are \
                 harmless and not used\n",
                report.unindexed_packs.len()
            ));
        }
        if report.is_ok() {
            text.push_str("no problems found\n");
        }
        print(&text)?;
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(Error::CheckFailed(report.problems.len()))
    }
}
