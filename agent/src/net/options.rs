//! How the HTTP source reaches the server: TLS roots and client identity, extra headers,
//! timeouts, stall and retry policies, and the client built from them.

use super::error::{chain, HttpError};
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::Url;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// When a download counts as stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallPolicy {
    /// Time spent waiting for data over which at least `min_bytes` must arrive; also the
    /// longest wait for response headers or for any one read.
    pub window: Duration,
    /// Bytes that must arrive within `window`.
    pub min_bytes: u64,
}

impl Default for StallPolicy {
    fn default() -> Self {
        StallPolicy {
            window: Duration::from_secs(30),
            min_bytes: 1024,
        }
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest delay (also caps `Retry-After`).
    pub cap: Duration,
    /// Consecutive failed attempts without progress before giving up.
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retries: 8,
        }
    }
}

/// How to reach the server.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// PEM file of CA certificates trusted in addition to the system store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Extra request headers (e.g. a device token). Their values are sensitive: never
    /// logged or shown, and not sent along a redirect to another origin.
    pub headers: Vec<(String, String)>,
    /// Longest TCP (and proxy) connect; `None` waits as long as the system does.
    pub connect_timeout: Option<Duration>,
    /// Stall detection.
    pub stall: StallPolicy,
    /// Retries.
    pub retry: RetryPolicy,
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpOptions")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("headers (values hidden)", &names)
            .field("connect_timeout", &self.connect_timeout)
            .field("stall", &self.stall)
            .field("retry", &self.retry)
            .finish()
    }
}

/// The blocking client for `url` with `opts` (no request is made).
pub(crate) fn build_client(url: &Url, opts: &HttpOptions) -> Result<Client, HttpError> {
    let mut default_headers = HeaderMap::new();
    for (name, value) in &opts.headers {
        let bad = |reason: String| HttpError::Options {
            what: format!("header {name}"),
            reason,
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        // The value is not echoed: it may be a secret.
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| bad("the value has characters not allowed in a header".into()))?;
        v.set_sensitive(true);
        default_headers.append(n, v);
    }
    let origin = url.origin();
    let strict = !opts.headers.is_empty();
    let redirects = Policy::custom(move |attempt| {
        let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if from_https && attempt.url().scheme() != "https" {
            attempt.error("refusing a redirect from https to plain http")
        } else if strict && attempt.url().origin() != origin {
            attempt.error("refusing a redirect to another origin: extra headers are set")
        } else {
            attempt.follow()
        }
    });
    let mut b = Client::builder()
        // A per-wait limit in the blocking client: response headers and each read.
        .timeout(opts.stall.window)
        .redirect(redirects)
        .default_headers(default_headers)
        .tls_built_in_root_certs(true)
        .https_only(url.scheme() == "https");
    if let Some(t) = opts.connect_timeout {
        b = b.connect_timeout(t);
    }
    if let Some(path) = &opts.ca_file {
        let pem = read_option_file("CA file", path)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpError::Options {
                what: format!("CA file {}", path.display()),
                reason: chain(&e),
            })?;
        if certs.is_empty() {
            return Err(HttpError::Options {
                what: format!("CA file {}", path.display()),
                reason: "no PEM certificate in it".into(),
            });
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read_option_file("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read_option_file("client key", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| HttpError::Options {
                what: format!(
                    "client certificate {} with key {}",
                    cert.display(),
                    key.display()
                ),
                reason: chain(&e),
            })?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(HttpError::Options {
                what: "client certificate".into(),
                reason: "a client certificate and its key must be given together".into(),
            })
        }
    }
    b.build().map_err(|e| HttpError::Options {
        what: "HTTP client".into(),
        reason: chain(&e),
    })
}

fn read_option_file(what: &str, path: &Path) -> Result<Vec<u8>, HttpError> {
    std::fs::read(path).map_err(|e| HttpError::Options {
        what: format!("{what} {}", path.display()),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_hides_header_values() {
        let opts = HttpOptions {
            headers: vec![("X-Device-Token".into(), "s3cr3t".into())],
            ..Default::default()
        };
        let d = format!("{opts:?}");
        assert!(d.contains("X-Device-Token") && !d.contains("s3cr3t"), "{d}");
    }
}
