//! Where provisioning inputs come from: a file or an HTTP(S) URL, read through the same
//! byte sources as bundles ([`FileSource`], [`HttpSource`] with ranges, retries and stall
//! detection). The ESP image sits next to the description: its name in the signed
//! description is resolved against the description's location.

use crate::net::{self, HttpOptions, HttpSource};
use anyhow::{bail, Context, Result};
use flipslot_format::source::{ByteSource, FileSource};
use std::path::PathBuf;

/// A file or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
}

impl Location {
    /// A command-line argument: a URL when it starts with `http://` or `https://`.
    pub fn parse(arg: &str) -> Location {
        if net::is_url(arg) {
            Location::Url(arg.to_string())
        } else {
            Location::File(PathBuf::from(arg))
        }
    }

    /// The file `name` next to this one: the same directory, or the URL with its last
    /// path segment (and any query) replaced. `name` is a plain file name (the description
    /// validates that).
    pub fn sibling(&self, name: &str) -> Location {
        match self {
            Location::File(p) => Location::File(match p.parent() {
                Some(dir) => dir.join(name),
                None => PathBuf::from(name),
            }),
            Location::Url(u) => {
                let base = u.split(['?', '#']).next().unwrap_or(u);
                let dir = match base.rfind('/') {
                    // `http://host` has no path: keep the whole of it.
                    Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..=i],
                    _ => return Location::Url(format!("{base}/{name}")),
                };
                Location::Url(format!("{dir}{name}"))
            }
        }
    }

    /// Opens it as a byte source.
    pub fn open(&self, http: &HttpOptions) -> Result<Box<dyn ByteSource + Send>> {
        Ok(match self {
            Location::File(p) => Box::new(
                FileSource::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ),
            Location::Url(u) => Box::new(HttpSource::open(u, http)?),
        })
    }

    /// How it is shown in messages (URLs without credentials or query values).
    pub fn describe(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Url(u) => match reqwest::Url::parse(u) {
                Ok(parsed) => crate::net::headers::redact(&parsed),
                Err(_) => u.clone(),
            },
        }
    }
}

/// Reads a whole small document, refusing one larger than `max` bytes before reading it.
pub fn read_bounded(loc: &Location, max: u64, http: &HttpOptions) -> Result<Vec<u8>> {
    let mut src = loc.open(http)?;
    let Some(size) = src.size() else {
        bail!("{}: the size is unknown", loc.describe());
    };
    if size > max {
        bail!(
            "{} is {size} bytes, at most {max} are accepted",
            loc.describe()
        );
    }
    let mut buf = vec![0u8; size as usize];
    src.read_exact_at(0, &mut buf)
        .with_context(|| format!("cannot read {}", loc.describe()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings() {
        let u = Location::parse("http://10.0.2.2:8080/pxe/provision.json?x=1");
        assert_eq!(
            u.sibling("esp.img"),
            Location::Url("http://10.0.2.2:8080/pxe/esp.img".into())
        );
        assert_eq!(
            Location::parse("https://h").sibling("esp.img"),
            Location::Url("https://h/esp.img".into())
        );
        assert_eq!(
            Location::parse("/srv/pxe/provision.json").sibling("esp.img"),
            Location::File("/srv/pxe/esp.img".into())
        );
        assert_eq!(
            Location::parse("provision.json").sibling("esp.img"),
            Location::File("esp.img".into())
        );
    }

    #[test]
    fn bounded_reads() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("d.json");
        std::fs::write(&f, b"0123456789").unwrap();
        let loc = Location::File(f);
        assert_eq!(
            read_bounded(&loc, 10, &HttpOptions::default()).unwrap(),
            b"0123456789"
        );
        let e = read_bounded(&loc, 9, &HttpOptions::default()).unwrap_err();
        assert!(e.to_string().contains("at most 9"), "{e}");
    }
}
