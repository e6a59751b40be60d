//! `S3Options::verify_tls`: an HTTPS endpoint with a self-signed certificate is refused
//! by default and reached with verification off. The endpoint is the test
//! environment's S3 server (MinIO) behind a TLS proxy with a certificate nobody signed.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use ferry_repo::backend::{Backend, S3Backend, S3Options};

const BODY: &[u8] = b"object behind a self-signed certificate";

fn options(
    s3: &ferry_testenv::S3Info,
    endpoint: &str,
    prefix: &str,
    verify_tls: bool,
) -> S3Options {
    let mut o = common::s3_options(s3, &s3.bucket, prefix);
    o.endpoint = Some(endpoint.to_owned());
    o.max_attempts = 1;
    o.verify_tls = verify_tls;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_endpoints_need_verification_off() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let prefix = ferry_testenv::unique_name("repo-tls");
    S3Backend::new(common::s3_options(s3, &s3.bucket, &prefix))
        .put("config", Bytes::from_static(BODY))
        .await
        .expect("write the object over plain HTTP");
    let upstream = s3.endpoint.trim_start_matches("http://");
    let endpoint = ferry_testenv::tls::self_signed_proxy(upstream)
        .await
        .expect("TLS proxy");

    assert!(
        S3Options::new(None, "b", "", "us-east-1").verify_tls,
        "on by default"
    );
    let err = S3Backend::new(options(s3, &endpoint, &prefix, true))
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

    let got = S3Backend::new(options(s3, &endpoint, &prefix, false))
        .get("config")
        .await
        .expect("verification off reaches the server");
    assert_eq!(got.as_ref(), BODY);
}
