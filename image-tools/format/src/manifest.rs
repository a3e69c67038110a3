//! The signed manifest: what a bundle contains and how its payload is laid out.
//!
//! The manifest is JSON. It is parsed only after its signature has been verified, and
//! [`Manifest::validate`] then checks every size and offset against hard limits, so that
//! code which walks the chunk table can trust its arithmetic.

use crate::digest::{Blake3Digest, Sha256Digest};
use crate::error::BundleError;
use serde::{Deserialize, Serialize};

/// Manifest format 1: chunk hashes are SHA-256 (`sha256`, `stored_sha256`) and the
/// manifest has no `chunk_hash` field. Written for `ChunkHash::Sha256`, so that every
/// flipslot release reads it.
pub const MANIFEST_FORMAT_V1: u32 = 1;
/// Manifest format 2: the manifest names its chunk hash in `chunk_hash`; chunks carry the
/// digests of that algorithm only. Written for `ChunkHash::Blake3` (the default).
pub const MANIFEST_FORMAT_V2: u32 = 2;

pub use crate::digest::ChunkHash;

impl ChunkHash {
    /// The manifest format a builder writes for this chunk hash: 1 for SHA-256 (readable
    /// by every flipslot release), 2 for BLAKE3.
    pub fn manifest_format(self) -> u32 {
        match self {
            ChunkHash::Sha256 => MANIFEST_FORMAT_V1,
            ChunkHash::Blake3 => MANIFEST_FORMAT_V2,
        }
    }
}

/// Most images in one bundle.
pub const MAX_IMAGES: usize = 64;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// Largest chunk size (bounds every buffer a reader allocates).
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Whether `size` is an acceptable chunk size: a multiple of [`MIN_CHUNK_SIZE`] between
/// [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`] (the builder and the reader share this rule).
pub(crate) fn valid_chunk_size(size: u32) -> bool {
    (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) && size % MIN_CHUNK_SIZE == 0
}

/// Default chunk size.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Block size of the optional block-hash index.
pub const BLOCK_INDEX_BLOCK_SIZE: u32 = 4096;

/// How a chunk is stored in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// Each chunk compressed on its own with zstd.
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression {other:?} (expected none or zstd)"
            )),
        }
    }
}

/// The manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format number: 1 (SHA-256 chunks) or 2 (`chunk_hash` named).
    pub format: u32,
    /// The system kind this bundle is for; must equal the device's `compatible`.
    pub compatible: String,
    /// The release version (semver).
    pub version: semver::Version,
    /// Build time, seconds since the Unix epoch (`SOURCE_DATE_EPOCH` when set).
    pub build_time: u64,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Total payload length in bytes.
    pub payload_size: u64,
    /// The chunk hash (format 2 only; format 1 means SHA-256). Read it through
    /// [`Manifest::chunk_hash`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_hash: Option<ChunkHash>,
    /// The images, in payload order.
    pub images: Vec<Image>,
}

/// One slot image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Slot class this image is written to, e.g. `rootfs`.
    pub class: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// SHA-256 of the whole uncompressed image, whatever the chunk hash: what `status`
    /// shows and `sha256sum` of the slot's first `size` bytes gives.
    pub sha256: Sha256Digest,
    /// Uncompressed size of every chunk but the last.
    pub chunk_size: u32,
    /// How chunks are stored.
    pub compression: Compression,
    /// The chunk table, in image order.
    pub chunks: Vec<Chunk>,
    /// Optional index of 4 KiB block hashes, for delta updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_index: Option<BlockIndex>,
}

/// One chunk of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Offset of the stored bytes, relative to the payload start.
    pub offset: u64,
    /// Length of the stored bytes.
    pub stored_size: u64,
    /// SHA-256 of the uncompressed chunk (what ends up on the slot), when the chunk hash
    /// is SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    /// SHA-256 of the stored bytes, when the chunk hash is SHA-256 and the chunk is
    /// compressed (checked before decompressing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<Sha256Digest>,
    /// BLAKE3 of the uncompressed chunk, when the chunk hash is BLAKE3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Blake3Digest>,
    /// BLAKE3 of the stored bytes, when the chunk hash is BLAKE3 and the chunk is
    /// compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_blake3: Option<Blake3Digest>,
}

impl Chunk {
    /// A chunk entry hashed with `alg`: `raw` is the uncompressed chunk, `stored` the
    /// compressed bytes when they differ.
    pub fn hashed(alg: ChunkHash, offset: u64, raw: &[u8], stored: Option<&[u8]>) -> Chunk {
        let stored_size = stored.map_or(raw.len(), <[u8]>::len) as u64;
        let mut c = Chunk {
            offset,
            stored_size,
            sha256: None,
            stored_sha256: None,
            blake3: None,
            stored_blake3: None,
        };
        match alg {
            ChunkHash::Sha256 => {
                c.sha256 = Some(Sha256Digest::of(raw));
                c.stored_sha256 = stored.map(Sha256Digest::of);
            }
            ChunkHash::Blake3 => {
                c.blake3 = Some(Blake3Digest::of(raw));
                c.stored_blake3 = stored.map(Blake3Digest::of);
            }
        }
        c
    }

    /// Whether `raw` hashes, with `alg`, to this chunk's signed hash of its uncompressed
    /// bytes. False when the chunk has no hash of that algorithm.
    pub fn matches(&self, alg: ChunkHash, raw: &[u8]) -> bool {
        match alg {
            ChunkHash::Sha256 => self.sha256 == Some(Sha256Digest::of(raw)),
            ChunkHash::Blake3 => self.blake3 == Some(Blake3Digest::of(raw)),
        }
    }

    /// Whether `stored` hashes, with `alg`, to this chunk's signed hash of its stored
    /// (compressed) bytes. False when the chunk has none.
    pub fn stored_matches(&self, alg: ChunkHash, stored: &[u8]) -> bool {
        match alg {
            ChunkHash::Sha256 => self.stored_sha256 == Some(Sha256Digest::of(stored)),
            ChunkHash::Blake3 => self.stored_blake3 == Some(Blake3Digest::of(stored)),
        }
    }

    /// The signed hash of the uncompressed chunk as hex, with its algorithm's name.
    pub fn hash_hex(&self) -> Option<(ChunkHash, String)> {
        match (&self.sha256, &self.blake3) {
            (Some(d), _) => Some((ChunkHash::Sha256, d.to_hex())),
            (None, Some(d)) => Some((ChunkHash::Blake3, d.to_hex())),
            (None, None) => None,
        }
    }

    /// Which hashes the chunk carries, as (uncompressed, stored) per algorithm.
    fn carries(&self, alg: ChunkHash) -> (bool, bool) {
        match alg {
            ChunkHash::Sha256 => (self.sha256.is_some(), self.stored_sha256.is_some()),
            ChunkHash::Blake3 => (self.blake3.is_some(), self.stored_blake3.is_some()),
        }
    }
}

/// The block-hash index: SHA-256 of every 4 KiB block of the uncompressed image,
/// concatenated (32 bytes per block, the last block zero-padded before hashing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockIndex {
    /// Block size, 4096.
    pub block_size: u32,
    /// Offset relative to the payload start.
    pub offset: u64,
    /// Length in bytes (32 × number of blocks).
    pub size: u64,
    /// SHA-256 of the index bytes.
    pub sha256: Sha256Digest,
}

impl Image {
    /// Uncompressed length of chunk `i`.
    pub fn chunk_len(&self, i: usize) -> u64 {
        let start = i as u64 * u64::from(self.chunk_size);
        self.size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }

    /// Offset of chunk `i` within the image.
    pub fn chunk_image_offset(&self, i: usize) -> u64 {
        i as u64 * u64::from(self.chunk_size)
    }

    /// Number of chunks an image of this size and chunk size has.
    pub fn expected_chunks(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size.max(1)))
    }
}

/// Most bytes a zstd frame of `raw` input bytes may take (zstd's compress bound).
pub fn zstd_bound(raw: u64) -> u64 {
    raw + (raw >> 8) + 512
}

impl Manifest {
    /// The hash every chunk is checked with: `chunk_hash` in format 2, SHA-256 in format 1.
    pub fn chunk_hash(&self) -> ChunkHash {
        self.chunk_hash.unwrap_or(ChunkHash::Sha256)
    }

    /// Serializes the manifest exactly as it is signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses manifest bytes (call only after the signature has been verified) and validates them.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(BundleError::ManifestSyntax)?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every rule the reader relies on. The payload regions (each image's chunks,
    /// then its block index) must follow each other without gaps or overlap, in order,
    /// and add up to `payload_size`, so a single forward pass reads the whole bundle.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |s: String| Err(BundleError::InvalidManifest(s));
        match (self.format, self.chunk_hash) {
            (MANIFEST_FORMAT_V1, None) | (MANIFEST_FORMAT_V2, Some(_)) => {}
            (MANIFEST_FORMAT_V1, Some(h)) => {
                return bad(format!(
                    "a format 1 manifest has no chunk_hash (it names {h}; chunk_hash came with format 2)"
                ))
            }
            (MANIFEST_FORMAT_V2, None) => {
                return bad("a format 2 manifest must name its chunk_hash".into())
            }
            (f, _) => {
                return bad(format!(
                    "unsupported manifest format {f} (this flipslot reads formats 1 and 2)"
                ))
            }
        }
        let alg = self.chunk_hash();
        let other = match alg {
            ChunkHash::Sha256 => ChunkHash::Blake3,
            ChunkHash::Blake3 => ChunkHash::Sha256,
        };
        if !valid_compatible(&self.compatible) {
            return bad(format!(
                "compatible must be 1 to 256 bytes, is {} bytes",
                self.compatible.len()
            ));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 4096) {
            return bad("description is longer than 4096 bytes".into());
        }
        if self.images.is_empty() || self.images.len() > MAX_IMAGES {
            return bad(format!(
                "a bundle holds 1 to {MAX_IMAGES} images, this one {}",
                self.images.len()
            ));
        }
        let mut cursor: u64 = 0;
        for (n, img) in self.images.iter().enumerate() {
            if self.images[..n].iter().any(|o| o.class == img.class) {
                return bad(format!("image {n}: class {:?} appears twice", img.class));
            }
            if !valid_class(&img.class) {
                return bad(format!(
                    "image {n}: class {:?} must be 1 to 64 of [A-Za-z0-9_-]",
                    img.class
                ));
            }
            if !valid_chunk_size(img.chunk_size) {
                return bad(format!(
                    "image {n}: chunk size {} is not a multiple of 4096 between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}",
                    img.chunk_size
                ));
            }
            if img.size == 0 {
                return bad(format!("image {n} ({}) is empty", img.class));
            }
            if img.chunks.len() as u64 != img.expected_chunks() {
                return bad(format!(
                    "image {n} ({}): {} chunks listed, size {} in chunks of {} needs {}",
                    img.class,
                    img.chunks.len(),
                    img.size,
                    img.chunk_size,
                    img.expected_chunks()
                ));
            }
            for (i, c) in img.chunks.iter().enumerate() {
                let raw = img.chunk_len(i);
                if c.offset != cursor {
                    return bad(format!(
                        "image {n} chunk {i}: offset {} where {cursor} was expected",
                        c.offset
                    ));
                }
                let (raw_hash, stored_hash) = c.carries(alg);
                if c.carries(other) != (false, false) {
                    return bad(format!(
                        "image {n} chunk {i}: has a {other} hash, but the manifest's chunk hash \
                         is {alg} (a manifest uses one chunk hash)"
                    ));
                }
                if !raw_hash {
                    return bad(format!("image {n} chunk {i}: has no {alg} hash"));
                }
                match img.compression {
                    Compression::None => {
                        if c.stored_size != raw {
                            return bad(format!(
                                "image {n} chunk {i}: stored size {} differs from chunk length {raw}",
                                c.stored_size
                            ));
                        }
                        if stored_hash {
                            return bad(format!(
                                "image {n} chunk {i}: stored_{alg} on an uncompressed chunk"
                            ));
                        }
                    }
                    Compression::Zstd => {
                        if c.stored_size == 0 || c.stored_size > zstd_bound(raw) {
                            return bad(format!(
                                "image {n} chunk {i}: stored size {} out of bounds for {raw} bytes",
                                c.stored_size
                            ));
                        }
                        if !stored_hash {
                            return bad(format!(
                                "image {n} chunk {i}: compressed chunk without stored_{alg}"
                            ));
                        }
                    }
                }
                cursor = checked_end(cursor, c.stored_size)?;
            }
            if let Some(bi) = &img.block_index {
                let blocks = img.size.div_ceil(u64::from(BLOCK_INDEX_BLOCK_SIZE));
                if bi.block_size != BLOCK_INDEX_BLOCK_SIZE || bi.size != blocks * 32 {
                    return bad(format!(
                        "image {n}: block index must use 4096-byte blocks and be {} bytes",
                        blocks * 32
                    ));
                }
                if bi.offset != cursor {
                    return bad(format!(
                        "image {n}: block index at offset {} where {cursor} was expected",
                        bi.offset
                    ));
                }
                cursor = checked_end(cursor, bi.size)?;
            }
        }
        if cursor != self.payload_size {
            return bad(format!(
                "payload_size {} but the regions add up to {cursor}",
                self.payload_size
            ));
        }
        Ok(())
    }
}

fn checked_end(a: u64, b: u64) -> Result<u64, BundleError> {
    a.checked_add(b)
        .filter(|&e| e <= 1 << 50)
        .ok_or_else(|| BundleError::InvalidManifest("payload offsets overflow".into()))
}

/// Longest compatible string, in bytes.
pub const MAX_COMPATIBLE_LEN: usize = 256;

/// Whether `s` is a valid compatible string: 1 to [`MAX_COMPATIBLE_LEN`] bytes. The same
/// rule holds wherever a compatible string is signed (manifest, provisioning description).
pub fn valid_compatible(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_COMPATIBLE_LEN
}

/// Whether `s` is a valid slot class name.
pub fn valid_class(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let chunk = |offset, len: u64| Chunk {
            offset,
            stored_size: len,
            sha256: Some(Sha256Digest::default()),
            stored_sha256: None,
            blake3: None,
            stored_blake3: None,
        };
        Manifest {
            format: 1,
            chunk_hash: None,
            compatible: "acme".into(),
            version: semver::Version::new(1, 2, 3),
            build_time: 0,
            description: None,
            payload_size: 10000,
            images: vec![Image {
                class: "rootfs".into(),
                size: 10000,
                sha256: Sha256Digest::default(),
                chunk_size: 4096,
                compression: Compression::None,
                chunks: vec![chunk(0, 4096), chunk(4096, 4096), chunk(8192, 1808)],
                block_index: None,
            }],
        }
    }

    #[test]
    fn sample_is_valid_and_round_trips() {
        let m = sample();
        m.validate().unwrap();
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        assert_eq!(m.images[0].chunk_len(2), 1808);
    }

    #[test]
    fn rules_are_enforced() {
        type Mutation = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("format", Box::new(|m| m.format = 2)),
            ("compatible", Box::new(|m| m.compatible.clear())),
            ("no images", Box::new(|m| m.images.clear())),
            ("class", Box::new(|m| m.images[0].class = "a b".into())),
            ("chunk size", Box::new(|m| m.images[0].chunk_size = 1000)),
            (
                "huge chunk",
                Box::new(|m| m.images[0].chunk_size = u32::MAX),
            ),
            (
                "chunk count",
                Box::new(|m| {
                    m.images[0].chunks.pop();
                }),
            ),
            ("gap", Box::new(|m| m.images[0].chunks[1].offset = 5000)),
            (
                "stored size",
                Box::new(|m| m.images[0].chunks[2].stored_size = 1),
            ),
            ("payload size", Box::new(|m| m.payload_size = 1 << 40)),
            ("huge size", Box::new(|m| m.images[0].size = u64::MAX)),
            (
                "duplicate class",
                Box::new(|m| {
                    let dup = m.images[0].clone();
                    m.images.push(dup);
                }),
            ),
            (
                "stored hash on raw chunk",
                Box::new(|m| m.images[0].chunks[0].stored_sha256 = Some(Sha256Digest::default())),
            ),
            (
                "zstd without stored hash",
                Box::new(|m| m.images[0].compression = Compression::Zstd),
            ),
        ];
        for (name, f) in cases {
            let mut m = sample();
            f(&mut m);
            assert!(m.validate().is_err(), "{name} accepted");
        }
    }

    /// The sample as a format 2 manifest with BLAKE3 chunk hashes.
    fn sample_blake3() -> Manifest {
        let mut m = sample();
        m.format = 2;
        m.chunk_hash = Some(ChunkHash::Blake3);
        for c in &mut m.images[0].chunks {
            c.sha256 = None;
            c.blake3 = Some(Blake3Digest::default());
        }
        m
    }

    #[test]
    fn chunk_hash_rules() {
        let m = sample_blake3();
        m.validate().unwrap();
        assert_eq!(m.chunk_hash(), ChunkHash::Blake3);
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
        assert_eq!(sample().chunk_hash(), ChunkHash::Sha256);
        // Format 2 may also name sha256.
        let mut m2 = sample();
        m2.format = 2;
        m2.chunk_hash = Some(ChunkHash::Sha256);
        m2.validate().unwrap();

        type Mutation = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "format 1 naming a chunk hash",
                Box::new(|m| m.format = 1),
                "a format 1 manifest has no chunk_hash",
            ),
            (
                "format 2 naming none",
                Box::new(|m| m.chunk_hash = None),
                "must name its chunk_hash",
            ),
            (
                "a sha256 chunk among blake3 ones",
                Box::new(|m| m.images[0].chunks[1].sha256 = Some(Sha256Digest::default())),
                "image 0 chunk 1: has a sha256 hash, but the manifest's chunk hash is blake3",
            ),
            (
                "a chunk with only a sha256",
                Box::new(|m| {
                    let c = &mut m.images[0].chunks[2];
                    c.blake3 = None;
                    c.sha256 = Some(Sha256Digest::default());
                }),
                "image 0 chunk 2: has a sha256 hash",
            ),
            (
                "a chunk without hash",
                Box::new(|m| m.images[0].chunks[0].blake3 = None),
                "image 0 chunk 0: has no blake3 hash",
            ),
            (
                "stored hash on a raw chunk",
                Box::new(|m| m.images[0].chunks[0].stored_blake3 = Some(Blake3Digest::default())),
                "stored_blake3 on an uncompressed chunk",
            ),
            (
                "format 3",
                Box::new(|m| m.format = 3),
                "unsupported manifest format 3",
            ),
        ];
        for (name, f, want) in cases {
            let mut m = sample_blake3();
            f(&mut m);
            let e = m.validate().expect_err(name).to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
        // A blake3 hash in a format 1 manifest.
        let mut m = sample();
        m.images[0].chunks[0].blake3 = Some(Blake3Digest::default());
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("has a blake3 hash, but the manifest's chunk hash is sha256"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_chunk_hash_is_refused_by_name() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample_blake3().to_bytes()).unwrap();
        v["chunk_hash"] = serde_json::json!("md5");
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert!(
            cause
                .as_deref()
                .is_some_and(|c| c.contains("md5") && c.contains("blake3")),
            "{e}: {cause:?}"
        );
        assert_eq!(
            "md5".parse::<ChunkHash>().unwrap_err(),
            "unknown chunk hash \"md5\" (expected blake3 or sha256)"
        );
    }

    #[test]
    fn a_format_1_manifest_serializes_as_before() {
        // No chunk_hash and no blake3 fields: the bytes older releases signed and read.
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        assert!(
            !text.contains("chunk_hash") && !text.contains("blake3"),
            "{text}"
        );
    }

    #[test]
    fn compatible_limit_counts_bytes() {
        let mut m = sample();
        // 128 characters of two bytes each: at the limit.
        m.compatible = "\u{e4}".repeat(128);
        m.validate().unwrap();
        m.compatible.push('a');
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "invalid manifest: compatible must be 1 to 256 bytes, is 257 bytes"
        );
        m.compatible.clear();
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "invalid manifest: compatible must be 1 to 256 bytes, is 0 bytes"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(Manifest::parse(&serde_json::to_vec(&v).unwrap()).is_err());
    }
}
