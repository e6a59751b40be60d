//! The TLS flags every Ferry server binary takes (`ferry serve` and each service), and
//! what they resolve to: how the port is secured, and how the binary's own calls to
//! other Ferry services speak TLS.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;

use super::{ClientTls, Pem, ServerSecurity, ServerTls, TlsError, TlsFlags};

/// TLS flags of a Ferry server. The certificate is presented to clients and, on this
/// binary's own calls to other Ferry services, as its client certificate; so with mutual
/// TLS it needs both the serverAuth and clientAuth usages (`ferry certs create` makes
/// such certificates).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain to serve TLS with, this server's own certificate first.
    #[arg(
        long,
        env = "FERRY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "FERRY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate one of them signed
    /// (mutual TLS). Also trusted for this server's own calls unless --tls-ca is given.
    #[arg(
        long,
        env = "FERRY_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA certificate(s) of the Ferry services this one calls (the other cluster's
    /// Ferry, agents, the transfer service); default: --tls-client-ca, or the Secret's
    /// ca.crt.
    #[arg(long, env = "FERRY_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Kubernetes Secret NAMESPACE/NAME holding tls.crt and tls.key (a kubernetes.io/tls
    /// Secret) and optionally ca.crt, which turns on mutual TLS like --tls-client-ca.
    #[arg(
        long,
        env = "FERRY_TLS_SECRET",
        value_name = "NAMESPACE/NAME",
        conflicts_with_all = ["tls_cert", "tls_key", "tls_client_ca"]
    )]
    pub tls_secret: Option<String>,
    /// Serve plaintext on an address other hosts can reach: no encryption and no
    /// authentication. Without TLS, only loopback addresses are served otherwise.
    #[arg(
        long,
        env = "FERRY_INSECURE_PLAINTEXT",
        conflicts_with_all = ["tls_cert", "tls_secret"]
    )]
    pub insecure_plaintext: bool,
}

/// What [`TlsArgs`] resolve to.
#[derive(Debug, Clone, Default)]
pub struct TlsSetup {
    /// How the server's port is secured.
    pub server: ServerSecurity,
    /// How the binary's own calls to other Ferry services speak TLS; errors name the
    /// service flags (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub client: ClientTls,
}

/// A Secret's keys, as `kubernetes.io/tls` names them.
const SECRET_CERT: &str = "tls.crt";
const SECRET_KEY: &str = "tls.key";
const SECRET_CA: &str = "ca.crt";

impl TlsArgs {
    /// Reads the files or the Secret. `kube` reads the Secret; None: the default client
    /// (in-cluster configuration or the current kubeconfig context).
    pub async fn load(&self, kube: Option<&kube::Client>) -> Result<TlsSetup, TlsError> {
        let (cert, key, client_ca) = match &self.tls_secret {
            Some(secret) => {
                let (cert, key, ca) = read_secret(secret, kube).await?;
                (Some(cert), Some(key), ca)
            }
            None => (
                self.tls_cert
                    .as_deref()
                    .map(|p| Pem::read("--tls-cert", p))
                    .transpose()?,
                self.tls_key
                    .as_deref()
                    .map(|p| Pem::read("--tls-key", p))
                    .transpose()?,
                self.tls_client_ca
                    .as_deref()
                    .map(|p| Pem::read("--tls-client-ca", p))
                    .transpose()?,
            ),
        };
        let server = match (&cert, &key) {
            (Some(cert), Some(key)) => {
                ServerSecurity::Tls(ServerTls::new(cert, key, client_ca.as_ref())?)
            }
            // clap makes the flags come in pairs; a lone one here is a caller's struct.
            (Some(_), None) | (None, Some(_)) => {
                return Err(TlsError::Invalid {
                    origin: "--tls-cert/--tls-key".into(),
                    detail: "give both the certificate and its key".into(),
                });
            }
            (None, None) if self.insecure_plaintext => ServerSecurity::InsecurePlaintext,
            (None, None) => ServerSecurity::LoopbackPlaintext,
        };
        let mut client = ClientTls::new().with_flags(TlsFlags::SERVICE);
        let ca = match &self.tls_ca {
            Some(path) => Some(Pem::read("--tls-ca", path)?),
            None => client_ca,
        };
        if let Some(ca) = ca {
            client = client.with_ca(ca)?;
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            client = client.with_identity(cert, key)?;
        }
        Ok(TlsSetup { server, client })
    }
}

/// tls.crt, tls.key and (optional) ca.crt of the Secret `namespace/name`.
async fn read_secret(
    secret: &str,
    kube: Option<&kube::Client>,
) -> Result<(Pem, Pem, Option<Pem>), TlsError> {
    let fail = |detail: String| TlsError::Secret {
        secret: secret.to_string(),
        detail,
    };
    let Some((namespace, name)) = secret
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
    else {
        return Err(fail("give it as NAMESPACE/NAME".into()));
    };
    let client = match kube {
        Some(client) => client.clone(),
        None => kube::Client::try_default().await.map_err(|e| {
            fail(format!(
                "no Kubernetes client to read it with ({e}); run in a cluster or set \
                 KUBECONFIG, or pass --tls-cert/--tls-key files instead"
            ))
        })?,
    };
    let api: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| fail(format!("reading it: {e}; this binary needs `get` on it")))?
        .ok_or_else(|| {
            fail(format!(
                "not found; create it with `kubectl -n {namespace} create secret generic \
                 {name} --from-file={SECRET_CERT}=... --from-file={SECRET_KEY}=... \
                 --from-file={SECRET_CA}=...` (ferry certs create makes the files)"
            ))
        })?;
    let mut data = found.data.unwrap_or_default();
    let mut take = |key: &str| {
        data.remove(key)
            .map(|bytes| Pem::new(format!("Secret {secret} key {key}"), bytes.0))
    };
    let missing = |key: &str| fail(format!("has no key {key}"));
    let cert = take(SECRET_CERT).ok_or_else(|| missing(SECRET_CERT))?;
    let key = take(SECRET_KEY).ok_or_else(|| missing(SECRET_KEY))?;
    Ok((cert, key, take(SECRET_CA)))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[tokio::test]
    async fn no_flags_mean_loopback_plaintext() {
        let flags = Flags::try_parse_from(["x"]).expect("parse");
        let setup = flags.tls.load(None).await.expect("load");
        assert!(matches!(setup.server, ServerSecurity::LoopbackPlaintext));
        assert!(!setup.client.is_configured());
        let flags = Flags::try_parse_from(["x", "--insecure-plaintext"]).expect("parse");
        let setup = flags.tls.load(None).await.expect("load");
        assert!(matches!(setup.server, ServerSecurity::InsecurePlaintext));
    }

    #[test]
    fn certificate_flags_come_in_pairs_and_exclude_plaintext() {
        assert!(Flags::try_parse_from(["x", "--tls-cert", "c"]).is_err());
        assert!(
            Flags::try_parse_from([
                "x",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--insecure-plaintext"
            ])
            .is_err()
        );
        assert!(
            Flags::try_parse_from([
                "x",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--tls-secret",
                "a/b"
            ])
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_secret_needs_namespace_and_name() {
        let flags = Flags::try_parse_from(["x", "--tls-secret", "just-a-name"]).expect("parse");
        let err = flags.tls.load(None).await.expect_err("no namespace");
        assert_eq!(
            err.to_string(),
            "TLS Secret just-a-name: give it as NAMESPACE/NAME"
        );
    }
}
