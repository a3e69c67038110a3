//! [`Fetcher`]: the requests behind an [`super::http::HttpSource`] for one reader: the
//! opening probe (`Range: bytes=0-0`: size and validator), then streaming ranges with
//! `If-Range`, resume from the exact offset still needed, stall detection and backoff
//! (the rules are in the module doc of [`super::http`]). The read-ahead thread
//! ([`super::readahead`]) runs one.

use super::backoff::{self, Jitter};
use super::error::{chain, find_source, is_timeout, HttpError};
use super::headers::{self, ContentRange, Validator};
use super::options::{build_client, HttpOptions, RetryPolicy, StallPolicy};
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    HeaderMap, HeaderValue, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
    RETRY_AFTER,
};
use reqwest::{StatusCode, Url};
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// Bytes of an error response's body read to explain it.
const ERROR_BODY_LIMIT: u64 = 1024;

/// The outcome of one failed attempt.
#[derive(Debug)]
enum Failure {
    /// Worth another attempt after a delay.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Final.
    Fatal(HttpError),
}

impl Failure {
    fn retry(reason: impl Into<String>) -> Failure {
        Failure::Retry {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// The open streaming response.
#[derive(Debug)]
struct Stream {
    resp: Response,
    /// Offset of the next byte the body delivers.
    pos: u64,
    /// One past the last byte this response covers.
    end: u64,
    /// Bytes delivered since it opened.
    delivered: u64,
    /// Time spent inside reads in the current stall window, and bytes received in it.
    waited: Duration,
    window_bytes: u64,
    /// Set when too few bytes arrived in a window: the next step drops the stream.
    stalled: Option<String>,
}

/// Makes the requests for one reader: the opening probe, then streaming ranges with
/// resume, validators, stall detection and backoff.
pub(crate) struct Fetcher {
    client: Client,
    url: Url,
    shown: String,
    total: u64,
    validator: Validator,
    stall: StallPolicy,
    retry: RetryPolicy,
    stream: Option<Stream>,
    failures: u32,
    jitter: Jitter,
    /// When set, a closed (or signalled) channel cancels the fetcher: waits for a retry
    /// end early and no new request is made.
    cancel: Option<Receiver<()>>,
}

impl Fetcher {
    /// Connects, learns the bundle's size and validator with `Range: bytes=0-0`.
    pub(crate) fn open(url: &str, opts: &HttpOptions) -> Result<Fetcher, HttpError> {
        let url = Url::parse(url).map_err(|e| HttpError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidUrl(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        let shown = headers::redact(&url);
        let client = build_client(&url, opts)?;
        let mut src = Fetcher {
            client,
            url,
            shown,
            total: 0,
            validator: Validator::default(),
            stall: opts.stall,
            retry: opts.retry,
            stream: None,
            failures: 0,
            jitter: Jitter::new(),
            cancel: None,
        };
        loop {
            match src.probe() {
                Ok(()) => break,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => src.back_off(0, reason, retry_after)?,
            }
        }
        src.failures = 0;
        if src.validator.if_range().is_none() {
            log::warn!(
                "{}: the server sends neither ETag nor Last-Modified; a bundle replaced during \
                 the download is only caught by the hash checks",
                src.shown
            );
        }
        log::debug!(
            "{}: {} bytes, validator {:?}",
            src.shown,
            src.total,
            src.validator
        );
        Ok(src)
    }

    /// A fetcher for the same bundle (size and validator as this one learnt them) with no
    /// open stream, sharing the client (and its connection pool).
    pub(crate) fn fork(&self) -> Fetcher {
        Fetcher {
            client: self.client.clone(),
            url: self.url.clone(),
            shown: self.shown.clone(),
            total: self.total,
            validator: self.validator.clone(),
            stall: self.stall,
            retry: self.retry,
            stream: None,
            failures: 0,
            jitter: Jitter::new(),
            cancel: None,
        }
    }

    /// Cancels this fetcher when `rx`'s sender is dropped (or sends).
    pub(crate) fn cancel_on(&mut self, rx: Receiver<()>) {
        self.cancel = Some(rx);
    }

    /// The bundle's size.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The URL as it may be shown.
    /// The validator seen by the opening probe.
    pub(crate) fn validator(&self) -> &Validator {
        &self.validator
    }

    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|rx| !matches!(rx.try_recv(), Err(TryRecvError::Empty)))
    }

    /// Reads at least one byte at `pos` (below the bundle's size) into `buf` (not empty),
    /// retrying from `pos` as the policies say. A cancelled fetcher answers `Interrupted`.
    pub(crate) fn read_some(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.cancelled() {
                self.stream = None;
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "read-ahead stopped",
                ));
            }
            match self.step(pos, buf) {
                Ok(n) => return Ok(n),
                Err(Failure::Fatal(e)) => {
                    self.stream = None;
                    return Err(io::Error::other(e));
                }
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => self
                    .back_off(pos, reason, retry_after)
                    .map_err(io::Error::other)?,
            }
        }
    }

    /// `GET Range: bytes=0-0`: size and validator.
    fn probe(&mut self) -> Result<(), Failure> {
        let resp = self.send(0, 0, false)?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = self.content_range(&resp)?;
                match cr {
                    ContentRange::Bytes {
                        first: 0,
                        last: 0,
                        total: Some(total),
                    } => self.total = total,
                    ContentRange::Bytes { total: None, .. } => {
                        return Err(Failure::Fatal(self.protocol(
                            "the server does not say the bundle's size in Content-Range",
                        )))
                    }
                    other => {
                        return Err(Failure::Fatal(self.protocol(format!(
                            "asked for bytes 0-0, got Content-Range {other:?}"
                        ))))
                    }
                }
            }
            StatusCode::OK => {
                return Err(Failure::Fatal(HttpError::NoRangeSupport {
                    url: self.shown.clone(),
                    status: 200,
                }))
            }
            // An empty file cannot satisfy any range.
            StatusCode::RANGE_NOT_SATISFIABLE
                if matches!(
                    self.content_range(&resp),
                    Ok(ContentRange::Unsatisfied { total: 0 })
                ) =>
            {
                self.total = 0
            }
            _ => return Err(self.status_failure(resp)),
        }
        self.validator = validator_of(resp.headers());
        Ok(())
    }

    /// Sends `GET` for bytes `first..=last`, with `If-Range` when `resume`.
    fn send(&self, first: u64, last: u64, resume: bool) -> Result<Response, Failure> {
        let mut rq = self
            .client
            .get(self.url.clone())
            .header(RANGE, format!("bytes={first}-{last}"));
        if let Some(v) = self.validator.if_range().filter(|_| resume) {
            rq = rq.header(IF_RANGE, v);
        }
        rq.send().map_err(|e| self.send_failure(e))
    }

    fn send_failure(&self, e: reqwest::Error) -> Failure {
        let e = e.without_url();
        if let Some(tls) = find_source::<rustls::Error>(&e) {
            return Failure::Fatal(HttpError::Tls {
                url: self.shown.clone(),
                detail: tls.to_string(),
            });
        }
        if e.is_redirect() || e.is_builder() {
            return Failure::Fatal(HttpError::Request {
                url: self.shown.clone(),
                detail: chain(&e),
            });
        }
        if e.is_timeout() {
            return Failure::retry(format!(
                "no response within {:?} (stalled)",
                self.stall.window
            ));
        }
        Failure::retry(chain(&e))
    }

    /// Opens the streaming response for `pos..total`.
    fn open_stream(&mut self, pos: u64) -> Result<Stream, Failure> {
        let resume = self.validator.if_range().is_some();
        let resp = self.send(pos, self.total - 1, true)?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK if resume => {
                return Err(Failure::Fatal(self.changed(
                    "the server answered a resumed range request with the whole file (200)",
                )))
            }
            StatusCode::OK => {
                return Err(Failure::Fatal(HttpError::NoRangeSupport {
                    url: self.shown.clone(),
                    status: 200,
                }))
            }
            StatusCode::PRECONDITION_FAILED => {
                return Err(Failure::Fatal(
                    self.changed("the server answered 412 Precondition Failed"),
                ))
            }
            _ => return Err(self.status_failure(resp)),
        }
        if let Some(why) = self.validator.changed(&validator_of(resp.headers())) {
            return Err(Failure::Fatal(self.changed(why)));
        }
        let (first, last) = match self.content_range(&resp)? {
            ContentRange::Bytes { total: Some(t), .. } if t != self.total => {
                return Err(Failure::Fatal(
                    self.changed(format!("its size was {} bytes, now {t}", self.total)),
                ))
            }
            ContentRange::Bytes { first, last, .. } if first == pos && last < self.total => {
                (first, last)
            }
            other => {
                return Err(Failure::Fatal(self.protocol(format!(
                    "asked for bytes {pos}-{}, got Content-Range {other:?}",
                    self.total - 1
                ))))
            }
        };
        Ok(Stream {
            resp,
            pos: first,
            end: last + 1,
            delivered: 0,
            waited: Duration::ZERO,
            window_bytes: 0,
            stalled: None,
        })
    }

    /// Reads the next bytes at `pos` into `buf` (not empty), opening a stream if needed.
    fn step(&mut self, pos: u64, buf: &mut [u8]) -> Result<usize, Failure> {
        let reusable = self
            .stream
            .as_ref()
            .is_some_and(|s| s.pos == pos && s.pos < s.end);
        if !reusable {
            self.stream = None;
            self.stream = Some(self.open_stream(pos)?);
        }
        let Some(s) = self.stream.as_mut() else {
            return Err(Failure::retry("no open response"));
        };
        if let Some(reason) = s.stalled.take() {
            self.stream = None;
            return Err(Failure::retry(reason));
        }
        // Never read past the end of what this response covers (and so of the bundle).
        let want = usize::try_from(s.end - s.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let started = Instant::now();
        let n = match s.resp.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Failure::retry(format!(
                    "the response ended at offset {}, before offset {}",
                    s.pos, s.end
                )))
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                return Err(Failure::retry(format!(
                    "stalled: no data for {:?}",
                    self.stall.window
                )))
            }
            Err(e) => return Err(Failure::retry(format!("read error: {}", chain(&e)))),
        };
        s.pos += n as u64;
        s.delivered += n as u64;
        s.window_bytes += n as u64;
        s.waited += started.elapsed();
        if s.delivered >= self.stall.min_bytes || s.pos == s.end {
            self.failures = 0;
        }
        if s.waited >= self.stall.window {
            if s.window_bytes < self.stall.min_bytes {
                // The bytes are good; the next step retries from after them.
                s.stalled = Some(format!(
                    "stalled: {} bytes in {:?}",
                    s.window_bytes, self.stall.window
                ));
            } else {
                s.waited = Duration::ZERO;
                s.window_bytes = 0;
            }
        }
        Ok(n)
    }

    /// Records a failed attempt at `offset` and sleeps before the next, or gives up.
    fn back_off(
        &mut self,
        offset: u64,
        reason: String,
        retry_after: Option<Duration>,
    ) -> Result<(), HttpError> {
        self.stream = None;
        self.failures += 1;
        if self.failures > self.retry.max_retries {
            return Err(HttpError::GaveUp {
                url: self.shown.clone(),
                offset,
                attempts: self.failures,
                last: reason,
            });
        }
        let delay = backoff::delay(
            self.retry.base,
            self.retry.cap,
            self.failures,
            self.jitter.unit(),
            retry_after,
        );
        log::info!(
            "{}: retry {}/{} at offset {offset} in {:.1}s: {reason}",
            self.shown,
            self.failures,
            self.retry.max_retries,
            delay.as_secs_f64()
        );
        match &self.cancel {
            None => std::thread::sleep(delay),
            // Returns early when cancelled; the next read_some notices.
            Some(rx) => match rx.recv_timeout(delay) {
                Ok(()) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            },
        }
        Ok(())
    }

    fn content_range(&self, resp: &Response) -> Result<ContentRange, Failure> {
        let raw = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        raw.and_then(headers::parse_content_range).ok_or_else(|| {
            Failure::Fatal(self.protocol(format!(
                "{} with a missing or malformed Content-Range {raw:?}",
                resp.status()
            )))
        })
    }

    /// The failure for a status other than 200/206: 408, 429 and 5xx gateway/server
    /// errors are retried, everything else is final.
    fn status_failure(&self, resp: Response) -> Failure {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(headers::parse_retry_after);
        if matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504) {
            return Failure::Retry {
                reason: format!("HTTP {status}"),
                retry_after,
            };
        }
        let mut detail = error_body(resp)
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            detail.push_str(" (the bundle on the server may be shorter than it was)");
        }
        Failure::Fatal(HttpError::Status {
            url: self.shown.clone(),
            status: status.to_string(),
            detail,
        })
    }

    fn changed(&self, detail: impl Into<String>) -> HttpError {
        HttpError::Changed {
            url: self.shown.clone(),
            detail: detail.into(),
        }
    }

    fn protocol(&self, detail: impl Into<String>) -> HttpError {
        HttpError::Protocol {
            url: self.shown.clone(),
            detail: detail.into(),
        }
    }
}

fn validator_of(h: &HeaderMap) -> Validator {
    let get = |n| {
        h.get(n)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    Validator {
        etag: get(ETAG),
        last_modified: get(LAST_MODIFIED),
    }
}

/// A short, printable explanation from an error response's body: the HTML `<title>` or
/// the first line of text, from at most [`ERROR_BODY_LIMIT`] bytes.
fn error_body(resp: Response) -> Option<String> {
    let html = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("html"));
    let mut body = Vec::new();
    resp.take(ERROR_BODY_LIMIT).read_to_end(&mut body).ok()?;
    let text = String::from_utf8_lossy(&body);
    let line = if html {
        let start = text.find("<title>")? + "<title>".len();
        let end = text[start..].find("</title>")? + start;
        text[start..end].to_string()
    } else {
        text.lines().find(|l| !l.trim().is_empty())?.to_string()
    };
    let clean: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_string())
}
