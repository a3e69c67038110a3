//! Output helpers shared by the `flipslot` and `flipslot-image` binaries: JSON-lines
//! progress and the terminal progress bar ([`progress`]), the stderr logger ([`logger`])
//! and the error-chain line a binary prints when a command fails ([`error_chain`]).
//!
//! This crate only formats and writes to the standard streams. It knows nothing about
//! bundles, slots or devices and never reads or writes a file.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod logger;
pub mod progress;

/// Formats an error and its causes as `a: b: c`.
///
/// Our own error types never repeat their cause in their message (the cause is the next
/// link of the chain), but some foreign ones do (`{path}: {source}` that also expose
/// `source`), so a cause whose text its parent already ends with is skipped.
pub fn error_chain(err: &anyhow::Error) -> String {
    let err: &(dyn std::error::Error + 'static) = err.as_ref();
    source_chain(err)
}

/// [`error_chain`] for an error that is not (yet) an [`anyhow::Error`], e.g. one that is
/// logged and dropped.
pub fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for cause in std::iter::successors(Some(err), |e| e.source()) {
        let text = cause.to_string();
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    /// A foreign error that embeds its cause in its message and also returns it as source.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "b.fsb: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_skips_repeated_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Repeats(io)).context("open");
        assert_eq!(error_chain(&e), "open: b.fsb: no such file");
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_chain(&e), "outer: middle: inner");
    }

    #[test]
    fn error_chain_shows_a_bundle_io_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let bundle = flipslot_format::BundleError::io("b.fsb", io);
        assert_eq!(source_chain(&bundle), "b.fsb: no such file");
        let e = anyhow::Error::new(bundle).context("open");
        assert_eq!(error_chain(&e), "open: b.fsb: no such file");
        assert_eq!(format!("{e:#}"), "open: b.fsb: no such file");
    }
}
