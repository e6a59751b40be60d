//! Certificates and keys of one cluster: a CA, the API server's serving certificate for
//! 127.0.0.1 and localhost, and the service-account signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::error::{Error, Result};

/// Paths of the PEM files written for one cluster.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// The CA certificate itself, for kubeconfigs and clients.
    pub ca_pem: String,
}

fn certs_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Certs { what, source }
}

/// Generates and writes the cluster's PEM files into `dir`.
/// `extra_ips` are further addresses the API server is reached at (a node's host address).
pub fn write_cluster_certs(
    dir: &Path,
    cluster: &str,
    extra_ips: &[std::net::Ipv4Addr],
) -> Result<CertFiles> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;

    let ca_key = KeyPair::generate().map_err(certs_err("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(certs_err("CA"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("ferry-testenv {cluster} CA"));
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(certs_err("CA certificate"))?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate().map_err(certs_err("serving key"))?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])
    .map_err(certs_err("serving certificate"))?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    // The first address of --service-cluster-ip-range, which the API server also claims.
    serving.subject_alt_names.push(SanType::IpAddress(
        std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
    ));
    for ip in extra_ips {
        serving
            .subject_alt_names
            .push(SanType::IpAddress((*ip).into()));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("kube-apiserver {cluster}"));
    serving.distinguished_name = dn;
    let serving_cert = serving
        .signed_by(&serving_key, &issuer)
        .map_err(certs_err("serving certificate"))?;

    let sa_key = KeyPair::generate().map_err(certs_err("service-account key"))?;

    let files = CertFiles {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        ca_pem: ca_cert.pem(),
    };
    for (path, content) in [
        (&files.ca_cert, ca_cert.pem()),
        (&files.serving_cert, serving_cert.pem()),
        (&files.serving_key, serving_key.serialize_pem()),
        (&files.sa_key, sa_key.serialize_pem()),
        (&files.sa_pub, sa_key.public_key_pem()),
    ] {
        std::fs::write(path, content).map_err(Error::io("writing", path))?;
    }
    Ok(files)
}
