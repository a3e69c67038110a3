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

/// Formats an error and its causes as `a: b: c`, skipping a cause whose text its parent
/// already ends with (errors like `{path}: {source}` that also expose `source`).
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
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

    #[test]
    fn error_chain_skips_repeated_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(flipslot_format::BundleError::io("b.fsb", io)).context("open");
        assert_eq!(error_chain(&e), "open: b.fsb: no such file");
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_chain(&e), "outer: middle: inner");
    }
}
