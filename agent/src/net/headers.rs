//! Pure helpers for the HTTP source: parsing `Content-Range` and `Retry-After`, the
//! validator sent in `If-Range`, `Name: value` header arguments, and URL redaction.

use reqwest::Url;
use std::time::Duration;

/// A parsed `Content-Range` of a 206 or 416 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes FIRST-LAST/TOTAL` (TOTAL `*` when the server does not know it).
    Bytes {
        /// First byte.
        first: u64,
        /// Last byte (inclusive).
        last: u64,
        /// Complete length, if given.
        total: Option<u64>,
    },
    /// `bytes */TOTAL` (of a 416).
    Unsatisfied {
        /// Complete length.
        total: u64,
    },
}

/// Parses a `Content-Range` value (RFC 9110 §14.4); `None` if it is malformed.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?;
    let rest = rest.strip_prefix(' ')?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim();
    if range.trim() == "*" {
        return Some(ContentRange::Unsatisfied {
            total: parse_u64(total)?,
        });
    }
    let (first, last) = range.trim().split_once('-')?;
    let (first, last) = (parse_u64(first)?, parse_u64(last)?);
    let total = match total {
        "*" => None,
        t => Some(parse_u64(t)?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange::Bytes { first, last, total })
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The delay of a `Retry-After` value in its seconds form; the HTTP-date form and
/// anything malformed give `None` (the caller then uses its own backoff).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_u64(value.trim()).map(Duration::from_secs)
}

/// What identifies one version of the bundle on the server, as first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validator {
    /// `ETag`, as sent.
    pub etag: Option<String>,
    /// `Last-Modified`, as sent.
    pub last_modified: Option<String>,
}

impl Validator {
    /// The value for `If-Range`: a strong ETag, else `Last-Modified` (RFC 9110 §13.1.5
    /// forbids weak ETags there).
    pub fn if_range(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }

    /// Why a later response's validator shows a different bundle, if it does. A validator
    /// the later response does not send is not a difference.
    pub fn changed(&self, now: &Validator) -> Option<String> {
        let differs =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a != b);
        if differs(&self.etag, &now.etag) {
            return Some(format!(
                "ETag was {}, now {}",
                self.etag.as_deref().unwrap_or(""),
                now.etag.as_deref().unwrap_or("")
            ));
        }
        if differs(&self.last_modified, &now.last_modified) {
            return Some(format!(
                "Last-Modified was {}, now {}",
                self.last_modified.as_deref().unwrap_or(""),
                now.last_modified.as_deref().unwrap_or("")
            ));
        }
        None
    }
}

/// Parses a `Name: value` header argument; the name must be a valid token.
pub fn parse_header_line(line: &str) -> Result<(String, String), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| "expected \"Name: value\"".to_string())?;
    let name = name.trim();
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(valid) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// The URL as it may be shown: user name and password replaced by `***`, every query
/// value replaced by `***` (tokens often travel there), fragment dropped.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        // Only fails for URLs that cannot carry credentials, which then have none.
        u.set_username("***").ok();
        u.set_password(None).ok();
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for k in &keys {
            q.append_pair(k, "***");
        }
        drop(q);
    }
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 0-0/1234"),
            Some(ContentRange::Bytes {
                first: 0,
                last: 0,
                total: Some(1234)
            })
        );
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ContentRange::Bytes {
                first: 100,
                last: 199,
                total: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */0"),
            Some(ContentRange::Unsatisfied { total: 0 })
        );
        for bad in [
            "",
            "bytes",
            "bytes 1-0/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-1",
            "bytes -1-2/3",
            "bytes 0-1/x",
            "bytes 0-99999999999999999999/1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 1 "), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    #[test]
    fn validator_prefers_strong_etag() {
        let v = Validator {
            etag: Some("\"abc\"".into()),
            last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".into()),
        };
        assert_eq!(v.if_range(), Some("\"abc\""));
        let weak = Validator {
            etag: Some("W/\"abc\"".into()),
            ..v.clone()
        };
        assert_eq!(weak.if_range(), v.last_modified.as_deref());
        assert_eq!(Validator::default().if_range(), None);
    }

    #[test]
    fn validator_changes() {
        let v = Validator {
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        assert_eq!(v.changed(&Validator::default()), None);
        assert_eq!(v.changed(&v), None);
        let other = Validator {
            etag: Some("\"b\"".into()),
            last_modified: None,
        };
        assert!(v.changed(&other).unwrap().contains("\"b\""));
    }

    #[test]
    fn header_lines() {
        assert_eq!(
            parse_header_line("X-Device-Token:  abc def "),
            Ok(("X-Device-Token".into(), "abc def".into()))
        );
        assert!(parse_header_line("no colon").is_err());
        assert!(parse_header_line("bad name: x").is_err());
        assert!(parse_header_line(": x").is_err());
    }

    #[test]
    fn redaction() {
        let u = Url::parse("https://user:secret@host:8443/b.fsb?token=s3cr3t&v=1#frag").unwrap();
        let r = redact(&u);
        assert_eq!(r, "https://***@host:8443/b.fsb?token=***&v=***");
        assert!(!r.contains("secret") && !r.contains("s3cr3t"));
        let plain = Url::parse("http://127.0.0.1:8080/b.fsb").unwrap();
        assert_eq!(redact(&plain), "http://127.0.0.1:8080/b.fsb");
    }
}
