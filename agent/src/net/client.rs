//! Short requests over the one HTTP client: a channel poll, a report, a health probe.
//! Each gets a client from [`super::options`] with a per-call timeout, so TLS roots, extra
//! headers, redirects and timeouts behave as they do for bundle downloads
//! ([`super::HttpSource`]).
//!
//! Messages carry the URL redacted (no credentials, no query values).

use super::error::chain;
use super::headers::redact;
use super::options::{build_client, HttpOptions};
use anyhow::{anyhow, Context, Result};
use reqwest::blocking::Client;
use reqwest::{StatusCode, Url};
use std::time::Duration;

/// A client for short requests to `url`: `timeout` bounds the connection and each wait
/// for data.
pub fn client_for(url: &str, opts: &HttpOptions, timeout: Duration) -> Result<(Client, Url)> {
    let parsed = Url::parse(url).map_err(|e| anyhow!("invalid URL: {e}"))?;
    let mut o = opts.clone();
    o.connect_timeout = Some(timeout);
    o.stall.window = timeout;
    let client = build_client(&parsed, &o)
        .with_context(|| format!("cannot set up HTTP for {}", redact(&parsed)))?;
    Ok((client, parsed))
}

/// Why a probe got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The URL is not usable or the client could not be set up.
    Setup(String),
    /// No answer: connection refused, TLS failure, timeout… (the URL redacted).
    Unreachable {
        /// The URL as it may be shown.
        url: String,
        /// The cause chain.
        cause: String,
    },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Setup(e) => f.write_str(e),
            ProbeError::Unreachable { url, cause } => write!(f, "{url} is unreachable: {cause}"),
        }
    }
}

/// GETs `url` once and returns the answer's status and the URL as it may be shown; the
/// body is not read.
pub fn probe(
    url: &str,
    opts: &HttpOptions,
    timeout: Duration,
) -> Result<(StatusCode, String), ProbeError> {
    let (client, parsed) =
        client_for(url, opts, timeout).map_err(|e| ProbeError::Setup(format!("{e:#}")))?;
    let shown = redact(&parsed);
    match client.get(parsed).send() {
        Ok(r) => Ok((r.status(), shown)),
        Err(e) => Err(ProbeError::Unreachable {
            url: shown,
            cause: chain(&e.without_url()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn probes_answer_with_the_status_or_why_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for code in ["200 OK", "503 Unavailable"] {
                let (mut c, _) = l.accept().unwrap();
                let mut b = [0u8; 512];
                let _n = c.read(&mut b).unwrap();
                c.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/h");
        let opts = HttpOptions::default();
        let t5 = Duration::from_secs(5);
        assert_eq!(probe(&url, &opts, t5).unwrap().0, StatusCode::OK);
        assert_eq!(
            probe(&url, &opts, t5).unwrap().0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        t.join().unwrap();
        // Nothing listens there any more.
        let e = probe(&url, &opts, t5).unwrap_err();
        assert!(matches!(e, ProbeError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("unreachable"), "{e}");
        let e = probe("not a url", &opts, t5).unwrap_err();
        assert!(matches!(e, ProbeError::Setup(_)), "{e}");
    }
}
