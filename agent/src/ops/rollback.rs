//! `flipslot rollback`: make the other, still good slot primary and record why.

use super::Agent;
use crate::bootloader::SlotBootState;
use crate::slot::status::{RollbackRecord, StatusFile};
use anyhow::{bail, Context, Result};
use serde::Serialize;

/// The answer of `flipslot rollback`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    /// The slot that will boot next.
    pub to_slot: String,
    /// Its bootname.
    pub to_bootname: String,
    /// Its recorded version.
    pub to_version: Option<String>,
    /// The slot running now.
    pub from_slot: String,
}

/// Makes the other (still good) slot primary, so the next boot runs it.
pub fn rollback(
    agent: &Agent,
    to: Option<&str>,
    clock: &dyn crate::host::clock::Clock,
) -> Result<RollbackOutcome> {
    let _lock = agent.lock()?;
    let booted = agent
        .booted()?
        .context("the system did not boot from a configured slot; use mark-active SLOT")?;
    let target = agent.select_slot(to.unwrap_or("other"))?;
    if target.name == booted.name {
        bail!("slot {} is the booted slot", target.name);
    }
    agent
        .require_device(target)
        .with_context(|| format!("cannot roll back to slot {}", target.name))?;
    let mut bl = agent.bootloader()?;
    if bl.slot_state(&target.bootname)? == SlotBootState::Bad {
        bail!(
            "cannot roll back to slot {} ({}): the bootloader has it marked bad",
            target.name,
            target.bootname
        );
    }
    let status_path = agent.status_path();
    let mut status = StatusFile::load(&status_path)?;
    let rec = status.slots.get(&target.name);
    if rec.is_some_and(|r| r.result != crate::slot::status::InstallResult::Ok) {
        bail!(
            "cannot roll back to slot {}: its last install did not complete",
            target.name
        );
    }
    let to_version = rec.and_then(|r| r.bundle_version.clone());
    bl.mark_active(&target.bootname)?;
    status.last_rollback = Some(RollbackRecord {
        from_slot: booted.name.clone(),
        from_version: status
            .slots
            .get(&booted.name)
            .and_then(|r| r.bundle_version.clone()),
        to_slot: target.name.clone(),
        to_version: to_version.clone(),
        reason: "requested by an operator (flipslot rollback)".into(),
        at: clock.now_unix(),
    });
    status.save(&status_path)?;
    Ok(RollbackOutcome {
        to_slot: target.name.clone(),
        to_bootname: target.bootname.clone(),
        to_version,
        from_slot: booted.name.clone(),
    })
}
