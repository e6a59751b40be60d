//! Why a server dropped a TLS connection after the handshake. With TLS 1.3 a server
//! checks the client's certificate after the client has finished its handshake and
//! sent its first request, so a refusal reaches the client as an alert while that
//! request is in flight, and the request often fails as just "operation was canceled".
//! A second handshake of its own, that sends nothing and waits for the server's first
//! bytes, reads the alert for sure: a server that accepts the client sends its HTTP/2
//! settings at once.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{ClientTls, TlsMismatch, provider};

/// Bound on the whole diagnosis: connecting, the handshake, the server's first bytes.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(3);

impl ClientTls {
    /// Connects to `endpoint` (an `https://` URL) once more with these settings and
    /// reports the TLS failure the server answers with, if any.
    pub async fn diagnose(&self, endpoint: &str) -> Option<TlsMismatch> {
        let uri = self.uri(endpoint).parse::<http::Uri>().ok()?;
        if uri.scheme_str() != Some("https") {
            return None;
        }
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let name = self.server_name.as_deref().unwrap_or(host).to_string();
        let name = ServerName::try_from(name).ok()?;
        let config = Arc::new(self.rustls_config()?);
        let probe = async move {
            let tcp = TcpStream::connect((host, port)).await.ok()?;
            let mut tls = match TlsConnector::from(config).connect(name, tcp).await {
                Ok(tls) => tls,
                Err(e) => return TlsMismatch::find(&e),
            };
            let mut first = [0u8; 64];
            match tls.read(&mut first).await {
                Err(e) => TlsMismatch::find(&e),
                Ok(_) => None,
            }
        };
        tokio::time::timeout(DIAGNOSIS_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
    }

    /// The rustls configuration tonic builds from the same settings.
    fn rustls_config(&self) -> Option<ClientConfig> {
        let roots = match &self.ca {
            Some(ca) => ca.roots().ok()?,
            None => rustls::RootCertStore::empty(),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(cert.certificates().ok()?, key.private_key().ok()?)
                .ok()?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(config)
    }
}
