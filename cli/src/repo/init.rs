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
pub struct InitArgs {}

#[derive(Serialize)]
struct InitJson<'a> {
    id: String,
    repository: &'a str,
}

pub(crate) async fn run(_args: InitArgs, ctx: &Ctx) -> Result<()> {
    let backend = ctx.backend()?;
    let repo = or_interrupted(&ctx.cancel, async {
        Ok(Repository::init(backend, &ctx.key, InitOptions::default()).await?)
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
