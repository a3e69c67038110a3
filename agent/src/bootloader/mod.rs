//! Bootloader backends: one trait, one implementation per bootloader.
//!
//! The A/B decisions are pure ([`abstate`]); a backend only maps them onto its storage
//! ([`grub`] onto a grubenv block encoded by [`flipslot_bootenv::grubenv`]). Bootnames are the names from
//! the config (`A`, `B`, …); a backend knows the configured ones and rejects others.

pub mod abstate;
pub mod custom;
pub mod grub;
pub mod uboot;
pub mod ubootenv;

use anyhow::{Context, Result};

pub use abstate::{AbState, SlotBootState};

use crate::config::{self, SystemConfig};
use crate::host::paths::Root;

/// Reads and changes the bootloader's A/B state. Object safe: use `Box<dyn Bootloader>`.
///
/// Methods take `&mut self` because reading may go through a stateful store. Every
/// mutation is a single read-modify-write of the bootloader's storage and is idempotent.
pub trait Bootloader {
    /// The backend name as in the config (`grub`).
    fn name(&self) -> &'static str;

    /// The configured bootnames, in config order.
    fn bootnames(&self) -> &[String];

    /// The whole current state (`ORDER` and the flags of every bootname).
    fn state(&mut self) -> Result<AbState>;

    /// The bootname the bootloader will boot next, if any slot is bootable.
    fn primary(&mut self) -> Result<Option<String>> {
        Ok(self.state()?.primary().map(str::to_string))
    }

    /// How the bootloader sees one slot; an unconfigured bootname is an error.
    fn slot_state(&mut self, bootname: &str) -> Result<SlotBootState>;

    /// Commits the booted slot after a successful boot (`OK=1`, `TRY=0`).
    fn mark_good(&mut self, bootname: &str) -> Result<()>;

    /// Takes a slot out of rotation (`OK=0`, `TRY=0`), e.g. before overwriting it.
    fn mark_bad(&mut self, bootname: &str) -> Result<()>;

    /// Makes a slot the next to boot: first in `ORDER`, `OK=1`, `TRY=0`.
    fn mark_active(&mut self, bootname: &str) -> Result<()>;
}

/// The backend the config asks for, with its storage resolved under `root`.
pub fn open_backend(cfg: &SystemConfig, root: &Root) -> Result<Box<dyn Bootloader>> {
    match cfg.bootloader {
        config::BootloaderKind::Grub => {
            let grubenv = cfg.grubenv.as_ref().with_context(|| {
                format!(
                    "config {}: grubenv is required with bootloader = \"grub\"",
                    cfg.path.display()
                )
            })?;
            let store = grub::FileEnvStore::new(root.resolve(grubenv));
            Ok(Box::new(grub::GrubBackend::new(store, cfg.bootnames())))
        }
        config::BootloaderKind::Uboot => {
            let store = ubootenv::store::FwEnvStore::from_config_file(&cfg.fw_env_config, root)
                .with_context(|| {
                    format!(
                        "cannot read the U-Boot environment description {}",
                        cfg.fw_env_config.display()
                    )
                })?
                .with_lock_file(
                    root.resolve(std::path::Path::new(crate::host::paths::FW_ENV_LOCK)),
                );
            let mut backend = uboot::UbootBackend::new(
                store,
                cfg.bootnames(),
                cfg.boot_attempts,
                cfg.boot_attempts_primary,
            );
            let initial = root.resolve(std::path::Path::new(crate::host::paths::UBOOT_INITIAL_ENV));
            if let Ok(text) = std::fs::read_to_string(&initial) {
                backend = backend.with_default_env(ubootenv::UbootEnv::parse_text(&text));
            }
            Ok(Box::new(backend))
        }
        config::BootloaderKind::Custom => {
            let script = cfg.custom_backend.as_ref().with_context(|| {
                format!(
                    "config {}: a custom backend script is required with bootloader = \"custom\"",
                    cfg.path.display()
                )
            })?;
            Ok(Box::new(custom::CustomBackend::new(
                root.resolve(script),
                cfg.bootnames(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn opens_grub_backend_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let text = "compatible = \"x\"\nbootloader = \"grub\"\n\
                    grubenv = \"/boot/grub/grubenv\"\nkeyring = \"/k\"\ndata-directory = \"/d\"\n\
                    [[slot.rootfs]]\ndevice = \"/dev/a\"\nbootname = \"A\"\n\
                    [[slot.rootfs]]\ndevice = \"/dev/b\"\nbootname = \"B\"\n";
        let cfg = SystemConfig::parse(text, Path::new("/etc/flipslot/system.toml")).unwrap();
        let root = Root::new(dir.path());
        let mut bl = open_backend(&cfg, &root).unwrap();
        assert_eq!(bl.name(), "grub");
        assert_eq!(bl.bootnames(), ["A".to_string(), "B".to_string()]);
        let e = format!("{:#}", bl.state().unwrap_err());
        assert!(e.contains("boot/grub/grubenv"), "{e}");

        std::fs::create_dir_all(dir.path().join("boot/grub")).unwrap();
        use flipslot_bootenv::grubenv;
        let mut block = grubenv::HEADER.as_bytes().to_vec();
        block.resize(grubenv::DEFAULT_BLOCK_SIZE, b'#');
        std::fs::write(dir.path().join("boot/grub/grubenv"), block).unwrap();
        bl.mark_active("A").unwrap();
        assert_eq!(bl.primary().unwrap().as_deref(), Some("A"));
        assert_eq!(bl.slot_state("B").unwrap(), SlotBootState::Bad);
    }
}
