//! Typed operations shared by the CLI and the daemon: status, install, mark, health,
//! rollback and provision, one file each. Each loads what it needs from the [`Agent`] context (defined
//! here) and returns plain data; [`render`] turns that data into text and JSON.

mod health;
mod install;
mod mark;
mod provision;
pub mod render;
mod rollback;
mod status;

pub use crate::health::verdict::{HealthAction, HealthEnv, HealthOutcome};
pub use health::health;
pub use install::{install_file, install_url};
pub use mark::{mark, Mark, MarkOutcome};
pub use provision::{provision, ProvisionRequest, DEFAULT_PROVISION_KEYRING};
pub use rollback::{rollback, RollbackOutcome};
pub use status::{status, SlotState, SlotStatus, StatusReport};

use crate::bootloader::{self, Bootloader};
use crate::config::{Slot, SystemConfig};
use crate::host::paths::{self, Root};
use crate::slot::cmdline;
use crate::slot::{self, FsResolver};
use anyhow::{bail, Context, Result};
use flipslot_format::Keyring;
use std::path::{Path, PathBuf};

/// The agent's view of the system: config, root directory and where the kernel command
/// line is read from.
#[derive(Debug)]
pub struct Agent {
    /// The validated config.
    pub cfg: SystemConfig,
    /// All paths are resolved under this root.
    pub root: Root,
    /// File holding the kernel command line (normally `/proc/cmdline`), under the root.
    pub cmdline_file: PathBuf,
    /// Use direct I/O for slot devices.
    pub direct_io: bool,
}

impl Agent {
    /// Loads the config from `config` (under `root`).
    pub fn load(root: Root, config: &Path, cmdline_file: Option<&Path>) -> Result<Agent> {
        let cfg = SystemConfig::load_in_root(&root.resolve(config), config)?;
        Ok(Agent {
            cfg,
            root,
            cmdline_file: cmdline_file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(paths::PROC_CMDLINE)),
            direct_io: true,
        })
    }

    fn status_path(&self) -> PathBuf {
        self.root
            .resolve(&self.cfg.data_dir.join(paths::STATUS_FILE_NAME))
    }

    /// The slot the system booted from, if any.
    pub fn booted(&self) -> Result<Option<&Slot>> {
        let file = self.root.resolve(&self.cmdline_file);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read the kernel command line from {}",
                file.display()
            )
        })?;
        let mut hint = cmdline::booted_hint(&text);
        if hint.bootname.is_none() && self.cfg.bootloader == crate::config::BootloaderKind::Custom {
            // RAUC's custom backends may tell which slot booted (`get-current`).
            if let Some(script) = &self.cfg.custom_backend {
                let mut b = bootloader::custom::CustomBackend::new(
                    self.root.resolve(script),
                    self.cfg.bootnames(),
                );
                hint.bootname = Some(b.current_bootname()?).filter(|s| !s.is_empty());
            }
        }
        let resolver = FsResolver {
            root: self.root.clone(),
        };
        Ok(slot::detect_booted(&self.cfg, &hint, &resolver)?)
    }

    /// Takes the install lock without waiting. Every command that writes a slot or
    /// changes the bootloader's choice holds it (install, health, rollback, mark), so one
    /// runs at a time; while another holds it the error says so and names the file.
    pub fn lock(&self) -> Result<crate::host::sys::LockGuard> {
        let data_dir = self.root.resolve(&self.cfg.data_dir);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join(paths::LOCK_FILE_NAME);
        match crate::host::sys::lock_exclusive(&path) {
            Ok(guard) => Ok(guard),
            // Already names the file and what holds it.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(e.into()),
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("cannot take the lock {}", path.display())))
            }
        }
    }

    /// The ed25519 keyring for flipslot bundles and channels.
    pub fn keyring(&self) -> Result<Keyring> {
        let path = self.cfg.keyring.as_ref().with_context(|| {
            format!(
                "config {} has no keyring for flipslot bundles and channels \
                 (it only trusts X.509 certificates for RAUC bundles)",
                self.cfg.path.display()
            )
        })?;
        let path = self.root.resolve(path);
        Keyring::load(&path).with_context(|| format!("cannot load keyring {}", path.display()))
    }

    /// The X.509 trust store and verification options for RAUC bundles.
    pub fn x509_trust(
        &self,
    ) -> Result<(
        flipslot_rauc::x509::TrustStore,
        flipslot_rauc::x509::VerifyOptions,
    )> {
        let k = self.cfg.x509_keyring.as_ref().with_context(|| {
            format!(
                "config {} has no X.509 keyring for RAUC bundles \
                 (set [keyring] in system.conf or [x509-keyring] in system.toml)",
                self.cfg.path.display()
            )
        })?;
        let path = k.path.as_ref().map(|p| self.root.resolve(p));
        let dir = k.directory.as_ref().map(|p| self.root.resolve(p));
        let store = flipslot_rauc::x509::TrustStore::load(path.as_deref(), dir.as_deref())
            .context("cannot load the X.509 keyring")?;
        let options = flipslot_rauc::x509::VerifyOptions {
            purpose: k
                .check_purpose
                .parse()
                .map_err(|e| anyhow::anyhow!("keyring check-purpose: {e}"))?,
            allow_partial_chain: k.allow_partial_chain,
            allowed_signer_cns: k.allowed_signer_cns.clone(),
            use_signing_time: k.use_bundle_signing_time,
        };
        Ok((store, options))
    }

    /// The config's notices (settings read but without effect), each naming the file.
    pub fn config_notices(&self) -> Vec<String> {
        self.cfg
            .notices
            .iter()
            .map(|n| format!("config {}: {n}", self.cfg.path.display()))
            .collect()
    }

    /// Whether the slot's device exists under the root (a dangling link counts as
    /// missing); `None` when that cannot be told (e.g. no permission to look).
    pub fn device_exists(&self, slot: &Slot) -> Option<bool> {
        self.root.resolve(&slot.device).try_exists().ok()
    }

    /// Refuses to make a slot bootable whose device does not exist: the bootloader would
    /// try to boot a partition that is not there.
    fn require_device(&self, slot: &Slot) -> Result<()> {
        if self.device_exists(slot) == Some(false) {
            bail!(
                "slot {} ({}): device {} does not exist",
                slot.name,
                slot.bootname,
                slot.device.display()
            );
        }
        Ok(())
    }

    fn bootloader(&self) -> Result<Box<dyn Bootloader>> {
        bootloader::open_backend(&self.cfg, &self.root)
    }

    /// Resolves `booted`, `other` or a slot name / bootname to a slot.
    pub fn select_slot(&self, which: &str) -> Result<&Slot> {
        let booted = self.booted()?;
        match which {
            "booted" => booted.context("the system did not boot from a configured slot"),
            "other" => {
                let b = booted.context(
                    "the system did not boot from a configured slot, so there is no \"other\" slot",
                )?;
                let others: Vec<&Slot> = self
                    .cfg
                    .slots_of_class(&b.class)
                    .into_iter()
                    .filter(|s| s.name != b.name)
                    .collect();
                match others.as_slice() {
                    [one] => Ok(one),
                    _ => bail!(
                        "class {} has {} other slots; name one of: {}",
                        b.class,
                        others.len(),
                        others
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
            name => self
                .cfg
                .slot_by_name(name)
                .or_else(|| self.cfg.slot_by_bootname(name))
                .with_context(|| {
                    format!(
                        "no slot named {name:?}; configured: {}",
                        self.cfg
                            .slots
                            .iter()
                            .map(|s| format!("{} ({})", s.name, s.bootname))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
        }
    }
}
