//! `ferry certs create`: a CA and a certificate it signs, for test setups and trials.
//! Production certificates come from the organisation's CA or cert-manager; Ferry takes
//! them the same way (files or a `kubernetes.io/tls` Secret with `ca.crt`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// `ferry certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA (once: an existing one in --ca-dir is reused) and a certificate it
    /// signs, good as both the server and the client certificate of a Ferry (mutual
    /// TLS); print the flags that use them.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Directory for NAME.crt and NAME.key (created when missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The certificate's name: its files' and its common name.
    #[arg(long, default_value = "ferry")]
    pub name: String,
    /// A DNS name or IP address the certificate is valid for; repeat. Include the host
    /// of the Ferry's --ferry-endpoint: other parties reach it by that name.
    #[arg(long = "host", required = true, value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Directory of the CA (ca.crt, ca.key); default: --dir. Give every Ferry that must
    /// trust the others the same one.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
}

/// Runs `ferry certs`.
pub fn run(args: CertsArgs) -> Result<()> {
    match args.command {
        CertsCommand::Create(args) => create(&args),
    }
}

/// The CA's files in its directory.
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

fn create(args: &CreateArgs) -> Result<()> {
    let ca_dir = args.ca_dir.clone().unwrap_or_else(|| args.dir.clone());
    let (issuer, ca_created) = ca(&ca_dir)?;

    let key = KeyPair::generate().map_err(|e| failed("generating a key", e))?;
    let mut params = CertificateParams::new(args.hosts.clone())
        .map_err(|e| Error::Usage(format!("--host {:?}: {e}", args.hosts)))?;
    params.distinguished_name = common_name(&args.name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks a few minutes apart.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(args.days));
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| failed("signing the certificate", e))?;

    let cert_path = args.dir.join(format!("{}.crt", args.name));
    let key_path = args.dir.join(format!("{}.key", args.name));
    write(&cert_path, cert.pem().as_bytes(), false)?;
    write(&key_path, key.serialize_pem().as_bytes(), true)?;

    let ca_path = ca_dir.join(CA_CERT);
    let (crt, key, ca) = (cert_path.display(), key_path.display(), ca_path.display());
    let until = params
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!(
        "CA {ca} ({})\ncertificate {crt} for {} (valid until {until}), key {key}\n",
        if ca_created { "created" } else { "reused" },
        args.hosts.join(", "),
    );
    println!(
        "Serve with mutual TLS:\n  ferry serve --tls-cert {crt} --tls-key {key} --tls-client-ca {ca} ..."
    );
    println!(
        "Call it:\n  ferry --server https://{}:7443 --ca-file {ca} --client-cert {crt} --client-key {key} pair list",
        args.hosts[0]
    );
    println!(
        "Or as a Secret, for --tls-secret ferry-system/{name}:\n  kubectl -n ferry-system create secret generic {name} \
         --from-file=tls.crt={crt} --from-file=tls.key={key} --from-file=ca.crt={ca}",
        name = args.name
    );
    Ok(())
}

/// The CA in `dir`, made when it holds none; true when made now.
fn ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, bool)> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let read = |p: &Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::Usage(format!("reading the CA {}: {e}", p.display())))
            };
            let key = KeyPair::from_pem(&read(&key_path)?)
                .map_err(|e| Error::Usage(format!("CA key {}: {e}", key_path.display())))?;
            let issuer = Issuer::from_ca_cert_pem(&read(&cert_path)?, key).map_err(|e| {
                Error::Usage(format!("CA certificate {}: {e}", cert_path.display()))
            })?;
            Ok((issuer, false))
        }
        (false, false) => {
            let key = KeyPair::generate().map_err(|e| failed("generating the CA key", e))?;
            let mut params = CertificateParams::new(Vec::<String>::new())
                .map_err(|e| failed("making the CA", e))?;
            // A name of its own: verifiers look a CA up by name before its signature.
            params.distinguished_name = common_name(&format!(
                "Ferry test CA {}",
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            ));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = now + time::Duration::days(3650);
            let cert = params
                .self_signed(&key)
                .map_err(|e| failed("signing the CA", e))?;
            write(&cert_path, cert.pem().as_bytes(), false)?;
            write(&key_path, key.serialize_pem().as_bytes(), true)?;
            Ok((Issuer::new(params, key), true))
        }
        (has_cert, _) => Err(Error::Usage(format!(
            "{} has {} but not {}; put both there, or pick another --ca-dir",
            dir.display(),
            if has_cert { CA_CERT } else { CA_KEY },
            if has_cert { CA_KEY } else { CA_CERT },
        ))),
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn failed(what: &str, e: rcgen::Error) -> Error {
    Error::Usage(format!("{what}: {e}"))
}

/// Writes `bytes` to `path`, creating its directory; `secret` files are readable by
/// their owner only.
fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| {
        Error::Output(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
