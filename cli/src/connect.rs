//! How a control-plane command finds its Ferry: `--server` when given, otherwise the
//! endpoint the Ferry of the `--context` cluster publishes in that cluster.

use std::path::PathBuf;

use clap::Args;
use ferry_client::Ferry;

use crate::error::Result;

/// Where the Ferry a command talks to runs.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Kubeconfig context of the cluster whose Ferry runs the command; default: the
    /// current context.
    #[arg(long, env = "FERRY_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Kubeconfig file; default: KUBECONFIG or ~/.kube/config.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the Ferry (http://host:port), instead of finding it through the
    /// context's cluster.
    #[arg(long, env = "FERRY_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
}

impl ConnectArgs {
    /// Connects to the Ferry these flags name.
    pub async fn ferry(&self) -> Result<Ferry> {
        Ok(match &self.server {
            Some(server) => Ferry::connect(server).await?,
            None => Ferry::for_context(self.kubeconfig.as_deref(), self.context.as_deref()).await?,
        })
    }

    /// The same flags for another context (the other side of a pair); `--server` does
    /// not carry over.
    pub fn for_context(&self, context: &str) -> ConnectArgs {
        ConnectArgs {
            context: Some(context.into()),
            kubeconfig: self.kubeconfig.clone(),
            server: None,
        }
    }

    /// The Ferry of `context`, for commands that speak to both clusters.
    pub async fn ferry_of(&self, context: &str) -> Result<Ferry> {
        self.for_context(context).ferry().await
    }
}
