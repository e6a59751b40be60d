//! `ferry migration-token`: a migration token for restore points an export profile's
//! repository already holds, without exporting again. A token for a whole namespace is
//! what a destination's import policy reads successive exports through; `ferry export
//! --recipient-key-file` makes one for the restore point it writes.

use std::time::Duration;

use clap::Args;
use ferry_proto::v1::IssueMigrationTokenRequest;

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::export::{RecipientArgs, print_token};
use crate::format::{parse_duration, proto_duration};
use crate::output::{Format, print_proto};

/// `ferry migration-token`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context b import-key > b-import.pub
  ferry --context a migration-token -n shop --profile exports --recipient-key-file b-import.pub > token.txt
  ferry --context a migration-token -n shop --profile exports --restore-point 3f9c…e1 \\
      --ttl 2h --recipient-key-file b-import.pub > token.txt

The token goes to stdout, the signer the destination pins to stderr. It makes one
import profile on the destination, which reads only what the token names: every
restore point of the namespace, or the one given. Administrators only.")]
pub struct MigrationTokenArgs {
    /// The application namespace, as on this cluster.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: String,
    /// Export profile of the repository holding the namespace's restore points.
    #[arg(long)]
    pub profile: String,
    /// Only this restore point; without it the token opens every restore point of the
    /// namespace, later ones included (what an import policy needs).
    #[arg(long, value_name = "ID")]
    pub restore_point: Option<String>,
    /// How long the token may be used (up to 30d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = ttl_arg)]
    pub ttl: Duration,
    #[command(flatten)]
    pub recipient: RecipientArgs,
}

fn ttl_arg(text: &str) -> std::result::Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

pub async fn migration_token(
    connect: &ConnectArgs,
    args: MigrationTokenArgs,
    format: Format,
) -> Result<()> {
    let recipient_key = args.recipient.key()?.ok_or_else(|| {
        Error::Usage(
            "give the destination's public import key with --recipient-key-file (or \
             --recipient-key); `ferry import-key` on the destination prints it"
                .into(),
        )
    })?;
    let ferry = connect.ferry().await?;
    let resp = ferry
        .catalog()
        .issue_migration_token(IssueMigrationTokenRequest {
            profile: args.profile,
            restore_point_id: args.restore_point.unwrap_or_default(),
            namespace: args.namespace,
            recipient_key,
            ttl: Some(proto_duration(args.ttl)),
        })
        .await
        .map_err(|s| ferry.rpc_error("IssueMigrationToken", s))?
        .into_inner();
    if format.structured() {
        return print_proto(&resp, "ferry.v1.IssueMigrationTokenResponse", format);
    }
    print_token(&resp.token)
}
