//! Profiles: how this agent reaches a repository (location, S3 credentials, key).
//!
//! In a cluster each profile is a Secret mounted into the agent as one YAML file per
//! profile; they are read on every request, so a rotated Secret applies without a
//! restart. The control plane can also hand profiles over directly.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use ferry_repo::Repository;
use ferry_repo::backend::{DynBackend, LocalBackend, RepoUrl, S3Backend, S3Options};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::error::AgentError;

/// A repository location with what it takes to open it.
#[derive(Clone)]
pub struct Profile {
    pub name: String,
    /// A directory or `s3:http(s)://host:port/bucket/prefix` or `s3://bucket/prefix`.
    pub repository: String,
    /// S3 credentials; required for `s3:` repositories.
    pub s3: Option<S3Credentials>,
    /// The user's key that wraps the repository's master key.
    pub key: Vec<u8>,
    /// Check the S3 endpoint's TLS certificate (`verifyTls`, on unless a profile turns
    /// it off). Off accepts any certificate, for test setups with self-signed ones, and
    /// logs a loud warning.
    pub verify_tls: bool,
}

/// Static S3 credentials.
#[derive(Clone)]
pub struct S3Credentials {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("repository", &self.repository)
            .field(
                "s3_access_key_id",
                &self.s3.as_ref().map(|c| c.access_key_id.as_str()),
            )
            .field("key", &"<redacted>")
            .field("verify_tls", &self.verify_tls)
            .finish()
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// A profile file as written by users (`<name>.yaml`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileFile {
    repository: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    /// Check the S3 endpoint's TLS certificate; absent means true. `false` is for test
    /// setups with self-signed certificates only.
    #[serde(default)]
    verify_tls: Option<bool>,
    /// Path of the key file, relative to the profile's directory if not absolute.
    #[serde(default)]
    key_file: Option<PathBuf>,
    /// The key itself, base64.
    #[serde(default)]
    key: Option<String>,
    /// The secrets instead sealed (base64 of [`ferry_store::SecretBox::seal`], bound to
    /// `agent-profile/<name>`): how `ferry serve`'s catalog writes profiles, so no secret
    /// lies in clear in its data directory.
    #[serde(default)]
    sealed: Option<String>,
    /// The key file that opens `sealed`, relative to the profile's directory if not
    /// absolute.
    #[serde(default)]
    sealing_key_file: Option<PathBuf>,
}

/// What `sealed` holds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SealedSecrets {
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    /// base64 of the key.
    key: String,
}

/// Where profiles come from.
#[derive(Clone, Debug)]
pub enum ProfileSource {
    /// One `<name>.yaml` per profile in a directory, read on every request.
    Dir(PathBuf),
    /// Profiles given in memory (by the control plane, or in tests).
    Static(Arc<HashMap<String, Profile>>),
}

impl ProfileSource {
    /// Looks a profile up by name.
    pub async fn get(&self, name: &str) -> Result<Profile, AgentError> {
        validate_name(name)?;
        match self {
            ProfileSource::Static(map) => {
                map.get(name)
                    .cloned()
                    .ok_or_else(|| AgentError::ProfileNotFound {
                        name: name.to_string(),
                        dir: "the agent's in-memory profiles".to_string(),
                    })
            }
            ProfileSource::Dir(dir) => {
                let dir = dir.clone();
                let name = name.to_string();
                tokio::task::spawn_blocking(move || load_from_dir(&dir, &name))
                    .await
                    .map_err(|e| AgentError::invalid("profile", format!("loading failed: {e}")))?
            }
        }
    }
}

fn validate_name(name: &str) -> Result<(), AgentError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(
            "repository.profile",
            format!(
                "{name:?} is not a profile name: use letters, digits, '-', '_' and '.', not starting with '.'"
            ),
        ))
    }
}

fn load_from_dir(dir: &Path, name: &str) -> Result<Profile, AgentError> {
    let path = ["yaml", "yml", "json"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| AgentError::ProfileNotFound {
            name: name.to_string(),
            dir: dir.display().to_string(),
        })?;
    let invalid = |detail: String| AgentError::ProfileInvalid {
        name: name.to_string(),
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let mut file: ProfileFile = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if let Some(sealed) = file.sealed.take() {
        let in_clear = file.key.is_some()
            || file.key_file.is_some()
            || file.secret_access_key.is_some()
            || file.session_token.is_some();
        if in_clear {
            return Err(invalid(
                "give the secrets sealed or in clear (key, keyFile, secretAccessKey, sessionToken), not both".into(),
            ));
        }
        let opened =
            open_sealed(dir, name, &sealed, file.sealing_key_file.as_deref()).map_err(invalid)?;
        file.key = Some(opened.key);
        file.secret_access_key = opened.secret_access_key;
        file.session_token = opened.session_token;
    }
    let key = match (&file.key, &file.key_file) {
        (Some(_), Some(_)) => return Err(invalid("give key or keyFile, not both".into())),
        (None, None) => {
            return Err(invalid(
                "no key: add keyFile (a path) or key (base64)".into(),
            ));
        }
        (Some(b64), None) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| invalid(format!("key is not base64: {e}")))?,
        (None, Some(p)) => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                dir.join(p)
            };
            std::fs::read(&p).map_err(|e| invalid(format!("keyFile {}: {e}", p.display())))?
        }
    };
    if key.is_empty() {
        return Err(invalid("the key is empty".into()));
    }
    let url = RepoUrl::parse(&file.repository).map_err(|e| invalid(e.to_string()))?;
    if matches!(url, RepoUrl::Local(_)) && file.verify_tls.is_some() {
        return Err(invalid(
            "verifyTls is given for a local repository, which has no TLS; remove it".into(),
        ));
    }
    let s3 = match (&url, file.access_key_id, file.secret_access_key) {
        (RepoUrl::Local(_), None, None) => None,
        (RepoUrl::Local(_), _, _) => {
            return Err(invalid(
                "S3 credentials given for a local repository; remove them".into(),
            ));
        }
        (RepoUrl::S3 { .. }, Some(id), Some(secret)) => Some(S3Credentials {
            region: file.region.unwrap_or_else(|| "us-east-1".into()),
            access_key_id: id,
            secret_access_key: secret,
            session_token: file.session_token,
        }),
        (RepoUrl::S3 { .. }, _, _) => {
            return Err(invalid(
                "an s3: repository needs accessKeyId and secretAccessKey".into(),
            ));
        }
    };
    Ok(Profile {
        name: name.to_string(),
        repository: file.repository,
        s3,
        key,
        verify_tls: file.verify_tls.unwrap_or(true),
    })
}

/// Warns, once per profile and endpoint in this process, that a profile does not check
/// its S3 endpoint's certificate. Profiles are read on every request; the warning is
/// not repeated for each.
fn warn_unverified(profile: &str, endpoint: &str) {
    static WARNED: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .insert((profile.to_string(), endpoint.to_string()));
    if first {
        tracing::warn!(
            profile,
            endpoint,
            "TLS CERTIFICATE VERIFICATION IS OFF: profile {profile:?} has verifyTls: false, so \
             this agent accepts any certificate from S3 endpoint {endpoint}; anyone on the \
             network path can pose as it and read or change repository traffic. Use this only \
             in test setups, and remove verifyTls: false once the endpoint has a trusted \
             certificate"
        );
    }
}

/// The secrets of a sealed profile file, opened with its sealing key file.
fn open_sealed(
    dir: &Path,
    name: &str,
    sealed: &str,
    key_file: Option<&Path>,
) -> Result<SealedSecrets, String> {
    let key_file = key_file.ok_or("sealed without sealingKeyFile")?;
    let key_file = if key_file.is_absolute() {
        key_file.to_path_buf()
    } else {
        dir.join(key_file)
    };
    let key = std::fs::read(&key_file)
        .map_err(|e| format!("sealingKeyFile {}: {e}", key_file.display()))?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim())
        .map_err(|e| format!("sealed is not base64: {e}"))?;
    let json = ferry_store::SecretBox::from_key(&key, key_file)
        .and_then(|b| {
            b.open(
                format!("agent-profile/{name}").as_bytes(),
                &sealed,
                &format!("profile {name}"),
            )
        })
        .map_err(|e| e.to_string())?;
    // Authenticated, so well-formed; serde would name a bad field, not its value.
    serde_json::from_slice(&json).map_err(|e| format!("sealed secrets: {e}"))
}

impl Profile {
    /// The storage backend this profile names.
    pub fn backend(&self) -> Result<DynBackend, AgentError> {
        let url = RepoUrl::parse(&self.repository).map_err(AgentError::repo(format!(
            "profile {:?}: repository URL",
            self.name
        )))?;
        Ok(match url {
            RepoUrl::Local(path) => Arc::new(LocalBackend::new(path)),
            RepoUrl::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                let creds = self.s3.as_ref().ok_or_else(|| AgentError::ProfileInvalid {
                    name: self.name.clone(),
                    path: "in memory".into(),
                    detail: "an s3: repository needs S3 credentials".into(),
                })?;
                let mut options = S3Options::new(endpoint, &bucket, &prefix, &creds.region);
                options.access_key_id = creds.access_key_id.clone();
                options.secret_access_key = creds.secret_access_key.clone();
                options.session_token = creds.session_token.clone();
                options.verify_tls = self.verify_tls;
                let plain_http = options
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"));
                if !self.verify_tls && !plain_http {
                    warn_unverified(&self.name, options.endpoint.as_deref().unwrap_or("AWS S3"));
                }
                Arc::new(S3Backend::new(options))
            }
        })
    }

    /// Opens the repository; `expected_id`, when not empty, must match its id.
    pub async fn open(&self, expected_id: &str) -> Result<Repository, AgentError> {
        let repo = Repository::open(self.backend()?, &self.key)
            .await
            .map_err(|source| self.open_error(source))?;
        let found = repo.config().id.to_string();
        if !expected_id.is_empty() && found != expected_id {
            return Err(AgentError::RepositoryMismatch {
                profile: self.name.clone(),
                expected: expected_id.to_string(),
                found,
            });
        }
        Ok(repo)
    }

    /// What a failed open means: a refused TLS certificate gets its own error, naming
    /// the profile and the `verifyTls` switch, since retrying never fixes it.
    fn open_error(&self, source: ferry_repo::Error) -> AgentError {
        // The engine carries S3 failures as text (the HTTP client's error chain), so the
        // TLS library's wording is what there is to go by.
        let text = source.to_string();
        let certificate = self.verify_tls
            && matches!(source, ferry_repo::Error::Backend(_))
            && text.to_ascii_lowercase().contains("certificate");
        if certificate {
            let endpoint = match RepoUrl::parse(&self.repository) {
                Ok(RepoUrl::S3 {
                    endpoint: Some(e), ..
                }) => e,
                _ => "AWS S3".to_string(),
            };
            return AgentError::TlsCertificate {
                profile: self.name.clone(),
                endpoint,
                detail: text,
            };
        }
        AgentError::Repo {
            context: format!(
                "opening repository {} of profile {:?}",
                self.repository, self.name
            ),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write profile");
    }

    #[tokio::test]
    async fn profiles_load_and_explain_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k"), b"secret key").expect("key");
        write(
            dir.path(),
            "good.yaml",
            "repository: s3:http://127.0.0.1:9000/b/p\naccessKeyId: id\nsecretAccessKey: s\nkeyFile: k\n",
        );
        write(
            dir.path(),
            "selfsigned.yaml",
            "repository: s3:https://127.0.0.1:9443/b/p\naccessKeyId: id\nsecretAccessKey: s\n\
             keyFile: k\nverifyTls: false\n",
        );
        write(
            dir.path(),
            "localtls.yaml",
            "repository: /srv/repo\nkey: a2V5\nverifyTls: false\n",
        );
        write(dir.path(), "nokey.yaml", "repository: /srv/repo\n");
        write(
            dir.path(),
            "nocreds.yaml",
            "repository: s3://b/p\nkey: a2V5\n",
        );
        write(
            dir.path(),
            "typo.yaml",
            "repository: /x\nkey: a2V5\nregoin: x\n",
        );
        let src = ProfileSource::Dir(dir.path().to_path_buf());

        let p = src.get("good").await.expect("good profile");
        assert_eq!(p.key, b"secret key");
        assert_eq!(p.s3.as_ref().map(|c| c.region.as_str()), Some("us-east-1"));
        assert!(!format!("{p:?}").contains("secret key"));
        assert!(
            p.verify_tls,
            "TLS verification is on unless the profile turns it off"
        );
        let insecure = src.get("selfsigned").await.expect("verifyTls: false");
        assert!(!insecure.verify_tls);
        insecure
            .backend()
            .expect("an S3 backend without verification");

        let err = |r: Result<Profile, AgentError>| r.expect_err("must fail").to_string();
        assert!(err(src.get("nokey").await).contains("no key"));
        assert!(err(src.get("nocreds").await).contains("accessKeyId"));
        assert!(err(src.get("typo").await).contains("regoin"));
        assert!(err(src.get("localtls").await).contains("verifyTls"));
        assert!(err(src.get("absent").await).contains("not found"));
        assert!(err(src.get("../etc/passwd").await).contains("not a profile name"));
    }

    #[tokio::test]
    async fn sealed_profiles_open_with_their_key_file_and_name_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = ferry_store::SecretBox::load_or_create(dir.path()).expect("key");
        let secrets = br#"{"secretAccessKey":"s3-secret","key":"a2V5"}"#;
        let sealed = |name: &str| {
            let bytes = sealer.seal(format!("agent-profile/{name}").as_bytes(), secrets);
            base64::engine::general_purpose::STANDARD.encode(bytes.expect("seal"))
        };
        let text = |sealed: String| {
            format!(
                "repository: s3:http://127.0.0.1:9000/b/p\naccessKeyId: id\n\
                 sealingKeyFile: secret.key\nsealed: {sealed}\n"
            )
        };
        write(dir.path(), "good.yaml", &text(sealed("good")));
        // A sealed value copied into another profile's file does not open there.
        write(dir.path(), "copied.yaml", &text(sealed("good")));
        let src = ProfileSource::Dir(dir.path().to_path_buf());

        let p = src.get("good").await.expect("sealed profile");
        assert_eq!(p.key, b"key");
        let creds = p.s3.as_ref().expect("S3 credentials");
        assert_eq!(creds.secret_access_key, "s3-secret");
        assert_eq!(creds.access_key_id, "id");
        let on_disk = std::fs::read_to_string(dir.path().join("good.yaml")).expect("file");
        assert!(!on_disk.contains("s3-secret") && !on_disk.contains("a2V5"));

        let err = src.get("copied").await.expect_err("bound to its name");
        assert!(err.to_string().contains("does not open"), "{err}");
    }
}
