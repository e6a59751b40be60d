//! Migration tokens end to end: round trip, and every way a token must be refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ferry_token::{
    Backend, Claims, ImportKey, Location, OpenOptions, SigningKey, TokenError, issue, open,
    signer_of,
};
use proptest::prelude::*;

/// A random 32-byte repository key, as Ferry generates them.
const KEY: &[u8] = b"\x8f\x3a\x51\xc2\xe7\x09\x6d\xb4\x10\x7e\x2c\x99\xf6\xa3\x08\x5d\x4b\xe1\x72\x3f\xc6\x0a\x9e\x15\xd8\xb7\x24\x3e\x6f\x0c\x91\xa2";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn claims() -> Claims {
    Claims {
        location: Location {
            backend: Backend::S3,
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "ferry".into(),
            prefix: "exports/shop".into(),
            region: "us-east-1".into(),
        },
        repository_id: "0123456789abcdef".repeat(4),
        namespace: "shop".into(),
        restore_point_id: Some("fe".repeat(32)),
        issuer: "a".into(),
        issued_at: now(),
        expires_at: now() + Duration::from_secs(3600),
    }
}

struct Fixture {
    destination: ImportKey,
    source: SigningKey,
    text: String,
}

fn fixture() -> Fixture {
    let destination = ImportKey::generate().expect("import key");
    let source = SigningKey::generate().expect("signing key");
    let text = issue(&claims(), KEY, destination.public_key(), &source).expect("issue");
    Fixture {
        destination,
        source,
        text,
    }
}

#[test]
fn round_trip() {
    let f = fixture();
    let opened = open(&f.text, &f.destination, &OpenOptions::at(now())).expect("open");
    assert_eq!(opened.claims, claims());
    assert_eq!(opened.repository_key.as_bytes(), KEY);
    assert_eq!(opened.signer, f.source.public_key());
    assert!(format!("{:?}", opened.repository_key).contains("redacted"));

    // Pinned to the right signer; copy-pasted with extra whitespace and CRLF.
    let pasted = format!("\n\n  {}  \r\n", f.text.replace('\n', "\r\n"));
    let pinned = OpenOptions::at(now()).pin(f.source.public_key().fingerprint());
    let reopened = open(&pasted, &f.destination, &pinned).expect("pinned, pasted");
    // The id a destination records to accept a token once does not depend on how it was
    // pasted.
    assert_eq!(reopened.id, opened.id);
    assert_eq!(opened.id.len(), 64);

    // A reloaded import key (as the catalog stores it) opens it too.
    let secret = f.destination.secret_bytes().expect("secret");
    let reloaded = ImportKey::from_secret_bytes(&secret).expect("reload");
    open(&f.text, &reloaded, &OpenOptions::at(now())).expect("reloaded key");

    // Two tokens for the same claims differ (fresh ephemeral key and nonce).
    let again = issue(&claims(), KEY, f.destination.public_key(), &f.source).expect("issue");
    assert_ne!(again, f.text);
    let again = open(&again, &f.destination, &OpenOptions::at(now())).expect("open");
    assert_ne!(again.id, opened.id, "each token has its own id");
}

#[test]
fn the_token_holds_no_secret_bytes() {
    let f = fixture();
    let blob: String = f.text.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .expect("base64");
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    // The key, in any part of at least 8 bytes, in the decoded bytes and in the text.
    for part in KEY.windows(8) {
        assert!(!contains(&blob, part), "key bytes in the token");
    }
    for shift in 0..3 {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&KEY[shift..]);
        let inner = &encoded[4..encoded.len() - 4];
        assert!(!f.text.contains(inner), "base64 of the key in the text");
    }
    // Neither private key.
    let secret = f.destination.secret_bytes().expect("secret");
    assert!(!contains(&blob, &secret));
    assert!(!contains(&blob, &f.source.pkcs8()[16..48]));
}

#[test]
fn every_changed_character_is_rejected() {
    let f = fixture();
    let bytes = f.text.as_bytes();
    let replacements = [
        b'A', b'z', b'0', b'+', b'/', b'=', b'-', b'\n', b'\r', b' ', b'\t',
    ];
    for i in 0..bytes.len() {
        for &r in &replacements {
            if bytes[i] == r {
                continue;
            }
            let mut changed = bytes.to_vec();
            changed[i] = r;
            let changed = String::from_utf8(changed).expect("ascii");
            let result = open(&changed, &f.destination, &OpenOptions::at(now()));
            assert!(
                result.is_err(),
                "byte {i} ({:?} -> {:?}) changed and the token still opened",
                bytes[i] as char,
                r as char
            );
        }
    }
}

#[test]
fn a_changed_body_character_is_a_signature_failure() {
    let f = fixture();
    // The middle of the first body line: inside the claims, far from padding.
    let line_start = f.text.find('\n').expect("newline") + 1;
    let i = line_start + 40;
    let mut changed = f.text.clone().into_bytes();
    changed[i] = if changed[i] == b'Q' { b'R' } else { b'Q' };
    let changed = String::from_utf8(changed).expect("ascii");
    let err = open(&changed, &f.destination, &OpenOptions::at(now())).expect_err("tampered");
    assert!(matches!(err, TokenError::BadSignature { .. }), "{err:?}");
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn expired_tokens_are_rejected_with_the_expiry_time() {
    let f = fixture();
    let at_expiry = now() + Duration::from_secs(3600);
    let err = open(&f.text, &f.destination, &OpenOptions::at(at_expiry)).expect_err("expired");
    assert!(matches!(err, TokenError::Expired { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("2025-06-15T16:06:40Z"), "{message}");
    assert!(message.contains("expired"), "{message}");
    open(
        &f.text,
        &f.destination,
        &OpenOptions::at(at_expiry - Duration::from_secs(1)),
    )
    .expect("a second before expiry");

    // Issued well in the future: the clocks disagree.
    let err = open(
        &f.text,
        &f.destination,
        &OpenOptions::at(now() - Duration::from_secs(3000)),
    )
    .expect_err("not yet valid");
    assert!(matches!(err, TokenError::NotYetValid { .. }), "{err:?}");
}

#[test]
fn tokens_for_another_destination_are_rejected_with_both_fingerprints() {
    let f = fixture();
    let other = ImportKey::generate().expect("other key");
    let err = open(&f.text, &other, &OpenOptions::at(now())).expect_err("other destination");
    let message = err.to_string();
    assert!(matches!(err, TokenError::WrongRecipient { .. }), "{err:?}");
    assert!(message.contains("another destination key"), "{message}");
    assert!(
        message.contains(f.destination.public_key().fingerprint().as_str()),
        "{message}"
    );
    assert!(
        message.contains(other.public_key().fingerprint().as_str()),
        "{message}"
    );
}

#[test]
fn pinned_signers_are_enforced() {
    let f = fixture();
    let stranger = SigningKey::generate().expect("stranger");
    let forged = issue(&claims(), KEY, f.destination.public_key(), &stranger).expect("issue");
    let pinned = OpenOptions::at(now()).pin(f.source.public_key().fingerprint());
    let err = open(&forged, &f.destination, &pinned).expect_err("untrusted signer");
    assert!(matches!(err, TokenError::UntrustedSigner { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(stranger.public_key().fingerprint().as_str())
            && message.contains(f.source.public_key().fingerprint().as_str()),
        "names both fingerprints: {message}"
    );
}

#[test]
fn the_signer_of_a_token_is_shown_only_when_its_signature_verifies() {
    let f = fixture();
    let signer = signer_of(&f.text).expect("signer");
    assert_eq!(signer, f.source.public_key());
    let body_start = f.text.find('\n').expect("a line break") + 1;
    let mut altered = f.text.clone().into_bytes();
    let i = body_start + 30;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ascii");
    let err = signer_of(&altered).expect_err("altered");
    assert!(matches!(err, TokenError::BadSignature { .. }), "{err:?}");
    assert!(matches!(
        signer_of("not a token"),
        Err(TokenError::Malformed { .. })
    ));
}

#[test]
fn issuing_checks_its_inputs() {
    let f = fixture();
    let bad = |c: Claims, key: &[u8]| issue(&c, key, f.destination.public_key(), &f.source);
    assert!(bad(claims(), b"").is_err());
    assert!(bad(claims(), &vec![7u8; ferry_token::MAX_KEY_LEN + 1]).is_err());
    let mut c = claims();
    c.expires_at = c.issued_at;
    assert!(bad(c, KEY).is_err());
    let mut c = claims();
    c.namespace.clear();
    assert!(bad(c, KEY).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_claims_and_key_round_trip(
        namespace in "[a-z][a-z0-9-]{0,20}",
        prefix in "[a-z0-9/]{0,30}",
        key in proptest::collection::vec(any::<u8>(), 1..200),
        ttl in 1u64..10_000_000,
        restore_point in proptest::option::of("[0-9a-f]{64}"),
    ) {
        let destination = ImportKey::generate().expect("import key");
        let source = SigningKey::generate().expect("signing key");
        let mut c = claims();
        c.namespace = namespace;
        c.location.prefix = prefix;
        c.location.backend = Backend::Local;
        c.restore_point_id = restore_point;
        c.expires_at = c.issued_at + Duration::from_secs(ttl);
        let text = issue(&c, &key, destination.public_key(), &source).expect("issue");
        let opened = open(&text, &destination, &OpenOptions::at(now())).expect("open");
        prop_assert_eq!(opened.claims, c);
        prop_assert_eq!(opened.repository_key.as_bytes(), key.as_slice());
    }

    #[test]
    fn any_single_byte_change_is_rejected(position in any::<prop::sample::Index>(), with in 0x20u8..0x7f) {
        let f = fixture();
        let i = position.index(f.text.len());
        prop_assume!(f.text.as_bytes()[i] != with);
        let mut changed = f.text.clone().into_bytes();
        changed[i] = with;
        let changed = String::from_utf8(changed).expect("ascii");
        prop_assert!(open(&changed, &f.destination, &OpenOptions::at(now())).is_err());
    }
}
