//! How a control-plane command finds its Ferry: `--server` when given, otherwise what
//! the Ferry of the `--context` cluster publishes in that cluster (ConfigMap
//! `ferry-system/ferry`): the gateway's Service of an in-cluster Ferry, reached through
//! the API server (port-forward), or else the endpoint; and how it verifies a Ferry
//! serving TLS (`--ca-file`, and for mutual TLS `--client-cert` and `--client-key`).

use std::path::PathBuf;

use clap::Args;
use ferry_client::{ClientTls, Ferry, Pem, TlsError};

use crate::error::{Error, Result};

/// Where the Ferry a command talks to runs, and how to trust it.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Kubeconfig context of the cluster whose Ferry runs the command; default: the
    /// current context.
    #[arg(long, env = "FERRY_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Kubeconfig file; default: KUBECONFIG or ~/.kube/config.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the Ferry (https://host:port, or http://host:port for a plaintext
    /// one), instead of finding it through the context's cluster.
    #[arg(long, env = "FERRY_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// PEM file of the CA that signed the Ferry's certificate; every https:// Ferry is
    /// verified with it (there are no built-in roots).
    #[arg(long, env = "FERRY_CA_FILE", global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for a Ferry that requires mutual TLS.
    #[arg(
        long,
        env = "FERRY_CLIENT_CERT",
        global = true,
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "FERRY_CLIENT_KEY",
        global = true,
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Name the Ferry's certificate must hold when it is not the --server host (an
    /// address its certificate does not list, a tunnel), or, for an in-cluster Ferry
    /// reached through the API server, not <service>.ferry-system.svc.
    #[arg(
        long,
        env = "FERRY_TLS_SERVER_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
    /// Kubernetes bearer token to call the Ferry with, instead of the context user's
    /// (for users who sign in with a client certificate or an exec plugin:
    /// `kubectl create token ...`). An argument shows in the process list: prefer
    /// --bearer-token-file or FERRY_TOKEN.
    #[arg(
        long,
        env = "FERRY_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "bearer_token_file"
    )]
    pub token: Option<String>,
    /// Read that bearer token from this file ("-": from stdin), e.g. a projected
    /// ServiceAccount token.
    // Not `--token-file`: `ferry pair accept` takes the pairing token that way.
    #[arg(
        long,
        env = "FERRY_BEARER_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub bearer_token_file: Option<std::path::PathBuf>,
}

/// The bearer token in the file `path` names ("-": stdin), given with `flag`; an empty
/// one is refused by name.
pub(crate) fn read_token(flag: &str, path: &std::path::Path) -> Result<String> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Error::Usage(format!("{flag}: reading the token from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("{flag} {}: {e}", path.display())))?
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::Usage(format!(
            "{flag} {}: empty; give a file holding the bearer token",
            path.display()
        )));
    }
    Ok(token.to_owned())
}

impl ConnectArgs {
    /// Connects to the Ferry these flags name.
    /// Calls carry `--token`, or else the bearer token of the context's user.
    pub async fn ferry(&self) -> Result<Ferry> {
        let tls = self.tls()?;
        let token = self.bearer()?;
        let ferry = match &self.server {
            Some(server) => {
                let ferry = Ferry::connect_with(server, &tls).await?;
                // With --server the kubeconfig is optional; its token is used when there.
                match ferry_client::context_token(
                    self.kubeconfig.as_deref(),
                    self.context.as_deref(),
                )
                .await
                {
                    Ok(Some(context)) if token.is_none() => ferry.with_token(&context)?,
                    _ => ferry,
                }
            }
            None => {
                Ferry::for_context_with(self.kubeconfig.as_deref(), self.context.as_deref(), &tls)
                    .await?
            }
        };
        Ok(match &token {
            Some(token) => ferry.with_token(token)?,
            None => ferry,
        })
    }

    /// The bearer token of `--token` or `--bearer-token-file`, if either is given.
    fn bearer(&self) -> Result<Option<String>> {
        match &self.bearer_token_file {
            Some(path) => read_token("--bearer-token-file", path).map(Some),
            None => Ok(self.token.clone()),
        }
    }

    /// The TLS settings of `--ca-file`, `--client-cert`/`--client-key` and
    /// `--tls-server-name`; files that cannot be read or parsed are usage errors.
    pub fn tls(&self) -> Result<ClientTls> {
        let usage = |e: TlsError| Error::Usage(e.to_string());
        let mut tls = ClientTls::new();
        if let Some(ca) = &self.ca_file {
            tls = tls
                .with_ca(Pem::read("--ca-file", ca).map_err(usage)?)
                .map_err(usage)?;
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let cert = Pem::read("--client-cert", cert).map_err(usage)?;
            let key = Pem::read("--client-key", key).map_err(usage)?;
            tls = tls.with_identity(cert, key).map_err(usage)?;
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name);
        }
        Ok(tls)
    }

    /// The same flags for another context (the other side of a pair); `--server` and
    /// `--tls-server-name` do not carry over, the CA and client certificate do.
    pub fn for_context(&self, context: &str) -> ConnectArgs {
        ConnectArgs {
            context: Some(context.into()),
            server: None,
            tls_server_name: None,
            // A token is a credential of one cluster.
            token: None,
            bearer_token_file: None,
            ..self.clone()
        }
    }

    /// The Ferry of `context`, for commands that speak to both clusters.
    pub async fn ferry_of(&self, context: &str) -> Result<Ferry> {
        self.for_context(context).ferry().await
    }
}
