//! The host's busybox-static (`/bin/busybox` from Debian's `busybox-static`): the only userland
//! of the initramfs and of the guest root filesystem.

use crate::cmd;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The path of a statically linked busybox, or an error naming the package to install.
pub fn static_binary() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(BUSYBOX);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read {BUSYBOX} (install busybox-static)"))?;
    if is_dynamic_elf(&bytes) {
        bail!("{BUSYBOX} is dynamically linked: install busybox-static instead of busybox");
    }
    Ok(path)
}

/// The applet names of `busybox` (`busybox --list`).
pub fn applets(busybox: &Path) -> anyhow::Result<Vec<String>> {
    let text = cmd::run_text(Command::new(busybox).arg("--list"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The applets with their install paths (`busybox --list-full`, e.g. `usr/bin/awk`).
pub fn applets_full(busybox: &Path) -> anyhow::Result<Vec<String>> {
    let text = cmd::run_text(Command::new(busybox).arg("--list-full"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Whether an ELF file names a program interpreter (a `PT_INTERP` segment): 64-bit
/// little-endian only, which is all the rig runs.
pub fn is_dynamic_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| u32_at(phoff + i * usize::from(phentsize)) == Some(PT_INTERP))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn host_shell_is_dynamic() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(is_dynamic_elf(&sh) || !sh.starts_with(b"\x7fELF"));
        assert!(!is_dynamic_elf(b"#!/bin/sh\n"));
    }
}
