//! OCI and Docker images as root filesystems (`flipslot-image build --oci`): one image of
//! an archive is picked and verified, and its layers are unpacked in order into a private
//! directory plus a [`TreeAttrs`] (owners, modes, extended attributes), from which
//! [`crate::mkfs::build_fs_with_attrs`] builds the filesystem without root.
//!
//! # Inputs
//!
//! An OCI image layout (a directory with `oci-layout`, `index.json` and `blobs/`, as
//! `skopeo copy … oci:DIR:TAG`, `umoci` or `docker buildx --output type=oci` write it), a
//! tar archive of one, or `docker save` output (`manifest.json` with `Config`, `RepoTags`
//! and `Layers`, in the legacy layout or the OCI-shaped one Docker 25 writes), as a tar
//! archive or unpacked. A compressed archive is refused (decompress it first); which image
//! of several is taken is the `image` module's business.
//!
//! # Verification order
//!
//! 1. `index.json` or `manifest.json` (at most 4 MiB; they are the root of trust);
//! 2. every manifest and config: size and SHA-256 against the descriptor (or the digest
//!    in a `docker save` config's name) before it is parsed, at most 4 MiB each;
//! 3. each layer blob, read once and checked against its digest (or, for `docker save`
//!    layers stored without one, its uncompressed content against the diff ID), before it
//!    is decompressed or unpacked;
//! 4. the uncompressed tar stream while it is unpacked: its SHA-256 must be the diff ID of
//!    the verified config.
//!
//! # What is kept, refused and skipped
//!
//! The `tree` module has the rules: regular files, directories, symlinks and hard links
//! are kept with their uid, gid, mode (setuid, setgid and sticky bits included) and
//! extended attributes (PAX `SCHILY.xattr.*` records: `security.capability` and the rest);
//! whiteouts and opaque directories are applied and never appear in the result. A member
//! with `..` or an absolute path, going through a symlink, or hard-linked to something that
//! is not a file of the image is refused and fails the build. Device nodes and FIFOs are
//! skipped and reported ([`Unpacked::skipped`]). Times are not kept: the filesystem builder
//! gives every inode the build time.
//!
//! # Memory
//!
//! Layers are streamed: the tar reader buffers at most one member's headers
//! (1 MiB). The table of paths grows with the number of entries in
//! the image (about a hundred bytes each, plus extended attributes), never with file sizes.

mod archive;
mod image;
mod layer;
mod meter;
mod tree;

pub use tree::Skipped;

use crate::mkfs::TreeAttrs;
use flipslot_format::Sha256Digest;
use std::path::{Path, PathBuf};

/// Why an image could not be read or unpacked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// Reading the archive or writing the tree failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The error from the operating system.
        source: std::io::Error,
    },
    /// The path is not an image archive this reader understands.
    #[error("{archive} is not an OCI image layout or docker save archive: {reason}")]
    NotAnImage {
        /// The archive given.
        archive: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file the archive's JSON names is not in it.
    #[error("{archive} has no {member}")]
    MissingMember {
        /// The archive.
        archive: PathBuf,
        /// The member looked for.
        member: String,
    },
    /// A JSON document or a count is over its bound.
    #[error("{what} is {size} bytes or more, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size (or a lower bound of it).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A JSON document does not parse.
    #[error("cannot parse {what}")]
    Json {
        /// The document.
        what: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A tar stream is malformed.
    #[error("cannot read the tar stream of {what}")]
    Tar {
        /// The layer or archive.
        what: String,
        /// The tar reader's error.
        source: std::io::Error,
    },
    /// A digest is not `sha256:` and 64 lower-case hex digits.
    #[error("digest {value:?} is not sha256: followed by 64 lower-case hex digits")]
    BadDigest {
        /// The value found.
        value: String,
    },
    /// A blob's SHA-256 is not the one its descriptor names.
    #[error("{what} has sha256:{found}, not the sha256:{expected} the image names: the archive is damaged or was altered")]
    DigestMismatch {
        /// The blob.
        what: String,
        /// The digest named.
        expected: Sha256Digest,
        /// The digest computed.
        found: Sha256Digest,
    },
    /// A blob's size is not the one its descriptor names.
    #[error("{what} is {found} bytes, not the {expected} the image names: the archive is damaged or was altered")]
    SizeMismatch {
        /// The blob.
        what: String,
        /// The size named.
        expected: u64,
        /// The size found.
        found: u64,
    },
    /// The archive holds no image.
    #[error("{archive} holds no image")]
    NoImage {
        /// The archive.
        archive: PathBuf,
    },
    /// No image of the archive has the name asked for.
    #[error("{archive} has no image named {reference:?}; its names: {}", list(.names))]
    NoMatch {
        /// The archive.
        archive: PathBuf,
        /// The name asked for.
        reference: String,
        /// Every name the archive has.
        names: Vec<String>,
    },
    /// Several images match (or no name was given and there are several).
    #[error("{archive} holds {count} images{}: pick one with ARCHIVE:REF; its names: {}",
        .reference.as_ref().map(|r| format!(" named {r:?}")).unwrap_or_default(), list(.names))]
    Ambiguous {
        /// The archive.
        archive: PathBuf,
        /// The name asked for, if any.
        reference: Option<String>,
        /// How many images matched.
        count: usize,
        /// Every name the archive has.
        names: Vec<String>,
    },
    /// Something this reader does not handle (a media type, a multi-platform image, …).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What it is.
        what: String,
    },
    /// A layer member is refused (path traversal, a path through a symlink, …).
    #[error("refusing member {member:?}: {reason}")]
    Refused {
        /// The member's path as the tar stores it.
        member: String,
        /// Why.
        reason: String,
    },
    /// An error inside one layer.
    #[error("layer {index} of {count} ({digest})")]
    Layer {
        /// 1-based.
        index: usize,
        /// How many layers the image has.
        count: usize,
        /// The layer's diff ID.
        digest: String,
        /// What went wrong.
        source: Box<OciError>,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Splits `ARCHIVE[:REF]`: the whole value when it names an existing path, otherwise the
/// shortest prefix before a `:` that does (`image.tar:acme/app:1` → `image.tar`,
/// `acme/app:1`). Without such a prefix the whole value is the archive, which will then
/// fail to open, naming it.
pub fn split_archive_ref(value: &str, exists: impl Fn(&Path) -> bool) -> (PathBuf, Option<String>) {
    if exists(Path::new(value)) {
        return (PathBuf::from(value), None);
    }
    for (i, _) in value.match_indices(':') {
        let (archive, reference) = (&value[..i], &value[i + 1..]);
        if !archive.is_empty() && !reference.is_empty() && exists(Path::new(archive)) {
            return (PathBuf::from(archive), Some(reference.to_string()));
        }
    }
    (PathBuf::from(value), None)
}

/// An image picked from an archive; its index, manifest and config are verified.
#[derive(Debug)]
pub struct OciImage {
    store: archive::Store,
    plan: image::Plan,
}

/// What [`OciImage::unpack`] made.
#[derive(Debug)]
pub struct Unpacked {
    /// Owner, mode and extended attributes of every path of the tree.
    pub attrs: TreeAttrs,
    /// The first special files not created (device nodes, FIFOs).
    pub skipped: Vec<Skipped>,
    /// How many special files were not created in all.
    pub skipped_count: u64,
}

impl OciImage {
    /// Opens `archive` and picks the image `reference` names (or its only image).
    pub fn open(archive: &Path, reference: Option<&str>) -> Result<Self, OciError> {
        let store = archive::Store::open(archive)?;
        let plan = image::plan(&store, reference)?;
        Ok(Self { store, plan })
    }

    /// The name the image was picked by, or its first name, or its digest.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The config's `created` time, in seconds since 1970.
    pub fn created(&self) -> Option<u64> {
        self.plan.created
    }

    /// `os/architecture[/variant]` from the config.
    pub fn platform(&self) -> &str {
        &self.plan.platform
    }

    /// How many layers the image has.
    pub fn layer_count(&self) -> usize {
        self.plan.layers.len()
    }

    /// Unpacks the layers, lowest first, into `dest`, an empty directory only this process
    /// uses (mode `0700`). Each layer's blob is verified before it is read for unpacking.
    pub fn unpack(&self, dest: &Path) -> Result<Unpacked, OciError> {
        let mut tree = tree::Tree::new(dest);
        let count = self.plan.layers.len();
        for (i, layer) in self.plan.layers.iter().enumerate() {
            let what = layer.member.clone();
            let wrap = |e: OciError| OciError::Layer {
                index: i + 1,
                count,
                digest: format!("sha256:{}", layer.diff_id.to_hex()),
                source: Box::new(e),
            };
            log::info!("verifying layer {} of {count}: {what}", i + 1);
            layer::verify(&self.store, layer, &what).map_err(wrap)?;
            log::info!("unpacking layer {} of {count}: {what}", i + 1);
            layer::unpack(&self.store, layer, &mut tree, &what).map_err(wrap)?;
        }
        log::info!("{} paths unpacked from {}", tree.len(), self.plan.name);
        let skipped = std::mem::take(&mut tree.skipped);
        let skipped_count = tree.skipped_count;
        Ok(Unpacked {
            attrs: tree.into_attrs(),
            skipped,
            skipped_count,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn archive_and_reference_split_at_an_existing_prefix() {
        let exists = |p: &Path| ["img.tar", "dir:x", "layout"].contains(&p.to_str().unwrap());
        assert_eq!(
            split_archive_ref("img.tar", exists),
            ("img.tar".into(), None)
        );
        assert_eq!(
            split_archive_ref("img.tar:acme/app:1", exists),
            ("img.tar".into(), Some("acme/app:1".into()))
        );
        assert_eq!(split_archive_ref("dir:x", exists), ("dir:x".into(), None));
        assert_eq!(
            split_archive_ref("dir:x:latest", exists),
            ("dir:x".into(), Some("latest".into()))
        );
        assert_eq!(
            split_archive_ref("layout:", exists),
            ("layout:".into(), None)
        );
        assert_eq!(split_archive_ref("nope:t", exists), ("nope:t".into(), None));
    }
}
