//! [`HttpSource`]: a [`ByteSource`] over HTTP(S) range requests.
//!
//! Requests, in order: `GET` with `Range: bytes=0-0` learns the size (from `Content-Range`)
//! and the validator (`ETag`, `Last-Modified`). The first read opens one streaming
//! `GET Range: bytes=OFFSET-(SIZE-1)` with `If-Range`, and sequential reads continue on that
//! body; a read elsewhere opens a new range. Every 206 must say the range and size that
//! were asked for, with the same validator; a 200 or 412 to a resumed request means the
//! bundle changed on the server, which is final.
//!
//! A dropped connection, a read error, a stall (fewer than `min_bytes` within `window` of
//! time spent waiting for data) or a 408/429/5xx answer is retried from the exact offset
//! still needed, with exponential backoff and full jitter (`Retry-After` in seconds is
//! honoured up to the cap), until `max_retries` consecutive attempts made no progress.
//! Other 4xx answers and TLS errors are final.
//!
//! The requests are made by a `fetch::Fetcher`. [`HttpSource`] hands reads to a
//! `readahead::ReadAhead`: its own thread with its own fetcher streams the bytes from the offset
//! asked for towards the end, a few segments ahead of the caller, so the network keeps
//! going while the caller hashes and writes. A read anywhere else (or a failure) stops that
//! thread and starts another at the new offset.

use super::error::HttpError;
use super::fetch::Fetcher;
use super::headers::Validator;
use super::options::HttpOptions;
use super::readahead::ReadAhead;
use flipslot_format::source::ByteSource;
use std::fmt;
use std::io;

/// A bundle on an HTTP(S) server, read with range requests through a read-ahead thread.
pub struct HttpSource {
    /// Used for the opening probe; each read-ahead thread gets a copy ([`Fetcher::fork`]).
    fetcher: Fetcher,
    /// The running read-ahead, if any.
    ahead: Option<ReadAhead>,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.fetcher.shown())
            .field("total", &self.fetcher.total())
            .field("validator", self.fetcher.validator())
            .field("read_ahead_at", &self.ahead.as_ref().map(ReadAhead::pos))
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// Connects, learns the bundle's size and validator with `Range: bytes=0-0`, and
    /// returns a source positioned nowhere (the first read starts the read-ahead).
    pub fn open(url: &str, opts: &HttpOptions) -> Result<HttpSource, HttpError> {
        Ok(HttpSource {
            fetcher: Fetcher::open(url, opts)?,
            ahead: None,
        })
    }

    /// The validator seen when the source was opened.
    pub fn validator(&self) -> &Validator {
        self.fetcher.validator()
    }
}

impl ByteSource for HttpSource {
    fn size(&self) -> Option<u64> {
        Some(self.fetcher.total())
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.fetcher.total());
        if end.is_none() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf.is_empty() {
            return Ok(());
        }
        let ahead = match self.ahead.take() {
            Some(mut a) if a.can_reach(offset) => {
                a.skip_to(offset)?;
                self.ahead.insert(a)
            }
            // Dropping an old one stops its thread.
            _ => self
                .ahead
                .insert(ReadAhead::start(self.fetcher.fork(), offset)?),
        };
        let read = ahead.read_exact(buf);
        if read.is_err() {
            // A fresh thread (and request) for the next read, after this error.
            self.ahead = None;
        }
        read
    }

    fn describe(&self) -> String {
        self.fetcher.shown().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_before_any_request() {
        let url = "http://127.0.0.1:9/b.fsb";
        let err = |o: HttpOptions| HttpSource::open(url, &o).unwrap_err().to_string();
        let e = err(HttpOptions {
            headers: vec![("X-Token".into(), "a\nb".into())],
            ..Default::default()
        });
        assert!(e.contains("header X-Token") && !e.contains("a\nb"), "{e}");
        let e = err(HttpOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("CA file /nonexistent/ca.pem"), "{e}");
        let e = err(HttpOptions {
            client_cert: Some("/nonexistent/c.pem".into()),
            ..Default::default()
        });
        assert!(e.contains("must be given together"), "{e}");
        let e = HttpSource::open("ftp://host/b.fsb", &HttpOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not http or https"), "{e}");
    }
}
