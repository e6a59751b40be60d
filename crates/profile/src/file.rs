//! The profile file, `<dir>/<name>.yaml`: read by agents and the transfer service,
//! written (secrets sealed) by the catalog. Unknown fields are refused, so a typo is
//! named instead of silently ignored.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use ferry_repo::backend::RepoUrl;
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_REGION, Profile, ProfileError, S3Credentials};

/// A profile file as users (or the catalog) write it.
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
    /// The part of the repository the profile reads (an import profile's token scope).
    #[serde(default)]
    reads_only: Option<ScopeFile>,
    /// The one application namespace an export profile's repository holds.
    #[serde(default)]
    namespace: Option<String>,
}

/// [`crate::ReadScope`] in a profile file.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScopeFile {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    restore_point: String,
}

/// What `sealed` holds.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SealedSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_token: Option<String>,
    /// base64 of the key.
    key: String,
}

/// The file the catalog writes: every secret sealed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SealedFile<'a> {
    repository: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_key_id: Option<&'a str>,
    /// `false` when the profile does not verify the S3 endpoint's TLS certificate;
    /// absent means it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_tls: Option<bool>,
    /// The key file that opens `sealed`.
    sealing_key_file: &'a Path,
    /// base64 of the sealed JSON of [`SealedSecrets`], bound to this profile's name.
    sealed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reads_only: Option<ScopeFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

/// What a sealed value is bound to: a value sealed for one profile opens for no other.
fn seal_context(name: &str) -> String {
    format!("agent-profile/{name}")
}

/// Path of a profile's file.
pub fn file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.yaml"))
}

pub(crate) fn load(dir: &Path, name: &str) -> Result<Profile, ProfileError> {
    let path = ["yaml", "yml", "json"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| ProfileError::NotFound {
            name: name.to_string(),
            dir: dir.display().to_string(),
        })?;
    let invalid = |detail: String| ProfileError::Invalid {
        name: name.to_string(),
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let mut file: ProfileFile =
        serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
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
            region: file.region.unwrap_or_else(|| DEFAULT_REGION.into()),
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
        reads_only: file
            .reads_only
            .map(|r| crate::ReadScope::from_parts(&r.namespace, &r.restore_point))
            .unwrap_or_default(),
        namespace: file.namespace.filter(|n| !n.is_empty()),
    })
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
                seal_context(name).as_bytes(),
                &sealed,
                &format!("profile {name}"),
            )
        })
        .map_err(|e| e.to_string())?;
    // Authenticated, so well-formed; serde would name a bad field, not its value.
    serde_json::from_slice(&json).map_err(|e| format!("sealed secrets: {e}"))
}

pub(crate) fn sealed_yaml(
    p: &Profile,
    sealer: &ferry_store::SecretBox,
) -> Result<String, ProfileError> {
    let internal = |detail: String| ProfileError::Internal {
        name: p.name.clone(),
        detail,
    };
    let is_s3 = matches!(RepoUrl::parse(&p.repository), Ok(RepoUrl::S3 { .. }));
    let s3 = p.s3.as_ref();
    let b64 = base64::engine::general_purpose::STANDARD;
    let secrets = zeroize::Zeroizing::new(
        serde_json::to_vec(&SealedSecrets {
            secret_access_key: s3.map(|c| c.secret_access_key.clone()),
            session_token: s3.and_then(|c| c.session_token.clone()),
            key: b64.encode(&p.key),
        })
        .map_err(|e| internal(format!("encoding the profile file: {e}")))?,
    );
    let sealed = sealer
        .seal(seal_context(&p.name).as_bytes(), &secrets)
        .map_err(|source| ProfileError::Seal {
            name: p.name.clone(),
            source: Box::new(source),
        })?;
    // Absolute: a reader takes a relative path from the profile's directory.
    let key_file = std::path::absolute(sealer.path())
        .map_err(|e| internal(format!("the path of {}: {e}", sealer.path().display())))?;
    let file = SealedFile {
        repository: &p.repository,
        region: is_s3.then(|| {
            s3.map(|c| c.region.as_str())
                .filter(|r| !r.is_empty())
                .unwrap_or(DEFAULT_REGION)
        }),
        access_key_id: s3.map(|c| c.access_key_id.as_str()),
        verify_tls: (is_s3 && !p.verify_tls).then_some(false),
        sealing_key_file: &key_file,
        sealed: b64.encode(sealed),
        reads_only: (!p.reads_only.is_everything()).then(|| ScopeFile {
            namespace: p.reads_only.namespace.clone().unwrap_or_default(),
            restore_point: p.reads_only.restore_point.clone().unwrap_or_default(),
        }),
        namespace: p.namespace.as_deref(),
    };
    serde_yaml_ng::to_string(&file).map_err(|e| internal(format!("encoding the profile file: {e}")))
}

/// Writes `<dir>/<name>.yaml` with mode 0600: a temporary file in the same directory,
/// synced, then renamed over the old one, so a reader never sees half a profile.
pub async fn write_file(dir: &Path, name: &str, yaml: String) -> Result<(), ProfileError> {
    let dir = dir.to_path_buf();
    let path = file_path(&dir, name);
    let tmp = dir.join(format!(
        ".{name}.yaml.tmp-{}-{}",
        std::process::id(),
        ferry_repo::Id::random()
            .map(|id| id.short())
            .unwrap_or_default()
    ));
    let shown = path.display().to_string();
    let owned = name.to_string();
    tokio::task::spawn_blocking(move || {
        let io = |op: &'static str| {
            let shown = shown.clone();
            move |source| ProfileError::File {
                op,
                path: shown,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating the directory of"))?;
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(yaml.as_bytes())?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            // The rename is durable once the directory entry is.
            std::fs::File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io("writing"))
    })
    .await
    .map_err(|e| ProfileError::Internal {
        name: owned,
        detail: format!("writing the profile file: {e}"),
    })?
}

/// Removes `<dir>/<name>.yaml`; a file already gone is fine.
pub async fn remove_file(dir: &Path, name: &str) -> Result<(), ProfileError> {
    let path = file_path(dir, name);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ProfileError::File {
            op: "removing",
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProfileSource;

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

        let err = |r: Result<Profile, ProfileError>| r.expect_err("must fail").to_string();
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
            let bytes = sealer.seal(seal_context(name).as_bytes(), secrets);
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

    #[tokio::test]
    async fn what_is_written_sealed_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = ferry_store::SecretBox::load_or_create(dir.path()).expect("key");
        let profiles = dir.path().join("profiles");
        let scoped = crate::ReadScope::from_parts("shop", &"ab".repeat(32));
        for (name, repository, verify_tls, reads_only) in [
            ("checked", "s3:https://s3.test:9443/b/p", true, scoped),
            (
                "selfsigned",
                "s3:https://s3.test:9443/b/p",
                false,
                crate::ReadScope::from_parts("shop", ""),
            ),
            ("local", "/srv/repo", true, crate::ReadScope::default()),
        ] {
            let s3 = repository.starts_with("s3:").then(|| S3Credentials {
                region: String::new(),
                access_key_id: "id".into(),
                secret_access_key: "s3-secret".into(),
                session_token: Some("session".into()),
            });
            let profile = Profile {
                name: name.into(),
                repository: repository.into(),
                s3,
                key: b"repository key".to_vec(),
                verify_tls,
                reads_only: reads_only.clone(),
                namespace: (name == "local").then(|| "shop".to_owned()),
            };
            let yaml = profile.to_sealed_yaml(&sealer).expect("sealed file");
            assert_eq!(yaml.contains("verifyTls: false"), !verify_tls, "{yaml}");
            assert!(
                !yaml.contains("s3-secret") && !yaml.contains("session"),
                "{yaml}"
            );
            write_file(&profiles, name, yaml.clone())
                .await
                .expect("write");
            let back = ProfileSource::Dir(profiles.clone())
                .get(name)
                .await
                .expect("read back");
            assert_eq!(back.key, profile.key);
            assert_eq!(back.verify_tls, verify_tls);
            assert_eq!(back.reads_only, reads_only, "{name}: {yaml}");
            assert_eq!(back.namespace, profile.namespace, "{name}: {yaml}");
            assert_eq!(back.repository, repository);
            let creds = back.s3.as_ref().map(|c| {
                (
                    c.region.as_str(),
                    c.secret_access_key.as_str(),
                    c.session_token.as_deref(),
                )
            });
            let expected = profile
                .s3
                .as_ref()
                .map(|_| (DEFAULT_REGION, "s3-secret", Some("session")));
            assert_eq!(creds, expected, "{name}");
            remove_file(&profiles, name).await.expect("remove");
            remove_file(&profiles, name)
                .await
                .expect("removing twice is fine");
        }
    }
}
