//! Opening a RAUC bundle: trailer, signature, manifest, then access to its images.
//!
//! Layout: `payload || CMS (DER) || u64 big-endian CMS size`. The CMS size is bounded
//! before anything is allocated; the CMS is the only unverified input that is parsed.
//!
//! * `plain`: the CMS is a detached signature over the whole payload (a squashfs). The
//!   payload is hashed as a stream and the signature checked before the squashfs is
//!   opened; `manifest.raucm` is then read from the squashfs, every read checked against
//!   block hashes taken in the same pass ([`super::plain`]).
//! * `verity`: the CMS encapsulates the manifest, which carries the root hash, salt and
//!   size of the dm-verity tree that follows the squashfs. Every block read from the
//!   squashfs afterwards is checked against that tree ([`super::verity`]).
//! * `crypt`: refused as not supported yet.
//!
//! Images are streamed out of the squashfs ([`RaucBundle::with_image_reader`]); memory
//! does not grow with the image size.

use std::io::{self, Read};

use sha2::Digest;

use super::cms::{self, SignedData, Signer};
use super::manifest::{BundleFormat, RaucImage, RaucManifest};
use super::plain::{hash_payload, PlainPayload};
use super::verity::VerifiedSource;
use super::x509::{TrustStore, VerifyOptions};
use flipslot_format::source::ByteSource;
use flipslot_format::Sha256Digest;
use squashfs::{read_file_named, with_file, Payload};

mod kind;
mod squashfs;

pub use kind::BundleKind;

/// Length of the trailer holding the CMS size.
pub const TRAILER_LEN: u64 = 8;
/// Largest CMS blob accepted (certificates plus, for verity bundles, the manifest).
pub const MAX_CMS_LEN: u64 = 1 << 20;
/// Largest `manifest.raucm` read from a plain bundle's squashfs.
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;
/// The squashfs magic (`hsqs`) a RAUC bundle starts with.
pub const SQUASHFS_MAGIC: [u8; 4] = *b"hsqs";

/// Why a RAUC bundle was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaucBundleError {
    /// Reading the source failed.
    #[error("{what}: cannot read {part}")]
    Io {
        /// The bundle.
        what: String,
        /// Which part was being read.
        part: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The trailer or the sizes it implies are impossible.
    #[error("{what}: {reason}")]
    Layout {
        /// The bundle.
        what: String,
        /// What is wrong, with offsets.
        reason: String,
    },
    /// The signature did not verify (or could not be parsed).
    #[error("{what}: signature rejected")]
    Signature {
        /// The bundle.
        what: String,
        /// The CMS/X.509 error.
        source: cms::CmsError,
    },
    /// The bundle format is not allowed by the configuration or not supported.
    #[error("{what}: {reason}")]
    Format {
        /// The bundle.
        what: String,
        /// What is not allowed.
        reason: String,
    },
    /// The (verified) manifest is not acceptable.
    #[error("{what}")]
    Manifest {
        /// The bundle.
        what: String,
        /// The manifest error.
        source: super::manifest::ManifestError,
    },
    /// The squashfs could not be read or lacks a file.
    #[error("{what}: squashfs: {reason}")]
    Squashfs {
        /// The bundle.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The hash tree does not match (verity bundles).
    #[error("{what}")]
    Verity {
        /// The bundle.
        what: String,
        /// The verity error.
        source: super::verity::VerityError,
    },
}

/// Which bundle formats the caller accepts (RAUC's `bundle-formats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedFormats {
    /// `plain` bundles.
    pub plain: bool,
    /// `verity` bundles.
    pub verity: bool,
}

impl Default for AllowedFormats {
    fn default() -> Self {
        AllowedFormats {
            plain: true,
            verity: true,
        }
    }
}

/// Whether `head` (the first bytes of a file) looks like a RAUC bundle (its payload is a
/// squashfs). An encrypted (crypt) bundle does not: callers may also go by the name
/// (`.raucb`) when the bytes are not a flipslot bundle either ([`BundleKind::detect`]).
pub fn looks_like_rauc(head: &[u8]) -> bool {
    head.starts_with(&SQUASHFS_MAGIC)
}

/// A RAUC bundle whose signature (and, for verity, hash tree root) has been verified.
pub struct RaucBundle<S: ByteSource> {
    what: String,
    payload: Payload<S>,
    manifest: RaucManifest,
    manifest_sha256: Sha256Digest,
    signer: Signer,
    bundle_size: u64,
    cms_size: u64,
}

impl<S: ByteSource> std::fmt::Debug for RaucBundle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaucBundle")
            .field("what", &self.what)
            .field("format", &self.manifest.format)
            .finish_non_exhaustive()
    }
}

impl<S: ByteSource + Send> RaucBundle<S> {
    /// Reads the trailer and the CMS, verifies the signature against `store` at `now`
    /// (seconds since the epoch), parses the verified manifest and, for verity bundles,
    /// checks the hash tree's geometry. `progress(done, total)` follows the payload hash
    /// of plain bundles.
    pub fn open(
        mut source: S,
        store: &TrustStore,
        opts: &VerifyOptions,
        allowed: AllowedFormats,
        now: i64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RaucBundle<S>, RaucBundleError> {
        let what = source.describe();
        let io_err = |part: &str, source: io::Error| RaucBundleError::Io {
            what: what.clone(),
            part: part.to_string(),
            source,
        };
        let layout = |reason: String| RaucBundleError::Layout {
            what: what.clone(),
            reason,
        };
        let bundle_size = source
            .size()
            .ok_or_else(|| layout("the size of the bundle is unknown".into()))?;
        if bundle_size < TRAILER_LEN + 4096 {
            return Err(layout(format!(
                "{bundle_size} bytes is too short for a RAUC bundle"
            )));
        }
        let mut trailer = [0u8; 8];
        source
            .read_exact_at(bundle_size - TRAILER_LEN, &mut trailer)
            .map_err(|e| io_err("the trailer", e))?;
        let cms_size = u64::from_be_bytes(trailer);
        if cms_size == 0 || cms_size > MAX_CMS_LEN || cms_size > bundle_size - TRAILER_LEN - 4096 {
            return Err(layout(format!(
                "the trailer at offset {} gives a signature size of {cms_size} bytes, \
                 outside 1..={MAX_CMS_LEN} and the bundle's {bundle_size} bytes \
                 (truncated or not a RAUC bundle)",
                bundle_size - TRAILER_LEN
            )));
        }
        let payload_size = bundle_size - TRAILER_LEN - cms_size;
        let mut der = vec![0u8; cms_size as usize];
        source
            .read_exact_at(payload_size, &mut der)
            .map_err(|e| io_err("the signature", e))?;
        let sig_err = |source| RaucBundleError::Signature {
            what: what.clone(),
            source,
        };
        if is_enveloped(&der) {
            return Err(RaucBundleError::Format {
                what: what.clone(),
                reason: "it is a crypt bundle (encrypted); flipslot cannot install crypt \
                         bundles yet"
                    .into(),
            });
        }
        let mut head = [0u8; 4];
        source
            .read_exact_at(0, &mut head)
            .map_err(|e| io_err("the squashfs magic", e))?;
        let not_squashfs = || {
            layout("it does not start with a squashfs superblock (hsqs): not a RAUC bundle".into())
        };
        let sd = SignedData::from_der(&der).map_err(sig_err)?;
        let format_err = |reason: String| RaucBundleError::Format {
            what: what.clone(),
            reason,
        };

        if sd.is_detached() {
            if !looks_like_rauc(&head) {
                return Err(not_squashfs());
            }
            if !allowed.plain {
                return Err(format_err(
                    "it is a plain bundle, and bundle-formats does not allow plain".into(),
                ));
            }
            let alg = sd.digest_algorithm().map_err(sig_err)?;
            let (digest, blocks) = hash_payload(&mut source, payload_size, alg, progress)
                .map_err(|e| io_err("the payload", e))?;
            let signer = sd
                .verify_detached(&digest, store, opts, now)
                .map_err(sig_err)?;
            let mut payload = Payload::Plain(PlainPayload::new(source, payload_size, blocks));
            let text = read_file_named(&mut payload, "manifest.raucm", MAX_MANIFEST_LEN).map_err(
                |reason| RaucBundleError::Squashfs {
                    what: what.clone(),
                    reason,
                },
            )?;
            let manifest = parse_manifest(&what, &text)?;
            if manifest.format != BundleFormat::Plain {
                return Err(format_err(format!(
                    "its signature is detached (plain) but its manifest says format={}",
                    manifest.format.as_str()
                )));
            }
            Ok(RaucBundle {
                manifest_sha256: Sha256Digest(sha2::Sha256::digest(&text).into()),
                what,
                payload,
                manifest,
                signer,
                bundle_size,
                cms_size,
            })
        } else {
            if !allowed.verity {
                return Err(format_err(
                    "it is a verity bundle, and bundle-formats does not allow verity".into(),
                ));
            }
            let (text, signer) = sd.verify_attached(store, opts, now).map_err(sig_err)?;
            if text.len() as u64 > MAX_MANIFEST_LEN {
                return Err(layout("the signed manifest is larger than 1 MiB".into()));
            }
            let manifest = parse_manifest(&what, &text)?;
            let params = match (manifest.format, &manifest.verity) {
                (BundleFormat::Verity, Some(_)) if !looks_like_rauc(&head) => {
                    return Err(not_squashfs())
                }
                (BundleFormat::Verity, Some(p)) => p.clone(),
                (BundleFormat::Crypt, _) => {
                    return Err(format_err(
                        "it is a crypt bundle; flipslot cannot install crypt bundles yet".into(),
                    ))
                }
                (f, _) => {
                    return Err(format_err(format!(
                        "its manifest is inside the signature (verity layout) but says format={}",
                        f.as_str()
                    )))
                }
            };
            if params.tree_size >= payload_size {
                return Err(layout(format!(
                    "verity-size {} does not fit the {payload_size}-byte payload",
                    params.tree_size
                )));
            }
            let data_size = payload_size - params.tree_size;
            let verity_err = |source| RaucBundleError::Verity {
                what: what.clone(),
                source,
            };
            let salt: [u8; 32] = params.salt.as_slice().try_into().map_err(|_| {
                format_err(format!(
                    "verity-salt has {} bytes; RAUC bundles use 32",
                    params.salt.len()
                ))
            })?;
            let vp = super::verity::VerityParams::new(
                params.root_hash,
                salt,
                data_size,
                params.tree_size,
            )
            .map_err(verity_err)?;
            let verified = VerifiedSource::new(source, vp).map_err(verity_err)?;
            Ok(RaucBundle {
                manifest_sha256: Sha256Digest(sha2::Sha256::digest(&text).into()),
                what,
                payload: Payload::Verity(Box::new(verified)),
                manifest,
                signer,
                bundle_size,
                cms_size,
            })
        }
    }
}

/// Whether the CMS blob is EnvelopedData (a crypt bundle) rather than SignedData.
fn is_enveloped(der: &[u8]) -> bool {
    use der::Decode;
    const ID_ENVELOPED_DATA: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
    ::cms::content_info::ContentInfo::from_der(der)
        .is_ok_and(|ci| ci.content_type == ID_ENVELOPED_DATA)
}

fn parse_manifest(what: &str, text: &[u8]) -> Result<RaucManifest, RaucBundleError> {
    let text = std::str::from_utf8(text).map_err(|_| RaucBundleError::Layout {
        what: what.to_string(),
        reason: "manifest.raucm is not UTF-8 text".into(),
    })?;
    RaucManifest::parse(text).map_err(|source| RaucBundleError::Manifest {
        what: what.to_string(),
        source,
    })
}

impl<S: ByteSource + Send> RaucBundle<S> {
    /// The verified manifest.
    pub fn manifest(&self) -> &RaucManifest {
        &self.manifest
    }

    /// SHA-256 of the manifest text (the bundle's identity in status records).
    pub fn manifest_sha256(&self) -> Sha256Digest {
        self.manifest_sha256
    }

    /// Who signed it.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The bundle's name for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Total bundle size, and the size of its CMS signature.
    pub fn sizes(&self) -> (u64, u64) {
        (self.bundle_size, self.cms_size)
    }

    /// Streams image `index` out of the squashfs: `f` gets a reader of exactly the
    /// image's bytes. Every payload byte the squashfs reader sees is checked first: for
    /// verity bundles against the hash tree (a window of blocks at a time on two threads
    /// when reads are sequential), for plain bundles against the block hashes taken with
    /// the signature. The manifest's SHA-256 of the image is not computed here
    /// ([`RaucBundle::verify_images`] does that).
    pub fn with_image_reader<T>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut dyn Read) -> Result<T, String>,
    ) -> Result<T, RaucBundleError> {
        let img: RaucImage =
            self.manifest
                .images
                .get(index)
                .cloned()
                .ok_or_else(|| RaucBundleError::Squashfs {
                    what: self.what.clone(),
                    reason: format!("the manifest has no image {index}"),
                })?;
        let what = self.what.clone();
        with_file(&mut self.payload, &img.filename, |r, size| {
            if size != img.size {
                return Err(format!(
                    "{} is {size} bytes, but the manifest says {}",
                    img.filename, img.size
                ));
            }
            f(&mut r.take(size))
        })
        .map_err(|reason| RaucBundleError::Squashfs { what, reason })
    }

    /// Checks the whole payload: for verity bundles every data block against the hash tree
    /// (and so every hash block against the signed root); plain bundles were already
    /// hashed whole by [`RaucBundle::open`]. For tools that check a bundle without
    /// installing it (an install checks each block as it is written instead).
    /// `progress(done, total)` counts payload bytes.
    pub fn verify_payload(
        &mut self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), RaucBundleError> {
        let Payload::Verity(v) = &mut self.payload else {
            return Ok(());
        };
        const STEP: u64 = 1 << 20;
        let total = v.params().geometry().data_size();
        let mut buf = vec![0u8; STEP as usize];
        let mut off = 0u64;
        while off < total {
            let n = (total - off).min(STEP) as usize;
            v.read_verified(off, &mut buf[..n])
                .map_err(|source| RaucBundleError::Verity {
                    what: self.what.clone(),
                    source,
                })?;
            off += n as u64;
            progress(off, total);
        }
        Ok(())
    }

    /// Whether this is a verity bundle (its blocks are checked as they are read).
    pub fn is_verity(&self) -> bool {
        matches!(self.payload, Payload::Verity(_))
    }

    /// Reads every image and checks its size and SHA-256 against the manifest (and, for
    /// verity bundles, each block against the tree on the way). `progress(done, total)`
    /// counts image bytes.
    pub fn verify_images(
        &mut self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), RaucBundleError> {
        let total: u64 = self.manifest.images.iter().map(|i| i.size).sum();
        let mut done = 0u64;
        for i in 0..self.manifest.images.len() {
            let img = self.manifest.images[i].clone();
            self.with_image_reader(i, |r| {
                let mut h = sha2::Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = r
                        .read(&mut buf)
                        .map_err(|e| format!("cannot read {}: {e}", img.filename))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    done += n as u64;
                    progress(done, total);
                }
                let got = Sha256Digest(h.finalize().into());
                if got != img.sha256 {
                    return Err(format!(
                        "{} has sha256 {}, but the manifest says {}",
                        img.filename,
                        got.to_hex(),
                        img.sha256.to_hex()
                    ));
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// RAUC 1.8's `rauc info --output-format=json` object for a manifest.
pub fn info_json(m: &RaucManifest) -> serde_json::Value {
    serde_json::json!({
        "compatible": m.compatible,
        "version": m.version,
        "description": m.description,
        "build": m.build,
        "hooks": [],
        "images": m.images.iter().map(|i| serde_json::json!({
            i.class.clone(): {
                "variant": null,
                "filename": i.filename,
                "checksum": i.sha256.to_hex(),
                "size": i.size,
                "hooks": [],
                "adaptive": i.adaptive,
            }
        })).collect::<Vec<_>>(),
    })
}
