//! `build --oci`: the container images are opened (and their index, manifest and config
//! verified) before anything is built, because their `created` times choose the build
//! time; then each is unpacked into a private directory next to `--out` and built into a
//! filesystem with the ownership description [`crate::oci`] gives.

use super::{mkfs_options, temp_image_path, BuildArgs, TempFiles};
use crate::cli::ClassPath;
use crate::mkfs;
use crate::oci::{split_archive_ref, OciImage, Unpacked};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Opens every `--oci` value, in command line order.
pub(super) fn open_all(ocis: &[ClassPath]) -> anyhow::Result<Vec<OciImage>> {
    ocis.iter()
        .map(|cp| {
            let value = cp.path.to_string_lossy();
            let (archive, reference) = split_archive_ref(&value, |p| p.exists());
            OciImage::open(&archive, reference.as_deref()).with_context(|| {
                format!(
                    "cannot read the container image for {} from {value}",
                    cp.class
                )
            })
        })
        .collect()
}

/// The build time the images give when `SOURCE_DATE_EPOCH` is not set: the latest
/// `created` time among them (`None` when there are none or none has one).
pub(super) fn build_time(images: &[OciImage]) -> Option<u64> {
    for i in images.iter().filter(|i| i.created().is_none()) {
        log::warn!(
            "image {} has no created time; set SOURCE_DATE_EPOCH for a reproducible bundle",
            i.name()
        );
    }
    images.iter().filter_map(OciImage::created).max()
}

/// Unpacks `image` and builds the filesystem of `cp.class` from it, into a temporary file
/// next to `--out` (removed with `temps`).
pub(super) fn build_filesystem(
    args: &BuildArgs,
    cp: &ClassPath,
    image: &OciImage,
    build_time: u64,
    temps: &mut TempFiles,
) -> anyhow::Result<PathBuf> {
    let opts = mkfs_options(args, &cp.class, build_time)?;
    let tmp = temp_image_path(&args.out, &cp.class);
    temps.0.push(tmp.clone());
    let parent = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let out_name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let tree = tempfile::Builder::new()
        .prefix(&format!(".{out_name}.{}.tree-", cp.class))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    if !args.json {
        eprintln!(
            "unpacking {} ({}, {} layers) for {} from {} into a {} image",
            image.name(),
            image.platform(),
            image.layer_count(),
            cp.class,
            cp.path.display(),
            opts.fs
        );
    }
    let unpacked = image
        .unpack(tree.path())
        .with_context(|| format!("cannot unpack {} for {}", image.name(), cp.class))?;
    warn_skipped(&cp.class, &unpacked);
    mkfs::build_fs_with_attrs(tree.path(), &tmp, &opts, &unpacked.attrs).with_context(|| {
        format!(
            "cannot build the {} image of {} from {}",
            opts.fs,
            cp.class,
            image.name()
        )
    })?;
    tree.close()
        .with_context(|| format!("cannot remove the unpacked tree of {}", cp.class))?;
    Ok(tmp)
}

/// One warning line naming the special files that were not created.
fn warn_skipped(class: &str, unpacked: &Unpacked) {
    if unpacked.skipped_count == 0 {
        return;
    }
    let mut named: Vec<String> = unpacked
        .skipped
        .iter()
        .map(|s| format!("{} ({})", s.path, s.kind))
        .collect();
    let more = unpacked.skipped_count - named.len() as u64;
    if more > 0 {
        named.push(format!("and {more} more"));
    }
    eprintln!(
        "warning: {class}: {} device nodes and FIFOs not created (a device's /dev is made at run time): {}",
        unpacked.skipped_count,
        named.join(", ")
    );
}
