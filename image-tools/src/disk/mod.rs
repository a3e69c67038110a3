//! Bootable A/B disk images for x86_64 UEFI, built from a layout file and a bundle without
//! root, loop devices or mounts.
//!
//! [`build_disk`] makes a sparse disk image file: a GPT written by `sgdisk` into the plain
//! file, an ESP built as a separate FAT file (`mkfs.vfat -C`, mtools) holding GRUB
//! (`grub-mkimage`), a generated `grub.cfg` and an initial `grubenv`, the bundle's image
//! streamed (every chunk verified) into the first slot, the other slots left zero, and data
//! partitions made with `mke2fs` (through [`crate::mkfs`]). Every filesystem is copied in at its
//! partition's offset by this crate, skipping zero blocks. The image is written to
//! `.OUT.tmp` and renamed to `OUT` when complete ([`flipslot_os::fs::AtomicFile`]); an
//! existing `OUT` that is not a regular file is refused (this module never writes to a
//! device).
//!
//! # Layout file (TOML)
//!
//! ```toml
//! bootloader = "grub-efi"            # required; the only value for now
//! kernel = "/boot/vmlinuz"           # required; kernel path inside every slot's filesystem
//! initrd = "/boot/initrd.img"        # optional; initrd path inside every slot's filesystem
//! cmdline = "console=ttyS0 panic=-1" # optional; extra kernel arguments
//! boot-attempts = 1                  # optional; must be 1 (RAUC's TRY flag is one try)
//!
//! [[partition]]                      # one table per partition, in GPT order (1, 2, ...)
//! label = "esp"                      # required; GPT name (PARTLABEL), unique
//! role = "esp"                       # required; "esp", "slot" or "data"
//! size = "32M"                       # required; bytes or K/M/G/T (binary), multiple of 4K
//! # start = "1M"                     # optional; default: see below
//!
//! [[partition]]
//! label = "rootfs-a"
//! role = "slot"
//! class = "rootfs"                   # slots: required; the bundle image class
//! bootname = "A"                     # slots: required; unique; A-Z a-z 0-9 _
//! size = "128M"
//!
//! [[partition]]
//! label = "data"
//! role = "data"
//! size = "64M"
//! fs = "ext4"                        # data: optional; "ext4" (default) or "none" (zeros)
//! from = "dir"                       # data: optional; fill it from --data-dir
//! status-file = "flipslot/status.json"  # data, ext4: optional; see below
//! ```
//!
//! - `status-file`: writes the agent's status file at this path inside the data partition,
//!   recording the first slot's factory image (version, hashes) as installed and committed,
//!   so the agent knows what it boots from: downgrade checks and rollback records work from
//!   the first boot. Point it at `<data-directory>/status.json` as the device sees it; the
//!   slot is named `<class>.<index>` by its place among the layout's slots of its class, so
//!   the device config must list its slots in the layout's order.
//!
//! - `kernel`, `initrd`: absolute paths of `A-Z a-z 0-9 / . _ + -` (they are written
//!   unquoted into `grub.cfg`). GRUB reads them from the slot's filesystem: squashfs and
//!   ext2/3/4 are built into GRUB; EROFS is not (GRUB 2.06 has no EROFS driver).
//! - `cmdline`: words of printable ASCII without quotes or backslashes; `root=`,
//!   `flipslot.slot=` and `rauc.slot=` are refused (flipslot sets them).
//! - `start`: optional, a multiple of 4 KiB and at least 1 MiB. By default the first
//!   partition starts at 1 MiB and each next one at the end of the previous rounded up to
//!   1 MiB. Overlapping partitions are an error.
//! - Exactly one `esp` (at least 2 MiB). At least one `slot`; all slots share one `class`
//!   and have distinct `bootname`s. The first slot in the file receives the bundle's image
//!   of that class and is the one marked good; the others are left empty (zeros).
//! - At most one `data` partition has `from = "dir"`, and then `--data-dir` is required.
//! - Unknown keys are errors.
//!
//! The disk is as large as the last partition's end plus the backup GPT, rounded up to 1 MiB.
//!
//! # Boot flow
//!
//! `EFI/BOOT/BOOTX64.EFI` (the removable-media path, booted by firmware with empty NVRAM) is a
//! GRUB with prefix `/EFI/BOOT`; `EFI/BOOT/grub.cfg` ([`grub::grub_cfg`]) runs RAUC's
//! counting over `EFI/BOOT/grubenv` ([`grub::initial_env`]: `ORDER` = the bootnames in layout
//! order, first slot `OK=1 TRY=0`, others `OK=0 TRY=0`). See `docs/reference-grub.cfg.md`.
//!
//! # Reproducibility
//!
//! The same layout, bundle, data directory, timestamp and tool versions give a
//! byte-identical image: GUIDs derive from the bundle's manifest hash
//! ([`gpt::DiskGuids::derive`]), the FAT volume id too, the timestamp is the bundle's build
//! time unless [`DiskOptions::timestamp`] says otherwise, and [`esp`] and [`crate::mkfs`]
//! pin the times the tools would take from the clock.

pub mod esp;
pub mod gpt;
pub mod grub;
pub mod layout;
pub mod write;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use layout::{Bootloader, DataFs, Layout, Partition, Role};

use crate::mkfs::{self, FsType, MkfsError, MkfsOptions};
use esp::EspFile;
use flipslot_format::builder::Progress;
use flipslot_format::error::BundleError;
use flipslot_format::reader::Bundle;
use flipslot_format::source::ByteSource;
use flipslot_os::fs::AtomicFile;
use flipslot_os::process::{find_program, CommandError};
use gpt::DiskGuids;
use write::{copy_file_into, io_err, write_sparse_at, ScratchDir};

/// Where Debian's grub-efi-amd64-bin installs the x86_64 UEFI GRUB modules.
pub const DEFAULT_GRUB_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Why building a disk image failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The layout file is not valid TOML, has unknown keys or breaks a rule.
    #[error("layout {origin}: {reason}")]
    Layout {
        /// Where the layout came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Programs or GRUB modules needed for this layout are not installed.
    #[error("missing tools: {missing}")]
    ToolsMissing {
        /// Each missing program with the Debian package that ships it.
        missing: String,
    },
    /// The bundle has no image for the class of the slots.
    #[error("the bundle has no image of class {class:?} for slot {label:?} (it has: {available})")]
    NoImage {
        /// The slot class.
        class: String,
        /// The slot's label.
        label: String,
        /// The classes the bundle has.
        available: String,
    },
    /// The image does not fit into its slot.
    #[error("slot {label:?} is {slot_size} bytes, too small for the {class:?} image of {image_size} bytes")]
    SlotTooSmall {
        /// The slot's label.
        label: String,
        /// Its size.
        slot_size: u64,
        /// The image class.
        class: String,
        /// The image size.
        image_size: u64,
    },
    /// `--data-dir` is missing, superfluous or not a directory.
    #[error("{reason}")]
    DataDir {
        /// What is wrong.
        reason: String,
    },
    /// The GRUB environment block cannot hold the variables, or does not parse.
    #[error("grubenv: {reason}")]
    GrubEnv {
        /// What is wrong.
        reason: String,
    },
    /// The partition table sgdisk wrote is not the one asked for.
    #[error("partition table: {reason}")]
    Gpt {
        /// What differs.
        reason: String,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The file concerned.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// An external program was missing, could not be started or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Building a data filesystem failed.
    #[error(transparent)]
    Mkfs(#[from] MkfsError),
    /// Reading the bundle failed (a chunk hash mismatch included).
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// What [`build_disk`] needs besides the layout and the bundle.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The disk image to write (a regular file; replaced if it exists).
    pub out: PathBuf,
    /// The directory filling the data partition with `from = "dir"`.
    pub data_dir: Option<PathBuf>,
    /// Every time stored in the filesystems made here (seconds since 1970); `None` uses the
    /// bundle's build time. Callers pass `SOURCE_DATE_EPOCH` here when it is set.
    pub timestamp: Option<u64>,
    /// The x86_64-efi GRUB module directory.
    pub grub_dir: PathBuf,
}

impl DiskOptions {
    /// Options writing `out`, without a data directory, with the bundle's build time and
    /// [`DEFAULT_GRUB_DIR`].
    pub fn new(out: impl Into<PathBuf>) -> DiskOptions {
        DiskOptions {
            out: out.into(),
            data_dir: None,
            timestamp: None,
            grub_dir: PathBuf::from(DEFAULT_GRUB_DIR),
        }
    }
}

/// One partition of a built disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionSummary {
    /// GPT partition number.
    pub number: u32,
    /// GPT name.
    pub label: String,
    /// `esp`, `slot` or `data`.
    pub role: String,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Unique partition GUID.
    pub guid: String,
    /// Slot bootname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootname: Option<String>,
    /// What was written, for people ("GRUB, grub.cfg, grubenv", "rootfs image, ...", "empty").
    pub contents: String,
}

/// What [`build_disk`] made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskSummary {
    /// The disk image.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The disk GUID.
    pub disk_guid: String,
    /// The bootname GRUB boots first.
    pub boot_slot: String,
    /// The bundle's version.
    pub version: String,
    /// The bundle's `compatible`.
    pub compatible: String,
    /// The timestamp used for the filesystems.
    pub timestamp: u64,
    /// Whether the ESP is reproducible (the installed mkfs.vfat has `--invariant`).
    pub reproducible: bool,
    /// The partitions, by number.
    pub partitions: Vec<PartitionSummary>,
}

/// The Debian package shipping a program used here.
pub fn debian_package(program: &str) -> &'static str {
    match program {
        "sgdisk" => "gdisk",
        "mkfs.vfat" => "dosfstools",
        "mmd" | "mcopy" | "mtype" | "mdir" => "mtools",
        "grub-mkimage" | "grub-editenv" => "grub-common",
        "mke2fs" | "debugfs" => "e2fsprogs",
        _ => "unknown",
    }
}

/// The programs [`build_disk`] runs for `layout`.
pub fn required_programs(layout: &Layout) -> Vec<&'static str> {
    let mut programs = vec!["sgdisk", "mkfs.vfat", "mmd", "mcopy", "grub-mkimage"];
    if layout.partitions.iter().any(|p| {
        matches!(
            p.role,
            Role::Data {
                fs: DataFs::Ext4 { .. }
            }
        )
    }) {
        programs.extend(FsType::Ext4.programs());
    }
    programs
}

/// Checks that every program and GRUB module [`build_disk`] needs for `layout` is installed;
/// the error names each missing one with its Debian package.
pub fn check_tools(layout: &Layout, grub_dir: &Path) -> Result<(), DiskError> {
    let mut missing: Vec<String> = required_programs(layout)
        .into_iter()
        .filter(|p| find_program(OsStr::new(p)).is_none())
        .map(|p| format!("{p} (Debian package {})", debian_package(p)))
        .collect();
    let absent: Vec<&str> = grub::GRUB_MODULES
        .iter()
        .copied()
        .filter(|m| !grub_dir.join(format!("{m}.mod")).is_file())
        .collect();
    if !absent.is_empty() {
        missing.push(format!(
            "GRUB modules {} in {} (Debian package grub-efi-amd64-bin)",
            absent.join(", "),
            grub_dir.display()
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DiskError::ToolsMissing {
            missing: missing.join(", "),
        })
    }
}

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
                .map_err(|e| BundleError::Build(e.to_string()))?;
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
fn check_data_dir(layout: &Layout, data_dir: Option<&Path>) -> Result<(), DiskError> {
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
    let efi = scratch.join(grub::BOOT_EFI);
    esp::make_grub_efi(&efi, grub_dir)?;
    let cfg = scratch.join("grub.cfg");
    fs::write(&cfg, grub::grub_cfg(layout)).map_err(io_err("write", &cfg))?;
    let env = scratch.join("grubenv");
    fs::write(&env, grub::grubenv_block(&grub::initial_env(layout))?)
        .map_err(io_err("write", &env))?;
    let image = scratch.join("esp.fat");
    let uuid = mkfs::uuid_from_seed(&[b"flipslot-disk/esp/".as_slice(), seed].concat());
    let volume_id = u32::from_be_bytes([uuid[0], uuid[1], uuid[2], uuid[3]]);
    let dir = grub::EFI_DIR;
    let dests = [
        format!("{dir}/{}", grub::BOOT_EFI),
        format!("{dir}/grub.cfg"),
        format!("{dir}/grubenv"),
    ];
    let files = [
        EspFile {
            dest: &dests[0],
            source: &efi,
        },
        EspFile {
            dest: &dests[1],
            source: &cfg,
        },
        EspFile {
            dest: &dests[2],
            source: &env,
        },
    ];
    let reproducible = esp::build_esp(
        &image,
        part.size,
        part.start / layout::SECTOR,
        volume_id,
        timestamp,
        &files,
    )?;
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
