//! TLS on every Ferry port, verified by default.
//!
//! - Servers: a [`ServerTls`] (certificate chain, key, and optionally the CA client
//!   certificates must chain to: mutual TLS) on a [`crate::Listener`]. Plaintext is
//!   served on loopback addresses only, unless the binary was started with
//!   `--insecure-plaintext` ([`ServerSecurity`]). A refused handshake is logged with its
//!   reason (no client certificate, one from an unknown CA, ...).
//! - Clients: a [`ClientTls`] (the CA to trust, optionally a client certificate and the
//!   name to expect) makes `https://` endpoints TLS channels. Verification is always on;
//!   there is no switch to turn it off. [`ClientTls::explain`] turns a failed handshake
//!   into a sentence naming the mismatch and the flag that fixes it: an unknown CA, a
//!   certificate for other names, an expired one, a client certificate missing or
//!   refused, a server that does not speak TLS.
//! - Binaries take the same flags ([`TlsArgs`]): PEM files or a Kubernetes Secret (the
//!   `kubernetes.io/tls` shape, `tls.crt` and `tls.key`, plus `ca.crt`).
//!
//! Everything uses the aws-lc-rs provider, as kube's rustls does.

mod accept;
mod args;
mod channel;
mod diagnose;
mod explain;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use accept::incoming;
pub use args::{TlsArgs, TlsSetup};
pub use channel::{BadToken, TlsChannel};
pub use explain::TlsMismatch;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file named by a flag could not be read.
    #[error("reading {origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The PEM text is not what its flag or key must hold.
    #[error("{origin}: {detail}")]
    Invalid { origin: String, detail: String },
    /// The Kubernetes Secret named by `--tls-secret` could not be used.
    #[error("TLS Secret {secret}: {detail}")]
    Secret { secret: String, detail: String },
}

/// PEM text and where it came from (`--tls-cert /etc/ferry/tls.crt`, `Secret ns/name
/// key tls.key`), so every error names its origin.
#[derive(Clone)]
pub struct Pem {
    origin: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Pem {
    // Never the bytes: they may be a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem").field("origin", &self.origin).finish()
    }
}

impl Pem {
    pub fn new(origin: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Pem {
        Pem {
            origin: origin.into(),
            bytes: bytes.into(),
        }
    }

    /// Reads `path`, given with `flag` (which errors name).
    pub fn read(flag: &str, path: &Path) -> Result<Pem, TlsError> {
        let origin = format!("{flag} {}", path.display());
        match std::fs::read(path) {
            Ok(bytes) => Ok(Pem { origin, bytes }),
            Err(source) => Err(TlsError::Read { origin, source }),
        }
    }

    fn invalid(&self, detail: impl Into<String>) -> TlsError {
        TlsError::Invalid {
            origin: self.origin.clone(),
            detail: detail.into(),
        }
    }

    /// Every certificate in the text, in order; at least one.
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(
                self.invalid("holds no certificate (a PEM block -----BEGIN CERTIFICATE-----)")
            );
        }
        Ok(certs)
    }

    /// The private key in the text.
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => self.invalid(
                "holds no private key (a PEM block -----BEGIN PRIVATE KEY-----, RSA or EC)",
            ),
            e => self.invalid(format!("not a PEM private key: {e}")),
        })
    }

    /// The certificates as trust anchors.
    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates()? {
            roots
                .add(cert)
                .map_err(|e| self.invalid(format!("not a usable CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server's certificate and key, and when mutual TLS is on, the CA its clients'
/// certificates must chain to.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `cert`: the chain this server presents, its own certificate first; `key`: its
    /// private key; `client_ca`: when given, every client must present a certificate
    /// signed by one of these CAs (mutual TLS).
    pub fn new(cert: &Pem, key: &Pem, client_ca: Option<&Pem>) -> Result<ServerTls, TlsError> {
        let chain = cert.certificates()?;
        let private_key = key.private_key()?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| cert.invalid(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()?), provider)
                        .build()
                        .map_err(|e| ca.invalid(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, private_key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => key.invalid(format!(
                    "is not the key of the certificate in {}",
                    cert.origin
                )),
                e => cert.invalid(e.to_string()),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            mutual: client_ca.is_some(),
        })
    }

    /// The same, also offering HTTP/1.1 in the handshake: for a plain HTTPS endpoint
    /// (an admission webhook, whose caller speaks HTTP/1.1), not for gRPC.
    pub fn with_http1(mut self) -> ServerTls {
        Arc::make_mut(&mut self.config).alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }
}

/// How a server's port is secured.
#[derive(Clone, Debug, Default)]
pub enum ServerSecurity {
    /// Plaintext, allowed on loopback addresses only: tests, the demo, a sidecar.
    #[default]
    LoopbackPlaintext,
    /// Plaintext on any address (`--insecure-plaintext`): no encryption, no
    /// authentication. Logged as a warning.
    InsecurePlaintext,
    /// TLS, mutual when the [`ServerTls`] has a client CA.
    Tls(ServerTls),
}

impl ServerSecurity {
    /// Refuses plaintext on an address other hosts can reach unless it was asked for.
    pub fn check(&self, addr: SocketAddr) -> Result<(), crate::ServeError> {
        match self {
            ServerSecurity::LoopbackPlaintext if !addr.ip().is_loopback() => {
                Err(crate::ServeError::PlaintextRefused { addr })
            }
            _ => Ok(()),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ServerSecurity::Tls(_))
    }

    /// The URL scheme clients reach this server with: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// For logs: `plaintext`, `TLS` or `mutual TLS`.
    pub fn describe(&self) -> &'static str {
        match self {
            ServerSecurity::Tls(tls) if tls.is_mutual() => "mutual TLS",
            ServerSecurity::Tls(_) => "TLS",
            _ => "plaintext",
        }
    }
}

/// The flags that fix a client's TLS problems, named in its error messages: the
/// `ferry` command's ([`TlsFlags::CLI`]) or a service's ([`TlsFlags::SERVICE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsFlags {
    /// The CA to trust.
    pub ca: &'static str,
    /// The client certificate.
    pub cert: &'static str,
    /// Its key.
    pub key: &'static str,
}

impl TlsFlags {
    pub const CLI: TlsFlags = TlsFlags {
        ca: "--ca-file",
        cert: "--client-cert",
        key: "--client-key",
    };
    pub const SERVICE: TlsFlags = TlsFlags {
        ca: "--tls-ca",
        cert: "--tls-cert",
        key: "--tls-key",
    };
}

impl Default for TlsFlags {
    fn default() -> Self {
        TlsFlags::CLI
    }
}

/// How a client speaks TLS to `https://` endpoints: the CAs it trusts, the certificate
/// it presents when a server asks for one, and optionally the name it expects instead
/// of the endpoint's host. Without a CA no server certificate verifies (there are no
/// built-in roots): pass the CA that signed Ferry's certificates.
#[derive(Clone, Default)]
pub struct ClientTls {
    ca: Option<Pem>,
    identity: Option<(Pem, Pem)>,
    server_name: Option<String>,
    flags: TlsFlags,
    /// A bearer token the channels of [`ClientTls::traced`] send on every call: a
    /// service's own credential for the services it calls.
    bearer: Option<String>,
    /// Metadata every call of those channels carries.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl std::fmt::Debug for ClientTls {
    // Never the bearer token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca)
            .field("identity", &self.identity.as_ref().map(|(cert, _)| cert))
            .field("server_name", &self.server_name)
            .field("bearer", &self.bearer.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Channels made by [`ClientTls::traced`] carry `token` as their bearer token.
    pub fn with_bearer(mut self, token: &str) -> Result<ClientTls, channel::BadToken> {
        // Checked here, so making a channel cannot fail on it later.
        TlsChannel::check_bearer(token)?;
        self.bearer = Some(token.trim().to_owned());
        Ok(self)
    }

    /// Channels made by [`ClientTls::traced`] carry the metadata `key: value` on every
    /// call (unless the call sets its own); `None` when it cannot be a header.
    pub fn with_metadata(mut self, key: &'static str, value: &str) -> Option<ClientTls> {
        let value = http::HeaderValue::try_from(value).ok()?;
        self.headers
            .push((http::HeaderName::from_static(key), value));
        Some(self)
    }

    /// No CA, no client certificate; errors name the `ferry` command's flags.
    pub fn new() -> ClientTls {
        ClientTls::default()
    }

    /// Trust the CAs in `ca` (one or more PEM certificates).
    pub fn with_ca(mut self, ca: Pem) -> Result<ClientTls, TlsError> {
        ca.roots()?;
        self.ca = Some(ca);
        Ok(self)
    }

    /// Present `cert` (chain, own certificate first) with `key` when a server asks.
    pub fn with_identity(mut self, cert: Pem, key: Pem) -> Result<ClientTls, TlsError> {
        cert.certificates()?;
        key.private_key()?;
        self.identity = Some((cert, key));
        Ok(self)
    }

    /// Expect the server's certificate to be for `name` rather than the endpoint's host
    /// (reaching a server by an address its certificate does not name, such as
    /// loopback).
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// Name `flags` in error messages.
    pub fn with_flags(mut self, flags: TlsFlags) -> ClientTls {
        self.flags = flags;
        self
    }

    /// Whether a CA or a client certificate was given: then a bare `host:port` means TLS.
    pub fn is_configured(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// The URL for `endpoint`: URLs stay as they are (without a trailing `/`); a bare
    /// `host:port` gets `https://` when TLS is configured, `http://` otherwise.
    pub fn uri(&self, endpoint: &str) -> String {
        let endpoint = endpoint.trim().trim_end_matches('/');
        if endpoint.contains("://") {
            endpoint.to_string()
        } else if self.is_configured() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }

    /// A tonic endpoint for `endpoint` (see [`ClientTls::uri`]); TLS when `https://`.
    pub fn endpoint(&self, endpoint: &str) -> Result<Endpoint, tonic::transport::Error> {
        let uri = self.uri(endpoint);
        let https = uri.starts_with("https://");
        let endpoint = Endpoint::from_shared(uri)?;
        if !https {
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(&ca.bytes));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(&cert.bytes, &key.bytes));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint.tls_config(tls)
    }

    /// `channel` (made by [`ClientTls::endpoint`] for `endpoint`) carrying the current
    /// span's trace context, as [`crate::traced_channel`] does, and whose TLS failures
    /// come back as statuses saying what did not match: for lazy channels, which
    /// connect on their first call.
    pub fn traced(&self, endpoint: &str, channel: Channel) -> crate::TracedChannel {
        let mut tls_channel = TlsChannel::new(channel, self, endpoint);
        if let Some(token) = &self.bearer {
            // with_bearer checked it already.
            tls_channel = match tls_channel.clone().with_bearer(token) {
                Ok(with) => with,
                Err(_) => tls_channel,
            };
        }
        tonic::service::interceptor::InterceptedService::new(
            tls_channel,
            crate::Propagate::default(),
        )
    }

    /// When `err` (a connect error, a failed call's status, anything whose sources lead
    /// to one) is a TLS failure talking to `endpoint`: what did not match, and the next
    /// step, naming this client's flags.
    pub fn explain(
        &self,
        endpoint: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Option<String> {
        Some(self.describe(endpoint, &TlsMismatch::find(err)?))
    }

    /// `mismatch` in words, for `endpoint`.
    fn describe(&self, endpoint: &str, mismatch: &TlsMismatch) -> String {
        let host = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(&self.uri(endpoint)),
        };
        mismatch.message(&host, &self.flags)
    }
}

/// The host of a URL (`https://host:port/...` → `host`).
fn host_of(uri: &str) -> String {
    uri.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_else(|| uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_endpoints_follow_the_tls_setting() {
        let plain = ClientTls::new();
        assert_eq!(plain.uri("ferry.example:7443"), "http://ferry.example:7443");
        assert_eq!(plain.uri("https://f:7443/"), "https://f:7443");
        let ca = rcgen_ca_pem();
        let tls = ClientTls::new().with_ca(Pem::new("ca", ca)).expect("ca");
        assert_eq!(tls.uri("ferry.example:7443"), "https://ferry.example:7443");
        assert_eq!(tls.uri("http://f:7443"), "http://f:7443");
        assert_eq!(host_of("https://[::1]:7443"), "[::1]");
        assert_eq!(host_of("https://ferry.example:7443"), "ferry.example");
    }

    #[test]
    fn plaintext_only_on_loopback_unless_asked() {
        let any: SocketAddr = "0.0.0.0:7443".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:7443".parse().expect("addr");
        let err = ServerSecurity::LoopbackPlaintext
            .check(any)
            .expect_err("plaintext on every address");
        let text = err.to_string();
        assert!(
            text.contains("--tls-cert") && text.contains("--insecure-plaintext"),
            "{text}"
        );
        ServerSecurity::LoopbackPlaintext
            .check(lo)
            .expect("loopback");
        ServerSecurity::InsecurePlaintext
            .check(any)
            .expect("asked for");
    }

    #[test]
    fn bad_material_names_its_origin() {
        let err = ClientTls::new()
            .with_ca(Pem::new("--ca-file /x/ca.crt", "not pem"))
            .expect_err("no certificate");
        assert_eq!(
            err.to_string(),
            "--ca-file /x/ca.crt: holds no certificate (a PEM block -----BEGIN CERTIFICATE-----)"
        );
        let ca = rcgen_ca_pem();
        let err = ServerTls::new(
            &Pem::new("--tls-cert c", ca.clone()),
            &Pem::new("--tls-key k", ca),
            None,
        )
        .expect_err("no key");
        assert!(
            err.to_string()
                .starts_with("--tls-key k: holds no private key"),
            "{err}"
        );
    }

    fn rcgen_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("ca").pem()
    }
}
