//! An HTTPS endpoint nobody vouches for, in front of a plain one: what a test needs to
//! show that an S3 store with a self-signed certificate is refused by default and
//! reached when verification is switched off.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::{Error, Result};

/// Serves HTTPS on a free loopback port with a fresh self-signed certificate and passes
/// each connection's plaintext on to `upstream` (`host:port`, for example the test S3
/// server's). Runs until the runtime stops; returns `https://127.0.0.1:<port>`.
pub async fn self_signed_proxy(upstream: &str) -> Result<String> {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .map_err(|e| tls_error("certificate", e))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
        })
        .map_err(|e| tls_error("server configuration", e))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| tls_error("binding a loopback port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| tls_error("its address", e))?;
    let upstream = upstream.to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Ok(format!("https://{addr}"))
}

fn tls_error(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Tls {
        what,
        message: e.to_string(),
    }
}
