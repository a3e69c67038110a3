//! The HTTP source's errors, and helpers that read reqwest's nested error chains.

use std::error::Error as StdError;
use std::io;

/// Why the HTTP source failed. URLs in messages are redacted (see [`super::headers::redact`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The bundle argument is not an http(s) URL.
    #[error("invalid bundle URL: {0}")]
    InvalidUrl(String),
    /// A TLS or header option could not be used.
    #[error("{what}: {reason}")]
    Options {
        /// The option (and file).
        what: String,
        /// Why.
        reason: String,
    },
    /// The server answered a range request with the whole file.
    #[error("{url}: server does not support HTTP range requests (it answered {status} to a range request)")]
    NoRangeSupport {
        /// Redacted URL.
        url: String,
        /// The status it sent.
        status: u16,
    },
    /// A final HTTP status.
    #[error("{url}: HTTP {status}{detail}")]
    Status {
        /// Redacted URL.
        url: String,
        /// Status code and reason.
        status: String,
        /// What the body said, if anything (starts with `": "`).
        detail: String,
    },
    /// The bundle on the server is not the one whose download started.
    #[error("bundle changed on the server during the download: {url}: {detail}")]
    Changed {
        /// Redacted URL.
        url: String,
        /// What showed it.
        detail: String,
    },
    /// A response that breaks the range protocol.
    #[error("{url}: invalid response: {detail}")]
    Protocol {
        /// Redacted URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// TLS failed (untrusted certificate, client certificate refused, ...).
    #[error("{url}: TLS error: {detail}")]
    Tls {
        /// Redacted URL.
        url: String,
        /// The TLS library's reason.
        detail: String,
    },
    /// A request that cannot succeed as configured (bad redirect, ...).
    #[error("{url}: {detail}")]
    Request {
        /// Redacted URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Retries used up.
    #[error("{url}: giving up at offset {offset} after {attempts} failed attempts without progress; last: {last}")]
    GaveUp {
        /// Redacted URL.
        url: String,
        /// The offset still needed.
        offset: u64,
        /// Attempts made.
        attempts: u32,
        /// The last reason.
        last: String,
    },
}

/// The first error of type `T` in `e`'s chain, looking inside `io::Error`s and boxed
/// errors too (reqwest and hyper wrap TLS errors in both).
pub(crate) fn find_source<'a, T: StdError + 'static>(
    e: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = unwrap_as::<T>(err, 0) {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// `e` itself as `T`, or the error an `io::Error` holds, as `T`.
fn unwrap_as<'a, T: StdError + 'static>(
    e: &'a (dyn StdError + 'static),
    depth: u8,
) -> Option<&'a T> {
    if let Some(t) = e.downcast_ref::<T>() {
        return Some(t);
    }
    let io = e.downcast_ref::<io::Error>().filter(|_| depth < 4)?;
    let inner: &(dyn StdError + 'static) = io.get_ref()?;
    unwrap_as::<T>(inner, depth + 1)
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || find_source::<reqwest::Error>(e).is_some_and(reqwest::Error::is_timeout)
}

/// An error and its sources as one line, repeated messages dropped.
pub(crate) fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_drops_repeats() {
        let inner = io::Error::other("connection reset");
        let outer = io::Error::other(inner);
        assert_eq!(chain(&outer), "connection reset");
    }

    #[test]
    fn nested_io_errors_are_searched() {
        #[derive(Debug, thiserror::Error)]
        #[error("tls says no")]
        struct Tls;
        let inner = io::Error::new(io::ErrorKind::InvalidData, Tls);
        let outer = io::Error::other(inner);
        assert!(find_source::<Tls>(&outer).is_some());
        assert!(find_source::<Tls>(&io::Error::other("plain")).is_none());
    }
}
