//! The text block around a token's bytes: BEGIN and END lines around canonical base64,
//! 64 characters a line.
//!
//! Strict on purpose, so that changing any character of a token is noticed: only
//! whitespace around the block, empty lines and `\r\n` line ends (copy-paste on some
//! systems) are forgiven. The emitted text has no trailing newline, so every one of its
//! bytes counts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::error::TokenError;

const BEGIN: &str = "-----BEGIN FERRY MIGRATION TOKEN-----";
const END: &str = "-----END FERRY MIGRATION TOKEN-----";
const LINE: usize = 64;

pub(crate) fn encode(bytes: &[u8]) -> String {
    let b64 = STANDARD.encode(bytes);
    let mut out = String::with_capacity(b64.len() + b64.len() / LINE + BEGIN.len() + END.len() + 4);
    out.push_str(BEGIN);
    out.push('\n');
    // base64 is ASCII, so cutting at any byte offset is a char boundary.
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(LINE));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(END);
    out
}

/// The longest token text read: tokens are about 1.5 KiB, and everything `open`
/// allocates is a small multiple of the text, so this bounds its memory too.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

pub(crate) fn decode(text: &str) -> Result<Vec<u8>, TokenError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(TokenError::malformed(format!(
            "{} bytes of text is more than any token ({MAX_TEXT_LEN} at most)",
            text.len()
        )));
    }
    let text = text.trim().replace("\r\n", "\n");
    let body = text
        .strip_prefix(BEGIN)
        .and_then(|t| t.strip_suffix(END))
        .ok_or_else(|| {
            TokenError::malformed(format!(
                "it must start with the line {BEGIN} and end with the line {END}"
            ))
        })?;
    let body = body
        .strip_prefix('\n')
        .and_then(|b| b.strip_suffix('\n'))
        .ok_or_else(|| {
            TokenError::malformed("the BEGIN and END lines must be lines of their own")
        })?;
    let b64: String = body.split('\n').collect();
    if let Some(c) = b64
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
    {
        return Err(TokenError::malformed(format!(
            "character {c:?} inside the block is not base64"
        )));
    }
    STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| TokenError::malformed(format!("the block is not whole base64 ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_copy_paste() {
        for len in [1usize, 47, 48, 49, 200] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let text = encode(&bytes);
            assert!(text.lines().all(|l| l.len() <= LINE || l == BEGIN));
            assert_eq!(decode(&text).expect("decode"), bytes);
            let pasted = format!("\n  {}\r\n", text.replace('\n', "\r\n"));
            assert_eq!(decode(&pasted).expect("pasted"), bytes);
        }
        assert!(decode("hello").is_err());
        let text = encode(b"some bytes here");
        assert!(decode(&text.replace('\n', " ")).is_err());
        assert!(decode(&text.replace('\n', "\r")).is_err());
    }
}
