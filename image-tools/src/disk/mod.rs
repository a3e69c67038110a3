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
//! size = "32M"                       # required; bytes or K/M/G/T (binary), multiple of 4K,
//!                                    # or "rest" (provisioning only, see below)
//! # start = "1M"                     # optional; default: see below (not for provisioning)
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
//! - `flipslot-image provision` reads the same file ([`layout::LayoutKind::Provisioning`])
//!   with two differences: the last partition may have `size = "rest"` (the rest of the
//!   machine's disk; not the esp), and `start` is refused (`flipslot provision` places the
//!   partitions). A disk image has fixed sizes: `flipslot-image disk` refuses `"rest"`.
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

mod build;

pub use build::build_disk;
pub(crate) use build::check_data_dir;

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

pub use layout::{Bootloader, DataFs, Layout, Partition, Role};

use crate::mkfs::{FsType, MkfsError};
use flipslot_format::error::BundleError;
use flipslot_os::process::{find_program, CommandError};

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
    #[error("cannot {action} {path}")]
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
    check_programs(&required_programs(layout), grub_dir)
}

/// The programs [`esp::GrubEsp::build`] runs.
pub const ESP_PROGRAMS: [&str; 4] = ["mkfs.vfat", "mmd", "mcopy", "grub-mkimage"];

/// Checks that `programs` and the GRUB modules of [`grub::GRUB_MODULES`] in `grub_dir` are
/// installed; the error names each missing one with its Debian package.
pub fn check_programs(programs: &[&str], grub_dir: &Path) -> Result<(), DiskError> {
    let mut missing: Vec<String> = programs
        .iter()
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
