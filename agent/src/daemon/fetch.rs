//! Fetching the channel document: one conditional GET (`If-None-Match` /
//! `If-Modified-Since` from the last handled response), the body bounded to
//! [`MAX_CHANNEL_SIZE`]. Also builds the HTTP options of `[update]` (TLS, headers).
//!
//! Messages carry the URL redacted (no credentials, no query values) and never a header
//! value.

use crate::config::update::UpdateConfig;
use crate::host::paths::Root;
use crate::net::headers::{parse_header_line, redact};
use crate::net::{HttpOptions, StallPolicy};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::Client;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};
use std::io::Read;
use std::time::Duration;

/// The largest channel document accepted.
pub const MAX_CHANNEL_SIZE: u64 = flipslot_format::channel::MAX_CHANNEL_LEN as u64;

/// The answer to a channel poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the document is the one handled last time.
    NotModified,
    /// A (possibly new) document and its validators.
    Document {
        /// The body, at most [`MAX_CHANNEL_SIZE`] bytes.
        body: Vec<u8>,
        /// Its `ETag`.
        etag: Option<String>,
        /// Its `Last-Modified`.
        last_modified: Option<String>,
    },
}

/// The HTTP options of `[update]`, paths resolved under `root` and the header file read.
pub fn http_options(u: &UpdateConfig, root: &Root) -> Result<HttpOptions> {
    let mut headers = Vec::new();
    if let Some(p) = &u.header_file {
        let path = root.resolve(p);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read header file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line is not echoed: it may hold a secret.
            let h = parse_header_line(line)
                .map_err(|e| anyhow!("header file {} line {}: {e}", path.display(), i + 1))?;
            headers.push(h);
        }
    }
    Ok(HttpOptions {
        ca_file: u.ca_file.as_deref().map(|p| root.resolve(p)),
        client_cert: u.client_cert.as_deref().map(|p| root.resolve(p)),
        client_key: u.client_key.as_deref().map(|p| root.resolve(p)),
        headers,
        connect_timeout: Some(Duration::from_secs(30)),
        stall: StallPolicy::default(),
        retry: Default::default(),
    })
}

pub use crate::net::client::client_for;

/// GETs the channel with the validators of the last handled response.
pub fn fetch_channel(
    client: &Client,
    url: &Url,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Result<Fetched> {
    let shown = redact(url);
    let mut req = client.get(url.clone());
    if let Some(e) = etag {
        req = req.header(IF_NONE_MATCH, e);
    }
    if let Some(lm) = last_modified {
        req = req.header(IF_MODIFIED_SINCE, lm);
    }
    let resp = req
        .send()
        .map_err(|e| anyhow!("{shown}: {}", crate::net::error::chain(&e.without_url())))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        bail!("{shown}: HTTP {status}");
    }
    if resp.content_length().is_some_and(|n| n > MAX_CHANNEL_SIZE) {
        bail!("{shown}: the channel document is larger than {MAX_CHANNEL_SIZE} bytes");
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(ETAG);
    let last_modified = header(LAST_MODIFIED);
    let mut body = Vec::new();
    resp.take(MAX_CHANNEL_SIZE + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("{shown}: cannot read the channel document"))?;
    if body.len() as u64 > MAX_CHANNEL_SIZE {
        bail!("{shown}: the channel document is larger than {MAX_CHANNEL_SIZE} bytes");
    }
    Ok(Fetched::Document {
        body,
        etag,
        last_modified,
    })
}
