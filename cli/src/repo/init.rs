//! `ferry repo init`: creates a repository and prints its id.

use clap::Args;
use ferry_repo::{InitOptions, Repository};
use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::output::{print, print_json};
use crate::signal::or_interrupted;

/// Arguments of `ferry repo init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Average chunk size in KiB, a power of two from 1 to 4096 (chunks range from a
    /// quarter of it to eight times it). Smaller chunks upload less after small
    /// in-place changes; larger ones keep the index of very large volumes small.
    #[arg(long, value_name = "KIB")]
    pub chunk_size: Option<u32>,
}

#[derive(Serialize)]
struct InitJson<'a> {
    id: String,
    repository: &'a str,
}

pub(crate) async fn run(args: InitArgs, ctx: &Ctx) -> Result<()> {
    let mut options = InitOptions::default();
    if let Some(kib) = args.chunk_size {
        if !(1..=4096).contains(&kib) || !kib.is_power_of_two() {
            return Err(crate::error::Error::Usage(format!(
                "--chunk-size {kib}: give a power of two between 1 and 4096 (KiB)"
            )));
        }
        let avg = kib * 1024;
        options.chunker = ferry_repo::ChunkerParams::fastcdc(avg / 4, avg, avg * 8);
    }
    let backend = ctx.backend()?;
    let repo = or_interrupted(&ctx.cancel, async {
        Ok(Repository::init(backend, &ctx.key, options).await?)
    })
    .await?;
    let id = repo.config().id.to_hex();
    if ctx.json {
        return print_json(&InitJson {
            id,
            repository: &ctx.url,
        });
    }
    print(&format!("{id}\n"))?;
    eprintln!(
        "created repository at {}; keep the key file safe: without it nothing stored can be read",
        ctx.url
    );
    Ok(())
}
