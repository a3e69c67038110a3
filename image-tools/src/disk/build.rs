//! [`build_disk`]: the steps that make a disk image (GPT, ESP, the first slot from the
//! bundle, data partitions) into a temporary file put in place when complete.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::esp::GrubEsp;
use super::gpt::{self, DiskGuids};
use super::grub;
use super::write::{copy_file_into, io_err, write_sparse_at, ScratchDir};
use super::{
    check_tools, DataFs, DiskError, DiskOptions, DiskSummary, Layout, Partition, PartitionSummary,
    Role,
};
use crate::mkfs::{self, FsType, MkfsOptions};
use flipslot_format::builder::Progress;
use flipslot_format::error::BundleError;
use flipslot_format::reader::Bundle;
use flipslot_format::source::ByteSource;
use flipslot_os::fs::AtomicFile;

/// `dir/.NAME.SUFFIX` next to `out`.
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or(OsStr::new("disk.img")));
    name.push(suffix);
    out.with_file_name(name)
}

/// Builds the disk image `opts.out` from `layout` and the (already opened) `bundle`.
///
/// `progress` receives `("write", done, total)` while the slot image is written, and
/// `("esp" | "data", size, size)` when those partitions are in.
pub fn build_disk<S: ByteSource>(
    layout: &Layout,
    bundle: &mut Bundle<S>,
    opts: &DiskOptions,
    progress: Progress<'_>,
) -> Result<DiskSummary, DiskError> {
    let Some(slot) = layout.initial_slot() else {
        return Err(DiskError::Layout {
            origin: layout.origin.clone(),
            reason: "no slot".into(),
        });
    };
    let Some(esp_part) = layout.esp() else {
        return Err(DiskError::Layout {
            origin: layout.origin.clone(),
            reason: "no esp".into(),
        });
    };
    let (class, boot_slot) = match &slot.role {
        Role::Slot { class, bootname } => (class.clone(), bootname.clone()),
        _ => unreachable_role(layout)?,
    };
    check_data_dir(layout, opts.data_dir.as_deref())?;
    let manifest = bundle.manifest().clone();
    let image_index = manifest
        .images
        .iter()
        .position(|i| i.class == class)
        .ok_or_else(|| DiskError::NoImage {
            class: class.clone(),
            label: slot.label.clone(),
            available: manifest
                .images
                .iter()
                .map(|i| i.class.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    for other in manifest.images.iter().filter(|i| i.class != class) {
        log::warn!(
            "the bundle's {:?} image has no slot in the layout and is not written",
            other.class
        );
    }
    let image_size = manifest.images[image_index].size;
    if image_size > slot.size {
        return Err(DiskError::SlotTooSmall {
            label: slot.label.clone(),
            slot_size: slot.size,
            class,
            image_size,
        });
    }
    check_tools(layout, &opts.grub_dir)?;
    let timestamp = opts.timestamp.unwrap_or(manifest.build_time);
    let seed = bundle.manifest_sha256().0;
    let guids = DiskGuids::derive(&seed, layout);

    let out = &opts.out;
    if let Ok(meta) = out.symlink_metadata() {
        if !meta.is_file() {
            return Err(DiskError::Io {
                action: "replace".into(),
                path: out.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it exists and is not a regular file (disk images are written to files only)",
                ),
            });
        }
    }
    let scratch = ScratchDir::create(sibling(out, &format!(".disk-{}.d", std::process::id())))?;

    let atomic = AtomicFile::create(out).map_err(atomic_err)?;
    let tmp = atomic.temp_path().to_path_buf();
    let result = (|| -> Result<DiskSummary, DiskError> {
        let disk = atomic.as_file();
        disk.set_len(layout.disk_size())
            .map_err(io_err("set the size of", &tmp))?;
        gpt::write_gpt(&tmp, layout, &guids)?;

        let mut summaries = Vec::new();
        let reproducible = write_esp(
            layout,
            esp_part,
            disk,
            &tmp,
            scratch.path(),
            &opts.grub_dir,
            &seed,
            timestamp,
        )?;
        progress("esp", esp_part.size, esp_part.size);

        let total = image_size;
        bundle.stream_image(image_index, &mut |pos, data| {
            write_sparse_at(disk, &tmp, slot.start + pos, data)
                .map_err(|e| BundleError::Build(flipslot_cli_support::source_chain(&e)))?;
            progress("write", pos + data.len() as u64, total);
            Ok(())
        })?;

        for p in &layout.partitions {
            let contents = match &p.role {
                Role::Esp => format!("FAT: EFI/BOOT/{} (GRUB), grub.cfg, grubenv", grub::BOOT_EFI),
                Role::Slot { bootname, .. } if bootname == &boot_slot => format!(
                    "{} image of {} {} ({image_size} bytes), OK=1",
                    manifest.images[image_index].class, manifest.compatible, manifest.version
                ),
                Role::Slot { .. } => "empty, OK=0".into(),
                Role::Data { fs: DataFs::None } => "empty".into(),
                Role::Data {
                    fs: DataFs::Ext4 { from_dir },
                } => {
                    let dir = if *from_dir {
                        opts.data_dir.as_deref()
                    } else {
                        None
                    };
                    let status = p.status_file.as_deref().map(|f| {
                        (
                            f,
                            factory_status(
                                layout,
                                &slot.label,
                                &manifest,
                                image_index,
                                bundle.manifest_sha256(),
                                timestamp,
                            ),
                        )
                    });
                    write_ext4(p, dir, status, disk, &tmp, scratch.path(), &seed, timestamp)?;
                    progress("data", p.size, p.size);
                    match dir {
                        Some(d) => format!("ext4 from {}", d.display()),
                        None => "empty ext4".into(),
                    }
                }
            };
            summaries.push(PartitionSummary {
                number: p.number,
                label: p.label.clone(),
                role: p.role.as_str().into(),
                start: p.start,
                size: p.size,
                guid: guids.partitions[(p.number - 1) as usize].clone(),
                bootname: p.bootname().map(str::to_string),
                contents,
            });
        }
        Ok(DiskSummary {
            path: out.clone(),
            size: layout.disk_size(),
            disk_guid: guids.disk.clone(),
            boot_slot: boot_slot.clone(),
            version: manifest.version.to_string(),
            compatible: manifest.compatible.clone(),
            timestamp,
            reproducible,
            partitions: summaries,
        })
    })();
    // On error, dropping `atomic` removes the temporary file.
    let summary = result?;
    atomic.commit().map_err(atomic_err)?;
    Ok(summary)
}

fn atomic_err(e: flipslot_os::fs::AtomicWriteError) -> DiskError {
    DiskError::Io {
        action: e.op,
        path: e.path,
        source: e.source,
    }
}

/// The agent's status file (format 1) recording the factory image in slot `slot_label` as
/// installed and committed at `timestamp`, so the agent knows the version it boots from
/// (downgrade checks, rollback records). The slot's name is `<class>.<index>` by its
/// position among the layout's slots of its class: the device config must list the
/// slots in the same order.
fn factory_status(
    layout: &Layout,
    slot_label: &str,
    manifest: &flipslot_format::Manifest,
    image_index: usize,
    manifest_sha256: flipslot_format::Sha256Digest,
    timestamp: u64,
) -> Vec<u8> {
    let img = &manifest.images[image_index];
    let index = layout
        .slots()
        .filter(|p| matches!(&p.role, Role::Slot { class, .. } if class == &img.class))
        .position(|p| p.label == slot_label)
        .unwrap_or(0);
    let name = format!("{}.{index}", img.class);
    let doc = serde_json::json!({
        "format": 1,
        "slots": {
            name: {
                "bundle_version": manifest.version.to_string(),
                "compatible": manifest.compatible,
                "manifest_sha256": manifest_sha256.to_hex(),
                "image_sha256": img.sha256.to_hex(),
                "installed_at": timestamp,
                "result": "ok",
                "message": "factory image written by flipslot-image disk",
                "trial": { "committed_at": timestamp },
            }
        }
    });
    let mut text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    text.push(b'\n');
    text
}

fn unreachable_role<T>(layout: &Layout) -> Result<T, DiskError> {
    Err(DiskError::Layout {
        origin: layout.origin.clone(),
        reason: "internal error: the initial slot is not a slot".into(),
    })
}

/// `--data-dir` is required by a `from = "dir"` partition, refused without one, and must be a
/// directory.
pub(crate) fn check_data_dir(layout: &Layout, data_dir: Option<&Path>) -> Result<(), DiskError> {
    let wants = layout.partitions.iter().find(|p| {
        p.role
            == (Role::Data {
                fs: DataFs::Ext4 { from_dir: true },
            })
    });
    match (wants, data_dir) {
        (Some(p), None) => Err(DiskError::DataDir {
            reason: format!(
                "partition {:?} has from = \"dir\": give its contents with --data-dir DIR",
                p.label
            ),
        }),
        (None, Some(d)) => Err(DiskError::DataDir {
            reason: format!(
                "--data-dir {} given, but no data partition of the layout has from = \"dir\"",
                d.display()
            ),
        }),
        (Some(_), Some(d)) if !d.is_dir() => Err(DiskError::DataDir {
            reason: format!("--data-dir {} is not a directory", d.display()),
        }),
        _ => Ok(()),
    }
}

/// Builds the ESP in `scratch` and copies it into the disk. Returns whether it is reproducible.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn write_esp(
    layout: &Layout,
    part: &Partition,
    disk: &File,
    disk_path: &Path,
    scratch: &Path,
    grub_dir: &Path,
    seed: &[u8],
    timestamp: u64,
) -> Result<bool, DiskError> {
    let image = scratch.join("esp.fat");
    let uuid = mkfs::uuid_from_seed(&[b"flipslot-disk/esp/".as_slice(), seed].concat());
    let esp = GrubEsp {
        layout,
        part,
        env: &grub::initial_env(layout),
        grub_dir,
        volume_id: u32::from_be_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]),
        timestamp,
    };
    let reproducible = esp.build(&image, scratch)?;
    copy_file_into(disk, disk_path, part.start, &image, part.size)?;
    Ok(reproducible)
}

/// Makes an ext4 filesystem of the partition's size (empty, or from `dir`) and copies it in.
#[allow(clippy::too_many_arguments)] // one call site; the arguments are the build's state
fn write_ext4(
    part: &Partition,
    dir: Option<&Path>,
    status: Option<(&str, Vec<u8>)>,
    disk: &File,
    disk_path: &Path,
    scratch: &Path,
    seed: &[u8],
    timestamp: u64,
) -> Result<(), DiskError> {
    let src = match (dir, &status) {
        (Some(d), None) => d.to_path_buf(),
        _ => {
            // A staging copy: the --data-dir contents (if any) plus the status file.
            let stage = scratch.join(format!("data-{}", part.number));
            match dir {
                Some(d) => {
                    let mut from = d.as_os_str().to_owned();
                    from.push("/.");
                    fs::create_dir(&stage).map_err(io_err("create", &stage))?;
                    flipslot_os::process::Cmd::new("cp")
                        .arg("-a")
                        .arg("--")
                        .arg(&from)
                        .arg(&stage)
                        .run()?;
                }
                None => {
                    fs::create_dir(&stage).map_err(io_err("create", &stage))?;
                    fs::set_permissions(&stage, fs::Permissions::from_mode(0o755))
                        .map_err(io_err("set the mode of", &stage))?;
                }
            }
            if let Some((rel, bytes)) = &status {
                let path = stage.join(rel);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
                }
                fs::write(&path, bytes).map_err(io_err("write", &path))?;
            }
            stage
        }
    };
    let image = scratch.join(format!("part-{}.ext4", part.number));
    let uuid = mkfs::uuid_from_seed(
        &[
            format!("flipslot-disk/part/{}/{}/", part.number, part.label).as_bytes(),
            seed,
        ]
        .concat(),
    );
    let mut opts = MkfsOptions::new(FsType::Ext4, timestamp, uuid);
    opts.ext4_size = Some(part.size);
    opts.label = (part.label.len() <= 16).then(|| part.label.clone());
    mkfs::build_fs(&src, &image, &opts)?;
    copy_file_into(disk, disk_path, part.start, &image, part.size)?;
    fs::remove_file(&image).map_err(io_err("remove", &image))?;
    Ok(())
}
