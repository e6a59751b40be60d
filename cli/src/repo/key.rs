//! `ferry repo key list|add|remove`: the user keys that open a repository (restic's
//! `key`). Each wraps the same master key, so adding a key makes every snapshot,
//! earlier ones included, readable with it, and removing one changes no data.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_repo::KeyInfo;
use serde::Serialize;

use super::{Ctx, read_key};
use crate::error::{Error, Result};
use crate::output::{print, print_json, rfc3339, utc};
use crate::signal::or_interrupted;

/// Arguments of `ferry repo key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `ferry repo key` subcommands. Each opens the repository with --key-file.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the keys that open the repository; `*` marks the one given with --key-file.
    List,
    /// Add a key: from then on it opens the repository and every snapshot in it.
    Add(AddArgs),
    /// Remove a key by its fingerprint (as `key list` shows it).
    Remove(RemoveArgs),
}

/// Arguments of `ferry repo key add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// A file whose bytes are the new key (create one with:
    /// head -c 32 /dev/urandom > new.key).
    #[arg(long, value_name = "FILE")]
    pub new_key_file: PathBuf,

    /// A name for the key, shown in `key list` and in wrong-key errors; not secret.
    /// Default: the new key file's name.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
}

/// Arguments of `ferry repo key remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The key's fingerprint, such as k-0123456789abcdef.
    #[arg(value_name = "FINGERPRINT")]
    pub fingerprint: String,

    /// Another key that opens the repository; needed to remove the key given with
    /// --key-file, so that removing it cannot lock you out.
    #[arg(long, value_name = "FILE")]
    pub other_key_file: Option<PathBuf>,
}

/// One key in `--json` output.
#[derive(Serialize)]
struct KeyJson {
    /// `null` only for the first key of a repository made before key fingerprints,
    /// listed with a key other than that one.
    fingerprint: Option<String>,
    label: String,
    created: String,
    /// The slot older ferry versions read.
    primary: bool,
    /// Whether it is the key given with --key-file.
    in_use: bool,
}

impl KeyJson {
    fn new(k: &KeyInfo, in_use: &str) -> Self {
        KeyJson {
            fingerprint: k.fingerprint.clone(),
            label: k.label.clone(),
            created: rfc3339(k.created),
            primary: k.primary,
            in_use: k.fingerprint.as_deref() == Some(in_use),
        }
    }
}

pub(crate) async fn run(args: KeyArgs, ctx: &Ctx) -> Result<()> {
    match args.command {
        KeyCommand::List => list(ctx).await,
        KeyCommand::Add(a) => add(a, ctx).await,
        KeyCommand::Remove(a) => remove(a, ctx).await,
    }
}

/// A key change's own mistakes (a malformed fingerprint, a bad label, a key that is
/// already there) are the caller's input: exit status 2, like other usage errors.
fn usage_or(e: ferry_repo::Error) -> Error {
    match e {
        ferry_repo::Error::Invalid { .. } => Error::Usage(e.to_string()),
        e => e.into(),
    }
}

async fn list(ctx: &Ctx) -> Result<()> {
    let repo = ctx.open().await?;
    let keys = or_interrupted(&ctx.cancel, async { Ok(repo.keys().await?) }).await?;
    let in_use = repo.key_fingerprint();
    if ctx.json {
        let out: Vec<KeyJson> = keys.iter().map(|k| KeyJson::new(k, in_use)).collect();
        return print_json(&out);
    }
    print(&table(&keys, in_use))
}

fn table(keys: &[KeyInfo], in_use: &str) -> String {
    let rows: Vec<[String; 4]> = keys
        .iter()
        .map(|k| {
            let fp = k.fingerprint.as_deref();
            [
                if fp == Some(in_use) { "*" } else { "" }.to_string(),
                fp.unwrap_or("(not recorded)").to_string(),
                k.label.clone(),
                utc(k.created),
            ]
        })
        .collect();
    let header = ["", "Fingerprint", "Label", "Added (UTC)"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 4]| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        let mut l = l.trim_end().to_string();
        l.push('\n');
        l
    };
    let mut out = line(&header);
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 6));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!("{} key(s); * is the key in use\n", rows.len()));
    out
}

async fn add(args: AddArgs, ctx: &Ctx) -> Result<()> {
    let new_key = read_key(&args.new_key_file)?;
    let label = match args.label {
        Some(l) => l,
        None => args
            .new_key_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let repo = ctx.open().await?;
    // One config write at the end: stopping earlier changes nothing.
    let added = or_interrupted(&ctx.cancel, async {
        repo.add_key(&new_key, &label).await.map_err(usage_or)
    })
    .await?;
    if ctx.json {
        return print_json(&KeyJson::new(&added, repo.key_fingerprint()));
    }
    print(&format!("{}\n", added.fingerprint.as_deref().unwrap_or("")))?;
    eprintln!(
        "key {} {:?} added to {}: it opens every snapshot there, earlier ones included; \
         keep {} safe",
        added.fingerprint.as_deref().unwrap_or(""),
        added.label,
        ctx.url,
        args.new_key_file.display()
    );
    Ok(())
}

async fn remove(args: RemoveArgs, ctx: &Ctx) -> Result<()> {
    let other = args.other_key_file.as_deref().map(read_key).transpose()?;
    let repo = ctx.open().await?;
    let removed = or_interrupted(&ctx.cancel, async {
        repo.remove_key(&args.fingerprint, other.as_deref())
            .await
            .map_err(usage_or)
    })
    .await?;
    if ctx.json {
        return print_json(&KeyJson::new(&removed, repo.key_fingerprint()));
    }
    print(&format!("removed key {removed}\n"))?;
    eprintln!(
        "the removed key no longer opens {}; the data is not re-encrypted, so a copy of the \
         old config together with that key still could",
        ctx.url
    );
    Ok(())
}
