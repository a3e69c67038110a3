//! The error type of bundle reading, verification and building.

use crate::keyid::KeyId;
use std::path::PathBuf;

/// Everything that can go wrong with a bundle. Messages name the offset, image, chunk
/// or key they are about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// An I/O error while reading or writing `what`; the I/O error is the source.
    #[error("{what}")]
    Io {
        /// What was being read or written (a path, an offset).
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle ends before a region it declares.
    #[error(
        "bundle is truncated: {what} needs bytes up to offset {needed}, but the bundle has {len}"
    )]
    Truncated {
        /// The region that does not fit.
        what: String,
        /// The end offset it needs.
        needed: u64,
        /// The bundle's length.
        len: u64,
    },
    /// The bundle is longer than its manifest says.
    #[error(
        "bundle has {extra} unexpected trailing bytes after the payload (ends at offset {end})"
    )]
    TrailingData {
        /// Where the payload ends.
        end: u64,
        /// How many bytes follow.
        extra: u64,
    },
    /// Not a flipslot bundle.
    #[error("not a flipslot bundle (bad magic at offset 0)")]
    BadMagic,
    /// A bundle of a format version this library does not read.
    #[error("unsupported bundle format version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// A header field holds a value that is not allowed.
    #[error("invalid bundle header: {field} = {value}")]
    HeaderField {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Bytes the format reserves (they must be zero) are not zero.
    #[error("invalid bundle header: {field} must be zero, found {found}")]
    Reserved {
        /// Which bytes, e.g. `reserved byte at offset 50`.
        field: String,
        /// What they hold, in hex.
        found: String,
    },
    /// The manifest length is zero or above the limit.
    #[error("manifest length {len} is out of bounds (1..={max})")]
    ManifestSize {
        /// The length in the header.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// More signature entries than allowed.
    #[error("bundle declares {count} signatures, at most {max} are allowed")]
    TooManySignatures {
        /// The count in the header.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// A signature entry names an algorithm this library does not know.
    #[error("signature {index} uses unsupported algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// The entry's index.
        index: u32,
        /// The algorithm byte.
        algorithm: u8,
    },
    /// The bundle carries no signature at all.
    #[error("bundle is not signed")]
    Unsigned,
    /// A signature by a trusted key does not match the manifest: tampering or corruption.
    #[error(
        "signature by trusted key {key_id} does not verify: the manifest or signature was modified"
    )]
    BadSignature {
        /// The signer.
        key_id: KeyId,
    },
    /// Fewer trusted signatures than the policy requires.
    #[error("bundle has {trusted} valid signature(s) by trusted keys, {required} required{}", crate::keyid::untrusted_note(.untrusted))]
    NotEnoughSignatures {
        /// Valid signatures by distinct trusted keys.
        trusted: u32,
        /// The policy's threshold.
        required: u32,
        /// Key ids of signatures by keys not in the keyring.
        untrusted: Vec<KeyId>,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest cannot be parsed")]
    ManifestSyntax(#[source] serde_json::Error),
    /// The manifest parsed but breaks a rule.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// Non-zero bytes in the padding before the payload.
    #[error("non-zero padding byte at offset {offset} before the payload")]
    Padding {
        /// The offending offset.
        offset: u64,
    },
    /// A chunk's bytes do not match the hash in the signed manifest.
    #[error("image {image} ({class}) chunk {chunk} at bundle offset {offset}: {alg} mismatch, the payload was modified or corrupted")]
    ChunkHash {
        /// The manifest's chunk hash.
        alg: crate::digest::ChunkHash,
        /// Image index.
        image: usize,
        /// Image class.
        class: String,
        /// Chunk index.
        chunk: usize,
        /// Absolute bundle offset of the chunk.
        offset: u64,
    },
    /// A chunk cannot be decompressed to its declared size.
    #[error("image {image} chunk {chunk}: decompression failed: {reason}")]
    Decompress {
        /// Image index.
        image: usize,
        /// Chunk index.
        chunk: usize,
        /// What went wrong.
        reason: String,
    },
    /// A whole region (image, block index) does not match its hash.
    #[error("{what}: sha256 mismatch (expected {expected}, got {actual})")]
    RegionHash {
        /// The region.
        what: String,
        /// Hash in the manifest.
        expected: String,
        /// Hash computed.
        actual: String,
    },
    /// A key file or keyring problem.
    #[error("{path}: {reason}")]
    Key {
        /// The key file or keyring directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A build input is not acceptable.
    #[error("{0}")]
    Build(String),
}

impl BundleError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BundleError::Io {
            what: what.into(),
            source,
        }
    }
}
