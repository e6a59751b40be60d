//! TLS against a real server: certificates from rcgen, a real `ferry_rpc::Server` on a
//! socket, real tonic clients calling its health service. A client with the right CA
//! gets through; a wrong CA, a wrong name and an expired certificate are refused with
//! an error naming the mismatch; with mutual TLS, a client without a certificate or
//! with one from another CA is refused.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferry_rpc::tls::Pem;
use ferry_rpc::{ClientTls, ServerSecurity, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA made for one test.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn pem(&self) -> Pem {
        Pem::new("test CA", self.pem.clone())
    }

    /// A certificate for `names`, usable by servers and clients, valid from an hour ago
    /// for a day, or (expired) from two days ago until yesterday.
    fn issue(&self, names: &[&str], expired: bool) -> (Pem, Pem) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        (params.not_before, params.not_after) = if expired {
            (now - day * 2, now - day)
        } else {
            (now - time::Duration::hours(1), now + day)
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            Pem::new("test cert", cert.pem()),
            Pem::new("test key", key.serialize_pem()),
        )
    }
}

/// A server with no services of its own (health and reflection are always there).
struct Running {
    endpoint: String,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(security: ServerSecurity) -> Running {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let scheme = security.scheme();
    let server = ferry_rpc::Server::new().unwrap();
    let until = stop.clone();
    tokio::spawn(async move {
        server
            .serve(
                ferry_rpc::Listener::new(tcp, security),
                until.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    Running {
        endpoint: format!("{scheme}://{addr}"),
        stop,
    }
}

/// A TLS server (not mutual) with a certificate of `ca` for `names`.
async fn serve_tls(ca: &Ca, names: &[&str], expired: bool) -> Running {
    let (cert, key) = ca.issue(names, expired);
    serve(ServerSecurity::Tls(
        ServerTls::new(&cert, &key, None).unwrap(),
    ))
    .await
}

/// One health check through `tls`; the error explained when it is a TLS failure.
async fn health(tls: &ClientTls, endpoint: &str) -> Result<(), String> {
    let explain = |e: &(dyn std::error::Error + 'static)| {
        tls.explain(endpoint, e)
            .unwrap_or_else(|| format!("not a TLS failure: {e:?}"))
    };
    let channel = tls
        .endpoint(endpoint)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| explain(&e))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|s| explain(&s))?;
    Ok(())
}

fn trusting(ca: &Ca) -> ClientTls {
    ClientTls::new().with_ca(ca.pem()).unwrap()
}

#[tokio::test]
async fn the_right_ca_gets_through_and_a_wrong_ca_or_name_is_refused() {
    let ca = Ca::new("ferry test CA");
    let server = serve_tls(&ca, &["ferry-a.test", "127.0.0.1"], false).await;

    health(&trusting(&ca), &server.endpoint).await.unwrap();

    // Another CA, even one with the same name, did not sign the server's certificate.
    let other = Ca::new("ferry test CA");
    let err = health(&trusting(&other), &server.endpoint)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "certificate of 127.0.0.1 is signed by an unknown CA; pass --ca-file with the CA that \
         signed it"
    );
    let err = health(&ClientTls::new(), &server.endpoint)
        .await
        .unwrap_err();
    assert!(err.contains("unknown CA"), "{err}");

    // Reached as a name the certificate does not hold.
    let err = health(
        &trusting(&ca).with_server_name("ferry-b.test"),
        &server.endpoint,
    )
    .await
    .unwrap_err();
    assert!(
        err.starts_with("certificate of ferry-b.test is for ")
            && err.contains("ferry-a.test")
            && err.contains("127.0.0.1")
            && err.contains("not ferry-b.test"),
        "{err}"
    );
    // By a name it does hold.
    health(
        &trusting(&ca).with_server_name("ferry-a.test"),
        &server.endpoint,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = Ca::new("ferry test CA");
    let server = serve_tls(&ca, &["127.0.0.1"], true).await;
    let err = health(&trusting(&ca), &server.endpoint).await.unwrap_err();
    assert!(
        err.starts_with("certificate of 127.0.0.1 expired at 20"),
        "{err}"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let ca = Ca::new("ferry test CA");
    let (cert, key) = ca.issue(&["127.0.0.1"], false);
    let tls = ServerTls::new(&cert, &key, Some(&ca.pem())).unwrap();
    assert!(tls.is_mutual());
    let server = serve(ServerSecurity::Tls(tls)).await;

    // A certificate of the server's client CA.
    let (client_cert, client_key) = ca.issue(&["ferry-cli"], false);
    let good = trusting(&ca)
        .with_identity(client_cert, client_key)
        .unwrap();
    health(&good, &server.endpoint).await.unwrap();

    let err = health(&trusting(&ca), &server.endpoint).await.unwrap_err();
    assert!(
        err.starts_with("127.0.0.1 requires a client certificate (mutual TLS); pass --client-cert and --client-key"),
        "{err}"
    );
    // A handshake of its own hears the refusal for sure (a call may only see its
    // connection drop); an accepted client hears none.
    assert_eq!(
        trusting(&ca).diagnose(&server.endpoint).await,
        Some(ferry_rpc::tls::TlsMismatch::ClientCertRequired)
    );
    assert_eq!(good.diagnose(&server.endpoint).await, None);

    let stranger = Ca::new("someone else's CA");
    let (client_cert, client_key) = stranger.issue(&["ferry-cli"], false);
    let bad = trusting(&ca)
        .with_identity(client_cert, client_key)
        .unwrap();
    let err = health(&bad, &server.endpoint).await.unwrap_err();
    assert!(
        err.starts_with("127.0.0.1 refused this client's certificate: it is signed by a CA the server does not trust"),
        "{err}"
    );
}

#[tokio::test]
async fn tls_and_plaintext_do_not_mix_silently() {
    let ca = Ca::new("ferry test CA");
    let plain = serve(ServerSecurity::LoopbackPlaintext).await;
    let https = plain.endpoint.replace("http://", "https://");
    let err = health(&trusting(&ca), &https).await.unwrap_err();
    assert!(err.contains("does not speak TLS"), "{err}");
    // A bare host:port means TLS once a CA is given.
    let bare = plain.endpoint.trim_start_matches("http://").to_string();
    assert!(health(&trusting(&ca), &bare).await.is_err());
    health(&ClientTls::new(), &bare).await.unwrap();
}

#[tokio::test]
async fn plaintext_is_served_on_loopback_only_unless_asked() {
    let tcp = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = ferry_rpc::Server::new()
        .unwrap()
        .serve(tcp, async {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ferry_rpc::ServeError::PlaintextRefused { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--insecure-plaintext"), "{err}");
    let tcp = TcpListener::bind("0.0.0.0:0").await.unwrap();
    ferry_rpc::Server::new()
        .unwrap()
        .serve(
            ferry_rpc::Listener::new(tcp, ServerSecurity::InsecurePlaintext),
            async {},
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lazy_channel_fails_its_first_call_saying_why() {
    let ca = Ca::new("ferry test CA");
    let server = serve_tls(&ca, &["127.0.0.1"], false).await;
    let lazy_health = |tls: ClientTls| {
        let endpoint = server.endpoint.clone();
        async move {
            let channel = tls.endpoint(&endpoint).unwrap().connect_lazy();
            HealthClient::new(tls.traced(&endpoint, channel))
                .check(HealthCheckRequest::default())
                .await
        }
    };
    let wrong = trusting(&Ca::new("another CA")).with_flags(ferry_rpc::TlsFlags::SERVICE);
    let status = lazy_health(wrong).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.message(),
        "certificate of 127.0.0.1 is signed by an unknown CA; pass --tls-ca with the CA that \
         signed it"
    );
    let detail = ferry_rpc::detail(&status).expect("an error detail");
    assert_eq!(detail.code(), ferry_proto::v1::ErrorCode::Unreachable);
    lazy_health(trusting(&ca)).await.unwrap();
}
