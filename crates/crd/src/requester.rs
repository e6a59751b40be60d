//! Who created an object, as the admission webhook saw them.
//!
//! The webhook writes [`ANNOTATION`] (the user's name, uid and groups from the API
//! server's admission request, never from the object) and [`SIGNATURE_ANNOTATION`], an
//! HMAC-SHA256 of the kind, the namespace and that text under the deployment's internal
//! secret. On updates it puts back what was there. The controller acts only for a
//! requester whose signature checks, so an object created while the webhook was not
//! installed, or one whose annotation was copied from another namespace, is refused
//! rather than run with someone else's rights.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The requester, as JSON.
pub const ANNOTATION: &str = "ferry.dev/requester";
/// Its signature.
pub const SIGNATURE_ANNOTATION: &str = "ferry.dev/requester-signature";

/// A user as the API server authenticated them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Why an object's requester cannot be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequesterError {
    #[error(
        "{kind} {object} has no {ANNOTATION} annotation: it was created while Ferry's \
         admission webhook was not running; delete it and create it again once the \
         webhook (MutatingWebhookConfiguration ferry) is installed"
    )]
    Missing { kind: String, object: String },
    #[error(
        "{kind} {object}: the {ANNOTATION} annotation is not one Ferry's admission webhook \
         wrote (its signature does not match); delete the object and create it again"
    )]
    BadSignature { kind: String, object: String },
    #[error("{kind} {object}: the {ANNOTATION} annotation is not valid JSON: {problem}")]
    Malformed {
        kind: String,
        object: String,
        problem: String,
    },
}

/// What is signed: the parts length-prefixed, so no two different inputs run together
/// the same way.
fn signed_bytes(kind: &str, namespace: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in ["ferry.dev/requester v1", kind, namespace, text] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

fn key(secret: &str) -> aws_lc_rs::hmac::Key {
    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes())
}

impl Requester {
    /// The two annotations the webhook writes for this requester of a `kind` object in
    /// `namespace` ("" for cluster-scoped ones).
    pub fn annotations(&self, secret: &str, kind: &str, namespace: &str) -> [(String, String); 2] {
        // Serializing a struct of strings cannot fail.
        let text = serde_json::to_string(self).unwrap_or_default();
        let tag = aws_lc_rs::hmac::sign(&key(secret), &signed_bytes(kind, namespace, &text));
        let signature = STANDARD.encode(tag.as_ref());
        [
            (ANNOTATION.to_owned(), text),
            (SIGNATURE_ANNOTATION.to_owned(), signature),
        ]
    }

    /// The requester of an object, if its annotations are ones the webhook wrote.
    pub fn of(
        annotations: Option<&std::collections::BTreeMap<String, String>>,
        secret: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Requester, RequesterError> {
        let object = if namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{namespace}/{name}")
        };
        let get = |key: &str| annotations.and_then(|a| a.get(key));
        let (Some(text), Some(signature)) = (get(ANNOTATION), get(SIGNATURE_ANNOTATION)) else {
            return Err(RequesterError::Missing {
                kind: kind.into(),
                object,
            });
        };
        let bad = || RequesterError::BadSignature {
            kind: kind.into(),
            object: object.clone(),
        };
        let signature = STANDARD.decode(signature).map_err(|_| bad())?;
        // In constant time.
        aws_lc_rs::hmac::verify(
            &key(secret),
            &signed_bytes(kind, namespace, text),
            &signature,
        )
        .map_err(|_| bad())?;
        serde_json::from_str(text).map_err(|e| RequesterError::Malformed {
            kind: kind.into(),
            object,
            problem: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn alice() -> Requester {
        Requester {
            username: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["system:authenticated".into()],
        }
    }

    #[test]
    fn what_the_webhook_signs_the_controller_trusts_and_nothing_else() {
        let secret = "s3cret";
        let notes: BTreeMap<String, String> = alice()
            .annotations(secret, "Migration", "shop")
            .into_iter()
            .collect();
        assert_eq!(
            Requester::of(Some(&notes), secret, "Migration", "shop", "m"),
            Ok(alice())
        );
        // Copied to another namespace, or checked with another secret: refused.
        for (secret, ns) in [(secret, "other"), ("another", "shop")] {
            assert!(matches!(
                Requester::of(Some(&notes), secret, "Migration", ns, "m"),
                Err(RequesterError::BadSignature { .. })
            ));
        }
        // Edited to claim more groups: refused.
        let mut forged = notes.clone();
        forged.insert(
            ANNOTATION.into(),
            r#"{"username":"alice","groups":["system:masters"]}"#.into(),
        );
        assert!(matches!(
            Requester::of(Some(&forged), secret, "Migration", "shop", "m"),
            Err(RequesterError::BadSignature { .. })
        ));
        assert!(matches!(
            Requester::of(None, secret, "Migration", "shop", "m"),
            Err(RequesterError::Missing { .. })
        ));
    }
}
