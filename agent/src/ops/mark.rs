//! `mark-good`, `mark-bad`, `mark-active`: a slot's state in the bootloader, set by hand.

use super::Agent;
use anyhow::{Context, Result};
use serde::Serialize;

/// What `mark-*` does (`good`, `bad` or `active` in JSON and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// Commit.
    Good,
    /// Take out of rotation.
    Bad,
    /// Boot next.
    Active,
}

impl Mark {
    /// The name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Good => "good",
            Mark::Bad => "bad",
            Mark::Active => "active",
        }
    }
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a mark operation.
#[derive(Debug, Clone, Serialize)]
pub struct MarkOutcome {
    /// The slot.
    pub slot: String,
    /// Its bootname.
    pub bootname: String,
    /// What was done.
    pub mark: Mark,
    /// The primary slot afterwards.
    pub primary: Option<String>,
}

/// Marks a slot good, bad or active, holding the install lock (refused while an install
/// or health run holds it: the slot it writes must not become primary half-written).
pub fn mark(agent: &Agent, which: &str, how: Mark) -> Result<MarkOutcome> {
    let slot = agent.select_slot(which)?;
    if how == Mark::Active {
        agent
            .require_device(slot)
            .with_context(|| format!("cannot mark slot {} active", slot.name))?;
    }
    let _lock = agent
        .lock()
        .with_context(|| format!("cannot mark slot {} {how}", slot.name))?;
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
        mark: how,
        primary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_names_in_json_and_text_agree() {
        for (m, name) in [
            (Mark::Good, "good"),
            (Mark::Bad, "bad"),
            (Mark::Active, "active"),
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), name);
            assert_eq!(m.to_string(), name);
        }
    }
}
