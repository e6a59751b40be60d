//! `ferry repo snapshots`: a table, or with `--json` an array with every field.

use clap::Args;
use ferry_repo::{Id, Snapshot, SnapshotSummary};
use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::output::{bytes, print, print_json, rfc3339, utc};
use crate::signal::or_interrupted;

/// Arguments of `ferry repo snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {}

/// One snapshot in `--json` output.
#[derive(Serialize)]
pub(crate) struct SnapshotJson<'a> {
    id: String,
    short_id: String,
    time: String,
    hostname: &'a str,
    paths: &'a [String],
    tags: &'a [String],
    parent: Option<String>,
    tree: String,
    summary: &'a SnapshotSummary,
}

impl<'a> SnapshotJson<'a> {
    pub(crate) fn new(id: &Id, s: &'a Snapshot) -> Self {
        SnapshotJson {
            id: id.to_hex(),
            short_id: id.short(),
            time: rfc3339(s.time),
            hostname: &s.hostname,
            paths: &s.paths,
            tags: &s.tags,
            parent: s.parent.map(|p| p.to_hex()),
            tree: s.tree.to_hex(),
            summary: &s.summary,
        }
    }
}

pub(crate) async fn run(_args: SnapshotsArgs, ctx: &Ctx) -> Result<()> {
    let repo = ctx.open().await?;
    let list = or_interrupted(&ctx.cancel, async { Ok(repo.snapshots().await?) }).await?;
    if ctx.json {
        let out: Vec<SnapshotJson<'_>> = list
            .iter()
            .map(|(id, s)| SnapshotJson::new(id, s))
            .collect();
        return print_json(&out);
    }
    print(&table(&list))
}

fn table(list: &[(Id, Snapshot)]) -> String {
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|(id, s)| {
            [
                id.short(),
                utc(s.time),
                s.hostname.clone(),
                s.paths.join(", "),
                bytes(s.summary.bytes_total),
            ]
        })
        .collect();
    let header = ["ID", "Time (UTC)", "Host", "Path", "Size"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 4 {
                // Sizes align right, as numbers do.
                l.push_str(&format!("{cell:>w$}"));
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(&header);
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!("{} snapshot(s)\n", rows.len()));
    out
}
