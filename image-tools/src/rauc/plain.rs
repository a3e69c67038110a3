//! The payload of a `plain` bundle, held to the bytes its signature covered.
//!
//! A plain bundle's detached CMS signature covers the whole squashfs, which must be hashed
//! before anything in it is read. [`hash_payload`] does that in one pass and, on a second
//! core, also hashes every [`BLOCK`]-sized block. [`PlainPayload`] then checks every later
//! read against those block hashes, so the squashfs reader only ever sees bytes the
//! signature covered, even if the file or the server changes between the two passes.
//! Memory: 32 bytes per 4 MiB of payload, plus one cached block.

use std::io;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::cms::DigestAlg;
use crate::source::ByteSource;

/// Size of the blocks whose hashes are kept.
pub const BLOCK: u64 = 4 << 20;
/// Read size of the hashing pass (divides [`BLOCK`]).
const STEP: u64 = 1 << 20;

/// Hashes `[0, size)` of `source` with `alg` (the signature's digest) and, alongside,
/// each [`BLOCK`] with SHA-256. `progress(done, size)` follows the pass.
pub fn hash_payload<S: ByteSource>(
    source: &mut S,
    size: u64,
    alg: DigestAlg,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<(Vec<u8>, Vec<[u8; 32]>)> {
    let (sig_tx, sig_rx) = sync_channel::<Arc<Vec<u8>>>(4);
    let (blk_tx, blk_rx) = sync_channel::<Arc<Vec<u8>>>(4);
    std::thread::scope(|s| {
        let sig = s.spawn(move || {
            let mut h = alg.hasher();
            for chunk in sig_rx {
                h.update(&chunk);
            }
            h.finalize()
        });
        let blocks = s.spawn(move || {
            let mut out = Vec::new();
            let mut h = Sha256::new();
            let mut in_block = 0u64;
            for chunk in blk_rx {
                h.update(chunk.as_slice());
                in_block += chunk.len() as u64;
                if in_block == BLOCK {
                    out.push(h.finalize_reset().into());
                    in_block = 0;
                }
            }
            if in_block > 0 {
                out.push(h.finalize().into());
            }
            out
        });
        let mut off = 0u64;
        let mut result = Ok(());
        while off < size {
            let n = (size - off).min(STEP) as usize;
            let mut buf = vec![0u8; n];
            if let Err(e) = source.read_exact_at(off, &mut buf) {
                result = Err(e);
                break;
            }
            let buf = Arc::new(buf);
            if sig_tx.send(Arc::clone(&buf)).is_err() || blk_tx.send(buf).is_err() {
                result = Err(io::Error::other("a hashing thread stopped"));
                break;
            }
            off += n as u64;
            progress(off, size);
        }
        drop(sig_tx);
        drop(blk_tx);
        let digest = sig
            .join()
            .map_err(|_| io::Error::other("the signature hashing thread panicked"))?;
        let blocks = blocks
            .join()
            .map_err(|_| io::Error::other("the block hashing thread panicked"))?;
        result.map(|()| (digest, blocks))
    })
}

/// The payload, every read checked against the block hashes of [`hash_payload`].
pub struct PlainPayload<S: ByteSource> {
    source: S,
    size: u64,
    blocks: Vec<[u8; 32]>,
    cached: Option<u64>,
    cache: Vec<u8>,
}

impl<S: ByteSource> std::fmt::Debug for PlainPayload<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainPayload")
            .field("size", &self.size)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl<S: ByteSource> PlainPayload<S> {
    /// Wraps `source`, whose first `size` bytes hashed to `blocks`.
    pub fn new(source: S, size: u64, blocks: Vec<[u8; 32]>) -> Self {
        PlainPayload {
            source,
            size,
            blocks,
            cached: None,
            cache: Vec::new(),
        }
    }

    fn load(&mut self, index: u64) -> io::Result<()> {
        if self.cached == Some(index) {
            return Ok(());
        }
        let start = index * BLOCK;
        let len = (self.size - start).min(BLOCK) as usize;
        self.cached = None;
        self.cache.resize(len, 0);
        self.source.read_exact_at(start, &mut self.cache)?;
        let got: [u8; 32] = Sha256::digest(&self.cache).into();
        let want = usize::try_from(index)
            .ok()
            .and_then(|i| self.blocks.get(i))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no hash for the block"))?;
        if &got != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "payload block {index} (bundle offset {start}) changed after the signature \
                     was checked: the bundle was modified while it was read"
                ),
            ));
        }
        self.cached = Some(index);
        Ok(())
    }
}

impl<S: ByteSource> ByteSource for PlainPayload<S> {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if !end.is_some_and(|e| e <= self.size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read at {offset} past the end of the {}-byte payload",
                    self.size
                ),
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = pos / BLOCK;
            self.load(index)?;
            let within = (pos - index * BLOCK) as usize;
            let n = (self.cache.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.cache[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.source.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose bytes can be changed after the hashing pass.
    struct Mem(Vec<u8>);

    impl ByteSource for Mem {
        fn size(&self) -> Option<u64> {
            Some(self.0.len() as u64)
        }
        fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
        fn describe(&self) -> String {
            "mem".into()
        }
    }

    #[test]
    fn hashes_match_and_changes_are_caught() {
        let len = 2 * BLOCK as usize + 12345;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut src = Mem(data.clone());
        let mut seen = 0;
        let (digest, blocks) =
            hash_payload(&mut src, len as u64, DigestAlg::Sha256, &mut |d, _| {
                seen = d
            })
            .unwrap();
        assert_eq!(seen, len as u64);
        assert_eq!(digest, Sha256::digest(&data).to_vec());
        assert_eq!(blocks.len(), 3);
        let mut p = PlainPayload::new(src, len as u64, blocks);
        let mut buf = vec![0u8; 5000];
        let off = BLOCK - 100;
        p.read_exact_at(off, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[off as usize..off as usize + 5000]);
        let mut tail = vec![0u8; 10];
        p.read_exact_at(len as u64 - 10, &mut tail).unwrap();
        assert!(p.read_exact_at(len as u64 - 5, &mut tail).is_err());
        // The file changes after the signature pass: the next read of that block fails.
        p.source.0[10] ^= 1;
        p.cached = None;
        let e = p.read_exact_at(0, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("block 0"), "{e}");
    }
}
