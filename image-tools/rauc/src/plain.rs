//! The payload of a `plain` bundle, held to the bytes its signature covered.
//!
//! A plain bundle's detached CMS signature covers the whole squashfs, which must be hashed
//! before anything in it is read. [`hash_payload`] does that in one pass and, on a second
//! core, also hashes every [`BLOCK`]-sized block with BLAKE3 (several times faster than
//! SHA-256, and as collision resistant for this purpose). [`PlainPayload`] then checks every later
//! read against those block hashes, so the squashfs reader only ever sees bytes the
//! signature covered, even if the file or the server changes between the two passes.
//! Memory: 32 bytes per 4 MiB of payload, plus one cached block.

use std::io;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use crate::digest::DigestAlg;
use flipslot_format::source::ByteSource;

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
            let mut h = blake3::Hasher::new();
            let mut in_block = 0u64;
            for chunk in blk_rx {
                h.update(chunk.as_slice());
                in_block += chunk.len() as u64;
                if in_block == BLOCK {
                    out.push(*h.finalize().as_bytes());
                    h.reset();
                    in_block = 0;
                }
            }
            if in_block > 0 {
                out.push(*h.finalize().as_bytes());
            }
            out
        });
        let mut off = 0u64;
        let mut result = Ok(());
        // Buffers are reused once both hashing threads have dropped them: with 4 queued
        // and 1 in work per thread, a chunk sent RING chunks ago is free, so taking it
        // back succeeds (a fresh buffer is the fallback, never a wait).
        const RING: usize = 8;
        let mut ring: std::collections::VecDeque<Arc<Vec<u8>>> = Default::default();
        while off < size {
            let n = (size - off).min(STEP) as usize;
            let reused = if ring.len() >= RING {
                ring.pop_front().and_then(|a| Arc::try_unwrap(a).ok())
            } else {
                None
            };
            let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(STEP as usize));
            buf.resize(n, 0);
            if let Err(e) = source.read_exact_at(off, &mut buf) {
                result = Err(e);
                break;
            }
            let buf = Arc::new(buf);
            ring.push_back(Arc::clone(&buf));
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
///
/// A worker thread hashes blocks. When block `i` is loaded, block `i + 1` is read and
/// handed to the worker right away, so hashing the next block overlaps with the caller
/// using this one (sequential image reads run at hashing speed on a second core).
pub struct PlainPayload<S: ByteSource> {
    source: S,
    size: u64,
    blocks: Vec<[u8; 32]>,
    cached: Option<u64>,
    cache: Vec<u8>,
    /// A block read ahead and being hashed by the worker.
    pending: Option<u64>,
    /// Spare buffers.
    spare: Vec<Vec<u8>>,
    to_worker: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    from_worker: std::sync::mpsc::Receiver<(Vec<u8>, [u8; 32])>,
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
        let (to_worker, jobs) = std::sync::mpsc::channel::<Vec<u8>>();
        let (done, from_worker) = std::sync::mpsc::channel();
        // Ends when `to_worker` is dropped (with the payload).
        std::thread::spawn(move || {
            for buf in jobs {
                let hash: [u8; 32] = *blake3::hash(&buf).as_bytes();
                if done.send((buf, hash)).is_err() {
                    break;
                }
            }
        });
        PlainPayload {
            source,
            size,
            blocks,
            cached: None,
            cache: Vec::new(),
            pending: None,
            spare: Vec::new(),
            to_worker: Some(to_worker),
            from_worker,
        }
    }

    fn block_len(&self, index: u64) -> usize {
        let start = index * BLOCK;
        (self.size.saturating_sub(start)).min(BLOCK) as usize
    }

    /// Reads block `index` into a buffer and hands it to the worker.
    fn start(&mut self, index: u64) -> io::Result<()> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize(self.block_len(index), 0);
        self.source.read_exact_at(index * BLOCK, &mut buf)?;
        self.to_worker
            .as_ref()
            .ok_or_else(|| io::Error::other("the block hashing thread is gone"))?
            .send(buf)
            .map_err(|_| io::Error::other("the block hashing thread stopped"))?;
        self.pending = Some(index);
        Ok(())
    }

    /// The worker's result for the pending block.
    fn finish(&mut self) -> io::Result<(Vec<u8>, [u8; 32])> {
        self.pending = None;
        self.from_worker
            .recv()
            .map_err(|_| io::Error::other("the block hashing thread stopped"))
    }

    fn load(&mut self, index: u64) -> io::Result<()> {
        if self.cached == Some(index) {
            return Ok(());
        }
        self.cached = None;
        match self.pending {
            Some(p) if p == index => {}
            Some(_) => {
                let (buf, _) = self.finish()?;
                self.spare.push(buf);
                self.start(index)?;
            }
            None => self.start(index)?,
        }
        let (buf, got) = self.finish()?;
        let want = usize::try_from(index)
            .ok()
            .and_then(|i| self.blocks.get(i))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no hash for the block"))?;
        if &got != want {
            self.spare.push(buf);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "payload block {index} (bundle offset {}) changed after the signature \
                     was checked: the bundle was modified while it was read",
                    index * BLOCK
                ),
            ));
        }
        let old = std::mem::replace(&mut self.cache, buf);
        if old.capacity() > 0 {
            self.spare.push(old);
        }
        self.cached = Some(index);
        // Read ahead: the next block is hashed while this one is used.
        if (index + 1) * BLOCK < self.size {
            self.start(index + 1)?;
        }
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
    use sha2::{Digest, Sha256};

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
        assert!(e.to_string().contains("block 0 (bundle offset 0)"), "{e}");
        // Sequential reads across every block (read-ahead in use), after a fresh start.
        p.source.0[10] ^= 1;
        let mut all = vec![0u8; len];
        for (i, chunk) in all.chunks_mut(100_000).enumerate() {
            p.read_exact_at((i * 100_000) as u64, chunk).unwrap();
        }
        assert!(all == data);
        p.source.0[len - 1] ^= 1;
        p.cached = None;
        let e = p.read_exact_at(len as u64 - 1, &mut tail[..1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("block 2"), "{e}");
    }
}
