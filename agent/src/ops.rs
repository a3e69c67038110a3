//! Typed operations shared by the CLI (and later the daemon): status, install, mark.
//! Each loads what it needs from the [`Agent`] context and returns plain data.

use crate::bootloader::{self, Bootloader, SlotBootState};
use crate::clock::SystemClock;
use crate::cmdline;
use crate::config::{Slot, SystemConfig};
use crate::device::HostDevices;
use crate::install::{self, InstallEnv, InstallOptions, InstallOutcome};
use crate::paths::{self, Root};
use crate::slots::{self, FsResolver};
use crate::status::{SlotRecord, StatusFile};
use anyhow::{bail, Context, Result};
use flipslot_image::progress::Reporter;
use flipslot_image::source::FileSource;
use flipslot_image::Keyring;
use serde::Serialize;
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
        let cfg = SystemConfig::load(&root.resolve(config))?;
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
        let hint = cmdline::booted_hint(&text);
        let resolver = FsResolver {
            root: self.root.clone(),
        };
        Ok(slots::detect_booted(&self.cfg, &hint, &resolver)?)
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

/// One slot in a status report.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// `class.index`.
    pub name: String,
    /// Slot class.
    pub class: String,
    /// Bootloader name.
    pub bootname: String,
    /// Device path.
    pub device: PathBuf,
    /// `booted` or `inactive`.
    pub state: &'static str,
    /// `good`, `bad` or `trying` as the bootloader sees it.
    pub boot_status: &'static str,
    /// Whether the bootloader will boot it next.
    pub primary: bool,
    /// The last install into it, if recorded.
    pub installed: Option<SlotRecord>,
}

/// The answer of `flipslot status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The system's compatible.
    pub compatible: String,
    /// The bootloader backend.
    pub bootloader: &'static str,
    /// The booted slot's name.
    pub booted: Option<String>,
    /// The primary slot's name.
    pub primary: Option<String>,
    /// Every slot.
    pub slots: Vec<SlotStatus>,
}

fn boot_status_str(s: SlotBootState) -> &'static str {
    match s {
        SlotBootState::Good => "good",
        SlotBootState::Bad => "bad",
        SlotBootState::Trying => "trying",
    }
}

/// Gathers the status report.
pub fn status(agent: &Agent) -> Result<StatusReport> {
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let ab = bl.state()?;
    let primary_bn = ab.primary().map(str::to_string);
    let status = StatusFile::load(&agent.status_path())?;
    let slots = agent
        .cfg
        .slots
        .iter()
        .map(|s| SlotStatus {
            name: s.name.clone(),
            class: s.class.clone(),
            bootname: s.bootname.clone(),
            device: s.device.clone(),
            state: if booted.is_some_and(|b| b.name == s.name) {
                "booted"
            } else {
                "inactive"
            },
            boot_status: boot_status_str(ab.state(&s.bootname)),
            primary: primary_bn.as_deref() == Some(s.bootname.as_str()),
            installed: status.slots.get(&s.name).cloned(),
        })
        .collect();
    Ok(StatusReport {
        compatible: agent.cfg.compatible.clone(),
        bootloader: bl.name(),
        booted: booted.map(|s| s.name.clone()),
        primary: primary_bn
            .and_then(|bn| agent.cfg.slot_by_bootname(&bn))
            .map(|s| s.name.clone()),
        slots,
    })
}

/// Installs a bundle file, holding the install lock.
pub fn install_file(
    agent: &Agent,
    bundle: &Path,
    opts: &InstallOptions,
    progress: &mut Reporter,
) -> Result<InstallOutcome> {
    let data_dir = agent.root.resolve(&agent.cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let _lock = crate::sys::lock_exclusive(&data_dir.join(paths::LOCK_FILE_NAME))?;
    let source = FileSource::open(bundle)
        .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
    let keyring_path = agent.root.resolve(&agent.cfg.keyring);
    let keyring = Keyring::load(&keyring_path)
        .with_context(|| format!("cannot load keyring {}", keyring_path.display()))?;
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let devices = HostDevices {
        root: agent.root.clone(),
        direct: agent.direct_io,
    };
    let mut env = InstallEnv {
        cfg: &agent.cfg,
        booted,
        bootloader: bl.as_mut(),
        devices: &devices,
        clock: &SystemClock,
        keyring: &keyring,
        status_path: agent.status_path(),
    };
    install::install(&mut env, source, opts, progress)
}

/// What `mark-*` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Commit.
    Good,
    /// Take out of rotation.
    Bad,
    /// Boot next.
    Active,
}

/// The result of a mark operation.
#[derive(Debug, Clone, Serialize)]
pub struct MarkOutcome {
    /// The slot.
    pub slot: String,
    /// Its bootname.
    pub bootname: String,
    /// `good`, `bad` or `active`.
    pub mark: &'static str,
    /// The primary slot afterwards.
    pub primary: Option<String>,
}

/// Marks a slot good, bad or active.
pub fn mark(agent: &Agent, which: &str, how: Mark) -> Result<MarkOutcome> {
    let slot = agent.select_slot(which)?;
    let mut bl = agent.bootloader()?;
    let name = match how {
        Mark::Good => {
            bl.mark_good(&slot.bootname)?;
            "good"
        }
        Mark::Bad => {
            bl.mark_bad(&slot.bootname)?;
            "bad"
        }
        Mark::Active => {
            bl.mark_active(&slot.bootname)?;
            "active"
        }
    };
    let primary = bl
        .primary()?
        .and_then(|bn| agent.cfg.slot_by_bootname(&bn))
        .map(|s| s.name.clone());
    Ok(MarkOutcome {
        slot: slot.name.clone(),
        bootname: slot.bootname.clone(),
        mark: name,
        primary,
    })
}
