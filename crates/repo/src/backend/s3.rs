//! S3-compatible object storage (AWS, MinIO, Ceph RGW, …) on aws-sdk-s3.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use backon::Retryable as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{
    Backend, BackendError, ObjectInfo, Op, Reason, check_key, check_range_len, check_size,
};
use crate::error::{Error, Result};

/// Connection and tuning settings for [`S3Backend`].
#[derive(Clone)]
pub struct S3Options {
    /// Custom endpoint such as `http://127.0.0.1:9000`; `None` means AWS.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Key prefix inside the bucket ("" for the bucket root), without slashes at the ends.
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Path-style addressing (`host/bucket/key`), which MinIO and most on-prem stores need.
    pub force_path_style: bool,
    /// Attempts per call, the first included, for transient failures.
    pub max_attempts: u32,
    /// Objects larger than this go up as a multipart upload.
    pub multipart_threshold: usize,
    /// Part size of multipart uploads (S3's minimum is 5 MiB).
    pub part_size: usize,
    /// Parts uploaded at once per object.
    pub part_concurrency: usize,
    /// Time limit of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Check the endpoint's TLS certificate (the default). Off accepts any certificate,
    /// for test setups with self-signed ones, and logs a loud warning.
    pub verify_tls: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .field("verify_tls", &self.verify_tls)
            .finish_non_exhaustive()
    }
}

impl S3Options {
    /// Settings with credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    /// (AWS_SESSION_TOKEN optional) and the region from AWS_REGION (default us-east-1).
    pub fn from_env(endpoint: Option<String>, bucket: &str, prefix: &str) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing = |name: &str| {
            Error::invalid(
                "S3 credentials",
                format!(
                    "{name} is not set; export it (and its pair) before using an s3: repository"
                ),
            )
        };
        let access_key_id = var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?;
        let secret_access_key =
            var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?;
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let mut options = S3Options::new(endpoint, bucket, prefix, &region);
        options.access_key_id = access_key_id;
        options.secret_access_key = secret_access_key;
        options.session_token = var("AWS_SESSION_TOKEN");
        Ok(options)
    }

    /// Settings with empty credentials (fill `access_key_id` and `secret_access_key`)
    /// and the default tuning; a custom endpoint implies path-style addressing.
    pub fn new(endpoint: Option<String>, bucket: &str, prefix: &str, region: &str) -> Self {
        S3Options {
            force_path_style: endpoint.is_some(),
            endpoint,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            region: region.to_string(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: None,
            max_attempts: 6,
            multipart_threshold: 8 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            part_concurrency: 4,
            attempt_timeout: Duration::from_secs(120),
            verify_tls: true,
        }
    }
}

/// A repository under a bucket prefix.
#[derive(Debug, Clone)]
pub struct S3Backend {
    client: Client,
    opts: S3Options,
}

/// How one failed attempt should be handled.
#[derive(Debug)]
enum Attempt {
    NotFound,
    Transient(String, Reason),
    Permanent(String, Reason),
}

fn classify<E>(err: &SdkError<E>) -> Attempt
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    match err {
        // A refused certificate fails the same way on every attempt: say so at once.
        SdkError::DispatchFailure(_) if untrusted_certificate(err) => {
            Attempt::Permanent(message, Reason::UntrustedCertificate)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Attempt::Transient(message, Reason::Other)
        }
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            let code = err.code().unwrap_or("");
            // The store's own words, not the SDK's dump of the whole response.
            let message = service_message(code, err.message(), status);
            let reason = Reason::S3 {
                code: code.to_string(),
                http_status: status,
            };
            // A missing bucket is a setup error, not a missing object.
            if code == "NoSuchBucket" {
                let message = format!(
                    "{message}; create the bucket first, or correct its name in the \
                     repository URL"
                );
                Attempt::Permanent(message, reason)
            } else if status == Some(404) || matches!(code, "NoSuchKey" | "NotFound") {
                Attempt::NotFound
            } else if status.is_some_and(|s| s >= 500 || s == 429 || s == 408)
                || matches!(
                    code,
                    "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable"
                )
            {
                Attempt::Transient(message, reason)
            } else {
                Attempt::Permanent(message, reason)
            }
        }
        _ => Attempt::Permanent(message, Reason::Other),
    }
}

/// "CODE: message (HTTP n)" from what the store answered, whichever parts it gave.
fn service_message(code: &str, message: Option<&str>, status: Option<u16>) -> String {
    let mut out = match (code, message) {
        ("", None) => "the store refused the request".to_string(),
        ("", Some(m)) => m.to_string(),
        (c, None) => c.to_string(),
        (c, Some(m)) => format!("{c}: {m}"),
    };
    if let Some(s) = status {
        out.push_str(&format!(" (HTTP {s})"));
    }
    out
}

/// Whether the TLS layer refused the endpoint's certificate, found by walking the
/// error's causes to rustls' own error. An `io::Error` hides what it wraps from
/// `source()`, so its inner error is looked into as well.
fn untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && untrusted_certificate(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Backoff between attempts: jittered exponential from 100 ms, capped at 20 s, so many
/// agents retrying a throttled bucket spread out instead of pulsing together.
fn backoff(max_attempts: u32) -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(20))
        .with_max_times(max_attempts.max(1) as usize - 1)
        .with_jitter()
}

impl S3Backend {
    /// Builds a client; no request is made until the first call.
    pub fn new(opts: S3Options) -> Self {
        let creds = Credentials::new(
            opts.access_key_id.clone(),
            opts.secret_access_key.clone(),
            opts.session_token.clone(),
            None,
            "ferry",
        );
        let connect_timeout = Duration::from_secs(10);
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .credentials_provider(creds)
            .force_path_style(opts.force_path_style)
            // Stores other than AWS often reject the newer default checksum headers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Retries are ours (below), so they cover body reads and multipart parts too.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .operation_attempt_timeout(opts.attempt_timeout)
                    .build(),
            );
        if let Some(ep) = &opts.endpoint {
            builder = builder.endpoint_url(ep.clone());
        }
        if !opts.verify_tls {
            let endpoint = opts.endpoint.as_deref().unwrap_or("AWS S3");
            builder = builder.http_client(super::insecure_tls::client(endpoint, connect_timeout));
        }
        S3Backend {
            client: Client::from_conf(builder.build()),
            opts,
        }
    }

    /// Builds from a URL's parts with credentials from the environment.
    pub fn from_env(endpoint: Option<String>, bucket: &str, prefix: &str) -> Result<Self> {
        Ok(Self::new(S3Options::from_env(endpoint, bucket, prefix)?))
    }

    fn full_key(&self, key: &str) -> String {
        if self.opts.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.opts.prefix)
        }
    }

    async fn retry<T, F, Fut>(&self, op: Op, key: &str, mut f: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        let attempts = AtomicU32::new(0);
        let attempt = || {
            attempts.fetch_add(1, Relaxed);
            f()
        };
        let outcome = attempt
            .retry(backoff(self.opts.max_attempts))
            .when(|e| matches!(e, Attempt::Transient(..)))
            .notify(|e, delay| {
                if let Attempt::Transient(message, _) = e {
                    tracing::debug!(%op, key, attempt = attempts.load(Relaxed), ?delay, %message, "retrying S3 call");
                }
            })
            .await;
        outcome.map_err(|e| match e {
            Attempt::NotFound => BackendError::NotFound {
                backend: self.describe(),
                key: key.to_string(),
            },
            Attempt::Permanent(message, reason) => BackendError::Permanent {
                backend: self.describe(),
                op,
                key: key.to_string(),
                message,
                reason,
            },
            Attempt::Transient(message, reason) => BackendError::Transient {
                backend: self.describe(),
                op,
                key: key.to_string(),
                attempts: attempts.load(Relaxed),
                message,
                reason,
            },
        })
    }

    async fn put_single(&self, key: &str, full: &str, data: Bytes) -> Result<(), BackendError> {
        self.retry(Op::Put, key, || {
            let req = self
                .client
                .put_object()
                .bucket(&self.opts.bucket)
                .key(full)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()));
            // No SHA-256 of the body for the signature (UNSIGNED-PAYLOAD): it cost as
            // much CPU as compressing the data, and every pack is sealed with
            // AES-GCM and named by its BLAKE3, so readers detect any alteration.
            async move {
                req.customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(&e))
            }
        })
        .await
    }

    async fn put_multipart(&self, key: &str, full: &str, data: Bytes) -> Result<(), BackendError> {
        let created = self
            .retry(Op::Put, key, || {
                let req = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.opts.bucket)
                    .key(full);
                async move { req.send().await.map_err(|e| classify(&e)) }
            })
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BackendError::Permanent {
                backend: self.describe(),
                op: Op::Put,
                key: key.to_string(),
                message: "CreateMultipartUpload returned no upload id".into(),
                reason: Reason::Other,
            })?
            .to_string();

        let part_size = self.opts.part_size.max(5 * 1024 * 1024);
        let ranges: Vec<(i32, Bytes)> = data
            .chunks(part_size)
            .enumerate()
            .map(|(i, c)| {
                let start = i * part_size;
                (i as i32 + 1, data.slice(start..start + c.len()))
            })
            .collect();
        let upload_id_ref = &upload_id;
        let parts: Result<Vec<CompletedPart>, BackendError> =
            futures::stream::iter(ranges.into_iter().map(|(n, part)| async move {
                let out = self
                    .retry(Op::Put, key, || {
                        let req = self
                            .client
                            .upload_part()
                            .bucket(&self.opts.bucket)
                            .key(full)
                            .upload_id(upload_id_ref)
                            .part_number(n)
                            .content_length(part.len() as i64)
                            .body(ByteStream::from(part.clone()));
                        // Unsigned payload, as in `put_single`.
                        async move {
                            req.customize()
                                .disable_payload_signing()
                                .send()
                                .await
                                .map_err(|e| classify(&e))
                        }
                    })
                    .await?;
                Ok(CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            }))
            .buffer_unordered(self.opts.part_concurrency.max(1))
            .try_collect()
            .await;

        let completed = match parts {
            Ok(mut parts) => {
                parts.sort_by_key(|p| p.part_number());
                self.retry(Op::Put, key, || {
                    let req = self
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.opts.bucket)
                        .key(full)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts.clone()))
                                .build(),
                        );
                    async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
                })
                .await
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Best effort: a leftover upload only costs storage until the bucket's
            // lifecycle rule (or a later abort) removes it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.opts.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        let ep = self.opts.endpoint.as_deref().unwrap_or("aws");
        format!("s3:{ep}/{}/{}", self.opts.bucket, self.opts.prefix)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        check_key(&self.describe(), Op::Put, key)?;
        let full = self.full_key(key);
        // S3 makes single PUTs and completed multipart uploads atomic for readers.
        if data.len() > self.opts.multipart_threshold {
            self.put_multipart(key, &full, data).await
        } else {
            self.put_single(key, &full, data).await
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        check_key(&self.describe(), Op::Get, key)?;
        let full = self.full_key(key);
        self.retry(Op::Get, key, || {
            let req = self
                .client
                .get_object()
                .bucket(&self.opts.bucket)
                .key(&full);
            async move {
                let out = req.send().await.map_err(|e| classify(&e))?;
                let body = out.body.collect().await.map_err(|e| {
                    Attempt::Transient(
                        format!("reading body: {}", DisplayErrorContext(&e)),
                        Reason::Other,
                    )
                })?;
                Ok(body.into_bytes())
            }
        })
        .await
    }

    async fn get_at_most(&self, key: &str, limit: u64) -> Result<Bytes, BackendError> {
        check_key(&self.describe(), Op::Get, key)?;
        let full = self.full_key(key);
        let got = self
            .retry(Op::Get, key, || {
                let req = self
                    .client
                    .get_object()
                    .bucket(&self.opts.bucket)
                    .key(&full);
                async move {
                    let mut out = req.send().await.map_err(|e| classify(&e))?;
                    // The declared length first, so a huge object's body is never read;
                    // then the bytes as they come, for a store that declares none.
                    if let Some(n) = out.content_length.and_then(|n| u64::try_from(n).ok())
                        && n > limit
                    {
                        return Ok(Err(n));
                    }
                    let mut data = Vec::new();
                    while let Some(piece) = out.body.next().await {
                        let piece = piece.map_err(|e| {
                            Attempt::Transient(
                                format!("reading body: {}", DisplayErrorContext(&e)),
                                Reason::Other,
                            )
                        })?;
                        if (data.len() + piece.len()) as u64 > limit {
                            return Ok(Err((data.len() + piece.len()) as u64));
                        }
                        data.extend_from_slice(&piece);
                    }
                    Ok(Ok(Bytes::from(data)))
                }
            })
            .await?;
        got.or_else(|size| {
            check_size(&self.describe(), Op::Get, key, size, limit).map(|()| Bytes::new())
        })
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, BackendError> {
        check_key(&self.describe(), Op::GetRange, key)?;
        if length == 0 {
            return Ok(Bytes::new());
        }
        let full = self.full_key(key);
        let range = format!("bytes={}-{}", offset, offset + length - 1);
        let got = self
            .retry(Op::GetRange, key, || {
                let req = self
                    .client
                    .get_object()
                    .bucket(&self.opts.bucket)
                    .key(&full)
                    .range(&range);
                async move {
                    let out = req.send().await.map_err(|e| classify(&e))?;
                    let body = out.body.collect().await.map_err(|e| {
                        Attempt::Transient(
                            format!("reading body: {}", DisplayErrorContext(&e)),
                            Reason::Other,
                        )
                    })?;
                    Ok(body.into_bytes())
                }
            })
            .await?;
        check_range_len(&self.describe(), key, offset, length, got.len())?;
        Ok(got)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.opts.prefix.is_empty() {
            0
        } else {
            self.opts.prefix.len() + 1
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry(Op::List, prefix, || {
                    let req = self
                        .client
                        .list_objects_v2()
                        .bucket(&self.opts.bucket)
                        .prefix(&full_prefix)
                        .set_continuation_token(token.clone());
                    async move { req.send().await.map_err(|e| classify(&e)) }
                })
                .await?;
            for obj in page.contents() {
                if let Some(k) = obj.key()
                    && k.len() >= strip
                {
                    out.push(ObjectInfo {
                        key: k[strip..].to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        modified: obj.last_modified().and_then(|t| {
                            time::OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok()
                        }),
                    });
                }
            }
            let truncated = page.is_truncated().unwrap_or(false);
            match page.next_continuation_token() {
                Some(t) if truncated => token = Some(t.to_string()),
                // A truncated page with no way to the next one: the listing is partial,
                // and prune must never take a partial listing for the whole store.
                None if truncated => {
                    return Err(BackendError::Permanent {
                        backend: self.describe(),
                        op: Op::List,
                        key: prefix.to_string(),
                        message: format!(
                            "the store said the listing is truncated after {} objects but \
                             gave no continuation token",
                            out.len()
                        ),
                        reason: Reason::Other,
                    });
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        check_key(&self.describe(), Op::Delete, key)?;
        let full = self.full_key(key);
        let res = self
            .retry(Op::Delete, key, || {
                let req = self
                    .client
                    .delete_object()
                    .bucket(&self.opts.bucket)
                    .key(&full);
                async move { req.send().await.map(|_| ()).map_err(|e| classify(&e)) }
            })
            .await;
        match res {
            Err(BackendError::NotFound { .. }) => Ok(()),
            r => r,
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BackendError> {
        check_key(&self.describe(), Op::Head, key)?;
        let full = self.full_key(key);
        let res = self
            .retry(Op::Head, key, || {
                let req = self
                    .client
                    .head_object()
                    .bucket(&self.opts.bucket)
                    .key(&full);
                async move { req.send().await.map_err(|e| classify(&e)) }
            })
            .await;
        match res {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_grows_and_stops_with_the_attempts() {
        use backon::BackoffBuilder as _;
        let waits: Vec<Duration> = backoff(12).build().collect();
        assert_eq!(waits.len(), 11, "one wait between each two of 12 attempts");
        // Jitter adds up to the delay itself: at most twice the 20 s cap.
        assert!(
            waits.iter().all(|d| *d <= Duration::from_secs(40)),
            "{waits:?}"
        );
        assert!(waits[0] <= Duration::from_millis(200), "{waits:?}");
        assert!(waits[10] >= Duration::from_secs(20), "{waits:?}");
        assert_eq!(backoff(1).build().count(), 0, "one attempt: no retry");
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transient_after_retries() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "b".into(),
            prefix: "p".into(),
            region: "us-east-1".into(),
            access_key_id: "a".into(),
            secret_access_key: "s".into(),
            session_token: None,
            force_path_style: true,
            max_attempts: 2,
            multipart_threshold: 8 << 20,
            part_size: 8 << 20,
            part_concurrency: 2,
            attempt_timeout: Duration::from_secs(5),
            verify_tls: true,
        };
        let err = S3Backend::new(opts).get("config").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(
            matches!(err, BackendError::Transient { attempts: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("config"), "{err}");
    }

    #[test]
    fn keys_get_the_prefix() {
        let mut opts = S3Options {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "b".into(),
            prefix: "team/repo".into(),
            region: "us-east-1".into(),
            access_key_id: "a".into(),
            secret_access_key: "s".into(),
            session_token: None,
            force_path_style: true,
            max_attempts: 1,
            multipart_threshold: 8 << 20,
            part_size: 8 << 20,
            part_concurrency: 2,
            attempt_timeout: Duration::from_secs(1),
            verify_tls: true,
        };
        let b = S3Backend::new(opts.clone());
        assert_eq!(b.full_key("config"), "team/repo/config");
        assert!(!format!("{opts:?}").contains("\"s\""));
        opts.prefix = String::new();
        assert_eq!(S3Backend::new(opts).full_key("config"), "config");
    }
}
