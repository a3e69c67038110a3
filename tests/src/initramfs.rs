//! The test initramfs: a `newc` cpio (written by [`crate::cpio`]) holding busybox-static with
//! one symlink per applet in `/bin`, `/dev/console`, the kernel modules a virtio disk with
//! squashfs/ext4/vfat needs (in load order, listed in `/etc/rig-modules`) and `/init`
//! (`scripts/initramfs-init.sh`): it mounts `root=PARTLABEL=<label>` read-only and switches to
//! its `/sbin/init`, or prints `FLIPSLOT-INITRAMFS-FAIL: <reason>` and powers off.
//!
//! It is uncompressed: GRUB reads a few more megabytes, the kernel decompresses nothing.

use crate::cpio::Archive;
use crate::kernel::{Kernel, GUEST_MODULES};
use crate::{busybox, cmd};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The `/init` script of the initramfs.
pub const INIT_SCRIPT: &str = include_str!("scripts/initramfs-init.sh");

/// What went into an initramfs.
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// The cpio archive.
    pub bytes: Vec<u8>,
    /// The module files in the order `/init` loads them (paths inside the archive).
    pub modules: Vec<String>,
}

/// Builds the initramfs for `kernel` with the modules of [`GUEST_MODULES`].
pub fn build(kernel: &Kernel) -> anyhow::Result<Initramfs> {
    build_with_modules(kernel, GUEST_MODULES)
}

/// Builds the initramfs for `kernel`, loading `modules` (module names, with their
/// dependencies).
pub fn build_with_modules(kernel: &Kernel, modules: &[&str]) -> anyhow::Result<Initramfs> {
    let files = kernel.module_load_order(modules)?;
    let mut a = Archive::new();
    for d in ["proc", "sys", "dev", "newroot", "etc"] {
        a.dir(d, 0o755)?;
    }
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.char_dev("dev/null", 0o666, 1, 3)?;
    add_busybox(&mut a, "bin")?;
    a.file("init", 0o755, INIT_SCRIPT.as_bytes())?;

    let mut inside = Vec::new();
    for file in &files {
        let rel = rel_to(file, &kernel.tree)?;
        let data =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        a.file(&rel, 0o644, &data)?;
        inside.push(rel);
    }
    let mut list = inside.join("\n");
    list.push('\n');
    a.file("etc/rig-modules", 0o644, list.as_bytes())?;
    Ok(Initramfs {
        bytes: a.finish(),
        modules: inside,
    })
}

/// Adds `/<dir>/busybox` and one symlink per applet next to it.
fn add_busybox(a: &mut Archive, dir: &str) -> anyhow::Result<()> {
    let bin = busybox::static_binary()?;
    let data = std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
    a.file(&format!("{dir}/busybox"), 0o755, &data)?;
    for applet in busybox::applets(&bin)? {
        if applet == "busybox" {
            continue;
        }
        a.symlink(&format!("{dir}/{applet}"), "busybox")?;
    }
    Ok(())
}

/// `path` relative to `base`, as a `/`-separated string.
fn rel_to(path: &Path, base: &Path) -> anyhow::Result<String> {
    let rel: PathBuf = path
        .strip_prefix(base)
        .with_context(|| format!("{} is not inside {}", path.display(), base.display()))?
        .to_path_buf();
    rel.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", rel.display()))
}

/// Lists an archive with the host's `cpio -t` (for debugging a rig).
pub fn list(bytes: &[u8]) -> anyhow::Result<String> {
    let out = cmd::run_with_input(
        std::process::Command::new("cpio").args(["-t", "--quiet"]),
        Some(bytes),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn init_script_is_valid_sh() {
        // `sh -n` only parses: it catches quoting and syntax mistakes in the script.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init");
        std::fs::write(&path, INIT_SCRIPT).unwrap();
        cmd::run(std::process::Command::new("sh").arg("-n").arg(&path)).unwrap();
        assert!(INIT_SCRIPT.contains("FLIPSLOT-INITRAMFS-FAIL"));
    }
}
