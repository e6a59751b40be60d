//! The S3 server: MinIO on a directory, with a fresh bucket.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bins::Binaries;
use crate::error::{Error, Result};
use crate::ports::free_port;
use crate::process::{Lifetime, Proc};

/// Access key of the read-only user ([`S3Info::readonly`]).
pub const READONLY_USER: &str = "reader";

/// Everything needed to reach the S3 server.
#[derive(Clone, Serialize, Deserialize)]
pub struct S3Info {
    /// `http://<host>:<port>`, path-style addressing: `127.0.0.1`, or with nodes the
    /// host end of the first node's link, which this machine and every pod reach.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// The root user: may do anything.
    pub access_key: String,
    pub secret_key: String,
    /// A user that may only read and list `bucket` (GetObject, ListBucket,
    /// GetBucketLocation), as a destination cluster's import profile should. `None` only
    /// for environments started by an older build.
    #[serde(default)]
    pub readonly: Option<S3Credentials>,
}

/// An access key pair of the S3 server.
#[derive(Clone, Serialize, Deserialize)]
pub struct S3Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Credentials {
    // The secret key stays out of test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for S3Info {
    // The secret key stays out of test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Info")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("readonly", &self.readonly)
            .finish_non_exhaustive()
    }
}

impl S3Info {
    /// An aws-sdk-s3 client set up the way non-AWS servers need: custom endpoint, path
    /// style, checksums only when required.
    pub fn client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{
            BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
        };
        let creds = aws_credential_types::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "ferry-testenv",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Shell `export` lines for `.ferry-dev/s3.env`.
    pub fn env_lines(&self) -> String {
        let mut lines = format!(
            "export FERRY_S3_ENDPOINT={}\nexport FERRY_S3_BUCKET={}\nexport AWS_REGION={}\n\
             export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\n\
             export FERRY_REPO=s3:{}/{}/ferry\n",
            self.endpoint,
            self.bucket,
            self.region,
            self.access_key,
            self.secret_key,
            self.endpoint,
            self.bucket
        );
        if let Some(r) = &self.readonly {
            lines.push_str(&format!(
                "export FERRY_S3_READONLY_ACCESS_KEY_ID={}\n\
                 export FERRY_S3_READONLY_SECRET_ACCESS_KEY={}\n",
                r.access_key, r.secret_key
            ));
        }
        lines
    }
}

pub(crate) async fn start_minio(
    dir: &Path,
    bins: &Binaries,
    host: std::net::Ipv4Addr,
    lifetime: Lifetime,
) -> Result<(S3Info, Proc)> {
    let io = |e| Error::io("allocating a port for", dir)(e);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(Error::io("creating", &data))?;
    let port = free_port().await.map_err(io)?;
    let console = free_port().await.map_err(io)?;
    let info = S3Info {
        endpoint: format!("http://{host}:{port}"),
        region: "us-east-1".to_owned(),
        bucket: "ferry".to_owned(),
        access_key: "ferry-admin".to_owned(),
        secret_key: random_secret(),
        readonly: None,
    };
    let mut proc = Proc::spawn(
        "minio",
        &bins.minio,
        &[
            "server".to_owned(),
            data.display().to_string(),
            format!("--address={host}:{port}"),
            format!("--console-address=127.0.0.1:{console}"),
            "--quiet".to_owned(),
        ],
        &[
            ("MINIO_ROOT_USER", info.access_key.clone()),
            ("MINIO_ROOT_PASSWORD", info.secret_key.clone()),
            ("MINIO_BROWSER", "off".to_owned()),
            ("MINIO_UPDATE", "off".to_owned()),
            ("MINIO_CI_CD", "1".to_owned()),
        ],
        &dir.join("minio.log"),
        lifetime,
    )?;

    // Ready when the bucket can be created.
    let client = info.client();
    let timeout = Duration::from_secs(60);
    let start = Instant::now();
    loop {
        proc.check_running()?;
        match client.create_bucket().bucket(&info.bucket).send().await {
            Ok(_) => break,
            Err(e) => {
                let owned = e
                    .as_service_error()
                    .is_some_and(|se| se.is_bucket_already_owned_by_you());
                if owned {
                    break;
                }
                if start.elapsed() > timeout {
                    return Err(Error::S3 {
                        endpoint: info.endpoint.clone(),
                        action: "creating the bucket (server not ready?)",
                        message: format!(
                            "{}; last lines of {}:\n{}",
                            aws_sdk_s3::error::DisplayErrorContext(&e),
                            proc.log.display(),
                            crate::process::log_tail(&proc.log, 20)
                        ),
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reader = S3Credentials {
        access_key: READONLY_USER.to_owned(),
        secret_key: random_secret(),
    };
    add_readonly_user(dir, &info, &reader).await?;
    Ok((
        S3Info {
            readonly: Some(reader),
            ..info
        },
        proc,
    ))
}

fn random_secret() -> String {
    use rand::Rng;
    let b: [u8; 20] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Adds `reader` with a policy that allows reading and listing the bucket and nothing
/// else, through `mc` (MinIO's admin API takes signed requests only).
async fn add_readonly_user(dir: &Path, info: &S3Info, reader: &S3Credentials) -> Result<()> {
    let mc = crate::bins::mc()?;
    let policy_file = dir.join("readonly-policy.json");
    let bucket = &info.bucket;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                "Resource": [format!("arn:aws:s3:::{bucket}")]
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [format!("arn:aws:s3:::{bucket}/*")]
            }
        ]
    });
    std::fs::write(&policy_file, policy.to_string()).map_err(Error::io("writing", &policy_file))?;
    // The alias comes from the environment, so no credentials are written to mc's config.
    let host = info
        .endpoint
        .strip_prefix("http://")
        .unwrap_or(&info.endpoint);
    let alias = format!("http://{}:{}@{host}", info.access_key, info.secret_key);
    let policy_path = policy_file.display().to_string();
    let steps: [(&'static str, Vec<&str>); 3] = [
        (
            "adding the read-only user",
            vec![
                "admin",
                "user",
                "add",
                "ferry",
                &reader.access_key,
                &reader.secret_key,
            ],
        ),
        (
            "creating the read-only policy",
            vec![
                "admin",
                "policy",
                "create",
                "ferry",
                "ferry-readonly",
                &policy_path,
            ],
        ),
        (
            "attaching the read-only policy",
            vec![
                "admin",
                "policy",
                "attach",
                "ferry",
                "ferry-readonly",
                "--user",
                &reader.access_key,
            ],
        ),
    ];
    let config_dir = dir.join("mc");
    for (action, args) in steps {
        let out = tokio::process::Command::new(&mc)
            .arg("--config-dir")
            .arg(&config_dir)
            .args(["--json", "--no-color", "--disable-pager"])
            .args(&args)
            .env("MC_HOST_ferry", &alias)
            .output()
            .await
            .map_err(|source| Error::Spawn {
                component: "mc".to_owned(),
                program: mc.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::S3 {
                endpoint: info.endpoint.clone(),
                action,
                message: format!(
                    "mc {} failed ({}): {}{}",
                    args[..3].join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
    }
    Ok(())
}
