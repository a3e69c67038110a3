//! Opening a bundle: read the header, verify the signatures over the manifest bytes
//! against a keyring, and only then parse the manifest; then read chunks, each checked
//! against its signed hash before it is handed out.

use crate::digest::Sha256Digest;
use crate::error::BundleError;
use crate::format::{self, Header, SignatureEntry, HEADER_LEN, SIG_ENTRY_LEN};
use crate::keyid::KeyId;
use crate::keys::Keyring;
use crate::manifest::{Chunk, ChunkHash, Compression, Image, Manifest};
use crate::source::ByteSource;
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};
use std::io;

/// Receives verified image data: the offset within the image and the bytes.
pub type ChunkSink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), BundleError> + 'a;

/// What a bundle must show to be trusted.
#[derive(Clone, Copy, Debug)]
pub struct VerifyPolicy {
    /// Valid signatures by distinct trusted keys required (at least 1).
    pub min_signatures: u32,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy { min_signatures: 1 }
    }
}

/// The signatures found on a bundle, as [`Bundle::open`] judged them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureReport {
    /// Keys in the keyring whose signature verified.
    pub trusted: Vec<KeyId>,
    /// Keys not in the keyring (their signatures were not checked).
    pub untrusted: Vec<KeyId>,
}

/// An opened bundle whose manifest is authentic (or, for [`Bundle::open_unverified`],
/// merely well-formed).
#[derive(Debug)]
pub struct Bundle<S> {
    source: S,
    header: Header,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    manifest_sha256: Sha256Digest,
    signatures: Vec<SignatureEntry>,
    report: SignatureReport,
    verified: bool,
}

fn read_at<S: ByteSource>(
    src: &mut S,
    offset: u64,
    buf: &mut [u8],
    what: &str,
) -> Result<(), BundleError> {
    src.read_exact_at(offset, buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            BundleError::Truncated {
                what: what.to_string(),
                needed: offset + buf.len() as u64,
                len: src.size().unwrap_or(offset),
            }
        } else {
            BundleError::io(
                format!("{}: reading {what} at offset {offset}", src.describe()),
                e,
            )
        }
    })
}

/// Reads header, signature entries and manifest bytes, with every length bounded.
fn read_head<S: ByteSource>(
    src: &mut S,
) -> Result<(Header, Vec<SignatureEntry>, Vec<u8>), BundleError> {
    if let Some(len) = src.size() {
        if len < HEADER_LEN as u64 {
            return Err(BundleError::Truncated {
                what: "header".into(),
                needed: HEADER_LEN as u64,
                len,
            });
        }
    }
    let mut hb = [0u8; HEADER_LEN];
    read_at(src, 0, &mut hb, "header")?;
    let header = Header::decode(&hb)?;
    if let Some(len) = src.size() {
        if len < header.payload_offset() {
            return Err(BundleError::Truncated {
                what: "manifest and signatures".into(),
                needed: header.payload_offset(),
                len,
            });
        }
    }
    // Bounded by MAX_MANIFEST_LEN and MAX_SIGNATURES in Header::decode.
    let rest_len = usize::try_from(header.payload_offset() - HEADER_LEN as u64)
        .map_err(|_| BundleError::Build("manifest too large for this platform".into()))?;
    let mut rest = vec![0u8; rest_len];
    read_at(src, HEADER_LEN as u64, &mut rest, "manifest and signatures")?;
    let mlen = header.manifest_len as usize;
    let manifest_bytes = rest[..mlen].to_vec();
    let sig_end = mlen + header.signatures_len() as usize;
    let mut signatures = Vec::with_capacity(header.signature_count as usize);
    for (i, b) in rest[mlen..sig_end].chunks_exact(SIG_ENTRY_LEN).enumerate() {
        signatures.push(SignatureEntry::decode(i as u32, b)?);
    }
    if let Some(p) = rest[sig_end..].iter().position(|&b| b != 0) {
        return Err(BundleError::Padding {
            offset: (HEADER_LEN + sig_end + p) as u64,
        });
    }
    Ok((header, signatures, manifest_bytes))
}

/// Checks the signatures over `manifest_bytes`. A trusted key whose signature fails is an
/// error (the bundle was modified); keys not in the keyring are reported, not trusted.
pub fn verify_signatures(
    manifest_bytes: &[u8],
    signatures: &[SignatureEntry],
    keyring: &Keyring,
    policy: &VerifyPolicy,
) -> Result<SignatureReport, BundleError> {
    if signatures.is_empty() {
        return Err(BundleError::Unsigned);
    }
    let message = format::signed_message(manifest_bytes);
    let mut report = SignatureReport::default();
    for s in signatures {
        match keyring.get(&s.key_id) {
            Some(key) => {
                let sig = Signature::from_bytes(&s.signature);
                key.verify_strict(&message, &sig)
                    .map_err(|_| BundleError::BadSignature { key_id: s.key_id })?;
                if !report.trusted.contains(&s.key_id) {
                    report.trusted.push(s.key_id);
                }
            }
            None => {
                if !report.untrusted.contains(&s.key_id) {
                    report.untrusted.push(s.key_id)
                }
            }
        }
    }
    let required = policy.min_signatures.max(1);
    if (report.trusted.len() as u32) < required {
        return Err(BundleError::NotEnoughSignatures {
            trusted: report.trusted.len() as u32,
            required,
            untrusted: report.untrusted,
        });
    }
    Ok(report)
}

/// Chunk `chunk` of image number `image` (`img`), or an error naming both.
fn chunk_of(img: &Image, image: usize, chunk: usize) -> Result<&Chunk, BundleError> {
    img.chunks
        .get(chunk)
        .ok_or_else(|| BundleError::InvalidManifest(format!("image {image} has no chunk {chunk}")))
}

/// The uncompressed length of chunk `chunk` of `img`, when `out` can hold it.
fn raw_len_within(img: &Image, chunk: usize, out: &[u8]) -> Result<usize, BundleError> {
    let raw_len = img.chunk_len(chunk) as usize;
    if out.len() < raw_len {
        return Err(BundleError::Build(format!(
            "chunk buffer of {} bytes is smaller than chunk {chunk} ({raw_len} bytes)",
            out.len()
        )));
    }
    Ok(raw_len)
}

/// Checks the uncompressed bytes of chunk `chunk` of image number `image` (`img`) against
/// the signed manifest: length and hash (`alg`, the manifest's [`Manifest::chunk_hash`]).
/// `payload_offset` only names the offset in errors.
pub fn check_chunk(
    alg: ChunkHash,
    img: &Image,
    image: usize,
    chunk: usize,
    payload_offset: u64,
    data: &[u8],
) -> Result<(), BundleError> {
    let c = chunk_of(img, image, chunk)?;
    if data.len() as u64 != img.chunk_len(chunk) || !c.matches(alg, data) {
        return Err(BundleError::ChunkHash {
            alg,
            image,
            class: img.class.clone(),
            chunk,
            offset: payload_offset + c.offset,
        });
    }
    Ok(())
}

/// Checks the stored bytes of compressed chunk `chunk` of image number `image` (`img`)
/// against the signed manifest (hash `alg`) BEFORE decompressing them, decompresses them
/// into `out` (at least the chunk's length) and checks the result's length and hash.
/// Returns the chunk's length. `payload_offset` only names the offset in errors.
pub fn decode_chunk(
    alg: ChunkHash,
    img: &Image,
    image: usize,
    chunk: usize,
    payload_offset: u64,
    stored: &[u8],
    out: &mut [u8],
) -> Result<usize, BundleError> {
    let c = chunk_of(img, image, chunk)?;
    let raw_len = raw_len_within(img, chunk, out)?;
    let hash_err = || BundleError::ChunkHash {
        alg,
        image,
        class: img.class.clone(),
        chunk,
        offset: payload_offset + c.offset,
    };
    if stored.len() as u64 != c.stored_size || !c.stored_matches(alg, stored) {
        return Err(hash_err());
    }
    let n = zstd::bulk::decompress_to_buffer(stored, &mut out[..raw_len]).map_err(|e| {
        BundleError::Decompress {
            image,
            chunk,
            reason: e.to_string(),
        }
    })?;
    if n != raw_len || !c.matches(alg, &out[..raw_len]) {
        return Err(hash_err());
    }
    Ok(raw_len)
}

impl<S: ByteSource> Bundle<S> {
    /// Opens a bundle and verifies it: header, then signatures against `keyring`, then the
    /// manifest is parsed and validated, then the total length is checked (when known).
    pub fn open(
        mut source: S,
        keyring: &Keyring,
        policy: &VerifyPolicy,
    ) -> Result<Self, BundleError> {
        let (header, signatures, manifest_bytes) = read_head(&mut source)?;
        let report = verify_signatures(&manifest_bytes, &signatures, keyring, policy)?;
        Self::finish(source, header, signatures, manifest_bytes, report, true)
    }

    /// Opens a bundle WITHOUT checking its signatures (for inspecting untrusted bundles and
    /// for re-signing). The manifest is still bounded and validated.
    pub fn open_unverified(mut source: S) -> Result<Self, BundleError> {
        let (header, signatures, manifest_bytes) = read_head(&mut source)?;
        let report = SignatureReport {
            trusted: Vec::new(),
            untrusted: signatures.iter().map(|s| s.key_id).collect(),
        };
        Self::finish(source, header, signatures, manifest_bytes, report, false)
    }

    fn finish(
        source: S,
        header: Header,
        signatures: Vec<SignatureEntry>,
        manifest_bytes: Vec<u8>,
        report: SignatureReport,
        verified: bool,
    ) -> Result<Self, BundleError> {
        let manifest = Manifest::parse(&manifest_bytes)?;
        let end = header.payload_offset() + manifest.payload_size;
        if let Some(len) = source.size() {
            if len < end {
                return Err(BundleError::Truncated {
                    what: "payload".into(),
                    needed: end,
                    len,
                });
            }
            if len > end {
                return Err(BundleError::TrailingData {
                    end,
                    extra: len - end,
                });
            }
        }
        let manifest_sha256 = Sha256Digest::of(&manifest_bytes);
        Ok(Bundle {
            source,
            header,
            manifest,
            manifest_bytes,
            manifest_sha256,
            signatures,
            report,
            verified,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact signed manifest bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// SHA-256 of the manifest bytes: the bundle's identity.
    pub fn manifest_sha256(&self) -> Sha256Digest {
        self.manifest_sha256
    }

    /// The signature entries as found.
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// Which signers were trusted.
    pub fn signature_report(&self) -> &SignatureReport {
        &self.report
    }

    /// Whether the signatures were verified when opening.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Absolute offset of the payload.
    pub fn payload_offset(&self) -> u64 {
        self.header.payload_offset()
    }

    /// Total bundle length.
    pub fn total_len(&self) -> u64 {
        self.payload_offset() + self.manifest.payload_size
    }

    /// The byte source.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Gives the byte source back.
    pub fn into_source(self) -> S {
        self.source
    }

    /// Reads chunk `chunk` of image `image` into `out` (which must hold at least
    /// `chunk_len` bytes) and returns its length. The stored bytes are hashed and compared
    /// with the signed manifest before anything is decompressed or returned; `scratch`
    /// holds compressed bytes and is reused between calls.
    pub fn read_chunk(
        &mut self,
        image: usize,
        chunk: usize,
        scratch: &mut Vec<u8>,
        out: &mut [u8],
    ) -> Result<usize, BundleError> {
        let payload_offset = self.payload_offset();
        let alg = self.manifest.chunk_hash();
        let img = self.image(image)?;
        let c = chunk_of(img, image, chunk)?;
        let raw_len = raw_len_within(img, chunk, out)?;
        let abs = payload_offset + c.offset;
        let class = img.class.clone();
        let compression = img.compression;
        let want = c.clone();
        let hash_err = || BundleError::ChunkHash {
            alg,
            image,
            class: class.clone(),
            chunk,
            offset: abs,
        };
        let what = format!("image {image} chunk {chunk}");
        match compression {
            Compression::None => {
                read_at(&mut self.source, abs, &mut out[..raw_len], &what)?;
                if !want.matches(alg, &out[..raw_len]) {
                    return Err(hash_err());
                }
            }
            Compression::Zstd => {
                self.read_stored(image, chunk, scratch)?;
                let img = self.image(image)?;
                return decode_chunk(alg, img, image, chunk, payload_offset, scratch, out);
            }
        }
        Ok(raw_len)
    }

    /// Reads chunk `chunk` of an UNCOMPRESSED image into `out` WITHOUT checking it, so
    /// that the check can run on another thread: the caller must pass the bytes through
    /// [`check_chunk`] before using them. Compressed images are refused (their stored bytes
    /// must be checked before they are decompressed: use [`Bundle::read_chunk`]).
    pub fn read_chunk_unchecked(
        &mut self,
        image: usize,
        chunk: usize,
        out: &mut [u8],
    ) -> Result<usize, BundleError> {
        let payload_offset = self.payload_offset();
        let img = self.image(image)?;
        if img.compression != Compression::None {
            return Err(BundleError::InvalidManifest(format!(
                "image {image} is compressed: its chunks must be read with read_chunk"
            )));
        }
        let c = chunk_of(img, image, chunk)?;
        let raw_len = raw_len_within(img, chunk, out)?;
        let abs = payload_offset + c.offset;
        let what = format!("image {image} chunk {chunk}");
        read_at(&mut self.source, abs, &mut out[..raw_len], &what)?;
        Ok(raw_len)
    }

    /// Reads the stored (compressed) bytes of chunk `chunk` of a COMPRESSED image into
    /// `scratch` (resized to them) WITHOUT checking them, so that checking and decompressing
    /// can run on another thread: the caller must pass them through [`decode_chunk`]
    /// before using anything decompressed from them.
    pub fn read_stored(
        &mut self,
        image: usize,
        chunk: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), BundleError> {
        let payload_offset = self.payload_offset();
        let img = self.image(image)?;
        if img.compression == Compression::None {
            return Err(BundleError::InvalidManifest(format!(
                "image {image} is not compressed: read its chunks with read_chunk_unchecked"
            )));
        }
        let c = chunk_of(img, image, chunk)?;
        let abs = payload_offset + c.offset;
        // stored_size is bounded by zstd_bound(chunk_size) in Manifest::validate.
        scratch.resize(c.stored_size as usize, 0);
        read_at(
            &mut self.source,
            abs,
            scratch,
            &format!("image {image} chunk {chunk}"),
        )
    }

    /// Reads and checks the block index of an image, if it has one.
    pub fn read_block_index(&mut self, image: usize) -> Result<Option<Vec<u8>>, BundleError> {
        let payload_offset = self.payload_offset();
        let Some(bi) = self.image(image)?.block_index.clone() else {
            return Ok(None);
        };
        // bi.size is 32 bytes per 4 KiB block: under 1 % of the image size.
        let mut buf = vec![0u8; bi.size as usize];
        read_at(
            &mut self.source,
            payload_offset + bi.offset,
            &mut buf,
            "block index",
        )?;
        let got = Sha256Digest::of(&buf);
        if got != bi.sha256 {
            return Err(BundleError::RegionHash {
                what: format!("image {image} block index"),
                expected: bi.sha256.to_hex(),
                actual: got.to_hex(),
            });
        }
        Ok(Some(buf))
    }

    /// Streams image `image` through `sink`, chunk by chunk, each verified, and checks the
    /// whole-image hash at the end. Memory use is two chunk buffers.
    pub fn stream_image(
        &mut self,
        image: usize,
        sink: &mut ChunkSink<'_>,
    ) -> Result<(), BundleError> {
        let img = self.image(image)?;
        let (n, chunk_size, want) = (img.chunks.len(), img.chunk_size as usize, img.sha256);
        let mut scratch = Vec::new();
        let mut out = vec![0u8; chunk_size];
        let mut whole = Sha256::new();
        let mut pos = 0u64;
        for i in 0..n {
            let len = self.read_chunk(image, i, &mut scratch, &mut out)?;
            whole.update(&out[..len]);
            sink(pos, &out[..len])?;
            pos += len as u64;
        }
        let got = Sha256Digest::from(whole);
        if got != want {
            return Err(BundleError::RegionHash {
                what: format!("image {image}"),
                expected: want.to_hex(),
                actual: got.to_hex(),
            });
        }
        Ok(())
    }

    /// Checks every chunk, every image hash and every block index of the payload.
    /// `progress` receives uncompressed image bytes checked and their total.
    pub fn verify_payload(
        &mut self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), BundleError> {
        // Uncompressed bytes, as counted below (payload_size counts stored bytes, which
        // differ from them when chunks are compressed). No overflow: validate() ties each size
        // to its listed chunks, and a manifest of at most 64 MiB lists well under 2^24 of them.
        let total: u64 = self.manifest.images.iter().map(|i| i.size).sum();
        let mut done = 0u64;
        for i in 0..self.manifest.images.len() {
            self.stream_image(i, &mut |_, data| {
                done += data.len() as u64;
                progress(done.min(total), total);
                Ok(())
            })?;
            self.read_block_index(i)?;
        }
        progress(total, total);
        Ok(())
    }

    fn image(&self, image: usize) -> Result<&Image, BundleError> {
        self.manifest
            .images
            .get(image)
            .ok_or_else(|| BundleError::InvalidManifest(format!("no image {image}")))
    }
}
