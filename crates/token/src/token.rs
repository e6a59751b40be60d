//! Issuing and opening tokens.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, X25519};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::armor;
use crate::error::TokenError;
use crate::keys::{Fingerprint, ImportKey, RecipientKey, SignerKey, SigningKey};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The longest repository key a token carries.
pub const MAX_KEY_LEN: usize = 4096;
/// How far in the future a token's issue time may be, for clocks that disagree.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Prefix of the signed message, so a Ferry signature over something else never
/// passes for a token's.
const SIGNATURE_DOMAIN: &[u8] = b"ferry migration token\0";
const WRAP_INFO: &[u8] = b"ferry migration token v1: repository key wrap";
const WRAP_AAD: &[u8] = b"ferry-token-v1\0";
const KEY_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;
/// version, signer key, at least `{}`, signature.
const MIN_LEN: usize = 1 + KEY_LEN + 2 + SIGNATURE_LEN;

/// What kind of store holds the repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An S3-compatible object store.
    S3,
    /// A directory (`bucket`) on a filesystem both sides see; for tests and single hosts.
    Local,
}

/// Where the repository lives. Credentials are never part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub backend: Backend,
    /// S3 endpoint URL; empty means AWS's endpoint for the region.
    pub endpoint: String,
    /// Bucket, or the directory for [`Backend::Local`].
    pub bucket: String,
    /// Key prefix inside the bucket; may be empty.
    pub prefix: String,
    /// S3 region; may be empty.
    pub region: String,
}

/// What a token says, apart from the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub location: Location,
    /// Id from the repository's config.
    pub repository_id: String,
    /// The application namespace, as on the source.
    pub namespace: String,
    /// One restore point the token is about; `None` means any of the namespace's.
    pub restore_point_id: Option<String>,
    /// Name of the issuing (source) cluster, for messages.
    pub issuer: String,
    /// When the token was issued; kept to the second.
    pub issued_at: SystemTime,
    /// When it stops being accepted; kept to the second.
    pub expires_at: SystemTime,
}

/// The repository key, decrypted. Wiped from memory when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RepositoryKey(Zeroizing<Vec<u8>>);

impl RepositoryKey {
    /// The key bytes, as the repository's key Secret holds them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for RepositoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepositoryKey(<{} bytes, redacted>)", self.0.len())
    }
}

/// A token that passed every check.
#[derive(Debug)]
pub struct Opened {
    pub claims: Claims,
    /// Who signed it; pin its fingerprint to accept only this source later.
    pub signer: SignerKey,
    pub repository_key: RepositoryKey,
    /// What identifies this token among all others (hex SHA-256 of its signed part, which
    /// holds a fresh ephemeral key), for a destination that accepts each token once.
    pub id: String,
}

/// How [`open`] checks a token.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The time to check expiry against.
    pub now: SystemTime,
    /// Accept only tokens signed by this key.
    pub expected_signer: Option<Fingerprint>,
}

impl OpenOptions {
    /// Checks against the clock, any signer.
    pub fn now() -> Self {
        Self::at(SystemTime::now())
    }

    /// Checks against `now`, any signer.
    pub fn at(now: SystemTime) -> Self {
        OpenOptions {
            now,
            expected_signer: None,
        }
    }

    /// Accept only tokens signed by `signer`.
    pub fn pin(mut self, signer: Fingerprint) -> Self {
        self.expected_signer = Some(signer);
        self
    }
}

/// The claims as they travel: JSON between the signer key and the signature.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    location: Location,
    repository_id: String,
    namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore_point_id: Option<String>,
    issuer: String,
    /// Unix seconds.
    issued_at: u64,
    /// Unix seconds.
    expires_at: u64,
    /// base64 of the recipient's X25519 public key.
    recipient: String,
    wrapped_key: WrappedKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrappedKey {
    /// base64 of the ephemeral X25519 public key.
    ephemeral: String,
    /// base64 of the AES-GCM nonce.
    nonce: String,
    /// base64 of the encrypted repository key and its tag.
    ciphertext: String,
}

fn unix(field: &'static str, t: SystemTime) -> Result<u64, TokenError> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| TokenError::invalid(field, "before 1970"))
}

/// A claim's time; `None` past what the system clock can represent. The token's
/// signer chooses the number, and anyone can sign a token with a key of their own.
fn from_unix(seconds: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// The AES-256-GCM key both sides derive from the X25519 shared secret.
fn wrapping_key(
    shared: &[u8],
    ephemeral: &[u8],
    recipient: &RecipientKey,
) -> Result<LessSafeKey, TokenError> {
    let mut salt = Vec::with_capacity(2 * KEY_LEN);
    salt.extend_from_slice(ephemeral);
    salt.extend_from_slice(recipient.as_bytes());
    let prk = Salt::new(HKDF_SHA256, &salt).extract(shared);
    let okm = prk
        .expand(&[WRAP_INFO], &AES_256_GCM)
        .map_err(|_| TokenError::Crypto("HKDF"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn wrap_aad(repository_id: &str) -> Vec<u8> {
    [WRAP_AAD, repository_id.as_bytes()].concat()
}

fn wrap(
    key: &[u8],
    recipient: &RecipientKey,
    repository_id: &str,
) -> Result<WrappedKey, TokenError> {
    let ephemeral = agreement::PrivateKey::generate(&X25519)
        .map_err(|_| TokenError::Crypto("generating an X25519 key"))?;
    let ephemeral_public = ephemeral
        .compute_public_key()
        .map_err(|_| TokenError::Crypto("computing an X25519 public key"))?;
    let aead = agreement::agree(
        &ephemeral,
        agreement::UnparsedPublicKey::new(&X25519, recipient.as_bytes()),
        TokenError::Crypto("X25519 agreement"),
        |shared| wrapping_key(shared, ephemeral_public.as_ref(), recipient),
    )?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| TokenError::Crypto("no system randomness"))?;
    let mut sealed = key.to_vec();
    aead.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(wrap_aad(repository_id)),
        &mut sealed,
    )
    .map_err(|_| TokenError::Crypto("AES-GCM seal"))?;
    Ok(WrappedKey {
        ephemeral: STANDARD.encode(ephemeral_public.as_ref()),
        nonce: STANDARD.encode(nonce),
        ciphertext: STANDARD.encode(sealed),
    })
}

fn unwrap(
    wrapped: &WrappedKey,
    key: &ImportKey,
    repository_id: &str,
) -> Result<RepositoryKey, TokenError> {
    let failed = || TokenError::Unwrap {
        this_key: key.public_key().fingerprint(),
    };
    let ephemeral = b64("wrapped_key.ephemeral", &wrapped.ephemeral)?;
    let nonce = b64("wrapped_key.nonce", &wrapped.nonce)?;
    let mut sealed = Zeroizing::new(b64("wrapped_key.ciphertext", &wrapped.ciphertext)?);
    let aead = key
        .agree(&ephemeral, |shared| {
            wrapping_key(shared, &ephemeral, key.public_key())
        })
        .map_err(|_| failed())?;
    let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| failed())?;
    let plain = aead
        .open_in_place(nonce, Aad::from(wrap_aad(repository_id)), &mut sealed)
        .map_err(|_| failed())?;
    Ok(RepositoryKey(Zeroizing::new(plain.to_vec())))
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, TokenError> {
    STANDARD
        .decode(text)
        .map_err(|_| TokenError::malformed(format!("{field} is not base64")))
}

fn signed_message(signed: &[u8]) -> Vec<u8> {
    [SIGNATURE_DOMAIN, signed].concat()
}

/// Issues a token for `claims`, carrying `repository_key` encrypted to `recipient`,
/// signed with `signer`.
pub fn issue(
    claims: &Claims,
    repository_key: &[u8],
    recipient: &RecipientKey,
    signer: &SigningKey,
) -> Result<String, TokenError> {
    if repository_key.is_empty() || repository_key.len() > MAX_KEY_LEN {
        return Err(TokenError::invalid(
            "repository key",
            format!("{} bytes; want 1 to {MAX_KEY_LEN}", repository_key.len()),
        ));
    }
    if claims.repository_id.is_empty() {
        return Err(TokenError::invalid("repository_id", "empty"));
    }
    if claims.namespace.is_empty() {
        return Err(TokenError::invalid("namespace", "empty"));
    }
    let issued_at = unix("issued_at", claims.issued_at)?;
    let expires_at = unix("expires_at", claims.expires_at)?;
    if expires_at <= issued_at {
        return Err(TokenError::invalid(
            "expires_at",
            "must be at least a second after issued_at",
        ));
    }
    let body = Body {
        location: claims.location.clone(),
        repository_id: claims.repository_id.clone(),
        namespace: claims.namespace.clone(),
        restore_point_id: claims.restore_point_id.clone(),
        issuer: claims.issuer.clone(),
        issued_at,
        expires_at,
        recipient: STANDARD.encode(recipient.as_bytes()),
        wrapped_key: wrap(repository_key, recipient, &claims.repository_id)?,
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| TokenError::invalid("claims", format!("cannot encode: {e}")))?;
    let mut blob = Vec::with_capacity(1 + KEY_LEN + json.len() + SIGNATURE_LEN);
    blob.push(FORMAT_VERSION);
    blob.extend_from_slice(signer.public_key().as_bytes());
    blob.extend_from_slice(&json);
    let signature = signer.sign(&signed_message(&blob));
    blob.extend_from_slice(&signature);
    Ok(armor::encode(&blob))
}

/// Checks 1 to 3 of the crate docs: the signer key and the signed part (version,
/// signer, claims JSON) of a token whose signature verifies.
fn verified(blob: &[u8]) -> Result<(SignerKey, &[u8]), TokenError> {
    if blob.len() < MIN_LEN {
        return Err(TokenError::malformed(format!(
            "{} bytes is too short for a token",
            blob.len()
        )));
    }
    if blob[0] != FORMAT_VERSION {
        return Err(TokenError::UnsupportedVersion {
            found: blob[0],
            supported: FORMAT_VERSION,
        });
    }
    let (signed, signature) = blob.split_at(blob.len() - SIGNATURE_LEN);
    let mut signer = [0u8; KEY_LEN];
    signer.copy_from_slice(&signed[1..1 + KEY_LEN]);
    let signer = SignerKey(signer);
    if !signer.verifies(&signed_message(signed), signature) {
        return Err(TokenError::BadSignature {
            signer: signer.fingerprint(),
        });
    }
    Ok((signer, signed))
}

/// The key that signed `text`, once its signature verifies; nothing else is checked
/// and nothing is decrypted. For showing a source's signing fingerprint (what a
/// destination pins) next to a token it just issued; a destination uses [`open`].
pub fn signer_of(text: &str) -> Result<SignerKey, TokenError> {
    let blob = armor::decode(text)?;
    verified(&blob).map(|(signer, _)| signer)
}

/// Checks `text` (see the crate docs for the order of the checks) and decrypts the
/// repository key with the destination's import `key`.
pub fn open(text: &str, key: &ImportKey, options: &OpenOptions) -> Result<Opened, TokenError> {
    let blob = armor::decode(text)?;
    let (signer, signed) = verified(&blob)?;
    if let Some(expected) = &options.expected_signer
        && *expected != signer.fingerprint()
    {
        return Err(TokenError::UntrustedSigner {
            expected: expected.clone(),
            found: signer.fingerprint(),
        });
    }
    let body: Body = serde_json::from_slice(&signed[1 + KEY_LEN..])
        .map_err(|e| TokenError::malformed(format!("its claims do not parse ({e})")))?;
    let claims = Claims {
        location: body.location,
        repository_id: body.repository_id,
        namespace: body.namespace,
        restore_point_id: body.restore_point_id,
        issuer: body.issuer,
        issued_at: from_unix(body.issued_at).ok_or_else(|| {
            TokenError::malformed(format!("issued_at {} is out of range", body.issued_at))
        })?,
        expires_at: from_unix(body.expires_at).ok_or_else(|| {
            TokenError::malformed(format!("expires_at {} is out of range", body.expires_at))
        })?,
    };
    if options.now >= claims.expires_at {
        return Err(TokenError::Expired {
            expires_at: claims.expires_at,
            now: options.now,
        });
    }
    if options
        .now
        .checked_add(MAX_CLOCK_SKEW)
        .is_some_and(|latest| claims.issued_at > latest)
    {
        return Err(TokenError::NotYetValid {
            issued_at: claims.issued_at,
            now: options.now,
        });
    }
    let recipient = RecipientKey::from_bytes(&b64("recipient", &body.recipient)?)?;
    if recipient != *key.public_key() {
        return Err(TokenError::WrongRecipient {
            token_for: recipient.fingerprint(),
            this_key: key.public_key().fingerprint(),
        });
    }
    let repository_key = unwrap(&body.wrapped_key, key, &claims.repository_id)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signed);
    Ok(Opened {
        claims,
        signer,
        repository_key,
        id: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
    })
}
