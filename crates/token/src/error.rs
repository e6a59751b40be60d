//! Why a token could not be issued or opened. Every variant says what to do next; none
//! carries key material.

use std::time::SystemTime;

use crate::keys::Fingerprint;

/// Everything issuing or opening a migration token can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not an armoured token, or its base64 or claims do not parse.
    #[error(
        "not a Ferry migration token: {detail}; copy the whole block, from the BEGIN line to \
         the END line"
    )]
    Malformed { detail: String },

    /// A format version this build does not read.
    #[error(
        "migration token format version {found} is not known to this Ferry (it reads version \
         {supported}): the token comes from a newer Ferry, or it was altered"
    )]
    UnsupportedVersion { found: u8, supported: u8 },

    /// The signature does not verify: the token was changed after it was issued.
    #[error(
        "the migration token's signature does not verify (claimed signer {signer}): the token \
         was altered or damaged after it was issued; ask the source cluster for a new token"
    )]
    BadSignature { signer: Fingerprint },

    /// Signed by a key other than the one the caller trusts.
    #[error(
        "the migration token is signed by {found}, but only {expected} is trusted here; ask the \
         source cluster whose signing key that is for a token, or change the pinned signer"
    )]
    UntrustedSigner {
        expected: Fingerprint,
        found: Fingerprint,
    },

    /// The token's lifetime is over.
    #[error(
        "the migration token expired at {} (it is now {}); issue a new one on the source cluster",
        rfc3339(*.expires_at),
        rfc3339(*.now)
    )]
    Expired {
        expires_at: SystemTime,
        now: SystemTime,
    },

    /// Issued later than now, beyond the allowed clock skew.
    #[error(
        "the migration token was issued at {}, which is in the future here (now {}); check the \
         clocks of both clusters",
        rfc3339(*.issued_at),
        rfc3339(*.now)
    )]
    NotYetValid {
        issued_at: SystemTime,
        now: SystemTime,
    },

    /// Made for another destination's import key.
    #[error(
        "the migration token was made for another destination key (fingerprint {token_for}); \
         this destination's import key has fingerprint {this_key}; ask the source cluster to \
         issue the token for this destination's import key (GetImportKey)"
    )]
    WrongRecipient {
        token_for: Fingerprint,
        this_key: Fingerprint,
    },

    /// The wrapped repository key does not decrypt with the import key.
    #[error(
        "the repository key in the migration token does not decrypt with this destination's \
         import key {this_key}; ask the source cluster for a new token"
    )]
    Unwrap { this_key: Fingerprint },

    /// An argument is unusable (issuing), or a key's text does not parse.
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },

    /// The crypto library failed where it should not (no randomness, say).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

impl TokenError {
    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        TokenError::Malformed {
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        TokenError::Invalid {
            field,
            detail: detail.into(),
        }
    }

    /// True when the token itself is the problem (altered, expired, for someone else,
    /// untrusted): a new token fixes it.
    pub fn is_token_problem(&self) -> bool {
        !matches!(self, TokenError::Invalid { .. } | TokenError::Crypto(_))
    }
}

/// `2025-06-15T14:26:40Z`; seconds before 1970 or after 9999 print as a count.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let seconds = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{seconds} seconds after 1970"))
}
