//! The pairing token: the text a person copies from the destination to the source.
//!
//! `ferry-pair-v1.` followed by the unpadded base64url of a JSON payload:
//!
//! ```json
//! {"version":1,"pair_id":"…","token_id":"…","pair_name":"prod-to-dr",
//!  "destination":{"name":"dr","cluster_id":"<kube-system uid>","api_server_url":"https://…",
//!                 "ferry_endpoint":"host:port","kubernetes_version":"v1.35.4"},
//!  "ca_pem":"-----BEGIN CERTIFICATE-----…","bearer_token":"…",
//!  "expires_at":"2026-01-01T12:00:00Z"}
//! ```
//!
//! The source cannot check a signature only the destination could make, so integrity is
//! checked by the destination: it keeps the SHA-256 of the payload it issued, and the
//! source sends the digest of what it decoded when it redeems the token. The version sits
//! both in the prefix (so a future format is told apart before decoding) and in the JSON.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use ferry_proto::v1::ClusterInfo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::PairingError;

/// The only token format this build reads and writes.
pub const VERSION: u32 = 1;
/// What every version-1 token starts with.
pub const PREFIX: &str = "ferry-pair-v1.";
const PREFIX_STEM: &str = "ferry-pair-v";

/// Reads padded and unpadded base64url: people sometimes paste through tools that pad.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A secret string whose `Debug` never shows it, so it cannot end up in logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The destination cluster as the token describes it (a serde mirror of `ClusterInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCluster {
    pub name: String,
    pub cluster_id: String,
    pub api_server_url: String,
    pub ferry_endpoint: String,
    pub kubernetes_version: String,
}

impl From<&TokenCluster> for ClusterInfo {
    fn from(c: &TokenCluster) -> ClusterInfo {
        ClusterInfo {
            name: c.name.clone(),
            cluster_id: c.cluster_id.clone(),
            api_server_url: c.api_server_url.clone(),
            ferry_endpoint: c.ferry_endpoint.clone(),
            kubernetes_version: c.kubernetes_version.clone(),
        }
    }
}

impl From<&ClusterInfo> for TokenCluster {
    fn from(c: &ClusterInfo) -> TokenCluster {
        TokenCluster {
            name: c.name.clone(),
            cluster_id: c.cluster_id.clone(),
            api_server_url: c.api_server_url.clone(),
            ferry_endpoint: c.ferry_endpoint.clone(),
            kubernetes_version: c.kubernetes_version.clone(),
        }
    }
}

/// What a token carries. Unknown JSON fields are ignored when reading (a later minor
/// addition must not break older sources); the digest still covers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPayload {
    pub version: u32,
    pub pair_id: String,
    pub token_id: String,
    pub pair_name: String,
    pub destination: TokenCluster,
    /// PEM of the CA that signs the destination API server's certificate; empty when it
    /// is signed by a publicly trusted CA.
    pub ca_pem: String,
    /// The credential scoped for Ferry on the destination.
    pub bearer_token: Secret,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A token as read by the source: the payload and the digest of its exact bytes.
#[derive(Clone, Debug)]
pub struct DecodedToken {
    pub payload: TokenPayload,
    /// Hex SHA-256 of the decoded JSON bytes, sent to the destination on redeem.
    pub digest: String,
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

impl TokenPayload {
    /// The token text and the digest the destination keeps to recognise it.
    pub fn encode(&self) -> Result<(Secret, String), PairingError> {
        let json = serde_json::to_vec(self).map_err(|e| PairingError::Internal {
            detail: format!("encoding a pairing token: {e}"),
        })?;
        let text = format!("{PREFIX}{}", general_purpose::URL_SAFE_NO_PAD.encode(&json));
        Ok((Secret(text), digest(&json)))
    }
}

fn malformed(detail: impl Into<String>) -> PairingError {
    PairingError::MalformedToken {
        detail: detail.into(),
    }
}

/// Reads token text as pasted by a person. Every refusal names what is wrong.
pub fn decode(text: &str) -> Result<DecodedToken, PairingError> {
    // Copying from a terminal often adds line breaks or spaces; they are never part of a token.
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.is_empty() {
        return Err(malformed("the token is empty"));
    }
    let Some(body) = text.strip_prefix(PREFIX) else {
        if let Some(rest) = text.strip_prefix(PREFIX_STEM) {
            let version: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !version.is_empty() && rest[version.len()..].starts_with('.') {
                return Err(PairingError::UnsupportedTokenVersion { found: version });
            }
        }
        return Err(malformed(format!(
            "it does not start with {PREFIX:?}; it is not a Ferry pairing token or its start was cut off"
        )));
    };
    let json = LENIENT.decode(body).map_err(|e| {
        malformed(format!(
            "the text after {PREFIX:?} is not base64url ({e}); it was cut or altered when copied"
        ))
    })?;
    // Read the version first, so a future payload is reported as such, not as bad JSON.
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    let versioned: Versioned = serde_json::from_slice(&json)
        .map_err(|e| malformed(format!("the payload is not a JSON object ({e})")))?;
    match versioned.version {
        Some(VERSION) => {}
        Some(v) => {
            return Err(PairingError::UnsupportedTokenVersion {
                found: v.to_string(),
            });
        }
        None => return Err(malformed("the payload has no version field")),
    }
    let payload: TokenPayload = serde_json::from_slice(&json)
        .map_err(|e| malformed(format!("the payload is not a version-1 token ({e})")))?;
    payload.validate()?;
    Ok(DecodedToken {
        digest: digest(&json),
        payload,
    })
}

impl TokenPayload {
    fn validate(&self) -> Result<(), PairingError> {
        let required = [
            ("pair_id", self.pair_id.as_str()),
            ("token_id", self.token_id.as_str()),
            ("destination.name", self.destination.name.as_str()),
            (
                "destination.cluster_id",
                self.destination.cluster_id.as_str(),
            ),
            (
                "destination.api_server_url",
                self.destination.api_server_url.as_str(),
            ),
            (
                "destination.ferry_endpoint",
                self.destination.ferry_endpoint.as_str(),
            ),
            ("bearer_token", self.bearer_token.expose()),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                return Err(malformed(format!("field {field} is empty")));
            }
        }
        let url = &self.destination.api_server_url;
        match url.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
            _ => {
                return Err(malformed(format!(
                    "destination.api_server_url {url:?} is not an https:// URL"
                )));
            }
        }
        if !self.ca_pem.is_empty() && !self.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(malformed("ca_pem is not a PEM certificate"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenPayload {
        TokenPayload {
            version: VERSION,
            pair_id: "0123456789abcdef0123456789abcdef".into(),
            token_id: "tok".into(),
            pair_name: "prod-to-dr".into(),
            destination: TokenCluster {
                name: "dr".into(),
                cluster_id: "uid-1".into(),
                api_server_url: "https://127.0.0.1:6443".into(),
                ferry_endpoint: "127.0.0.1:7444".into(),
                kubernetes_version: "v1.35.4".into(),
            },
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            bearer_token: Secret::new("very-secret-bearer"),
            expires_at: OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time"),
        }
    }

    fn encode_json(v: &serde_json::Value) -> String {
        format!(
            "{PREFIX}{}",
            general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
        )
    }

    #[test]
    fn round_trips_and_digests_the_exact_payload() {
        let (text, digest) = sample().encode().expect("encode");
        assert!(text.expose().starts_with(PREFIX));
        // Line breaks from a terminal are ignored.
        let wrapped = format!("  {}\n{}\n", &text.expose()[..30], &text.expose()[30..]);
        let decoded = decode(&wrapped).expect("decode");
        assert_eq!(decoded.payload, sample());
        assert_eq!(decoded.digest, digest);
    }

    #[test]
    fn debug_never_shows_the_bearer_token() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("very-secret-bearer"), "{shown}");
        let (text, _) = sample().encode().expect("encode");
        assert!(!format!("{text:?}").contains(PREFIX));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("hello".into(), "does not start with"),
            (format!("{PREFIX}!!!not base64"), "not base64url"),
            (
                format!(
                    "{PREFIX}{}",
                    general_purpose::URL_SAFE_NO_PAD.encode(b"[1,2]")
                ),
                "not a JSON object",
            ),
            (
                encode_json(&serde_json::json!({"pair_id": "x"})),
                "no version",
            ),
            (
                encode_json(&serde_json::json!({"version": 1, "pair_id": "x"})),
                "missing field",
            ),
        ];
        for (text, want) in cases {
            let err = decode(&text).expect_err(&text);
            assert!(
                matches!(err, PairingError::MalformedToken { .. }),
                "{text}: {err}"
            );
            assert!(err.to_string().contains(want), "{text}: {err}");
        }

        let mut v = serde_json::to_value(sample()).expect("json");
        v["destination"]["api_server_url"] = "http://plain".into();
        let err = decode(&encode_json(&v)).expect_err("http url");
        assert!(err.to_string().contains("api_server_url"), "{err}");

        let mut v = serde_json::to_value(sample()).expect("json");
        v["bearer_token"] = "".into();
        let err = decode(&encode_json(&v)).expect_err("no bearer");
        assert!(err.to_string().contains("bearer_token"), "{err}");
    }

    #[test]
    fn other_versions_are_told_apart() {
        let err = decode("ferry-pair-v2.eyJ9").expect_err("v2 prefix");
        assert!(
            matches!(err, PairingError::UnsupportedTokenVersion { ref found } if found == "2"),
            "{err}"
        );
        let mut v = serde_json::to_value(sample()).expect("json");
        v["version"] = 7.into();
        let err = decode(&encode_json(&v)).expect_err("v7 payload");
        assert!(
            matches!(err, PairingError::UnsupportedTokenVersion { ref found } if found == "7"),
            "{err}"
        );
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(cases()))]

        /// Whatever is pasted, `decode` refuses it with a PairingError or reads it;
        /// it never panics. Random text, and valid tokens with bytes changed.
        #[test]
        fn pasted_text_never_panics(
            text in ".{0,400}",
            ops in proptest::collection::vec(proptest::prelude::any::<(u8, u16, u8)>(), 1..10),
            json in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let _ = decode(&text);
            let _ = decode(&format!("{PREFIX}{text}"));
            let _ = decode(&format!("{PREFIX}{}", general_purpose::URL_SAFE_NO_PAD.encode(&json)));
            let (valid, _) = sample().encode().expect("encode");
            let mut bytes = valid.expose().as_bytes().to_vec();
            for (op, at, byte) in ops {
                let i = usize::from(at) % (bytes.len() + 1);
                match op % 3 {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            let _ = decode(&String::from_utf8_lossy(&bytes));
            // The payload's JSON mutated too, behind a valid prefix and encoding.
            let mut v = serde_json::to_value(sample()).expect("json");
            v["expires_at"] = serde_json::Value::String(String::from_utf8_lossy(&json).into_owned());
            v["destination"]["api_server_url"] = serde_json::Value::String(text.clone());
            let _ = decode(&encode_json(&v));
        }
    }
}
