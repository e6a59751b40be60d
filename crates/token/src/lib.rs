//! Ferry's migration token: how an export on a source cluster hands a repository over
//! to one destination cluster without handing over anything that opens it on its own.
//!
//! # Keys
//!
//! - The destination's catalog owns an **import key**: an X25519 key pair
//!   ([`ImportKey`]), created once, its private half sealed in the catalog's store. Its
//!   public half ([`RecipientKey`], text `ferry-import-key-v1:<base64url>`) is what a
//!   user copies to the source when asking for a token.
//! - The source's catalog owns a **signing key**: an Ed25519 key pair ([`SigningKey`]),
//!   created once and sealed the same way. Its public half ([`SignerKey`]) travels in
//!   every token; its [`Fingerprint`] is what a destination may pin
//!   ([`OpenOptions::pin`]). [`signer_of`] reads it from a token (signature checked,
//!   nothing decrypted), so the source can show it beside the token it issues.
//!
//! # What a token holds
//!
//! ```text
//! -----BEGIN FERRY MIGRATION TOKEN-----
//! base64 (standard alphabet, padded), 64 characters a line, of:
//!   version (1 byte, = 1)
//!   signer's Ed25519 public key (32 bytes)
//!   claims: JSON, fields below
//!   Ed25519 signature (64 bytes) over "ferry migration token\0" || everything above
//! -----END FERRY MIGRATION TOKEN-----
//! ```
//!
//! The claims ([`Claims`]) name the repository's location (backend, endpoint, bucket,
//! prefix, region), its id, the application namespace, optionally one restore point,
//! the issuing cluster, when the token was issued and when it expires; plus the
//! recipient's X25519 public key and the **repository key** (the user key that unwraps
//! the repository's master key) encrypted to it:
//!
//! - an ephemeral X25519 key pair is made for each token; `shared = X25519(ephemeral,
//!   recipient)`;
//! - `aead key = HKDF-SHA256(salt = ephemeral public || recipient public, ikm = shared,
//!   info = "ferry migration token v1: repository key wrap")`;
//! - `AES-256-GCM(aead key, random 96-bit nonce, aad = "ferry-token-v1\0" || repository
//!   id)` over the repository key.
//!
//! No S3 credentials are ever in a token ([`Claims`] has no place for them): the
//! destination reads the bucket with its own, read-only credentials. Someone who copies
//! a token learns where the data is, but without the destination's import private key
//! cannot decrypt the repository key, and without credentials cannot read the bucket.
//!
//! # Checks when a token is opened ([`open`]), in this order
//!
//! 1. it is a whole armoured block of canonical base64 (copy-paste whitespace around it
//!    and `\r\n` line ends are fine; anything else is [`TokenError::Malformed`]);
//! 2. the format version is known ([`TokenError::UnsupportedVersion`]);
//! 3. the signature verifies with the signer key in the token
//!    ([`TokenError::BadSignature`]: the token was altered);
//! 4. if the caller pinned a signer, it is that one ([`TokenError::UntrustedSigner`]);
//! 5. it has not expired ([`TokenError::Expired`], naming the expiry time) and was not
//!    issued in the future beyond a small clock skew ([`TokenError::NotYetValid`]);
//! 6. it was made for this destination's import key ([`TokenError::WrongRecipient`],
//!    with both fingerprints);
//! 7. the repository key decrypts ([`TokenError::Unwrap`]).
//!
//! # Crypto libraries
//!
//! Ed25519, X25519, HKDF and AES-256-GCM all come from `aws-lc-rs`, Ferry's one crypto
//! library (rustls runs on it too). Its X25519 keys can be stored, which the
//! destination's import key needs: it is made once and used again.
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use ferry_token::*;
//!
//! let destination = ImportKey::generate()?;
//! let source = SigningKey::generate()?;
//! let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! let claims = Claims {
//!     location: Location {
//!         backend: Backend::S3,
//!         endpoint: "https://s3.example.com".into(),
//!         bucket: "ferry".into(),
//!         prefix: "prod".into(),
//!         region: "eu-west-1".into(),
//!     },
//!     repository_id: "ab".repeat(32),
//!     namespace: "shop".into(),
//!     restore_point_id: None,
//!     issuer: "cluster-a".into(),
//!     issued_at: now,
//!     expires_at: now + Duration::from_secs(3600),
//! };
//! let text = issue(&claims, b"the repository key", destination.public_key(), &source)?;
//! let opened = open(&text, &destination, &OpenOptions::at(now))?;
//! assert_eq!(opened.claims, claims);
//! assert_eq!(opened.repository_key.as_bytes(), b"the repository key");
//! # Ok::<(), TokenError>(())
//! ```

mod armor;
mod error;
mod keys;
mod token;

pub use armor::MAX_TEXT_LEN;
pub use error::TokenError;
pub use keys::{Fingerprint, IMPORT_KEY_PREFIX, ImportKey, RecipientKey, SignerKey, SigningKey};
pub use token::{
    Backend, Claims, FORMAT_VERSION, Location, MAX_CLOCK_SKEW, MAX_KEY_LEN, OpenOptions, Opened,
    RepositoryKey, issue, open, signer_of,
};
