//! The catalog's listings page with [`ferry_store::Page`], as every service does; this
//! only turns a bad token into the catalog's error.

use ferry_store::Page;

use crate::error::CatalogError;

/// The page a request asks for.
pub(super) fn page(size: u32, token: &str) -> Result<Page, CatalogError> {
    Page::of(size, token).map_err(|_| bad_token())
}

/// A token that decodes but names no key of this listing.
pub(super) fn bad_token() -> CatalogError {
    CatalogError::invalid("page_token", ferry_store::BadPageToken.to_string())
}
