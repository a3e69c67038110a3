//! `mark-good`, `mark-bad`, `mark-active`: a slot's state in the bootloader, set by hand.

use super::Agent;
use anyhow::{Context, Result};
use serde::Serialize;

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

/// Marks a slot good, bad or active, holding the install lock (refused while an install
/// or health run holds it: the slot it writes must not become primary half-written).
pub fn mark(agent: &Agent, which: &str, how: Mark) -> Result<MarkOutcome> {
    let slot = agent.select_slot(which)?;
    let name = match how {
        Mark::Good => "good",
        Mark::Bad => "bad",
        Mark::Active => "active",
    };
    if how == Mark::Active {
        agent
            .require_device(slot)
            .with_context(|| format!("cannot mark slot {} active", slot.name))?;
    }
    let _lock = agent
        .lock()
        .with_context(|| format!("cannot mark slot {} {name}", slot.name))?;
    let mut bl = agent.bootloader()?;
    match how {
        Mark::Good => bl.mark_good(&slot.bootname)?,
        Mark::Bad => bl.mark_bad(&slot.bootname)?,
        Mark::Active => bl.mark_active(&slot.bootname)?,
    }
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
