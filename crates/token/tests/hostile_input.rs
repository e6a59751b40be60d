//! Tokens from someone hostile: anyone can sign a token with a key of their own, so
//! everything after the signature check is input from outside too. Nothing here may
//! panic; every refusal is a `TokenError`.
//!
//! PROPTEST_CASES sets the cases per property (default 256; release runs use 10,000).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_token::*;
use proptest::prelude::*;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// Armours `claims_json` as a version-1 token, signed by a fresh key of the caller's.
fn signed(claims_json: &[u8]) -> String {
    let key = SigningKey::generate().unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(key.pkcs8()).unwrap();
    let mut blob = vec![FORMAT_VERSION];
    blob.extend_from_slice(pair.public_key().as_ref());
    blob.extend_from_slice(claims_json);
    let message = [b"ferry migration token\0".as_slice(), &blob].concat();
    blob.extend_from_slice(pair.sign(&message).as_ref());
    let b64 = STANDARD.encode(&blob);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN FERRY MIGRATION TOKEN-----\n{}\n-----END FERRY MIGRATION TOKEN-----",
        lines.join("\n")
    )
}

/// Claims JSON as a well-behaved issuer writes it, for `recipient`.
fn claims_json(recipient: &RecipientKey, issued_at: u64, expires_at: u64) -> serde_json::Value {
    serde_json::json!({
        "location": {"backend": "s3", "endpoint": "https://s3.example.com", "bucket": "b",
                     "prefix": "p", "region": "r"},
        "repository_id": "ab".repeat(32),
        "namespace": "shop",
        "issuer": "a",
        "issued_at": issued_at,
        "expires_at": expires_at,
        "recipient": STANDARD.encode(recipient.as_bytes()),
        "wrapped_key": {"ephemeral": STANDARD.encode([9u8; 32]), "nonce": STANDARD.encode([1u8; 12]),
                        "ciphertext": STANDARD.encode([2u8; 48])}
    })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// Before the fix a signed expiry near u64::MAX seconds overflowed SystemTime and
/// panicked the destination's catalog.
#[test]
fn token_with_a_time_past_the_clock_is_refused_not_a_panic() {
    let destination = ImportKey::generate().unwrap();
    for (issued, expires) in [(0, u64::MAX), (u64::MAX - 1, u64::MAX), (u64::MAX, 1)] {
        let text = signed(
            &serde_json::to_vec(&claims_json(destination.public_key(), issued, expires)).unwrap(),
        );
        let err = open(&text, &destination, &OpenOptions::at(now())).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{issued}..{expires}: {err}"
        );
        assert!(err.to_string().contains("out of range"), "{err}");
    }
    // A clock near its own end does not overflow when adding the allowed skew either.
    let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
    let text = signed(&serde_json::to_vec(&claims_json(destination.public_key(), 1, 2)).unwrap());
    assert!(open(&text, &destination, &OpenOptions::at(far)).is_err());
}

#[test]
fn overlong_text_is_refused_before_decoding() {
    let destination = ImportKey::generate().unwrap();
    let text = "A".repeat(MAX_TEXT_LEN + 1);
    let err = open(&text, &destination, &OpenOptions::at(now())).unwrap_err();
    assert!(err.to_string().contains("more than any token"), "{err}");
}

/// A JSON value with random leaves changed: what a hostile signer might send.
fn mutate(v: &mut serde_json::Value, rng: &mut impl FnMut() -> u64) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                match rng() % 8 {
                    0 => {
                        m.remove(&k);
                    }
                    1 => {
                        m.insert(k, Value::from(rng()));
                    }
                    2 => {
                        m.insert(k, Value::from(format!("{:x}", rng())));
                    }
                    3 => {
                        m.insert(k, Value::Null);
                    }
                    _ => {
                        if let Some(child) = m.get_mut(&k) {
                            mutate(child, rng);
                        }
                    }
                }
            }
        }
        Value::String(s) => {
            if rng().is_multiple_of(2) {
                s.push_str(&"=".repeat((rng() % 5) as usize));
            } else {
                s.truncate((rng() as usize) % (s.len() + 1));
            }
        }
        Value::Number(_) => *v = Value::from(rng()),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Any text: `open`, `signer_of` and the key parsers refuse it or accept it, never panic.
    #[test]
    fn random_text_never_panics(text in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let destination = ImportKey::generate().unwrap();
        let _ = open(&text, &destination, &OpenOptions::at(now()));
        let _ = signer_of(&text);
        let _ = RecipientKey::parse(&text);
        let _ = Fingerprint::parse(&text);
        let _ = RecipientKey::from_bytes(&bytes);
        let _ = ImportKey::from_secret_bytes(&bytes);
        let _ = SigningKey::from_pkcs8(&bytes);
        // Random bytes armoured: the block decodes, the rest must refuse cleanly.
        let armoured = format!(
            "-----BEGIN FERRY MIGRATION TOKEN-----\n{}\n-----END FERRY MIGRATION TOKEN-----",
            STANDARD.encode(&bytes)
        );
        prop_assert!(open(&armoured, &destination, &OpenOptions::at(now())).is_err());
        let _ = signer_of(&armoured);
    }

    /// Validly signed tokens whose claims are random bytes or a mutated good claim set:
    /// every check after the signature sees hostile input, and never panics.
    #[test]
    fn signed_hostile_claims_never_panic(
        garbage in proptest::collection::vec(any::<u8>(), 0..400),
        seed in any::<u64>(),
        issued in any::<u64>(),
        expires in any::<u64>(),
    ) {
        let destination = ImportKey::generate().unwrap();
        prop_assert!(open(&signed(&garbage), &destination, &OpenOptions::at(now())).is_err());
        let mut state = seed;
        let mut rng = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            state >> 17
        };
        let mut claims = claims_json(destination.public_key(), issued, expires);
        mutate(&mut claims, &mut rng);
        let text = signed(&serde_json::to_vec(&claims).unwrap());
        // The wrapped key is made up, so nothing opens; the point is how it fails.
        prop_assert!(open(&text, &destination, &OpenOptions::at(now())).is_err());
        prop_assert!(signer_of(&text).is_ok());
    }
}
