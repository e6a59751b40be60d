//! Keyset pages of a listing, the same for every service: a page holds at most `limit`
//! rows after the key its token names, so rows added while a client pages shift
//! nothing. Tokens are opaque to clients: the last key of the previous page, base64url.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Rows in a page when a request leaves the size 0.
pub const DEFAULT_PAGE: usize = 100;
/// The most rows a request may ask for in one page.
pub const MAX_PAGE: usize = 1000;

/// A page token that no listing returned (hand-made, cut, or from another listing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a page token this listing returned; pass next_page_token unchanged, or leave it empty \
     for the first page"
)]
pub struct BadPageToken;

/// One page a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Rows in the page.
    pub limit: usize,
    /// The key the page starts after (None: the first page).
    pub after: Option<String>,
}

impl Page {
    /// The page of a request's `page_size` (0: [`DEFAULT_PAGE`]; at most [`MAX_PAGE`])
    /// and `page_token` (empty: the first page).
    pub fn of(size: u32, token: &str) -> Result<Page, BadPageToken> {
        let limit = match size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = match token {
            "" => None,
            t => {
                let bytes = URL_SAFE_NO_PAD.decode(t).map_err(|_| BadPageToken)?;
                Some(String::from_utf8(bytes).map_err(|_| BadPageToken)?)
            }
        };
        Ok(Page { limit, after })
    }

    /// Rows to read: one more than the page, which says whether another follows.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }

    /// [`Page::fetch`] as SQLite's LIMIT takes it.
    pub fn sql_limit(&self) -> i64 {
        i64::try_from(self.fetch()).unwrap_or(i64::MAX)
    }

    /// Cuts `rows` (read with [`Page::fetch`]) to the page and returns the next page's
    /// token, made from `key` of the page's last row (empty when no page follows).
    pub fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> String) -> String {
        if rows.len() <= self.limit {
            return String::new();
        }
        rows.truncate(self.limit);
        rows.last()
            .map(|last| URL_SAFE_NO_PAD.encode(key(last)))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_their_tokens_and_refuse_others() {
        let first = Page::of(2, "").expect("first page");
        assert_eq!(first.after, None);
        let mut rows = vec!["a".to_string(), "b".into(), "c".into()];
        let token = first.finish(&mut rows, Clone::clone);
        assert_eq!(rows, ["a", "b"]);
        let second = Page::of(2, &token).expect("second page");
        assert_eq!(second.after.as_deref(), Some("b"));
        let mut last = vec!["c".to_string()];
        assert_eq!(
            second.finish(&mut last, Clone::clone),
            "",
            "no page follows"
        );

        assert_eq!(Page::of(0, "").map(|p| p.limit), Ok(DEFAULT_PAGE));
        assert_eq!(Page::of(5000, "").map(|p| p.limit), Ok(MAX_PAGE));
        assert_eq!(Page::of(1, "%%%"), Err(BadPageToken));
        assert_eq!(
            Page::of(1, &URL_SAFE_NO_PAD.encode([0xff, 0xfe])),
            Err(BadPageToken)
        );
    }
}
