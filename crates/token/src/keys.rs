//! The two key pairs: the destination's X25519 import key and the source's Ed25519
//! signing key, with their public halves and fingerprints.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::agreement::{self, X25519};
use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::error::TokenError;

/// Text form of an import public key: this prefix, then base64url (no padding) of the
/// 32 key bytes.
pub const IMPORT_KEY_PREFIX: &str = "ferry-import-key-v1:";

const KEY_LEN: usize = 32;

/// A public key's fingerprint as people compare them: `SHA256:` and the unpadded
/// base64 of the SHA-256 of the key bytes (the form OpenSSH prints).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    fn of(key: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
        Fingerprint(format!("SHA256:{}", STANDARD_NO_PAD.encode(digest)))
    }

    /// Reads a fingerprint someone copied, for pinning.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let ok = text
            .strip_prefix("SHA256:")
            .and_then(|b| STANDARD_NO_PAD.decode(b).ok())
            .is_some_and(|d| d.len() == 32);
        if ok {
            Ok(Fingerprint(text.to_string()))
        } else {
            Err(TokenError::invalid(
                "fingerprint",
                format!("{text:?}: want SHA256: followed by 43 base64 characters"),
            ))
        }
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn crypto(what: &'static str) -> impl Fn(aws_lc_rs::error::Unspecified) -> TokenError {
    move |_| TokenError::Crypto(what)
}

/// The destination's import key pair (X25519). The private half never leaves the
/// destination's catalog; tokens are encrypted to the public half.
pub struct ImportKey {
    private: agreement::PrivateKey,
    public: RecipientKey,
}

impl fmt::Debug for ImportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportKey")
            .field("public", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ImportKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, TokenError> {
        let private =
            agreement::PrivateKey::generate(&X25519).map_err(crypto("generating an X25519 key"))?;
        Self::from_private(private)
    }

    /// The key pair whose private half [`ImportKey::secret_bytes`] returned.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let private = agreement::PrivateKey::from_private_key(&X25519, bytes)
            .map_err(|_| TokenError::invalid("import key", "not a 32-byte X25519 private key"))?;
        Self::from_private(private)
    }

    fn from_private(private: agreement::PrivateKey) -> Result<Self, TokenError> {
        let public = private
            .compute_public_key()
            .map_err(crypto("computing an X25519 public key"))?;
        let public = RecipientKey::from_bytes(public.as_ref())?;
        Ok(ImportKey { private, public })
    }

    /// The private half, to seal and store. Keep it secret.
    pub fn secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let seed: Curve25519SeedBin<'static> = self
            .private
            .as_be_bytes()
            .map_err(crypto("exporting an X25519 key"))?;
        Ok(Zeroizing::new(seed.as_ref().to_vec()))
    }

    /// The public half, to hand to a source.
    pub fn public_key(&self) -> &RecipientKey {
        &self.public
    }

    /// X25519 with `peer`, then `kdf` over the shared secret.
    pub(crate) fn agree<R>(
        &self,
        peer: &[u8],
        kdf: impl FnOnce(&[u8]) -> Result<R, TokenError>,
    ) -> Result<R, TokenError> {
        agreement::agree(
            &self.private,
            agreement::UnparsedPublicKey::new(&X25519, peer),
            TokenError::Crypto("X25519 agreement"),
            kdf,
        )
    }
}

/// A destination's import public key: what a token is encrypted to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecipientKey([u8; KEY_LEN]);

impl RecipientKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        <[u8; KEY_LEN]>::try_from(bytes)
            .map(RecipientKey)
            .map_err(|_| {
                TokenError::invalid(
                    "import key",
                    format!("an X25519 public key is 32 bytes, not {}", bytes.len()),
                )
            })
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Its fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }

    /// `ferry-import-key-v1:<base64url>`.
    pub fn to_text(&self) -> String {
        format!("{IMPORT_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Reads [`RecipientKey::to_text`]'s form; whitespace around it is ignored.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        let bad = |detail: &str| {
            TokenError::invalid(
                "import key",
                format!(
                    "{detail}: want {IMPORT_KEY_PREFIX} followed by 43 base64url characters, \
                     as GetImportKey on the destination returns it"
                ),
            )
        };
        let body = text
            .strip_prefix(IMPORT_KEY_PREFIX)
            .ok_or_else(|| bad("no import key prefix"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not base64url"))?;
        Self::from_bytes(&bytes).map_err(|_| bad("not 32 bytes"))
    }
}

impl fmt::Display for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientKey({})", self.fingerprint())
    }
}

impl FromStr for RecipientKey {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        Self::parse(s)
    }
}

/// The source's signing key pair (Ed25519).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key().fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, TokenError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| TokenError::Crypto("generating an Ed25519 key"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key pair from the PKCS#8 document [`SigningKey::pkcs8`] returned.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| TokenError::invalid("signing key", format!("not an Ed25519 key: {e}")))?;
        Ok(SigningKey {
            pair,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
        })
    }

    /// The private key as PKCS#8, to seal and store. Keep it secret.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half, which travels in every token.
    pub fn public_key(&self) -> SignerKey {
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(self.pair.public_key().as_ref());
        SignerKey(key)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }
}

/// A source's signing public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignerKey(pub(crate) [u8; KEY_LEN]);

impl SignerKey {
    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Its fingerprint, which a destination may pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.0)
    }

    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_storage_and_text() {
        let import = ImportKey::generate().expect("import key");
        let secret = import.secret_bytes().expect("secret bytes");
        assert_eq!(secret.len(), 32);
        let again = ImportKey::from_secret_bytes(&secret).expect("reload");
        assert_eq!(again.public_key(), import.public_key());
        let text = import.public_key().to_text();
        assert!(text.starts_with(IMPORT_KEY_PREFIX), "{text}");
        assert_eq!(
            RecipientKey::parse(&format!("  {text}\n")).expect("parse"),
            *import.public_key()
        );
        assert!(RecipientKey::parse("ferry-import-key-v1:abc").is_err());
        assert!(RecipientKey::parse(&text.replace("v1", "v2")).is_err());
        assert!(ImportKey::from_secret_bytes(&[1, 2, 3]).is_err());

        let signer = SigningKey::generate().expect("signing key");
        let reloaded = SigningKey::from_pkcs8(signer.pkcs8()).expect("reload");
        assert_eq!(reloaded.public_key(), signer.public_key());
        let sig = signer.sign(b"hello");
        assert!(signer.public_key().verifies(b"hello", &sig));
        assert!(!signer.public_key().verifies(b"hellO", &sig));

        let fp = signer.public_key().fingerprint();
        assert!(fp.as_str().starts_with("SHA256:"), "{fp}");
        assert_eq!(Fingerprint::parse(fp.as_str()).expect("parse"), fp);
        assert!(Fingerprint::parse("SHA256:short").is_err());
        assert_ne!(fp, import.public_key().fingerprint());
    }
}
