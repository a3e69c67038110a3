//! The guest root filesystem as a directory tree, for `flipslot-image build --dir rootfs=TREE`:
//! busybox-static with its applet links, `/boot/vmlinuz` and `/boot/initrd.img` (booted by
//! GRUB from the slot), the static agent at `/usr/bin/flipslot`, `/etc/flipslot/system.toml`,
//! the keyring `/etc/flipslot/keys/*.pub`, the version marker `/etc/flipslot-version` and
//! `/sbin/init` (`scripts/guest-init.sh`), which runs the scenario found on the data partition.

use crate::kernel::Kernel;
use crate::{busybox, cargo_build, initramfs};
use anyhow::{bail, Context as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The guest's `/sbin/init`.
pub const GUEST_INIT: &str = include_str!("scripts/guest-init.sh");
/// The compatible string of the rig's guests.
pub const COMPATIBLE: &str = "qemu-x86";
/// Where the ESP is mounted in the guest and where the grubenv lives below it.
pub const GRUBENV: &str = "/boot/efi/EFI/BOOT/grubenv";
/// The agent's data directory in the guest (on the data partition).
pub const DATA_DIRECTORY: &str = "/data/flipslot";

/// Where the guest's `/usr/bin/flipslot` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// Build the workspace's agent statically (once per test process).
    BuildStatic,
    /// Copy this (static) binary.
    Binary(PathBuf),
    /// No agent in the image.
    None,
}

/// One more file for the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Absolute path in the guest.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// What the guest tree holds.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Written to `/etc/flipslot-version` and shown as `version=` in `FLIPSLOT-BOOTED`.
    pub version: String,
    /// The compatible string of `system.toml`.
    pub compatible: String,
    /// Public key files copied into `/etc/flipslot/keys/`.
    pub public_keys: Vec<PathBuf>,
    /// The agent binary.
    pub agent: Agent,
    /// `system.toml` text; `None` gives [`system_toml`] of `compatible`.
    pub system_toml: Option<String>,
    /// More files (they may replace the defaults, but not `/sbin/init`'s directory links).
    pub files: Vec<ExtraFile>,
    /// Make `/etc/flipslot` a link to `/data/flipslot/etc`: the agent config and keyring
    /// come from the data partition (as `flipslot provision` writes them), not the image.
    pub config_from_data: bool,
}

impl GuestSpec {
    /// A guest of `version` with the rig's compatible string, the static agent, no keys.
    pub fn new(version: &str) -> GuestSpec {
        GuestSpec {
            version: version.to_string(),
            compatible: COMPATIBLE.to_string(),
            public_keys: Vec::new(),
            agent: Agent::BuildStatic,
            system_toml: None,
            files: Vec::new(),
            config_from_data: false,
        }
    }
}

/// The agent configuration of a rig guest: GRUB env on the ESP, two rootfs slots by
/// partition label (the guest init makes the `/dev/disk/by-partlabel` links).
pub fn system_toml(compatible: &str) -> String {
    format!(
        "compatible = \"{compatible}\"\n\
         bootloader = \"grub\"\n\
         grubenv = \"{GRUBENV}\"\n\
         keyring = \"/etc/flipslot/keys\"\n\
         min-signatures = 1\n\
         data-directory = \"{DATA_DIRECTORY}\"\n\
         \n\
         [[slot.rootfs]]\n\
         device = \"/dev/disk/by-partlabel/rootfs-a\"\n\
         bootname = \"A\"\n\
         \n\
         [[slot.rootfs]]\n\
         device = \"/dev/disk/by-partlabel/rootfs-b\"\n\
         bootname = \"B\"\n"
    )
}

/// `[health]` for a rig guest's `system.toml` (append it to [`system_toml`]): one command
/// check running `argv` (no shell), with a short deadline so a hanging check fails fast.
pub fn health_section(argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "\n[health]\n\
         deadline-seconds = 60\n\
         \n\
         [[health.command]]\n\
         argv = [{}]\n\
         timeout-seconds = 20\n",
        argv.join(", ")
    )
}

/// What [`build_tree`] put in.
#[derive(Debug, Clone)]
pub struct TreeInfo {
    /// The kernel release in `/boot`.
    pub kernel_release: String,
    /// The modules the initramfs loads, in order.
    pub modules: Vec<String>,
    /// Size of `/boot/initrd.img`.
    pub initrd_bytes: u64,
}

/// Fills the empty or missing directory `dest` with the guest root tree.
pub fn build_tree(spec: &GuestSpec, kernel: &Kernel, dest: &Path) -> anyhow::Result<TreeInfo> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .with_context(|| format!("cannot list {}", dest.display()))?
            .next()
            .is_some()
    {
        bail!("guest tree {} is not empty", dest.display());
    }
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "data",
        "boot/efi",
        "etc/flipslot/keys",
        "root",
        "var/lib",
    ] {
        mkdir(&dest.join(d))?;
    }

    let bb = busybox::static_binary()?;
    copy(&bb, &dest.join("bin/busybox"), 0o755)?;
    for applet in busybox::applets_full(&bb)? {
        let applet = applet.trim_start_matches('/');
        if applet == "bin/busybox" || applet == "sbin/init" || applet == "linuxrc" {
            continue;
        }
        let link = dest.join(applet);
        if let Some(parent) = link.parent() {
            mkdir(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .with_context(|| format!("cannot create symlink {}", link.display()))?;
    }
    write(&dest.join("sbin/init"), GUEST_INIT.as_bytes(), 0o755)?;

    copy(&kernel.vmlinuz(), &dest.join("boot/vmlinuz"), 0o644)?;
    let initrd = initramfs::build(kernel)?;
    write(&dest.join("boot/initrd.img"), &initrd.bytes, 0o644)?;

    match &spec.agent {
        Agent::BuildStatic => copy(
            &cargo_build::static_agent()?,
            &dest.join("usr/bin/flipslot"),
            0o755,
        )?,
        Agent::Binary(p) => copy(p, &dest.join("usr/bin/flipslot"), 0o755)?,
        Agent::None => {}
    }
    let toml = spec
        .system_toml
        .clone()
        .unwrap_or_else(|| system_toml(&spec.compatible));
    write_flipslot_files(dest, &toml, &spec.public_keys, &spec.version.to_string())?;
    for f in &spec.files {
        let rel = f.path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            bail!("bad guest file path {:?}", f.path);
        }
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        write(&path, &f.contents, f.mode)?;
    }
    if spec.config_from_data {
        let etc = dest.join("etc/flipslot");
        std::fs::remove_dir_all(&etc)
            .with_context(|| format!("cannot remove {}", etc.display()))?;
        std::os::unix::fs::symlink("/data/flipslot/etc", &etc)
            .with_context(|| format!("cannot create symlink {}", etc.display()))?;
    }
    Ok(TreeInfo {
        kernel_release: kernel.release.clone(),
        modules: initrd.modules,
        initrd_bytes: u64::try_from(initrd.bytes.len()).unwrap_or(u64::MAX),
    })
}

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Copies a file into a tree (parents made) and sets its mode.
pub(crate) fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    chmod(to, mode)
}

/// Writes a file into a tree (parents made) with a mode, replacing rather than writing
/// through an existing entry (a base root's files may be symlinks or read-only).
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    chmod(path, mode)
}

pub(crate) fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// The agent's files in a guest tree: `system.toml`, the trusted keys, the version marker
/// and the host name.
pub(crate) fn write_flipslot_files(
    dest: &Path,
    system_toml: &str,
    public_keys: &[PathBuf],
    version: &str,
) -> anyhow::Result<()> {
    write(
        &dest.join("etc/flipslot/system.toml"),
        system_toml.as_bytes(),
        0o644,
    )?;
    for key in public_keys {
        let name = key
            .file_name()
            .with_context(|| format!("key path {} has no file name", key.display()))?;
        copy(key, &dest.join("etc/flipslot/keys").join(name), 0o644)?;
    }
    write(
        &dest.join("etc/flipslot-version"),
        format!("{version}\n").as_bytes(),
        0o644,
    )?;
    write(&dest.join("etc/hostname"), b"flipslot-guest\n", 0o644)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn guest_init_is_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init");
        std::fs::write(&path, GUEST_INIT).unwrap();
        crate::cmd::run(std::process::Command::new("sh").arg("-n").arg(&path)).unwrap();
        assert!(GUEST_INIT.contains("FLIPSLOT-BOOTED slot="));
    }

    #[test]
    fn health_section_appends_a_command_check() {
        let t = system_toml("qemu-x86") + &health_section(&["test", "-e", "/etc/ready"]);
        assert!(t.ends_with(
            "[[health.command]]\nargv = [\"test\", \"-e\", \"/etc/ready\"]\ntimeout-seconds = 20\n"
        ));
        assert!(t.contains("\n[health]\ndeadline-seconds = 60\n"));
    }

    #[test]
    fn default_config_names_both_slots() {
        let t = system_toml("qemu-x86");
        assert!(t.contains("compatible = \"qemu-x86\""));
        assert!(t.contains("/dev/disk/by-partlabel/rootfs-a"));
        assert!(t.contains("/dev/disk/by-partlabel/rootfs-b"));
        assert!(t.contains(GRUBENV));
    }
}
