//! The dm-verity hash tree of RAUC `verity` bundles, checked in user space: tree geometry,
//! a [`ByteSource`] over the payload whose every read is verified against the signed root
//! hash, a whole-payload check, and a tree builder.
//!
//! # Byte layout
//!
//! A `verity` bundle is
//!
//! ```text
//! payload (data_size bytes, a multiple of 4096) || hash tree (verity-size bytes) || CMS || u64 BE CMS size
//! ```
//!
//! The hash tree is dm-verity format version 1 as `veritysetup format --no-superblock
//! --hash=sha256 --data-block-size=4096 --hash-block-size=4096` writes it:
//!
//! - data blocks and hash blocks are 4096 bytes; the hash of a block is
//!   `SHA-256(salt || block)` (the salt, 32 bytes in RAUC, comes first);
//! - level 0 holds the hashes of the data blocks, level `n + 1` the hashes of the blocks of
//!   level `n`; a hash block holds 128 hashes of 32 bytes, the last block of a level is
//!   zero-padded at its end;
//! - there are as many levels as it takes to reach a single block (none for a single data
//!   block), and the levels are stored top level first: the root-most level starts the tree,
//!   level 0 ends it;
//! - the root hash is the hash of the top level's only block (of the only data block when
//!   there are no levels).
//!
//! The signed manifest gives the root hash (`verity-hash`), the salt (`verity-salt`) and the
//! tree size (`verity-size`); the data size is the payload size (bundle size without the CMS
//! and its trailer) minus the tree size. The tree size must be exactly the one the data
//! size implies.
//!
//! A [`VerifiedSource`] keeps at most [`CACHE_SLOTS_PER_LEVEL`] verified hash blocks per
//! level and one data block, whatever the payload size; a sequential read of the payload
//! reads and hashes each hash block once.

use crate::source::ByteSource;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read};

/// Size of a data block and of a hash block.
pub const BLOCK_SIZE: u64 = 4096;
/// Size of a SHA-256 digest.
pub const DIGEST_SIZE: usize = 32;
/// Size of the salt RAUC uses.
pub const SALT_SIZE: usize = 32;
/// Hashes per hash block.
pub const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_SIZE as u64;
/// Largest payload (data area) accepted: 16 TiB.
pub const MAX_DATA_SIZE: u64 = 1 << 44;
/// Most hash levels a payload of [`MAX_DATA_SIZE`] needs (2^32 blocks, 7 bits per level).
pub const MAX_LEVELS: usize = 5;
/// Verified hash blocks a [`VerifiedSource`] keeps per level.
pub const CACHE_SLOTS_PER_LEVEL: usize = 4;
/// Upper bound of [`VerifiedSource::cache_bytes`].
pub const MAX_CACHE_BYTES: usize = (MAX_LEVELS * CACHE_SLOTS_PER_LEVEL + 1) * BLOCK_SIZE as usize;

const BS: usize = BLOCK_SIZE as usize;
/// Bytes [`verify_all`] reads at a time.
const VERIFY_CHUNK: usize = 1 << 20;

/// What can go wrong with a dm-verity hash tree or the payload it protects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerityError {
    /// The data size is zero or not a multiple of the block size.
    #[error("verity: data size {size} is not a positive multiple of 4096 bytes")]
    DataSizeUnaligned {
        /// The data size.
        size: u64,
    },
    /// The data size is above [`MAX_DATA_SIZE`].
    #[error("verity: data size {size} is above the limit of {max} bytes")]
    DataSizeTooLarge {
        /// The data size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The declared tree size is larger than the whole payload.
    #[error(
        "verity: verity-size {tree_size} is larger than the bundle payload of {payload_size} bytes"
    )]
    TreeLargerThanPayload {
        /// The declared tree size.
        tree_size: u64,
        /// Payload size (data and tree).
        payload_size: u64,
    },
    /// The declared tree size is not the one the data size implies.
    #[error("verity: verity-size is {declared} bytes, but {data_size} bytes of data need a hash tree of {expected} bytes")]
    TreeSizeMismatch {
        /// The declared tree size.
        declared: u64,
        /// The data size.
        data_size: u64,
        /// The tree size the data size implies.
        expected: u64,
    },
    /// A manifest field is not hex of the expected length.
    #[error("verity: {field} is not {len} bytes of hex")]
    BadHex {
        /// The manifest field.
        field: &'static str,
        /// Expected length in bytes.
        len: usize,
    },
    /// The source is shorter than the data area and the tree.
    #[error("verity: {source_name} has {len} bytes, but data and hash tree need {needed}")]
    SourceTooShort {
        /// The source, as it describes itself.
        source_name: String,
        /// Its length.
        len: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// A read reaches outside the data area.
    #[error("verity: read of {len} bytes at offset {offset} is outside the {size}-byte data area")]
    OutOfRange {
        /// Start of the read.
        offset: u64,
        /// Its length.
        len: u64,
        /// Size of the data area.
        size: u64,
    },
    /// A data block does not match its hash (a leaf hash, or the root hash when the data is
    /// a single block).
    #[error("verity: data block {block} (bundle offset {offset}) does not match its hash: the bundle was modified")]
    DataBlockMismatch {
        /// Index of the data block.
        block: u64,
        /// Its offset in the bundle.
        offset: u64,
    },
    /// A hash block does not match the hash one level up.
    #[error("verity: hash block {block} of level {level} (bundle offset {offset}) does not match its hash: the bundle was modified")]
    HashBlockMismatch {
        /// Level (0 holds the hashes of data blocks).
        level: usize,
        /// Index of the block within its level.
        block: u64,
        /// Its offset in the bundle.
        offset: u64,
    },
    /// The top hash block does not match the signed root hash.
    #[error("verity: top hash block (bundle offset {offset}) does not match the signed root hash: the bundle was modified")]
    RootMismatch {
        /// Offset of the top hash block in the bundle.
        offset: u64,
    },
    /// The builder received a different number of bytes than announced.
    #[error("verity: expected {expected} bytes of data, got {got}")]
    DataLength {
        /// Bytes received (so far, when too many).
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The tree does not fit in memory.
    #[error("verity: cannot allocate a hash tree of {size} bytes")]
    TreeAlloc {
        /// Tree size.
        size: u64,
    },
    /// Reading the source failed.
    #[error("verity: reading {what} at offset {offset}: {source}")]
    Io {
        /// What was read, and from where.
        what: String,
        /// Offset of the read.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl VerityError {
    /// Wraps the error in an [`io::Error`] for [`ByteSource`] callers: out-of-range reads are
    /// `UnexpectedEof`, I/O errors keep their kind, everything else is `InvalidData`.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            VerityError::OutOfRange { .. } => io::ErrorKind::UnexpectedEof,
            VerityError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// `SHA-256(salt || block)`, the dm-verity version 1 hash of a data or hash block.
pub fn hash_block(salt: &[u8], block: &[u8]) -> [u8; DIGEST_SIZE] {
    SaltedHasher::new(salt).hash(block)
}

/// SHA-256 with the salt already absorbed, cloned for each block.
#[derive(Clone)]
struct SaltedHasher(Sha256);

impl SaltedHasher {
    fn new(salt: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(salt);
        SaltedHasher(h)
    }

    fn hash(&self, block: &[u8]) -> [u8; DIGEST_SIZE] {
        let mut h = self.0.clone();
        h.update(block);
        h.finalize().into()
    }
}

impl fmt::Debug for SaltedHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaltedHasher")
    }
}

/// One level of the hash tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Level {
    /// Offset of its first block from the start of the tree.
    pub offset: u64,
    /// Number of hash blocks.
    pub blocks: u64,
}

/// The shape of the hash tree over `data_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    data_size: u64,
    levels: [Level; MAX_LEVELS],
    level_count: usize,
    tree_size: u64,
}

impl Geometry {
    /// Computes the tree for `data_size` bytes (a positive multiple of 4096, at most
    /// [`MAX_DATA_SIZE`]).
    pub fn new(data_size: u64) -> Result<Geometry, VerityError> {
        if data_size == 0 || data_size % BLOCK_SIZE != 0 {
            return Err(VerityError::DataSizeUnaligned { size: data_size });
        }
        if data_size > MAX_DATA_SIZE {
            return Err(VerityError::DataSizeTooLarge {
                size: data_size,
                max: MAX_DATA_SIZE,
            });
        }
        // Level n has ceil(data_blocks / 128^(n+1)) blocks; levels are added until one
        // block remains. 2^32 data blocks at most need 5 levels of 7 bits each.
        let mut levels = [Level::default(); MAX_LEVELS];
        let mut level_count = 0;
        let mut blocks = data_size / BLOCK_SIZE;
        for level in levels.iter_mut() {
            if blocks <= 1 {
                break;
            }
            blocks = blocks.div_ceil(HASHES_PER_BLOCK);
            level.blocks = blocks;
            level_count += 1;
        }
        if blocks > 1 {
            return Err(VerityError::DataSizeTooLarge {
                size: data_size,
                max: MAX_DATA_SIZE,
            });
        }
        // Top level first. No overflow: the tree is smaller than the data.
        let mut tree_size = 0;
        for level in levels[..level_count].iter_mut().rev() {
            level.offset = tree_size;
            tree_size += level.blocks * BLOCK_SIZE;
        }
        Ok(Geometry {
            data_size,
            levels,
            level_count,
            tree_size,
        })
    }

    /// Size of the data area in bytes.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Number of data blocks.
    pub fn data_blocks(&self) -> u64 {
        self.data_size / BLOCK_SIZE
    }

    /// Size of the hash tree in bytes.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The levels, index 0 first (the hashes of the data blocks, stored last in the tree).
    pub fn levels(&self) -> &[Level] {
        &self.levels[..self.level_count]
    }

    /// Checks a declared tree size (`verity-size`) against this geometry.
    pub fn check_tree_size(&self, declared: u64) -> Result<(), VerityError> {
        if declared == self.tree_size {
            Ok(())
        } else {
            Err(VerityError::TreeSizeMismatch {
                declared,
                data_size: self.data_size,
                expected: self.tree_size,
            })
        }
    }
}

/// What the signed manifest says about the tree, checked for consistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityParams {
    root_hash: [u8; DIGEST_SIZE],
    salt: [u8; SALT_SIZE],
    geometry: Geometry,
}

impl VerityParams {
    /// Parameters for a tree of exactly `tree_size` bytes over `data_size` bytes of data.
    pub fn new(
        root_hash: [u8; DIGEST_SIZE],
        salt: [u8; SALT_SIZE],
        data_size: u64,
        tree_size: u64,
    ) -> Result<VerityParams, VerityError> {
        let geometry = Geometry::new(data_size)?;
        geometry.check_tree_size(tree_size)?;
        Ok(VerityParams {
            root_hash,
            salt,
            geometry,
        })
    }

    /// Parameters from the manifest fields `verity-hash` and `verity-salt` (hex),
    /// `verity-size`, and the payload size (the bundle without its CMS and trailer).
    pub fn from_manifest(
        verity_hash: &str,
        verity_salt: &str,
        verity_size: u64,
        payload_size: u64,
    ) -> Result<VerityParams, VerityError> {
        let mut root_hash = [0u8; DIGEST_SIZE];
        hex::decode_to_slice(verity_hash.trim(), &mut root_hash).map_err(|_| {
            VerityError::BadHex {
                field: "verity-hash",
                len: DIGEST_SIZE,
            }
        })?;
        let mut salt = [0u8; SALT_SIZE];
        hex::decode_to_slice(verity_salt.trim(), &mut salt).map_err(|_| VerityError::BadHex {
            field: "verity-salt",
            len: SALT_SIZE,
        })?;
        let data_size =
            payload_size
                .checked_sub(verity_size)
                .ok_or(VerityError::TreeLargerThanPayload {
                    tree_size: verity_size,
                    payload_size,
                })?;
        VerityParams::new(root_hash, salt, data_size, verity_size)
    }

    /// The signed root hash.
    pub fn root_hash(&self) -> &[u8; DIGEST_SIZE] {
        &self.root_hash
    }

    /// The salt.
    pub fn salt(&self) -> &[u8; SALT_SIZE] {
        &self.salt
    }

    /// The tree geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
}

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
            .map_err(|source| VerityError::Io {
                what: format!("{what} of {}", self.inner.describe()),
                offset,
                source,
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
/// Memory stays below [`MAX_CACHE_BYTES`] whatever the payload size. When a read fails, the
/// contents of the caller's buffer are unspecified.
pub struct VerifiedSource<S> {
    tree: TreeReader<S>,
    /// The last verified data block, for reads that do not cover whole blocks.
    data_block: Option<u64>,
    data: Vec<u8>,
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

    /// Bytes held for cached blocks; constant for the life of the source and at most
    /// [`MAX_CACHE_BYTES`].
    pub fn cache_bytes(&self) -> usize {
        self.tree.cache.bytes() + self.data.len()
    }

    /// Fills `buf` from `offset` in the data area with verified bytes.
    pub fn read_verified(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), VerityError> {
        let size = self.tree.params.geometry.data_size;
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= size)
            .ok_or(VerityError::OutOfRange { offset, len, size })?;
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

/// A hash tree and its root hash, as [`TreeBuilder`] makes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltTree {
    /// The tree bytes (`verity-size` of them), to be appended to the data.
    pub tree: Vec<u8>,
    /// The root hash (`verity-hash`).
    pub root_hash: [u8; DIGEST_SIZE],
}

/// Computes the hash tree of data fed to it in pieces; memory apart from the tree itself is
/// one block.
#[derive(Debug)]
pub struct TreeBuilder {
    geometry: Geometry,
    hasher: SaltedHasher,
    tree: Vec<u8>,
    pending: Vec<u8>,
    blocks: u64,
    /// The hash of data block 0, the root hash when there are no levels.
    first: [u8; DIGEST_SIZE],
}

impl TreeBuilder {
    /// A builder for `data_size` bytes (a positive multiple of 4096).
    pub fn new(data_size: u64, salt: &[u8; SALT_SIZE]) -> Result<Self, VerityError> {
        let geometry = Geometry::new(data_size)?;
        let size = geometry.tree_size;
        let n = usize::try_from(size).map_err(|_| VerityError::TreeAlloc { size })?;
        let mut tree = Vec::new();
        tree.try_reserve_exact(n)
            .map_err(|_| VerityError::TreeAlloc { size })?;
        tree.resize(n, 0);
        Ok(TreeBuilder {
            geometry,
            hasher: SaltedHasher::new(salt),
            tree,
            pending: Vec::with_capacity(BS),
            blocks: 0,
            first: [0; DIGEST_SIZE],
        })
    }

    fn received(&self) -> u64 {
        self.blocks * BLOCK_SIZE + self.pending.len() as u64
    }

    /// Feeds the next bytes of data.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), VerityError> {
        let expected = self.geometry.data_size;
        let got = self.received().saturating_add(data.len() as u64);
        if got > expected {
            return Err(VerityError::DataLength { got, expected });
        }
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= BS {
                let (block, rest) = data.split_at(BS);
                self.add_block_hash(self.hasher.hash(block));
                data = rest;
            } else {
                let take = (BS - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.pending.len() == BS {
                    self.add_block_hash(self.hasher.hash(&self.pending));
                    self.pending.clear();
                }
            }
        }
        Ok(())
    }

    fn add_block_hash(&mut self, hash: [u8; DIGEST_SIZE]) {
        if self.blocks == 0 {
            self.first = hash;
        }
        if let Some(leaf) = self.geometry.levels().first() {
            // Within the tree: blocks < data_blocks, which the leaf level covers.
            let at = (leaf.offset + self.blocks * DIGEST_SIZE as u64) as usize;
            self.tree[at..at + DIGEST_SIZE].copy_from_slice(&hash);
        }
        self.blocks += 1;
    }

    /// Computes the upper levels and the root hash; fails unless exactly `data_size` bytes
    /// were fed.
    pub fn finish(mut self) -> Result<BuiltTree, VerityError> {
        let got = self.received();
        if got != self.geometry.data_size {
            return Err(VerityError::DataLength {
                got,
                expected: self.geometry.data_size,
            });
        }
        let levels = self.geometry.levels();
        for pair in levels.windows(2) {
            let (below, above) = (pair[0], pair[1]);
            // Offsets and sizes are within the tree, which fits in memory.
            for j in 0..below.blocks as usize {
                let from = below.offset as usize + j * BS;
                let hash = self.hasher.hash(&self.tree[from..from + BS]);
                let to = above.offset as usize + j * DIGEST_SIZE;
                self.tree[to..to + DIGEST_SIZE].copy_from_slice(&hash);
            }
        }
        let root_hash = match levels.last() {
            Some(top) => {
                let at = top.offset as usize;
                self.hasher.hash(&self.tree[at..at + BS])
            }
            None => self.first,
        };
        Ok(BuiltTree {
            tree: self.tree,
            root_hash,
        })
    }
}

/// Builds the tree of `data_size` bytes read from `data` to its end.
pub fn build_tree<R: Read>(
    mut data: R,
    data_size: u64,
    salt: &[u8; SALT_SIZE],
) -> Result<BuiltTree, VerityError> {
    let mut builder = TreeBuilder::new(data_size, salt)?;
    let mut buf = vec![0u8; 16 * BS];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(VerityError::Io {
                    what: "data".into(),
                    offset: builder.received(),
                    source,
                })
            }
        };
        builder.update(&buf[..n])?;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;

    const SALT: [u8; SALT_SIZE] = [0x5a; SALT_SIZE];

    /// Deterministic, block-distinct bytes.
    fn pattern(offset: u64) -> u8 {
        let x = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x >> 56) as u8 ^ (offset / BLOCK_SIZE) as u8
    }

    fn data(blocks: u64) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE).map(pattern).collect()
    }

    /// Data, tree and parameters of a bundle payload of `blocks` data blocks.
    fn bundle(blocks: u64) -> (Vec<u8>, VerityParams) {
        let data = data(blocks);
        let built = build_tree(&data[..], data.len() as u64, &SALT).unwrap();
        let params = VerityParams::new(
            built.root_hash,
            SALT,
            data.len() as u64,
            built.tree.len() as u64,
        )
        .unwrap();
        let mut payload = data;
        payload.extend_from_slice(&built.tree);
        (payload, params)
    }

    fn levels(blocks: u64) -> Vec<(u64, u64)> {
        let g = Geometry::new(blocks * BLOCK_SIZE).unwrap();
        g.levels().iter().map(|l| (l.offset, l.blocks)).collect()
    }

    #[test]
    fn geometry_matches_dm_verity() {
        assert_eq!(levels(1), vec![]);
        assert_eq!(Geometry::new(BLOCK_SIZE).unwrap().tree_size(), 0);
        assert_eq!(levels(2), vec![(0, 1)]);
        assert_eq!(levels(128), vec![(0, 1)]);
        // Leaf level (two blocks) after the top block.
        assert_eq!(levels(129), vec![(4096, 2), (0, 1)]);
        assert_eq!(
            Geometry::new(129 * BLOCK_SIZE).unwrap().tree_size(),
            3 * 4096
        );
        assert_eq!(levels(128 * 128), vec![(4096, 128), (0, 1)]);
        assert_eq!(
            levels(128 * 128 + 1),
            vec![(3 * 4096, 129), (4096, 2), (0, 1)]
        );
        let g = Geometry::new(128 * 128 * BLOCK_SIZE + BLOCK_SIZE).unwrap();
        assert_eq!(g.tree_size(), 132 * 4096);
        assert_eq!(g.data_blocks(), 128 * 128 + 1);
        g.check_tree_size(132 * 4096).unwrap();
        assert!(matches!(
            g.check_tree_size(131 * 4096),
            Err(VerityError::TreeSizeMismatch { expected, .. }) if expected == 132 * 4096
        ));
        let max = Geometry::new(MAX_DATA_SIZE).unwrap();
        assert_eq!(max.levels().len(), MAX_LEVELS);
    }

    #[test]
    fn geometry_rejects_bad_sizes() {
        for size in [0, 1, 4095, 4097] {
            assert!(matches!(
                Geometry::new(size),
                Err(VerityError::DataSizeUnaligned { .. })
            ));
        }
        assert!(matches!(
            Geometry::new(MAX_DATA_SIZE + BLOCK_SIZE),
            Err(VerityError::DataSizeTooLarge { .. })
        ));
        assert!(matches!(
            Geometry::new(u64::MAX - 4095),
            Err(VerityError::DataSizeTooLarge { .. })
        ));
    }

    #[test]
    fn params_from_manifest() {
        let hash = "ab".repeat(32);
        let salt = "cd".repeat(32);
        let p = VerityParams::from_manifest(&hash, &salt, 3 * 4096, 132 * 4096).unwrap();
        assert_eq!(p.geometry().data_size(), 129 * 4096);
        assert_eq!(p.root_hash(), &[0xab; 32]);
        assert_eq!(p.salt(), &[0xcd; 32]);
        assert!(matches!(
            VerityParams::from_manifest(&hash, &salt, 4096, 132 * 4096),
            Err(VerityError::TreeSizeMismatch { declared: 4096, .. })
        ));
        assert!(matches!(
            VerityParams::from_manifest(&hash, &salt, 5 * 4096, 4 * 4096),
            Err(VerityError::TreeLargerThanPayload { .. })
        ));
        assert!(matches!(
            VerityParams::from_manifest("abc", &salt, 3 * 4096, 132 * 4096),
            Err(VerityError::BadHex {
                field: "verity-hash",
                ..
            })
        ));
        assert!(matches!(
            VerityParams::from_manifest(&hash, &"cd".repeat(16), 3 * 4096, 132 * 4096),
            Err(VerityError::BadHex {
                field: "verity-salt",
                ..
            })
        ));
    }

    #[test]
    fn hash_is_salt_then_block() {
        let block = [7u8; BS];
        let mut joined = SALT.to_vec();
        joined.extend_from_slice(&block);
        let want: [u8; 32] = Sha256::digest(&joined).into();
        assert_eq!(hash_block(&SALT, &block), want);
    }

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

    #[test]
    fn builder_takes_any_pieces_and_checks_length() {
        let data = data(130);
        let whole = build_tree(&data[..], data.len() as u64, &SALT).unwrap();
        let mut b = TreeBuilder::new(data.len() as u64, &SALT).unwrap();
        for piece in data.chunks(1000) {
            b.update(piece).unwrap();
        }
        assert_eq!(b.finish().unwrap(), whole);
        assert!(matches!(
            build_tree(&data[..4096], data.len() as u64, &SALT),
            Err(VerityError::DataLength { got: 4096, .. })
        ));
        assert!(matches!(
            build_tree(&data[..], 4096, &SALT),
            Err(VerityError::DataLength { expected: 4096, .. })
        ));
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
