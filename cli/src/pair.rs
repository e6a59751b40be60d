//! `ferry pair`: join two clusters so one can migrate to the other. The token comes
//! from the destination's Ferry and is accepted by the source's; `pair create` does
//! both when this machine reaches both clusters.

use std::io::Read;

use clap::{Args, Subcommand};
use ferry_client::Ferry;
use ferry_proto::v1::{
    AcceptPairingTokenRequest, CheckPairRequest, CheckPairResponse, CheckStatus,
    CreatePairingTokenRequest, CreatePairingTokenResponse, DeletePairRequest, ListPairsRequest,
    ListPairsResponse, Pair, RepositoryRef,
};

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::{enum_name, parse_duration, proto_duration, table, when};
use crate::output::{Format, print, print_proto};

/// `ferry pair` and its subcommands.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry pair create --from a --to b
  ferry --context b pair token create --name a-to-b > token.txt   # on the destination
  ferry --context a pair accept --token-file token.txt             # on the source
  ferry --context a pair list
  ferry --context a pair check a-to-b --profile main")]
pub struct PairArgs {
    #[command(subcommand)]
    pub command: PairCommand,
}

#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// Pair the cluster of context --from (source) with that of --to (destination),
    /// then check both directions.
    Create(CreateArgs),
    /// Pairing tokens, made on the destination.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// On the source: accept a token from the destination and check the pair.
    Accept(AcceptArgs),
    /// List this cluster's pairs.
    List,
    /// Check a pair both ways: API reachable and permitted, repository writable and readable.
    Check(CheckArgs),
    /// Delete a pair here and, when reachable, on the other side (revoking its credential).
    Delete {
        /// Pair name or id.
        pair: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a one-time pairing token for a source cluster to accept.
    Create(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Name for the pair.
    #[arg(long)]
    pub name: Option<String>,
    /// How long the token stays valid (e.g. 15m, 1h).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// API server URL the source should use to reach this cluster, when it differs
    /// from the one this Ferry knows.
    #[arg(long)]
    pub api_server_url: Option<String>,
    /// This Ferry's host:port as the source reaches it, when it differs.
    #[arg(long)]
    pub ferry_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Kubeconfig context of the source cluster.
    #[arg(long)]
    pub from: String,
    /// Kubeconfig context of the destination cluster.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Also check that this profile's repository is writable and readable from both sides.
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct AcceptArgs {
    /// The token text; "-" reads it from stdin.
    #[arg(conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from this file.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// Name for the pair; default: the name given on the destination.
    #[arg(long)]
    pub name: Option<String>,
    /// Also check this profile's repository from both sides.
    #[arg(long)]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Pair name or id.
    pub pair: String,
    /// Also check this profile's repository from both sides.
    #[arg(long)]
    pub profile: Option<String>,
}

pub async fn run(connect: &ConnectArgs, args: PairArgs, format: Format) -> Result<()> {
    match args.command {
        PairCommand::Create(args) => {
            let destination = connect.ferry_of(&args.to).await?;
            let token = create_token(&destination, &args.token).await?.token;
            let source = connect.ferry_of(&args.from).await?;
            let pair = accept(&source, token, args.token.name.clone()).await?;
            if format == Format::Text {
                print(&format!(
                    "paired {} (source, context {}) with {} (destination, context {}) as {} ({})\n",
                    cluster_name(pair.source.as_ref()),
                    args.from,
                    cluster_name(pair.destination.as_ref()),
                    args.to,
                    pair.name,
                    pair.id
                ))?;
            }
            check(&source, &pair.id, args.profile, format).await
        }
        PairCommand::Token {
            command: TokenCommand::Create(args),
        } => {
            let resp = create_token(&connect.ferry().await?, &args).await?;
            match format {
                // Only the token on stdout, so it can go straight into a file or a pipe.
                Format::Text => print(&format!("{}\n", resp.token)),
                Format::Json | Format::Yaml => {
                    print_proto(&resp, "ferry.v1.CreatePairingTokenResponse", format)
                }
            }
        }
        PairCommand::Accept(args) => {
            let token = read_token(args.token, args.token_file)?;
            let source = connect.ferry().await?;
            let pair = accept(&source, token, args.name).await?;
            if format == Format::Text {
                print(&format!(
                    "paired with {} as {} ({})\n",
                    cluster_name(pair.destination.as_ref()),
                    pair.name,
                    pair.id
                ))?;
            }
            check(&source, &pair.id, args.profile, format).await
        }
        PairCommand::List => list(&connect.ferry().await?, format).await,
        PairCommand::Check(args) => {
            check(&connect.ferry().await?, &args.pair, args.profile, format).await
        }
        PairCommand::Delete { pair } => {
            let ferry = connect.ferry().await?;
            let resp = ferry
                .pairing()
                .delete_pair(DeletePairRequest { pair: pair.clone() })
                .await
                .map_err(|s| ferry.rpc_error("DeletePair", s))?
                .into_inner();
            if format.structured() {
                return print_proto(&resp, "ferry.v1.DeletePairResponse", format);
            }
            let other = if resp.remote_deleted {
                "and on the other side"
            } else {
                "here only: the other side was unreachable; delete it there too with `ferry pair delete`"
            };
            print(&format!("deleted pair {pair} {other}\n"))
        }
    }
}

async fn create_token(destination: &Ferry, args: &TokenArgs) -> Result<CreatePairingTokenResponse> {
    let ttl = parse_duration(&args.ttl)?;
    let resp = destination
        .pairing()
        .create_pairing_token(CreatePairingTokenRequest {
            pair_name: args.name.clone().unwrap_or_default(),
            ttl: Some(proto_duration(ttl)),
            api_server_url: args.api_server_url.clone().unwrap_or_default(),
            ferry_endpoint: args.ferry_endpoint.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| destination.rpc_error("CreatePairingToken", s))?
        .into_inner();
    Ok(resp)
}

async fn accept(source: &Ferry, token: String, name: Option<String>) -> Result<Pair> {
    let resp = source
        .pairing()
        .accept_pairing_token(AcceptPairingTokenRequest {
            token,
            pair_name: name.unwrap_or_default(),
        })
        .await
        .map_err(|s| source.rpc_error("AcceptPairingToken", s))?
        .into_inner();
    resp.pair.ok_or_else(|| {
        Error::Client(ferry_client::ClientError::Protocol {
            endpoint: source.endpoint().into(),
            problem: "AcceptPairingToken answered without the pair".into(),
        })
    })
}

fn read_token(token: Option<String>, token_file: Option<std::path::PathBuf>) -> Result<String> {
    let text = match (token, token_file) {
        (Some(t), _) if t == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::Usage(format!("reading the token from stdin: {e}")))?;
            s
        }
        (Some(t), _) => t,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| Error::Usage(format!("reading the token file {}: {e}", path.display())))?,
        (None, None) => {
            return Err(Error::Usage(
                "give the token from `ferry pair token create` as an argument, \"-\" for \
                 stdin, or --token-file"
                    .into(),
            ));
        }
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(Error::Usage("the pairing token is empty".into()));
    }
    Ok(text)
}

fn cluster_name(c: Option<&ferry_proto::v1::ClusterInfo>) -> String {
    c.map(|c| c.name.clone()).unwrap_or_else(|| "?".into())
}

async fn list(ferry: &Ferry, format: Format) -> Result<()> {
    let mut pairs = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = ferry
            .pairing()
            .list_pairs(ListPairsRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(|s| ferry.rpc_error("ListPairs", s))?
            .into_inner();
        pairs.extend(resp.pairs);
        if resp.next_page_token.is_empty() {
            break;
        }
        page_token = resp.next_page_token;
    }
    if format.structured() {
        let resp = ListPairsResponse {
            pairs,
            next_page_token: String::new(),
        };
        return print_proto(&resp, "ferry.v1.ListPairsResponse", format);
    }
    if pairs.is_empty() {
        return print(
            "no pairs; pair clusters with: ferry pair create --from SOURCE --to DESTINATION\n",
        );
    }
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.id.clone(),
                enum_name(p.role().as_str_name(), "PAIR_ROLE_"),
                cluster_name(p.source.as_ref()),
                cluster_name(p.destination.as_ref()),
                enum_name(p.status().as_str_name(), "PAIR_STATUS_"),
                when(p.last_checked_at.as_ref()),
            ]
        })
        .collect();
    print(&table(
        &[
            "NAME",
            "ID",
            "ROLE",
            "SOURCE",
            "DESTINATION",
            "STATUS",
            "CHECKED",
        ],
        &rows,
    ))
}

async fn check(ferry: &Ferry, pair: &str, profile: Option<String>, format: Format) -> Result<()> {
    let resp = ferry
        .pairing()
        .check_pair(CheckPairRequest {
            pair: pair.into(),
            repository: profile.map(|profile| RepositoryRef {
                profile,
                repository_id: String::new(),
            }),
        })
        .await
        .map_err(|s| ferry.rpc_error("CheckPair", s))?
        .into_inner();
    match format {
        Format::Text => print(&check_report(&resp))?,
        Format::Json | Format::Yaml => print_proto(&resp, "ferry.v1.CheckPairResponse", format)?,
    }
    let failed = resp
        .checks
        .iter()
        .filter(|c| c.status() == CheckStatus::Failed)
        .count();
    if failed > 0 {
        return Err(Error::PairCheckFailed(failed));
    }
    Ok(())
}

fn check_report(resp: &CheckPairResponse) -> String {
    let rows: Vec<Vec<String>> = resp
        .checks
        .iter()
        .map(|c| {
            let mut message = c.message.clone();
            if let Some(e) = &c.error
                && !e.hint.is_empty()
            {
                message.push_str(&format!(" ({})", e.hint));
            }
            vec![
                enum_name(c.status().as_str_name(), "CHECK_STATUS_"),
                enum_name(c.direction().as_str_name(), "CHECK_DIRECTION_"),
                c.name.clone(),
                message,
            ]
        })
        .collect();
    table(&["RESULT", "DIRECTION", "CHECK", "DETAIL"], &rows)
}
