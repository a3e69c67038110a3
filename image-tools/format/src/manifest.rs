//! The signed manifest: what a bundle contains and how its payload is laid out.
//!
//! The manifest is JSON. It is parsed only after its signature has been verified, and
//! [`Manifest::validate`] then checks every size and offset against hard limits, so that
//! code which walks the chunk table can trust its arithmetic.

use crate::digest::Sha256Digest;
use crate::error::BundleError;
use serde::{Deserialize, Serialize};

/// Manifest format number written by this library.
pub const MANIFEST_FORMAT: u32 = 1;
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
    /// Manifest format number, 1.
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
    /// SHA-256 of the whole uncompressed image.
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
    /// SHA-256 of the uncompressed chunk (what ends up on the slot).
    pub sha256: Sha256Digest,
    /// SHA-256 of the stored bytes, present when compressed (checked before decompressing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<Sha256Digest>,
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
        if self.format != MANIFEST_FORMAT {
            return bad(format!("unsupported manifest format {}", self.format));
        }
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
                match img.compression {
                    Compression::None => {
                        if c.stored_size != raw {
                            return bad(format!(
                                "image {n} chunk {i}: stored size {} differs from chunk length {raw}",
                                c.stored_size
                            ));
                        }
                        if c.stored_sha256.is_some() {
                            return bad(format!(
                                "image {n} chunk {i}: stored_sha256 on an uncompressed chunk"
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
                        if c.stored_sha256.is_none() {
                            return bad(format!(
                                "image {n} chunk {i}: compressed chunk without stored_sha256"
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
            sha256: Sha256Digest::default(),
            stored_sha256: None,
        };
        Manifest {
            format: 1,
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
