//! `S3Options::verify_tls`: an HTTPS endpoint with a self-signed certificate is refused
//! by default and reached with verification off. The endpoint is a real TLS server on
//! loopback that answers every request with a fixed object.

use std::sync::Arc;

use ferry_repo::backend::{Backend, S3Backend, S3Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &[u8] = b"object behind a self-signed certificate";

/// Serves HTTPS on a free loopback port with a fresh self-signed certificate; returns
/// the endpoint URL.
async fn self_signed_server() -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // One request per connection is all the test needs: read the head, answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    BODY.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.write_all(BODY).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://{addr}")
}

fn options(endpoint: &str, verify_tls: bool) -> S3Options {
    let mut o = S3Options::new(Some(endpoint.to_string()), "bucket", "prefix", "us-east-1");
    o.access_key_id = "reader".into();
    o.secret_access_key = "secret".into();
    o.max_attempts = 1;
    o.verify_tls = verify_tls;
    o
}

#[tokio::test]
async fn self_signed_endpoints_need_verification_off() {
    let endpoint = self_signed_server().await;

    assert!(
        S3Options::new(None, "b", "", "us-east-1").verify_tls,
        "on by default"
    );
    let err = S3Backend::new(options(&endpoint, true))
        .get("config")
        .await
        .expect_err("an unknown certificate must be refused");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "the error names the certificate: {err:?}"
    );
    assert_eq!(
        err.reason(),
        &ferry_repo::backend::Reason::UntrustedCertificate,
        "the refusal is carried as data: {err:?}"
    );

    let got = S3Backend::new(options(&endpoint, false))
        .get("config")
        .await
        .expect("verification off reaches the server");
    assert_eq!(got.as_ref(), BODY);
}
