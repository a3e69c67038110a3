//! One layer: its blob checked, then streamed through the decompressor and the `tar`
//! crate into the [`Tree`].
//!
//! 1. [`verify`] reads the stored blob once and compares its SHA-256 (and size) with the
//!    manifest's descriptor. A `docker save` layer stored without its digest in its name is
//!    decompressed and compared with its diff ID instead.
//! 2. [`unpack`] reads it again, decompresses it (gzip, zstd or none), and hands each tar
//!    member to the tree; the uncompressed stream is hashed on the way and must match the
//!    diff ID from the (already verified) config, or the build fails.
//!
//! Nothing is buffered but the tar reader's headers, bounded per member by
//! [`super::meter::MAX_MEMBER_HEADERS`]: memory does not grow with the layer.

use super::archive::Store;
use super::image::{Compression, LayerPlan};
use super::meter::{Meter, MAX_MEMBER_HEADERS};
use super::tree::{MemberKind, Tree};
use super::OciError;
use crate::mkfs::attrs::{MAX_XATTR_NAME, MAX_XATTR_VALUE};
use crate::mkfs::FileAttrs;
use flipslot_format::Sha256Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, BufRead, BufReader, Read};

/// The PAX key prefix of an extended attribute (GNU tar, Go's archive/tar, umoci).
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Reads the blob of `layer` and checks it against its digest and size (step 1).
pub(super) fn verify(store: &Store, layer: &LayerPlan, what: &str) -> Result<(), OciError> {
    let (raw, size) = store.open_member(&layer.member)?;
    let read_err = |source| OciError::Io {
        action: "read",
        path: store.path().join(&layer.member),
        source,
    };
    match layer.blob {
        Some((digest, expected_size)) => {
            if let Some(expected) = expected_size.filter(|&s| s != size) {
                return Err(OciError::SizeMismatch {
                    what: what.to_string(),
                    expected,
                    found: size,
                });
            }
            let found = hash(raw).map_err(read_err)?;
            check(what, digest, found)
        }
        None => {
            let found =
                hash(decompress(raw, layer.compression).map_err(read_err)?).map_err(|source| {
                    OciError::Tar {
                        what: what.to_string(),
                        source,
                    }
                })?;
            check(&format!("{what} (uncompressed)"), layer.diff_id, found)
        }
    }
}

fn check(what: &str, expected: Sha256Digest, found: Sha256Digest) -> Result<(), OciError> {
    if expected == found {
        Ok(())
    } else {
        Err(OciError::DigestMismatch {
            what: what.to_string(),
            expected,
            found,
        })
    }
}

fn hash(mut r: impl Read) -> io::Result<Sha256Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h.into());
        }
        h.update(&buf[..n]);
    }
}

/// The uncompressed stream of a blob.
fn decompress<'a>(
    raw: Box<dyn Read + 'a>,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    let mut raw = BufReader::with_capacity(1 << 16, raw);
    let compression = match compression {
        Compression::Sniff => {
            let head = raw.fill_buf()?;
            if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
        c => c,
    };
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw)?),
        Compression::None | Compression::Sniff => Box::new(raw),
    })
}

/// Applies the members of `layer` to `tree` and checks its diff ID (step 2).
pub(super) fn unpack(
    store: &Store,
    layer: &LayerPlan,
    tree: &mut Tree,
    what: &str,
) -> Result<(), OciError> {
    let (raw, _) = store.open_member(&layer.member)?;
    let tar_err = |source: io::Error, meter: &Meter| {
        if meter.exceeded() {
            OciError::TooLarge {
                what: format!("the headers of a member of {what}"),
                size: MAX_MEMBER_HEADERS + 1,
                limit: MAX_MEMBER_HEADERS,
            }
        } else {
            OciError::Tar {
                what: what.to_string(),
                source,
            }
        }
    };
    let meter = Meter::hashing();
    let stream = decompress(raw, layer.compression).map_err(|e| tar_err(e, &meter))?;
    let mut archive = tar::Archive::new(meter.wrap(stream));
    tree.begin_layer();
    {
        let mut entries = archive.entries().map_err(|e| tar_err(e, &meter))?;
        loop {
            meter.limit(MAX_MEMBER_HEADERS);
            let mut entry = match entries.next() {
                None => break,
                Some(e) => e.map_err(|e| tar_err(e, &meter))?,
            };
            meter.unlimit();
            apply(&mut entry, tree)?;
            // Whatever the tree did not read (all of a skipped member) is read here, under
            // no allowance, so the tar reader only ever skips padding.
            io::copy(&mut entry, &mut io::sink()).map_err(|e| tar_err(e, &meter))?;
        }
    }
    meter.unlimit();
    // The diff ID covers the whole stream, trailing blocks included.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| tar_err(e, &meter))?;
    check(
        &format!("{what} (uncompressed)"),
        layer.diff_id,
        Sha256Digest(meter.digest()),
    )
}

/// Hands one tar member to the tree.
fn apply<R: Read>(entry: &mut tar::Entry<'_, R>, tree: &mut Tree) -> Result<(), OciError> {
    let path = entry.path_bytes().into_owned();
    let refuse = |reason: String| OciError::Refused {
        member: String::from_utf8_lossy(&path).into_owned(),
        reason,
    };
    let header = entry.header();
    let t = header.entry_type();
    let link = || -> Result<Vec<u8>, OciError> {
        entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .ok_or_else(|| refuse("it is a link without a target".into()))
    };
    let kind = if t.is_file() || t.is_contiguous() || t.is_gnu_sparse() {
        MemberKind::File
    } else if t.is_dir() {
        MemberKind::Dir
    } else if t.is_symlink() {
        MemberKind::Symlink(link()?)
    } else if t.is_hard_link() {
        MemberKind::HardLink(link()?)
    } else if t.is_character_special() {
        MemberKind::Special("character device")
    } else if t.is_block_special() {
        MemberKind::Special("block device")
    } else if t.is_fifo() {
        MemberKind::Special("FIFO")
    } else if t.is_pax_global_extensions() {
        log::debug!("ignoring a global PAX header");
        return Ok(());
    } else {
        return Err(refuse(format!(
            "its tar entry type {:?} is not supported",
            char::from(t.as_byte())
        )));
    };
    let attrs = member_attrs(entry).map_err(refuse)?;
    tree.add(&path, kind, attrs, entry)
}

/// Owner, mode and extended attributes of a member.
fn member_attrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<FileAttrs, String> {
    let header = entry.header();
    let id = |v: io::Result<u64>, what: &str| -> Result<u32, String> {
        let v = v.map_err(|e| format!("its {what} cannot be read: {e}"))?;
        u32::try_from(v).map_err(|_| format!("its {what} {v} does not fit in 32 bits"))
    };
    // The tar crate has already put PAX uid and gid values into the header.
    let uid = id(header.uid(), "uid")?;
    let gid = id(header.gid(), "gid")?;
    let mode = header
        .mode()
        .map_err(|e| format!("its mode cannot be read: {e}"))?
        & 0o7777;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("its PAX records cannot be read: {e}"))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| format!("a PAX record is malformed: {e}"))?;
            let Some(name) = ext.key_bytes().strip_prefix(XATTR_PREFIX) else {
                continue;
            };
            if name.is_empty() || name.len() > MAX_XATTR_NAME {
                return Err(format!(
                    "extended attribute name {:?} is empty or longer than {MAX_XATTR_NAME} bytes",
                    String::from_utf8_lossy(name)
                ));
            }
            if ext.value_bytes().len() > MAX_XATTR_VALUE {
                return Err(format!(
                    "extended attribute {} is longer than {MAX_XATTR_VALUE} bytes",
                    String::from_utf8_lossy(name)
                ));
            }
            xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(FileAttrs {
        uid,
        gid,
        mode,
        xattrs,
    })
}
