//! `flipslot health`: loads what the verdict needs (booted slot, bootloader, status file)
//! and, under the install lock, lets [`crate::health::verdict::settle`] act on this boot.

use super::Agent;
use crate::health::verdict::{settle, HealthEnv, HealthOutcome};
use anyhow::Result;

/// Assesses this boot: records earlier failed trials as rollbacks, runs the health checks,
/// and commits the booted slot or falls back from it.
pub fn health(agent: &Agent, env: &HealthEnv<'_>) -> Result<HealthOutcome> {
    let _lock = agent.lock()?;
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    settle(&agent.cfg, booted, bl.as_mut(), &agent.status_path(), env)
}
