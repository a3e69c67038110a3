//! A reader between a tar stream and the `tar` crate: it bounds what the crate reads on its
//! own between two members (headers, PAX records, GNU long names and sparse maps, which the
//! crate keeps in memory whole), and hashes every byte that passes (a layer's diff ID).
//!
//! The caller reads each member's data itself, with no allowance; before asking the crate
//! for the next member it grants [`MAX_MEMBER_HEADERS`] bytes. A member whose headers need
//! more fails with an I/O error, and [`Meter::exceeded`] tells the caller why.

use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

/// What the tar reader may read on its own for one member: its headers, PAX records and GNU
/// long names. Extended attribute values (at most 64 KiB each) are the largest legitimate
/// part.
pub(super) const MAX_MEMBER_HEADERS: u64 = 1 << 20;

#[derive(Debug, Default)]
struct State {
    /// Bytes that may still be read; `None`: no limit.
    allowance: Option<u64>,
    /// Whether a read was refused for want of allowance.
    exceeded: bool,
    /// Hash of everything read so far, when hashing.
    hasher: Option<Sha256>,
}

/// The shared handle through which the caller sets allowances and reads the hash.
#[derive(Debug, Clone, Default)]
pub(super) struct Meter(Rc<RefCell<State>>);

impl Meter {
    /// A meter that hashes what passes.
    pub(super) fn hashing() -> Self {
        let m = Self::default();
        m.0.borrow_mut().hasher = Some(Sha256::new());
        m
    }

    /// From now on at most `bytes` more may be read.
    pub(super) fn limit(&self, bytes: u64) {
        self.0.borrow_mut().allowance = Some(bytes);
    }

    /// From now on reads are not limited.
    pub(super) fn unlimit(&self) {
        self.0.borrow_mut().allowance = None;
    }

    /// Whether a read was refused because the allowance ran out.
    pub(super) fn exceeded(&self) -> bool {
        self.0.borrow().exceeded
    }

    /// The SHA-256 of everything read (all zeros when not hashing).
    pub(super) fn digest(&self) -> [u8; 32] {
        self.0
            .borrow()
            .hasher
            .clone()
            .map(|h| h.finalize().into())
            .unwrap_or_default()
    }

    /// Wraps `inner`.
    pub(super) fn wrap<R>(&self, inner: R) -> Metered<R> {
        Metered {
            inner,
            meter: self.clone(),
        }
    }
}

/// `inner`, read under a [`Meter`].
#[derive(Debug)]
pub(super) struct Metered<R> {
    inner: R,
    meter: Meter,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.meter.0.borrow_mut();
        let want = match state.allowance {
            Some(0) if !buf.is_empty() => {
                state.exceeded = true;
                return Err(io::Error::other(format!(
                    "the headers of one tar member exceed {} bytes",
                    MAX_MEMBER_HEADERS
                )));
            }
            Some(a) => buf.len().min(usize::try_from(a).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        if let Some(a) = state.allowance.as_mut() {
            *a -= n as u64;
        }
        if let Some(h) = state.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Metered<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn allowance_bounds_reads_and_hash_covers_everything() {
        let meter = Meter::hashing();
        let mut r = meter.wrap(&b"abcdefgh"[..]);
        let mut buf = [0u8; 8];
        meter.limit(3);
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        let err = r.read(&mut buf).unwrap_err();
        assert!(err.to_string().contains("exceed"), "{err}");
        assert!(meter.exceeded());
        meter.unlimit();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"defgh");
        assert_eq!(
            meter.digest(),
            <[u8; 32]>::from(Sha256::digest(b"abcdefgh"))
        );
    }
}
