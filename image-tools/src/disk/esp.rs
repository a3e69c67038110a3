//! The EFI system partition as a file: `grub-mkimage` makes `BOOTX64.EFI`, `mkfs.vfat -C`
//! makes the FAT, `mmd`/`mcopy` (mtools, `-i FILE`) put the files in. No mount, no root.
//!
//! Reproducibility: `mkfs.vfat --invariant` pins the times and random fields mkfs.vfat would
//! choose and `-i` pins the volume id (given after `--invariant`, which would otherwise set its
//! own); mtools stamps files and directories with `SOURCE_DATE_EPOCH` (mtools 4.0.32 reads it)
//! and both run with `TZ=UTC` (FAT times are local times). `MTOOLSRC=/dev/null` keeps a user's
//! `~/.mtoolsrc` out. An older mkfs.vfat without `--invariant` still works, but the ESP then
//! differs between builds.

use std::path::Path;

use super::grub::{EFI_DIR, GRUB_MODULES};
use super::DiskError;
use crate::mkfs::SOURCE_DATE_EPOCH;
use flipslot_os::process::Cmd;

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
    let mtools = |program: &str| {
        Cmd::new(program)
            .env(SOURCE_DATE_EPOCH, timestamp.to_string())
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
