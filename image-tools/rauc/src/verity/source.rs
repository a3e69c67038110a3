//! Reading a bundle payload through its hash tree: [`VerifiedSource`], which verifies every
//! block it hands out against the signed root hash with a bounded cache of verified hash
//! blocks, and [`verify_all`], the whole-payload check.
//!
//! Sequential reads (each starting where the last one ended, as when an image is streamed
//! out of the squashfs) go through a window of [`WINDOW_BYTES`]: the window's data blocks
//! are read once, their hashes taken on two threads (half the window each) and compared
//! with the verified leaf hashes, and only then are bytes handed out, copied from that same
//! buffer. Nothing is read again after its check. Other reads check the blocks they touch
//! one at a time on the caller's thread.

use std::fmt;
use std::io;

use super::{
    SaltedHasher, VerityError, VerityParams, BLOCK_SIZE, BS, CACHE_SLOTS_PER_LEVEL, DIGEST_SIZE,
    HASHES_PER_BLOCK, WINDOW_BYTES,
};
use flipslot_format::source::ByteSource;

/// Bytes [`verify_all`] reads at a time.
const VERIFY_CHUNK: usize = 1 << 20;

/// Verified hash blocks, [`CACHE_SLOTS_PER_LEVEL`] per level, least recently used evicted.
struct HashCache {
    slots: Vec<Slot>,
    tick: u64,
}

struct Slot {
    /// (level, block) held, when the slot holds a verified block.
    key: Option<(usize, u64)>,
    used: u64,
    data: Vec<u8>,
}

impl HashCache {
    fn new(levels: usize) -> Self {
        let slots = (0..levels * CACHE_SLOTS_PER_LEVEL)
            .map(|_| Slot {
                key: None,
                used: 0,
                data: vec![0; BS],
            })
            .collect();
        HashCache { slots, tick: 0 }
    }

    fn level_slots(&mut self, level: usize) -> &mut [Slot] {
        let start = level * CACHE_SLOTS_PER_LEVEL;
        &mut self.slots[start..start + CACHE_SLOTS_PER_LEVEL]
    }

    /// The hash at `entry` of verified block `block` of `level`, when cached.
    fn entry(&mut self, level: usize, block: u64, entry: usize) -> Option<[u8; DIGEST_SIZE]> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self
            .level_slots(level)
            .iter_mut()
            .find(|s| s.key == Some((level, block)))?;
        slot.used = tick;
        Some(digest_at(&slot.data, entry))
    }

    fn insert(&mut self, level: usize, block: u64, data: &[u8; BS]) {
        self.tick += 1;
        let tick = self.tick;
        let slots = self.level_slots(level);
        let victim = slots.iter_mut().min_by_key(|s| (s.key.is_some(), s.used));
        if let Some(slot) = victim {
            slot.key = Some((level, block));
            slot.used = tick;
            slot.data.copy_from_slice(data);
        }
    }

    fn bytes(&self) -> usize {
        self.slots.iter().map(|s| s.data.len()).sum()
    }
}

/// Hash number `entry` (0..128) of a hash block.
fn digest_at(block: &[u8], entry: usize) -> [u8; DIGEST_SIZE] {
    let mut out = [0u8; DIGEST_SIZE];
    out.copy_from_slice(&block[entry * DIGEST_SIZE..(entry + 1) * DIGEST_SIZE]);
    out
}

/// The bundle source with its tree: hands out verified hashes.
struct TreeReader<S> {
    inner: S,
    params: VerityParams,
    hasher: SaltedHasher,
    cache: HashCache,
}

impl<S: ByteSource> TreeReader<S> {
    fn read(&mut self, offset: u64, buf: &mut [u8], what: &str) -> Result<(), VerityError> {
        self.inner
            .read_exact_at(offset, buf)
            .map_err(|error| VerityError::Io {
                what: format!("{what} of {}", self.inner.describe()),
                offset,
                error,
            })
    }

    /// The verified hash of data block `block`.
    fn data_hash(&mut self, block: u64) -> Result<[u8; DIGEST_SIZE], VerityError> {
        if self.params.geometry.level_count == 0 {
            Ok(self.params.root_hash)
        } else {
            self.entry(0, block)
        }
    }

    /// The verified hash number `entry` of `level`, counted across the level; the block
    /// holding it is verified up to the root hash unless it is cached.
    fn entry(&mut self, level: usize, entry: u64) -> Result<[u8; DIGEST_SIZE], VerityError> {
        let block = entry / HASHES_PER_BLOCK;
        // Below 128: fits in usize.
        let index = (entry % HASHES_PER_BLOCK) as usize;
        if let Some(hash) = self.cache.entry(level, block, index) {
            return Ok(hash);
        }
        let geometry = self.params.geometry;
        let offset = geometry.data_size + geometry.levels[level].offset + block * BLOCK_SIZE;
        let mut data = [0u8; BS];
        self.read(offset, &mut data, "hash block")?;
        let actual = self.hasher.hash(&data);
        if level + 1 == geometry.level_count {
            if actual != self.params.root_hash {
                return Err(VerityError::RootMismatch { offset });
            }
        } else if actual != self.entry(level + 1, block)? {
            return Err(VerityError::HashBlockMismatch {
                level,
                block,
                offset,
            });
        }
        self.cache.insert(level, block, &data);
        Ok(digest_at(&data, index))
    }

    /// Checks the whole blocks of `data`, data blocks `first..`, against their verified
    /// hashes: the hashes are fetched through the tree on this thread (each hash block is
    /// verified once for a run of consecutive blocks), then the data blocks are hashed on
    /// two threads, half each. The first block that differs is named.
    fn check_run(
        &mut self,
        first: u64,
        data: &[u8],
        want: &mut Vec<[u8; DIGEST_SIZE]>,
    ) -> Result<(), VerityError> {
        want.clear();
        for i in 0..(data.len() / BS) as u64 {
            want.push(self.data_hash(first + i)?);
        }
        let mismatch = |from: u64, part: &[u8], want: &[[u8; DIGEST_SIZE]]| {
            part.chunks_exact(BS)
                .zip(want)
                .position(|(block, w)| self.hasher.hash(block) != *w)
                .map(|i| from + i as u64)
        };
        let half = want.len() / 2;
        let (lo, hi) = data.split_at(half * BS);
        let (want_lo, want_hi) = want.split_at(half);
        let bad = if half == 0 {
            mismatch(first, hi, want_hi)
        } else {
            std::thread::scope(|s| {
                let upper = s.spawn(|| mismatch(first + half as u64, hi, want_hi));
                let lower = mismatch(first, lo, want_lo);
                // A panic in a hashing thread is reported as a mismatch of its first block.
                lower.or_else(|| upper.join().unwrap_or(Some(first + half as u64)))
            })
        };
        match bad {
            None => Ok(()),
            Some(block) => Err(VerityError::DataBlockMismatch {
                block,
                offset: block * BLOCK_SIZE,
            }),
        }
    }

    /// Checks data block `block` against its verified hash.
    fn check_data(&mut self, block: u64, data: &[u8]) -> Result<(), VerityError> {
        if self.hasher.hash(data) == self.data_hash(block)? {
            Ok(())
        } else {
            Err(VerityError::DataBlockMismatch {
                block,
                offset: block * BLOCK_SIZE,
            })
        }
    }
}

/// The data area `[0, data_size)` of a bundle, every read checked against the hash tree
/// that follows it and the signed root hash.
///
/// Memory stays below [`MAX_CACHE_BYTES`](super::MAX_CACHE_BYTES) whatever the payload
/// size. When a read fails, the contents of the caller's buffer are unspecified.
pub struct VerifiedSource<S> {
    tree: TreeReader<S>,
    /// The last verified data block, for reads that do not cover whole blocks.
    data_block: Option<u64>,
    data: Vec<u8>,
    /// Verified data blocks `window_at..window_at + window_len / 4096`, for sequential
    /// reads; the buffer holds `min(WINDOW_BYTES, data size)` bytes.
    window: Vec<u8>,
    window_at: u64,
    window_len: usize,
    /// Where the last read ended (a read starting here is sequential).
    next: Option<u64>,
    /// Expected hashes of the blocks being checked (reused).
    want: Vec<[u8; DIGEST_SIZE]>,
}

impl<S> fmt::Debug for VerifiedSource<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedSource")
            .field("params", &self.tree.params)
            .finish_non_exhaustive()
    }
}

impl<S: ByteSource> VerifiedSource<S> {
    /// Wraps `inner`, a bundle whose tree follows its data area as `params` describe.
    /// Nothing is read yet; a source that knows its size must hold data and tree.
    pub fn new(inner: S, params: VerityParams) -> Result<Self, VerityError> {
        let g = params.geometry;
        let needed = g.data_size + g.tree_size;
        if let Some(len) = inner.size().filter(|&len| len < needed) {
            return Err(VerityError::SourceTooShort {
                source_name: inner.describe(),
                len,
                needed,
            });
        }
        let hasher = SaltedHasher::new(&params.salt);
        Ok(VerifiedSource {
            tree: TreeReader {
                inner,
                hasher,
                cache: HashCache::new(g.level_count),
                params,
            },
            data_block: None,
            data: vec![0; BS],
            // At most WINDOW_BYTES: fits in usize.
            window: vec![0; g.data_size.min(WINDOW_BYTES as u64) as usize],
            window_at: 0,
            window_len: 0,
            next: None,
            want: Vec::new(),
        })
    }

    /// The parameters this source checks against.
    pub fn params(&self) -> &VerityParams {
        &self.tree.params
    }

    /// The wrapped bundle source.
    pub fn into_inner(self) -> S {
        self.tree.inner
    }

    /// Bytes held for cached blocks and the window; constant for the life of the source
    /// and at most [`MAX_CACHE_BYTES`](super::MAX_CACHE_BYTES).
    pub fn cache_bytes(&self) -> usize {
        self.tree.cache.bytes() + self.data.len() + self.window.len()
    }

    /// Fills `buf` from `offset` in the data area with verified bytes. A read that starts
    /// where the last one ended is served from the verified window (checked on two
    /// threads); others check the blocks they touch one by one.
    pub fn read_verified(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), VerityError> {
        let size = self.tree.params.geometry.data_size;
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= size)
            .ok_or(VerityError::OutOfRange { offset, len, size })?;
        let sequential = self.next == Some(offset);
        self.next = None;
        let mut pos = offset;
        let mut out = 0usize;
        while pos < end {
            let window_end = self.window_at + self.window_len as u64;
            if (self.window_at..window_end).contains(&pos) {
                // Below WINDOW_BYTES: fits in usize.
                let within = (pos - self.window_at) as usize;
                let take = (self.window_len - within).min((end - pos) as usize);
                buf[out..out + take].copy_from_slice(&self.window[within..within + take]);
                pos += take as u64;
                out += take;
            } else if sequential {
                self.load_window(pos / BLOCK_SIZE)?;
            } else {
                self.read_blocks(pos, &mut buf[out..])?;
                break;
            }
        }
        self.next = Some(end);
        Ok(())
    }

    /// Reads and checks the window of data blocks starting at `first` (as many as fit, up
    /// to the end of the data area). On failure the window is left empty.
    fn load_window(&mut self, first: u64) -> Result<(), VerityError> {
        self.window_len = 0;
        let size = self.tree.params.geometry.data_size;
        let at = first * BLOCK_SIZE;
        // At most the window's length: fits in usize.
        let len = (size - at).min(self.window.len() as u64) as usize;
        let mut want = std::mem::take(&mut self.want);
        let checked = self
            .tree
            .read(at, &mut self.window[..len], "data")
            .and_then(|()| self.tree.check_run(first, &self.window[..len], &mut want));
        self.want = want;
        checked?;
        self.window_at = at;
        self.window_len = len;
        Ok(())
    }

    /// Fills `buf` from `offset` checking one block at a time: whole blocks are read
    /// straight into `buf` and checked there, partial ones through a one-block cache.
    fn read_blocks(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), VerityError> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        let mut out = 0usize;
        while pos < end {
            let block = pos / BLOCK_SIZE;
            // Below 4096: fits in usize.
            let within = (pos % BLOCK_SIZE) as usize;
            let whole = (end - pos) / BLOCK_SIZE;
            if within == 0 && whole > 0 {
                // Whole blocks go straight into the caller's buffer, then are checked.
                // No overflow: at most buf.len() bytes.
                let n = whole as usize * BS;
                let dst = &mut buf[out..out + n];
                self.tree.read(pos, dst, "data")?;
                for (i, chunk) in dst.chunks_exact(BS).enumerate() {
                    self.tree.check_data(block + i as u64, chunk)?;
                }
                pos += n as u64;
                out += n;
            } else {
                if self.data_block != Some(block) {
                    self.data_block = None;
                    self.tree.read(block * BLOCK_SIZE, &mut self.data, "data")?;
                    self.tree.check_data(block, &self.data)?;
                    self.data_block = Some(block);
                }
                // At most one block: fits in usize.
                let take = (BS - within).min((end - pos) as usize);
                buf[out..out + take].copy_from_slice(&self.data[within..within + take]);
                pos += take as u64;
                out += take;
            }
        }
        Ok(())
    }
}

impl<S: ByteSource> ByteSource for VerifiedSource<S> {
    fn size(&self) -> Option<u64> {
        Some(self.tree.params.geometry.data_size)
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_verified(offset, buf)
            .map_err(VerityError::into_io)
    }

    fn describe(&self) -> String {
        format!("{} (dm-verity checked)", self.tree.inner.describe())
    }
}

/// Checks the whole data area and every block of the hash tree against the root hash,
/// reading the data sequentially. `progress` receives data bytes checked and their total.
pub fn verify_all<S: ByteSource>(
    source: S,
    params: &VerityParams,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), VerityError> {
    let total = params.geometry.data_size;
    let mut src = VerifiedSource::new(source, params.clone())?;
    let mut buf = vec![0u8; VERIFY_CHUNK];
    let mut done = 0u64;
    progress(0, total);
    while done < total {
        // At most VERIFY_CHUNK: fits in usize.
        let n = (total - done).min(VERIFY_CHUNK as u64) as usize;
        src.read_verified(done, &mut buf[..n])?;
        done += n as u64;
        progress(done, total);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::tests::{bundle, pattern, SALT};
    use crate::verity::{TreeBuilder, MAX_CACHE_BYTES, WINDOW_BYTES};
    use flipslot_format::source::MemSource;

    #[test]
    fn built_tree_verifies() {
        for blocks in [1, 2, 128, 129, 300] {
            let (payload, params) = bundle(blocks);
            let size = blocks * BLOCK_SIZE;
            let mut seen = Vec::new();
            verify_all(MemSource(payload.clone()), &params, &mut |d, t| {
                seen.push((d, t))
            })
            .unwrap();
            assert_eq!(seen.first(), Some(&(0, size)));
            assert_eq!(seen.last(), Some(&(size, size)));
            let mut src = VerifiedSource::new(MemSource(payload.clone()), params).unwrap();
            assert_eq!(src.size(), Some(size));
            let mut all = vec![0; size as usize];
            src.read_exact_at(0, &mut all).unwrap();
            assert_eq!(all, payload[..size as usize]);
        }
    }

    fn read_block(payload: &[u8], params: &VerityParams, block: u64) -> Result<(), VerityError> {
        let mut src = VerifiedSource::new(MemSource(payload.to_vec()), params.clone())?;
        let mut buf = vec![0; BS];
        src.read_verified(block * BLOCK_SIZE, &mut buf)
    }

    #[test]
    fn flipped_data_byte_fails() {
        let (mut payload, params) = bundle(300);
        payload[200 * BS + 17] ^= 1;
        let err = read_block(&payload, &params, 200).unwrap_err();
        assert!(matches!(
            err,
            VerityError::DataBlockMismatch { block: 200, offset } if offset == 200 * 4096
        ));
        assert_eq!(
            err.to_string(),
            "verity: data block 200 (bundle offset 819200) does not match its hash: \
             the bundle was modified"
        );
        // Unaligned reads through the same block fail too; other blocks still read.
        let mut src = VerifiedSource::new(MemSource(payload.clone()), params.clone()).unwrap();
        let mut small = [0u8; 3];
        assert!(src
            .read_verified(200 * BLOCK_SIZE + 4000, &mut small)
            .is_err());
        src.read_verified(199 * BLOCK_SIZE + 4000, &mut small)
            .unwrap();
        let io = src.read_exact_at(200 * BLOCK_SIZE, &mut small).unwrap_err();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        read_block(&payload, &params, 201).unwrap();
        assert!(matches!(
            verify_all(MemSource(payload), &params, &mut |_, _| {}),
            Err(VerityError::DataBlockMismatch { block: 200, .. })
        ));
        // A single data block is checked against the root hash directly.
        let (mut payload, params) = bundle(1);
        read_block(&payload, &params, 0).unwrap();
        payload[5] ^= 0x80;
        assert!(matches!(
            read_block(&payload, &params, 0),
            Err(VerityError::DataBlockMismatch {
                block: 0,
                offset: 0
            })
        ));
    }

    #[test]
    fn flipped_leaf_hash_byte_fails() {
        // 300 blocks: top block at tree offset 0, leaf blocks 0..3 after it.
        let (mut payload, params) = bundle(300);
        let leaf = params.geometry().levels()[0];
        let leaf_block_1 = 300 * BS + leaf.offset as usize + BS;
        // The hash of data block 130 (entry 2 of leaf block 1).
        payload[leaf_block_1 + 2 * DIGEST_SIZE] ^= 1;
        let want_offset = leaf_block_1 as u64;
        let err = read_block(&payload, &params, 130).unwrap_err();
        assert!(matches!(
            err,
            VerityError::HashBlockMismatch { level: 0, block: 1, offset } if offset == want_offset
        ));
        // Padding of the last leaf block is covered as well.
        let (mut payload, params) = bundle(300);
        let last = payload.len() - 1;
        payload[last] ^= 1;
        assert!(matches!(
            read_block(&payload, &params, 299),
            Err(VerityError::HashBlockMismatch {
                level: 0,
                block: 2,
                ..
            })
        ));
        read_block(&payload, &params, 0).unwrap();
    }

    #[test]
    fn flipped_upper_hash_byte_fails() {
        let blocks = 128 * 128 + 1;
        let (payload, params) = bundle(blocks);
        let g = *params.geometry();
        let tree_at = (blocks * BLOCK_SIZE) as usize;
        // The middle level's second block holds the hash of leaf block 128 (data 16384).
        let mut bad = payload.clone();
        let mid_1 = tree_at + g.levels()[1].offset as usize + BS;
        bad[mid_1] ^= 1;
        assert!(matches!(
            read_block(&bad, &params, 128 * 128),
            Err(VerityError::HashBlockMismatch {
                level: 1,
                block: 1,
                ..
            })
        ));
        read_block(&bad, &params, 0).unwrap();
        // The top block is checked against the root hash.
        let mut bad = payload;
        bad[tree_at + 40] ^= 1;
        let err = read_block(&bad, &params, 0).unwrap_err();
        assert!(matches!(err, VerityError::RootMismatch { offset } if offset == tree_at as u64));
        assert!(err.to_string().contains("signed root hash"));
        // A wrong root hash or salt fails the same way.
        let data_size = g.data_size();
        let other = VerityParams::new([0; 32], SALT, data_size, g.tree_size()).unwrap();
        let mut good = bad;
        good[tree_at + 40] ^= 1;
        assert!(matches!(
            read_block(&good, &other, 0),
            Err(VerityError::RootMismatch { .. })
        ));
        let other =
            VerityParams::new(*params.root_hash(), [1; 32], data_size, g.tree_size()).unwrap();
        assert!(read_block(&good, &other, 0).is_err());
        read_block(&good, &params, 0).unwrap();
    }

    #[test]
    fn unaligned_reads() {
        let (payload, params) = bundle(300);
        let size = 300 * BLOCK_SIZE;
        let mut src = VerifiedSource::new(MemSource(payload.clone()), params).unwrap();
        let mut state = 12345u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        for _ in 0..500 {
            let offset = next(size);
            let len = next((size - offset).min(3 * BLOCK_SIZE + 100) + 1);
            let mut buf = vec![0; len as usize];
            src.read_verified(offset, &mut buf).unwrap();
            assert_eq!(buf, payload[offset as usize..(offset + len) as usize]);
        }
        let mut buf = vec![0; 10_000];
        src.read_verified(size - 10_000, &mut buf).unwrap();
        src.read_verified(size, &mut []).unwrap();
        let err = src.read_verified(size - 9_999, &mut buf).unwrap_err();
        assert!(matches!(err, VerityError::OutOfRange { .. }));
        let io = src.read_exact_at(u64::MAX, &mut buf).unwrap_err();
        assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn source_must_hold_data_and_tree() {
        let (mut payload, params) = bundle(129);
        payload.pop();
        assert!(matches!(
            VerifiedSource::new(MemSource(payload), params),
            Err(VerityError::SourceTooShort { .. })
        ));
    }

    /// Reads all of `src` sequentially in pieces of `step` bytes (the windowed path).
    fn read_sequential<S: ByteSource>(
        src: &mut VerifiedSource<S>,
        size: u64,
        step: usize,
    ) -> Result<Vec<u8>, VerityError> {
        let mut all = vec![0u8; size as usize];
        let mut at = 0usize;
        while at < all.len() {
            let n = (all.len() - at).min(step);
            src.read_verified(at as u64, &mut all[at..at + n])?;
            at += n;
        }
        Ok(all)
    }

    /// A payload of `blocks` data blocks whose reads of data blocks are counted.
    struct Counted {
        payload: Vec<u8>,
        data_reads: Vec<u32>,
    }

    impl ByteSource for Counted {
        fn size(&self) -> Option<u64> {
            Some(self.payload.len() as u64)
        }
        fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let o = offset as usize;
            for b in (o / BS)..(o + buf.len()).div_ceil(BS) {
                if let Some(n) = self.data_reads.get_mut(b) {
                    *n += 1;
                }
            }
            buf.copy_from_slice(&self.payload[o..o + buf.len()]);
            Ok(())
        }
        fn describe(&self) -> String {
            "counted".into()
        }
    }

    #[test]
    fn windowed_reads_give_the_same_bytes_as_block_by_block_reads() {
        // Two and a half windows, so that the last window is short.
        let blocks = (5 * WINDOW_BYTES / 2) as u64 / BLOCK_SIZE + 3;
        let size = blocks * BLOCK_SIZE;
        let (payload, params) = bundle(blocks);
        for step in [1 << 20, 131_072, 300_001, 4096, 7, 2 * WINDOW_BYTES + 5] {
            let mut src = VerifiedSource::new(
                Counted {
                    payload: payload.clone(),
                    data_reads: vec![0; blocks as usize],
                },
                params.clone(),
            )
            .unwrap();
            let windowed = read_sequential(&mut src, size, step).unwrap();
            assert!(windowed == payload[..size as usize], "step {step}");
            // Every data block was read from the source once: the bytes handed out are
            // the ones hashed, never read again after their check. (The first read
            // is not yet sequential and checks its blocks in place; a read of less
            // than a block reads its block through the one-block cache.)
            let reads = src.into_inner().data_reads;
            let first = (step as u64).div_ceil(BLOCK_SIZE) as usize;
            assert!(
                reads[first.min(reads.len())..].iter().all(|&n| n == 1),
                "step {step}"
            );
            assert!(reads.iter().all(|&n| n <= 2), "step {step}");
        }
        // The block-by-block path (no read starts where the previous one ended).
        let mut src = VerifiedSource::new(MemSource(payload.clone()), params).unwrap();
        let mut by_block = vec![0u8; size as usize];
        for (i, chunk) in by_block.chunks_mut(BS).enumerate().rev() {
            src.read_verified(i as u64 * BLOCK_SIZE, chunk).unwrap();
        }
        assert!(by_block == payload[..size as usize]);
    }

    #[test]
    fn windowed_reads_refuse_a_changed_data_or_hash_block() {
        // Two windows and a short third one.
        let blocks = (2 * WINDOW_BYTES) as u64 / BLOCK_SIZE + 100;
        let size = blocks * BLOCK_SIZE;
        let (payload, params) = bundle(blocks);
        let leaf = params.geometry().levels()[0];
        // A data block in the first and in the second half of the second window (each
        // half is hashed on its own thread), and the leaf hash block of data block 1500.
        let half = (WINDOW_BYTES / 2) as u64 / BLOCK_SIZE;
        let window = 2 * half;
        for block in [window + 3, window + half + 1] {
            let mut bad = payload.clone();
            bad[(block * BLOCK_SIZE) as usize + 100] ^= 1;
            let mut src = VerifiedSource::new(MemSource(bad), params.clone()).unwrap();
            let err = read_sequential(&mut src, size, 1 << 17).unwrap_err();
            assert!(
                matches!(err, VerityError::DataBlockMismatch { block: b, offset } if b == block && offset == block * BLOCK_SIZE),
                "{err}"
            );
            // The first window was handed out before the bad one was read.
            let mut src = VerifiedSource::new(MemSource(payload.clone()), params.clone()).unwrap();
            assert_eq!(
                read_sequential(&mut src, size, 1 << 17).unwrap(),
                payload[..size as usize]
            );
        }
        let mut bad = payload.clone();
        let leaf_of_1500 = size as usize + leaf.offset as usize + (1500 / 128) * BS;
        bad[leaf_of_1500 + 5] ^= 1;
        let mut src = VerifiedSource::new(MemSource(bad), params).unwrap();
        let err = read_sequential(&mut src, size, 1 << 17).unwrap_err();
        assert!(
            matches!(err, VerityError::HashBlockMismatch { level: 0, block, offset } if block == 1500 / 128 && offset == leaf_of_1500 as u64),
            "{err}"
        );
    }

    /// Data computed on the fly and a tree in memory; counts reads of tree blocks.
    struct Generated {
        data_size: u64,
        tree: Vec<u8>,
        tree_reads: u64,
    }

    impl ByteSource for Generated {
        fn size(&self) -> Option<u64> {
            Some(self.data_size + self.tree.len() as u64)
        }
        fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if offset >= self.data_size {
                self.tree_reads += 1;
                let at = (offset - self.data_size) as usize;
                buf.copy_from_slice(&self.tree[at..at + buf.len()]);
            } else {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern(offset + i as u64);
                }
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "generated".into()
        }
    }

    #[test]
    fn memory_is_bounded_and_hash_blocks_read_once() {
        let blocks = 128 * 128 + 130;
        let data_size = blocks * BLOCK_SIZE;
        let mut builder = TreeBuilder::new(data_size, &SALT).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < data_size {
            let n = (data_size - at).min(chunk.len() as u64) as usize;
            for (i, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(at + i as u64);
            }
            builder.update(&chunk[..n]).unwrap();
            at += n as u64;
        }
        let built = builder.finish().unwrap();
        let tree_blocks = built.tree.len() as u64 / BLOCK_SIZE;
        let params =
            VerityParams::new(built.root_hash, SALT, data_size, built.tree.len() as u64).unwrap();
        let source = Generated {
            data_size,
            tree: built.tree,
            tree_reads: 0,
        };
        let mut src = VerifiedSource::new(source, params).unwrap();
        let before = src.cache_bytes();
        assert!(before <= MAX_CACHE_BYTES);
        // Sequential reads of an odd size, so that some are unaligned.
        let mut buf = vec![0u8; 300_001];
        let mut at = 0;
        while at < data_size {
            let n = (data_size - at).min(buf.len() as u64) as usize;
            src.read_verified(at, &mut buf[..n]).unwrap();
            at += n as u64;
        }
        assert_eq!(src.cache_bytes(), before);
        assert_eq!(src.into_inner().tree_reads, tree_blocks);
    }
}
