//! The EFI system partition as a file: `grub-mkimage` makes `BOOTX64.EFI`, `mkfs.vfat -C`
//! makes the FAT, `mmd`/`mcopy` (mtools, `-i FILE`) put the files in. No mount, no root.
//! [`GrubEsp`] assembles the whole GRUB ESP (`BOOTX64.EFI`, `grub.cfg`, `grubenv`) for a
//! layout; the disk builder copies it into its disk image, `flipslot-image provision` ships
//! it as `esp.img`.
//!
//! Reproducibility: `mkfs.vfat --invariant` pins the times and random fields mkfs.vfat would
//! choose and `-i` pins the volume id (given after `--invariant`, which would otherwise set its
//! own); mtools stamps files and directories with `SOURCE_DATE_EPOCH` (mtools 4.0.32 reads it)
//! and both run with `TZ=UTC` (FAT times are local times); a time before 1980, which FAT
//! cannot store, is stamped as 1980-01-01 ([`FAT_EPOCH`]). `MTOOLSRC=/dev/null` keeps a user's
//! `~/.mtoolsrc` out. An older mkfs.vfat without `--invariant` still works, but the ESP then
//! differs between builds.

use std::fs;
use std::path::Path;

use super::grub::{self, BOOT_EFI, EFI_DIR, GRUB_MODULES};
use super::layout::{Layout, Partition, SECTOR};
use super::write::io_err;
use super::DiskError;
use crate::mkfs::SOURCE_DATE_EPOCH;
use flipslot_os::process::Cmd;

/// The earliest time a FAT directory entry holds: 1980-01-01 00:00:00 UTC.
pub const FAT_EPOCH: u64 = 315_532_800;

/// A GRUB ESP for a layout: what goes on it and how the FAT is stamped.
#[derive(Debug, Clone, Copy)]
pub struct GrubEsp<'a> {
    /// The layout (its slots and kernel settings make `grub.cfg`).
    pub layout: &'a Layout,
    /// The layout's esp partition (its size and start).
    pub part: &'a Partition,
    /// The variables of the initial `grubenv` ([`grub::initial_env`] or
    /// [`grub::initial_env_for`]).
    pub env: &'a [(String, String)],
    /// The x86_64-efi GRUB module directory.
    pub grub_dir: &'a Path,
    /// The FAT volume id (derive it from the inputs, for reproducible builds).
    pub volume_id: u32,
    /// The time stamped on the files (seconds since 1970).
    pub timestamp: u64,
}

impl GrubEsp<'_> {
    /// Makes `BOOTX64.EFI`, `grub.cfg` and `grubenv` in `scratch` and the FAT image `image`
    /// (which must not exist) of the esp partition's size holding them under [`EFI_DIR`].
    /// Returns whether the image is reproducible ([`build_esp`]).
    pub fn build(&self, image: &Path, scratch: &Path) -> Result<bool, DiskError> {
        let efi = scratch.join(BOOT_EFI);
        make_grub_efi(&efi, self.grub_dir)?;
        let cfg = scratch.join("grub.cfg");
        fs::write(&cfg, grub::grub_cfg(self.layout)).map_err(io_err("write", &cfg))?;
        let env = scratch.join("grubenv");
        fs::write(&env, grub::grubenv_block(self.env)?).map_err(io_err("write", &env))?;
        let dests = [
            format!("{EFI_DIR}/{BOOT_EFI}"),
            format!("{EFI_DIR}/grub.cfg"),
            format!("{EFI_DIR}/grubenv"),
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
        build_esp(
            image,
            self.part.size,
            self.part.start / SECTOR,
            self.volume_id,
            self.timestamp,
            &files,
        )
    }
}

/// One file to put on the ESP.
#[derive(Debug, Clone, Copy)]
pub struct EspFile<'a> {
    /// Where it goes, e.g. `/EFI/BOOT/grub.cfg`.
    pub dest: &'a str,
    /// The file on the host.
    pub source: &'a Path,
}

/// Runs `grub-mkimage` to make a standalone x86_64 UEFI GRUB at `out`, with `prefix`
/// [`EFI_DIR`] (no device: GRUB uses the partition it was loaded from) and the modules of
/// [`GRUB_MODULES`] from `grub_dir`.
pub fn make_grub_efi(out: &Path, grub_dir: &Path) -> Result<(), DiskError> {
    Cmd::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", EFI_DIR])
        .arg("-d")
        .arg(grub_dir)
        .arg("-o")
        .arg(out)
        .args(GRUB_MODULES)
        .env_remove(SOURCE_DATE_EPOCH)
        .run()?;
    Ok(())
}

/// Whether the installed mkfs.vfat knows `--invariant` (dosfstools 4.2 does).
pub fn vfat_has_invariant() -> bool {
    match Cmd::new("mkfs.vfat").arg("--help").run() {
        Ok(out) => [out.stdout, out.stderr]
            .iter()
            .any(|t| String::from_utf8_lossy(t).contains("--invariant")),
        Err(e) => {
            log::debug!("mkfs.vfat --help: {e}");
            false
        }
    }
}

/// Creates the FAT filesystem image `image` of `size` bytes (a multiple of 1024; `image`
/// must not exist) and copies `files` into it, creating their directories. `hidden_sectors`
/// is the partition's start sector, recorded in the boot sector. Returns whether the result
/// is reproducible (the mkfs.vfat has `--invariant`).
pub fn build_esp(
    image: &Path,
    size: u64,
    hidden_sectors: u64,
    volume_id: u32,
    timestamp: u64,
    files: &[EspFile<'_>],
) -> Result<bool, DiskError> {
    let invariant = vfat_has_invariant();
    let mut mkfs = Cmd::new("mkfs.vfat").env("TZ", "UTC").arg("-C");
    if invariant {
        mkfs = mkfs.arg("--invariant");
    } else {
        log::warn!(
            "mkfs.vfat has no --invariant option (dosfstools older than 4.2): the ESP will differ \
             between builds"
        );
    }
    mkfs.arg("-i")
        .arg(format!("{volume_id:08x}"))
        .arg("-h")
        .arg(hidden_sectors.to_string())
        .arg(image)
        .arg((size / 1024).to_string())
        .run()?;

    let target = |path: &str| {
        let mut t = std::ffi::OsString::from("::");
        t.push(path);
        t
    };
    let stamp = timestamp.max(FAT_EPOCH);
    let mtools = |program: &str| {
        Cmd::new(program)
            .env(SOURCE_DATE_EPOCH, stamp.to_string())
            .env("TZ", "UTC")
            .env("MTOOLSRC", "/dev/null")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(image)
    };
    let mut dirs: Vec<String> = Vec::new();
    for file in files {
        let mut dir = String::new();
        let parent = file.dest.rsplit_once('/').map_or("", |(d, _)| d);
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            dir.push('/');
            dir.push_str(part);
            if !dirs.contains(&dir) {
                dirs.push(dir.clone());
            }
        }
    }
    if !dirs.is_empty() {
        mtools("mmd").args(dirs.iter().map(|d| target(d))).run()?;
    }
    for file in files {
        mtools("mcopy")
            .arg(file.source)
            .arg(target(file.dest))
            .run()?;
    }
    Ok(invariant)
}
