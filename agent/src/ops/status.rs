//! `flipslot status`: every slot's boot and install state, the booted and primary slot.

use super::Agent;
use crate::bootloader::SlotBootState;
use crate::config::BootloaderKind;
use crate::slot::status::{RollbackRecord, SlotRecord, StatusFile};
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;

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
    /// Whether the system runs from it.
    pub state: SlotState,
    /// How the bootloader sees it.
    pub boot_status: SlotBootState,
    /// Whether the bootloader will boot it next.
    pub primary: bool,
    /// The last install into it, if recorded.
    pub installed: Option<SlotRecord>,
    /// Whether its device exists (`false`: nothing can be installed into it or booted
    /// from it; `status` warns).
    pub device_exists: bool,
}

/// The answer of `flipslot status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The system's compatible.
    pub compatible: String,
    /// The bootloader backend.
    pub bootloader: BootloaderKind,
    /// The booted slot's name.
    pub booted: Option<String>,
    /// The primary slot's name.
    pub primary: Option<String>,
    /// Every slot.
    pub slots: Vec<SlotStatus>,
    /// The most recent rollback, if any.
    pub last_rollback: Option<RollbackRecord>,
    /// Settings of the config that were read but have no effect (a RAUC system.conf's
    /// ignored keys), each prefixed with `config <path>: `.
    pub config_notices: Vec<String>,
}

/// Whether the system runs from a slot (`booted` or `inactive` in JSON and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// The system booted from it.
    Booted,
    /// Any other slot.
    Inactive,
}

impl SlotState {
    /// The name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Booted => "booted",
            SlotState::Inactive => "inactive",
        }
    }
}

impl std::fmt::Display for SlotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gathers the status report.
pub fn status(agent: &Agent) -> Result<StatusReport> {
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let ab = bl.state()?;
    let primary_bn = bl.primary()?;
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
                SlotState::Booted
            } else {
                SlotState::Inactive
            },
            boot_status: ab.state(&s.bootname),
            primary: primary_bn.as_deref() == Some(s.bootname.as_str()),
            installed: status.slots.get(&s.name).cloned(),
            device_exists: agent.device_exists(s) != Some(false),
        })
        .collect();
    Ok(StatusReport {
        compatible: agent.cfg.compatible.clone(),
        bootloader: agent.cfg.bootloader,
        booted: booted.map(|s| s.name.clone()),
        primary: primary_bn
            .and_then(|bn| agent.cfg.slot_by_bootname(&bn))
            .map(|s| s.name.clone()),
        slots,
        last_rollback: status.last_rollback.clone(),
        config_notices: agent.config_notices(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_state_names_in_json_and_text_agree() {
        for s in [SlotState::Booted, SlotState::Inactive] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.to_string(), s.as_str());
        }
        for b in [
            SlotBootState::Good,
            SlotBootState::Bad,
            SlotBootState::Trying,
        ] {
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
            assert_eq!(b.to_string(), b.as_str());
        }
        assert_eq!(
            serde_json::to_value(BootloaderKind::Uboot).unwrap(),
            BootloaderKind::Uboot.as_str()
        );
    }
}
