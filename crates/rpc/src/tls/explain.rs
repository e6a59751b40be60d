//! What went wrong in a TLS handshake, found in an error's chain of sources and said
//! in words that name the mismatch.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};

use super::TlsFlags;

/// A TLS failure, as the side that saw it can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMismatch {
    /// The peer's certificate chains to no CA this side trusts (or claims a trusted
    /// CA's name without its signature).
    UnknownCa,
    /// The certificate is valid, for other names.
    WrongName {
        expected: String,
        presented: Vec<String>,
    },
    /// The certificate's `notAfter` has passed (seconds since the epoch, when known).
    Expired { not_after: Option<u64> },
    /// The certificate's `notBefore` is still ahead.
    NotYetValid { not_before: Option<u64> },
    /// The server wants a client certificate and none was sent.
    ClientCertRequired,
    /// The server refused the client certificate sent; why, as its alert said.
    ClientCertRefused { reason: String },
    /// The client sent no certificate to a server that requires one (seen by servers).
    NoClientCert,
    /// The other side speaks something other than TLS, most likely plaintext HTTP/2.
    NotTls,
    /// Any other TLS failure, in rustls' words.
    Other(String),
}

impl TlsMismatch {
    /// The first TLS failure in `err` or its sources (looking inside `io::Error`s too).
    pub fn find(err: &(dyn StdError + 'static)) -> Option<TlsMismatch> {
        find_in(err, &|e| {
            if let Some(found) = e.downcast_ref::<rustls::Error>() {
                return Some(TlsMismatch::from_rustls(found));
            }
            if let Some(found) = e.downcast_ref::<TlsMismatch>() {
                return Some(found.clone());
            }
            // After the handshake (mutual TLS refusing a client certificate), the alert
            // reaches the reader as text only, in rustls' words.
            let text = e.to_string();
            let alert = text.strip_prefix(ALERT_RECEIVED)?;
            let alert = ALERTS
                .iter()
                .find(|a| format!("{a:?}") == alert.trim())
                .copied()?;
            Some(TlsMismatch::from_rustls(&rustls::Error::AlertReceived(
                alert,
            )))
        })
    }

    fn from_rustls(e: &rustls::Error) -> TlsMismatch {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => TlsMismatch::UnknownCa,
                C::NotValidForName => TlsMismatch::WrongName {
                    expected: String::new(),
                    presented: Vec::new(),
                },
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsMismatch::WrongName {
                    expected: server_name(expected),
                    presented: presented.clone(),
                },
                C::Expired => TlsMismatch::Expired { not_after: None },
                C::ExpiredContext { not_after, .. } => TlsMismatch::Expired {
                    not_after: Some(not_after.as_secs()),
                },
                C::NotValidYet => TlsMismatch::NotYetValid { not_before: None },
                C::NotValidYetContext { not_before, .. } => TlsMismatch::NotYetValid {
                    not_before: Some(not_before.as_secs()),
                },
                other => TlsMismatch::Other(format!("invalid certificate: {other:?}")),
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsMismatch::ClientCertRequired
            }
            rustls::Error::AlertReceived(alert) => match alert {
                // DecryptError: a CA of the same name as one the server trusts, with
                // another key, signed it.
                AlertDescription::UnknownCA | AlertDescription::DecryptError => {
                    TlsMismatch::ClientCertRefused {
                        reason: "it is signed by a CA the server does not trust".into(),
                    }
                }
                AlertDescription::CertificateExpired => TlsMismatch::ClientCertRefused {
                    reason: "it has expired".into(),
                },
                AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::AccessDenied => TlsMismatch::ClientCertRefused {
                    reason: format!("the server answered {alert:?}"),
                },
                other => TlsMismatch::Other(format!("the other side answered {other:?}")),
            },
            rustls::Error::NoCertificatesPresented => TlsMismatch::NoClientCert,
            rustls::Error::InvalidMessage(_) => TlsMismatch::NotTls,
            other => TlsMismatch::Other(other.to_string()),
        }
    }

    /// The client's view: what did not match talking to `host`, and the next step,
    /// naming `flags`.
    pub fn message(&self, host: &str, flags: &TlsFlags) -> String {
        match self {
            TlsMismatch::UnknownCa => format!(
                "certificate of {host} is signed by an unknown CA; pass {} with the CA that \
                 signed it",
                flags.ca
            ),
            TlsMismatch::WrongName {
                expected,
                presented,
            } => {
                let expected = if expected.is_empty() { host } else { expected };
                let names = if presented.is_empty() {
                    "other names".to_string()
                } else {
                    presented.join(", ")
                };
                format!(
                    "certificate of {host} is for {names}, not {expected}; reach it by a name \
                     its certificate holds, or give it a certificate for {expected}"
                )
            }
            TlsMismatch::Expired { not_after } => format!(
                "certificate of {host} expired at {}; renew it",
                when(*not_after)
            ),
            TlsMismatch::NotYetValid { not_before } => format!(
                "certificate of {host} is not valid until {}; check both machines' clocks",
                when(*not_before)
            ),
            TlsMismatch::ClientCertRequired | TlsMismatch::NoClientCert => format!(
                "{host} requires a client certificate (mutual TLS); pass {} and {} with one \
                 signed by the CA it trusts",
                flags.cert, flags.key
            ),
            TlsMismatch::ClientCertRefused { reason } => format!(
                "{host} refused this client's certificate: {reason}; pass {} and {} with one \
                 signed by the CA it trusts (its --tls-client-ca)",
                flags.cert, flags.key
            ),
            TlsMismatch::NotTls => {
                format!("{host} does not speak TLS; if it serves plaintext, use http://")
            }
            TlsMismatch::Other(detail) => format!("TLS with {host} failed: {detail}"),
        }
    }

    /// The server's view of a client it refused, for its log.
    pub fn refusal(&self) -> String {
        match self {
            TlsMismatch::UnknownCa => {
                "the client's certificate is signed by a CA not in --tls-client-ca".into()
            }
            TlsMismatch::Expired { not_after } => {
                format!("the client's certificate expired at {}", when(*not_after))
            }
            TlsMismatch::NotYetValid { not_before } => format!(
                "the client's certificate is not valid until {}",
                when(*not_before)
            ),
            TlsMismatch::NoClientCert | TlsMismatch::ClientCertRequired => {
                "the client sent no certificate and mutual TLS is on".into()
            }
            TlsMismatch::ClientCertRefused { reason } => format!("the client refused: {reason}"),
            TlsMismatch::WrongName { .. } => "the client's certificate names do not match".into(),
            TlsMismatch::NotTls => {
                "the client does not speak TLS (plaintext? it must use https://)".into()
            }
            TlsMismatch::Other(detail) => detail.clone(),
        }
    }
}

impl std::fmt::Display for TlsMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.refusal())
    }
}

/// As the source of a status that [`super::TlsChannel`] explained.
impl StdError for TlsMismatch {}

/// How rustls words a received alert (`rustls::Error::AlertReceived`'s Display).
const ALERT_RECEIVED: &str = "received fatal alert: ";

/// The alerts a peer sends about certificates, or on a failed negotiation.
const ALERTS: &[AlertDescription] = &[
    AlertDescription::CertificateRequired,
    AlertDescription::UnknownCA,
    AlertDescription::CertificateExpired,
    AlertDescription::BadCertificate,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::AccessDenied,
    AlertDescription::DecryptError,
    AlertDescription::HandshakeFailure,
    AlertDescription::ProtocolVersion,
    AlertDescription::NoApplicationProtocol,
];

/// The first answer of `look` for `err` and its sources. An `io::Error`'s `source()`
/// skips the error it wraps, so that one is looked at through `get_ref`.
fn find_in<T>(
    err: &(dyn StdError + 'static),
    look: &dyn Fn(&(dyn StdError + 'static)) -> Option<T>,
) -> Option<T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = look(e) {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(found) = find_in(inner, look)
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

fn server_name(name: &rustls::pki_types::ServerName<'_>) -> String {
    use rustls::pki_types::ServerName;
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Seconds since the epoch as RFC 3339 (UTC); "an unknown time" when absent.
fn when(secs: Option<u64>) -> String {
    secs.and_then(|s| i64::try_from(s).ok())
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "an unknown time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rustls_errors_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(TlsMismatch::find(&io), Some(TlsMismatch::UnknownCa));
        let plain = std::io::Error::other("refused");
        assert_eq!(TlsMismatch::find(&plain), None);
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        );
        assert_eq!(
            TlsMismatch::find(&alert),
            Some(TlsMismatch::ClientCertRequired)
        );
    }

    #[test]
    fn messages_name_the_mismatch() {
        let flags = TlsFlags::CLI;
        assert_eq!(
            TlsMismatch::UnknownCa.message("10.0.0.1", &flags),
            "certificate of 10.0.0.1 is signed by an unknown CA; pass --ca-file with the CA \
             that signed it"
        );
        let wrong = TlsMismatch::WrongName {
            expected: "ferry.b".into(),
            presented: vec!["ferry.a".into(), "127.0.0.1".into()],
        };
        assert!(
            wrong
                .message("ferry.b", &flags)
                .starts_with("certificate of ferry.b is for ferry.a, 127.0.0.1, not ferry.b"),
        );
        let expired = TlsMismatch::Expired {
            not_after: Some(1_700_000_000),
        };
        assert!(
            expired
                .message("h", &flags)
                .starts_with("certificate of h expired at 2023-11-14T22:13:20Z")
        );
    }
}
