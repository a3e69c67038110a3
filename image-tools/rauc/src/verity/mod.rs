//! The dm-verity hash tree of RAUC `verity` bundles, checked in user space: tree geometry,
//! a [`ByteSource`](flipslot_format::source::ByteSource) over the payload whose every read is verified
//! against the signed root hash, a whole-payload check, and a tree builder.
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
//! level, one data block and a window of [`WINDOW_BYTES`] of verified data blocks, whatever
//! the payload size; a sequential read of the payload reads and hashes each data block and
//! each hash block once, the data blocks of a window on two threads.
//!
//! This module holds the geometry, the parameters, the errors and the block hash; the
//! verified reads ([`VerifiedSource`], [`verify_all`]) are in `source`, the tree builder
//! ([`TreeBuilder`], [`build_tree`]) in `build`.

mod build;
mod source;

use sha2::{Digest, Sha256};
use std::fmt;
use std::io;

pub use build::{build_tree, BuiltTree, TreeBuilder};
pub use source::{verify_all, VerifiedSource};

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
/// Data bytes a [`VerifiedSource`] reads and checks at a time for sequential reads (on two
/// threads), and holds until they are handed out.
pub const WINDOW_BYTES: usize = 4 << 20;
/// Upper bound of [`VerifiedSource::cache_bytes`].
pub const MAX_CACHE_BYTES: usize =
    (MAX_LEVELS * CACHE_SLOTS_PER_LEVEL + 1) * BLOCK_SIZE as usize + WINDOW_BYTES;

const BS: usize = BLOCK_SIZE as usize;

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
    #[error("verity: reading {what} at offset {offset}: {error}")]
    Io {
        /// What was read, and from where.
        what: String,
        /// Offset of the read.
        offset: u64,
        /// The underlying error (in the message, not a `source`: this error mostly travels
        /// inside an [`io::Error`] through readers that show it with `{}`).
        error: io::Error,
    },
}

impl VerityError {
    /// Wraps the error in an [`io::Error`] for [`ByteSource`](flipslot_format::source::ByteSource)
    /// callers: out-of-range reads are `UnexpectedEof`, I/O errors keep their kind,
    /// everything else is `InvalidData`.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            VerityError::OutOfRange { .. } => io::ErrorKind::UnexpectedEof,
            VerityError::Io { error, .. } => error.kind(),
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const SALT: [u8; SALT_SIZE] = [0x5a; SALT_SIZE];

    /// Deterministic, block-distinct bytes.
    pub(super) fn pattern(offset: u64) -> u8 {
        let x = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x >> 56) as u8 ^ (offset / BLOCK_SIZE) as u8
    }

    pub(super) fn data(blocks: u64) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE).map(pattern).collect()
    }

    /// Data, tree and parameters of a bundle payload of `blocks` data blocks.
    pub(super) fn bundle(blocks: u64) -> (Vec<u8>, VerityParams) {
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
}
