//! `flipslot status`: every slot's boot and install state, the booted and primary slot.

use super::Agent;
use crate::bootloader::SlotBootState;
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
    /// `booted` or `inactive`.
    pub state: &'static str,
    /// `good`, `bad` or `trying` as the bootloader sees it.
    pub boot_status: &'static str,
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
    pub bootloader: &'static str,
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
                "booted"
            } else {
                "inactive"
            },
            boot_status: boot_status_str(ab.state(&s.bootname)),
            primary: primary_bn.as_deref() == Some(s.bootname.as_str()),
            installed: status.slots.get(&s.name).cloned(),
            device_exists: agent.device_exists(s) != Some(false),
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
        last_rollback: status.last_rollback.clone(),
        config_notices: agent.config_notices(),
    })
}
