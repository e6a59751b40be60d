//! Repository locations as users type them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{DynBackend, LocalBackend, S3Backend};
use crate::error::{Error, Result};

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoUrl {
    /// A local directory: a plain path, or `local:<path>`.
    Local(PathBuf),
    /// `s3:http(s)://host[:port]/bucket[/prefix]` (custom endpoint, path style) or
    /// `s3://bucket[/prefix]` (AWS).
    S3 {
        endpoint: Option<String>,
        bucket: String,
        prefix: String,
    },
}

impl RepoUrl {
    /// Parses a repository URL.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |detail: &str| {
            Error::invalid(
                "repository URL",
                format!(
                    "{s:?}: {detail}; use a path, s3:http(s)://host:port/bucket/prefix \
                     or s3://bucket/prefix"
                ),
            )
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = s.strip_prefix("s3:") {
            let (endpoint, path) = if let Some(p) = rest.strip_prefix("//") {
                (None, p)
            } else if let Some(scheme_end) = rest.find("://") {
                let scheme = &rest[..scheme_end];
                if scheme != "http" && scheme != "https" {
                    return Err(bad("the endpoint scheme must be http or https"));
                }
                let after = &rest[scheme_end + 3..];
                let host_end = after
                    .find('/')
                    .ok_or_else(|| bad("no bucket after the host"))?;
                let host = &after[..host_end];
                if host.is_empty() {
                    return Err(bad("empty host"));
                }
                (Some(format!("{scheme}://{host}")), &after[host_end + 1..])
            } else {
                return Err(bad("missing // or http(s):// after s3:"));
            };
            let path = path.trim_matches('/');
            let (bucket, prefix) = match path.split_once('/') {
                Some((b, p)) => (b, p.trim_matches('/')),
                None => (path, ""),
            };
            if bucket.is_empty() {
                return Err(bad("empty bucket name"));
            }
            if prefix.split('/').any(|c| c == "..") {
                return Err(bad("'..' in the prefix"));
            }
            return Ok(RepoUrl::S3 {
                endpoint,
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        let path = s.strip_prefix("local:").unwrap_or(s);
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        Ok(RepoUrl::Local(PathBuf::from(path)))
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoUrl::Local(p) => write!(f, "{}", p.display()),
            RepoUrl::S3 {
                endpoint: Some(ep),
                bucket,
                prefix,
            } => write!(f, "s3:{ep}/{bucket}/{prefix}"),
            RepoUrl::S3 {
                endpoint: None,
                bucket,
                prefix,
            } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Opens the backend a URL names; S3 credentials come from AWS_ACCESS_KEY_ID,
/// AWS_SECRET_ACCESS_KEY and AWS_REGION.
pub fn open_backend(url: &str) -> Result<DynBackend> {
    Ok(match RepoUrl::parse(url)? {
        RepoUrl::Local(p) => Arc::new(LocalBackend::new(p)),
        RepoUrl::S3 {
            endpoint,
            bucket,
            prefix,
        } => Arc::new(S3Backend::from_env(endpoint, &bucket, &prefix)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            RepoUrl::parse("/srv/repo").unwrap(),
            RepoUrl::Local("/srv/repo".into())
        );
        assert_eq!(
            RepoUrl::parse("local:rel/dir").unwrap(),
            RepoUrl::Local("rel/dir".into())
        );
        assert_eq!(
            RepoUrl::parse("s3:http://127.0.0.1:9000/bucket/a/b/").unwrap(),
            RepoUrl::S3 {
                endpoint: Some("http://127.0.0.1:9000".into()),
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3:https://minio.example/bkt").unwrap(),
            RepoUrl::S3 {
                endpoint: Some("https://minio.example".into()),
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://bkt/p").unwrap(),
            RepoUrl::S3 {
                endpoint: None,
                bucket: "bkt".into(),
                prefix: "p".into()
            }
        );
        let u = RepoUrl::parse("s3:http://h:1/b/p").unwrap();
        assert_eq!(RepoUrl::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn rejects_bad_forms() {
        for s in [
            "",
            "s3:",
            "s3:ftp://h/b",
            "s3:http://h",
            "s3:http:///b",
            "s3://",
            "s3://b/../x",
            "local:",
        ] {
            let err = RepoUrl::parse(s).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{s}: {err}");
        }
    }
}
