//! Writing bundles: chunk, hash, optionally compress and index image files, then write
//! header, manifest, signatures and payload. Reproducible: the same inputs, options and
//! keys give byte-identical output. Also adds or replaces signatures on existing bundles.

use crate::digest::Sha256Digest;
use crate::error::BundleError;
use crate::format::{self, Header, SignatureEntry, HEADER_LEN};
use crate::keys::key_id;
use crate::manifest::{
    valid_chunk_size, BlockIndex, Chunk, ChunkHash, Compression, Image, Manifest,
    BLOCK_INDEX_BLOCK_SIZE, MANIFEST_FORMAT_V2, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
use crate::reader::Bundle;
use crate::source::ByteSource;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// One image to put in a bundle.
#[derive(Clone, Debug)]
pub struct ImageInput {
    /// Slot class, e.g. `rootfs`.
    pub class: String,
    /// The image file.
    pub path: PathBuf,
}

/// Everything a build needs besides images and keys.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The `compatible` string.
    pub compatible: String,
    /// Release version.
    pub version: semver::Version,
    /// Build time (seconds since the epoch).
    pub build_time: u64,
    /// Free text.
    pub description: Option<String>,
    /// Uncompressed chunk size.
    pub chunk_size: u32,
    /// Chunk compression.
    pub compression: Compression,
    /// zstd level (when compressing).
    pub zstd_level: i32,
    /// Whether to add a 4 KiB block-hash index per image.
    pub block_index: bool,
    /// The chunk hash: BLAKE3 (manifest format 2, the default) or SHA-256 (format 1,
    /// readable by every flipslot release).
    pub chunk_hash: ChunkHash,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct BuildSummary {
    /// The manifest written.
    pub manifest: Manifest,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: Sha256Digest,
    /// Total bundle length.
    pub bundle_len: u64,
}

/// Progress of a long operation: bytes done of a total.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

fn encode_chunk(
    raw: &[u8],
    compression: Compression,
    level: i32,
) -> Result<Option<Vec<u8>>, BundleError> {
    match compression {
        Compression::None => Ok(None),
        Compression::Zstd => zstd::bulk::compress(raw, level)
            .map(Some)
            .map_err(|e| BundleError::Build(format!("zstd compression failed: {e}"))),
    }
}

fn read_full(f: &mut File, buf: &mut [u8], path: &Path) -> Result<usize, BundleError> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BundleError::io(path.display().to_string(), e)),
        }
    }
    Ok(n)
}

/// Pass 1 over one image: chunk table (with offsets from `cursor`), whole hash, block index.
fn scan_image(
    input: &ImageInput,
    opts: &BuildOptions,
    cursor: &mut u64,
    progress: Progress<'_>,
) -> Result<Image, BundleError> {
    let path = &input.path;
    let mut f = File::open(path).map_err(|e| BundleError::io(path.display().to_string(), e))?;
    let size = f
        .metadata()
        .map_err(|e| BundleError::io(path.display().to_string(), e))?
        .len();
    if size == 0 {
        return Err(BundleError::Build(format!(
            "{}: image is empty",
            path.display()
        )));
    }
    let mut buf = vec![0u8; opts.chunk_size as usize];
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut index = Sha256::new();
    let mut done = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf, path)?;
        if n == 0 {
            break;
        }
        let raw = &buf[..n];
        whole.update(raw);
        if opts.block_index {
            for block in raw.chunks(BLOCK_INDEX_BLOCK_SIZE as usize) {
                index.update(block_hash(block).0);
            }
        }
        let stored = encode_chunk(raw, opts.compression, opts.zstd_level)?;
        let chunk = Chunk::hashed(opts.chunk_hash, *cursor, raw, stored.as_deref());
        *cursor += chunk.stored_size;
        chunks.push(chunk);
        done += n as u64;
        progress("scan", done, size);
    }
    if done != size {
        return Err(BundleError::Build(format!(
            "{}: file changed size while reading ({size} then {done} bytes)",
            path.display()
        )));
    }
    let block_index = if opts.block_index {
        let blocks = size.div_ceil(u64::from(BLOCK_INDEX_BLOCK_SIZE));
        let bi = BlockIndex {
            block_size: BLOCK_INDEX_BLOCK_SIZE,
            offset: *cursor,
            size: blocks * 32,
            sha256: Sha256Digest::from(index),
        };
        *cursor += bi.size;
        Some(bi)
    } else {
        None
    };
    Ok(Image {
        class: input.class.clone(),
        size,
        sha256: Sha256Digest::from(whole),
        chunk_size: opts.chunk_size,
        compression: opts.compression,
        chunks,
        block_index,
    })
}

/// SHA-256 of one index block, zero-padded to the block size.
pub fn block_hash(block: &[u8]) -> Sha256Digest {
    if block.len() == BLOCK_INDEX_BLOCK_SIZE as usize {
        Sha256Digest::of(block)
    } else {
        let mut padded = vec![0u8; BLOCK_INDEX_BLOCK_SIZE as usize];
        padded[..block.len()].copy_from_slice(block);
        Sha256Digest::of(&padded)
    }
}

/// Pass 2 over one image: writes stored chunks (and the block index), checking each
/// against pass 1 so an input that changed in between is caught.
fn write_image(
    input: &ImageInput,
    img: &Image,
    opts: &BuildOptions,
    out: &mut dyn Write,
    progress: Progress<'_>,
) -> Result<(), BundleError> {
    let path = &input.path;
    let changed =
        || BundleError::Build(format!("{}: file changed during the build", path.display()));
    let mut f = File::open(path).map_err(|e| BundleError::io(path.display().to_string(), e))?;
    let mut buf = vec![0u8; opts.chunk_size as usize];
    let mut index = Vec::new();
    let mut done = 0u64;
    for (i, c) in img.chunks.iter().enumerate() {
        let n = read_full(&mut f, &mut buf, path)?;
        let raw = &buf[..n];
        if n as u64 != img.chunk_len(i) || !c.matches(opts.chunk_hash, raw) {
            return Err(changed());
        }
        if img.block_index.is_some() {
            for block in raw.chunks(BLOCK_INDEX_BLOCK_SIZE as usize) {
                index.extend_from_slice(&block_hash(block).0);
            }
        }
        let stored = encode_chunk(raw, opts.compression, opts.zstd_level)?;
        let bytes = stored.as_deref().unwrap_or(raw);
        if bytes.len() as u64 != c.stored_size {
            return Err(changed());
        }
        out.write_all(bytes)
            .map_err(|e| BundleError::io("writing bundle payload", e))?;
        done += n as u64;
        progress("write", done, img.size);
    }
    if let Some(bi) = &img.block_index {
        if Sha256Digest::of(&index) != bi.sha256 {
            return Err(changed());
        }
        out.write_all(&index)
            .map_err(|e| BundleError::io("writing block index", e))?;
    }
    Ok(())
}

/// Encodes header, manifest, signatures and padding: everything before the payload.
pub fn encode_head(manifest_bytes: &[u8], signatures: &[SignatureEntry]) -> Vec<u8> {
    let header = Header {
        manifest_len: manifest_bytes.len() as u64,
        signature_count: signatures.len() as u32,
    };
    let mut head = Vec::with_capacity(header.payload_offset() as usize);
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(manifest_bytes);
    for s in signatures {
        head.extend_from_slice(&s.encode());
    }
    head.resize(header.payload_offset() as usize, 0);
    head
}

/// Signs manifest bytes with each key.
pub fn sign_manifest(manifest_bytes: &[u8], keys: &[SigningKey]) -> Vec<SignatureEntry> {
    let message = format::signed_message(manifest_bytes);
    keys.iter()
        .map(|k| SignatureEntry {
            key_id: key_id(&k.verifying_key()),
            signature: k.sign(&message).to_bytes(),
        })
        .collect()
}

fn check_options(
    opts: &BuildOptions,
    images: &[ImageInput],
    keys: &[SigningKey],
) -> Result<(), BundleError> {
    let bad = |s: String| Err(BundleError::Build(s));
    if images.is_empty() {
        return bad("a bundle needs at least one image".into());
    }
    if !valid_chunk_size(opts.chunk_size) {
        return bad(format!(
            "chunk size {} must be a multiple of 4096 between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}",
            opts.chunk_size
        ));
    }
    if keys.len() > format::MAX_SIGNATURES as usize {
        return bad(format!("at most {} signing keys", format::MAX_SIGNATURES));
    }
    Ok(())
}

/// Builds a bundle into `out` (the caller buffers and places it: the CLI writes it through
/// a temporary file renamed into place). Signing keys may be empty (an unsigned bundle, to
/// be signed later with [`resign`]).
///
/// On error, `out` holds a partial bundle that the caller discards.
pub fn build(
    images: &[ImageInput],
    opts: &BuildOptions,
    keys: &[SigningKey],
    out: &mut dyn Write,
    progress: Progress<'_>,
) -> Result<BuildSummary, BundleError> {
    check_options(opts, images, keys)?;
    let mut cursor = 0u64;
    let mut imgs = Vec::new();
    for input in images {
        imgs.push(scan_image(input, opts, &mut cursor, progress)?);
    }
    let manifest = Manifest {
        format: opts.chunk_hash.manifest_format(),
        compatible: opts.compatible.clone(),
        version: opts.version.clone(),
        build_time: opts.build_time,
        description: opts.description.clone(),
        payload_size: cursor,
        chunk_hash: (opts.chunk_hash.manifest_format() == MANIFEST_FORMAT_V2)
            .then_some(opts.chunk_hash),
        images: imgs,
    };
    manifest.validate()?;
    let manifest_bytes = manifest.to_bytes();
    let signatures = sign_manifest(&manifest_bytes, keys);
    let head = encode_head(&manifest_bytes, &signatures);
    out.write_all(&head)
        .map_err(|e| BundleError::io("writing bundle head", e))?;
    for (input, img) in images.iter().zip(&manifest.images) {
        write_image(input, img, opts, out, progress)?;
    }
    out.flush()
        .map_err(|e| BundleError::io("writing bundle payload", e))?;
    Ok(BuildSummary {
        manifest_sha256: Sha256Digest::of(&manifest_bytes),
        bundle_len: head.len() as u64 + manifest.payload_size,
        manifest,
    })
}

/// How many payload bytes [`resign`] copies at a time.
const COPY_BUF: usize = 1 << 20;

/// Adds signatures (`replace = false`; a key that already signed is signed again) or
/// replaces all of them (`replace = true`): reads the bundle from `src` and writes the
/// re-signed bundle to `out`. The manifest and payload bytes are not changed.
///
/// On error, `out` holds a partial bundle that the caller discards.
pub fn resign<S: ByteSource>(
    src: S,
    keys: &[SigningKey],
    replace: bool,
    out: &mut dyn Write,
) -> Result<Vec<SignatureEntry>, BundleError> {
    if keys.is_empty() {
        return Err(BundleError::Build("no signing key given".into()));
    }
    let mut bundle = Bundle::open_unverified(src)?;
    let new = sign_manifest(bundle.manifest_bytes(), keys);
    let mut signatures: Vec<SignatureEntry> = if replace {
        Vec::new()
    } else {
        bundle
            .signatures()
            .iter()
            .filter(|s| !new.iter().any(|n| n.key_id == s.key_id))
            .copied()
            .collect()
    };
    signatures.extend(new);
    if signatures.len() > format::MAX_SIGNATURES as usize {
        return Err(BundleError::TooManySignatures {
            count: signatures.len() as u32,
            max: format::MAX_SIGNATURES,
        });
    }
    let head = encode_head(bundle.manifest_bytes(), &signatures);
    let old_payload = bundle.payload_offset();
    let payload_len = bundle.manifest().payload_size;
    let what = bundle.source_mut().describe();
    out.write_all(&head)
        .map_err(|e| BundleError::io("writing bundle head", e))?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut copied = 0u64;
    while copied < payload_len {
        let n = (payload_len - copied).min(COPY_BUF as u64) as usize;
        bundle
            .source_mut()
            .read_exact_at(old_payload + copied, &mut buf[..n])
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    BundleError::Truncated {
                        what: "payload".into(),
                        needed: old_payload + payload_len,
                        len: old_payload + copied,
                    }
                } else {
                    BundleError::io(format!("{what}: offset {}", old_payload + copied), e)
                }
            })?;
        out.write_all(&buf[..n])
            .map_err(|e| BundleError::io("writing bundle payload", e))?;
        copied += n as u64;
    }
    out.flush()
        .map_err(|e| BundleError::io("writing bundle payload", e))?;
    Ok(signatures)
}

/// Length of the part of a bundle before its payload, for a manifest of `len` bytes.
pub fn head_len(manifest_len: usize, signatures: usize) -> u64 {
    Header {
        manifest_len: manifest_len as u64,
        signature_count: signatures as u32,
    }
    .payload_offset()
    .max(HEADER_LEN as u64)
}
