//! Page tokens of the catalog's listings: opaque to clients, the last key of the
//! previous page.

use base64::Engine;

use crate::error::CatalogError;

/// Page size when a request leaves it 0, and the most a request may ask for.
pub(super) const DEFAULT_PAGE: usize = 100;
pub(super) const MAX_PAGE: usize = 1000;

pub(super) fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

pub(super) fn bad_token() -> CatalogError {
    CatalogError::invalid(
        "page_token",
        "not a token this call returned; pass next_page_token unchanged, or leave it empty",
    )
}

/// Page tokens are opaque to clients: the last key of the previous page.
pub(super) fn decode_token(token: &str) -> Result<Option<String>, CatalogError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad_token())?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad_token())
}

/// Cuts `rows` (fetched with one extra) to `limit` and returns the next page's token.
pub(super) fn next_token<T>(rows: &mut Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> String {
    if rows.len() <= limit {
        return String::new();
    }
    rows.truncate(limit);
    rows.last()
        .map(|last| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key(last)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_junk() {
        let mut rows = vec!["a".to_string(), "b".into(), "c".into()];
        let token = next_token(&mut rows, 2, Clone::clone);
        assert_eq!(rows, vec!["a", "b"]);
        assert_eq!(decode_token(&token).expect("decode"), Some("b".into()));
        let mut last = vec!["a".to_string()];
        assert_eq!(next_token(&mut last, 2, Clone::clone), "");
        assert!(decode_token("%%%").is_err());
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(5000), MAX_PAGE);
    }
}
