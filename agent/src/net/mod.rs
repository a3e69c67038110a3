//! The network: the one HTTP client (options, TLS, redirects) for bundle downloads and
//! short requests (channel polls, reports, health probes).
//!
//! Bundle sources on the network. [`http::HttpSource`] reads a bundle with HTTP(S) range
//! requests, so the install pipeline streams it exactly as it streams a file: header and
//! signatures first, then chunks in order, each verified before it is written.
//!
//! Invariants: nothing here buffers a whole body (reads go into the caller's buffer), no
//! message or log line carries URL credentials, query values or extra header values.

pub mod backoff;
pub mod client;
pub mod error;
mod fetch;
pub mod headers;
pub mod http;
pub mod options;
mod readahead;

pub use error::HttpError;
pub use http::HttpSource;
pub use options::{HttpOptions, RetryPolicy, StallPolicy};

/// Whether a bundle argument names a URL this module can fetch (`http://` or `https://`,
/// scheme case-insensitive) rather than a file.
pub fn is_url(arg: &str) -> bool {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("http://host/b.fsb"));
        assert!(is_url("HTTPS://host/b.fsb"));
        assert!(!is_url("/tmp/http://x"));
        assert!(!is_url("bundle.fsb"));
        assert!(!is_url("ftp://host/b.fsb"));
        assert!(!is_url("http:"));
    }
}
