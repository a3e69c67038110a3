//! `flipslot health`: assess this boot, record earlier failed trials, run the checks,
//! then commit the booted slot or fall back from it.

use super::Agent;
use crate::slot::status::{RollbackRecord, StatusFile};
use anyhow::{Context, Result};
use serde::Serialize;

/// The answer of `flipslot health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthOutcome {
    /// The booted slot.
    pub booted: Option<String>,
    /// `trial`, `routine`, `booted-bad` or `not-from-slot`.
    pub boot: &'static str,
    /// The checks run.
    pub verdict: Option<crate::health::Verdict>,
    /// `committed`, `kept`, `fallback` or `none`.
    pub action: &'static str,
    /// Rollbacks noticed and recorded by this run.
    pub rollbacks: Vec<RollbackRecord>,
    /// Whether a reboot into the previous slot was requested.
    pub rebooting: bool,
}

impl HealthOutcome {
    /// Whether the command should exit non-zero.
    pub fn failed(&self) -> bool {
        self.verdict.as_ref().is_some_and(|v| !v.healthy)
    }
}

/// What `flipslot health` needs from the host.
pub struct HealthEnv<'a> {
    /// Runs single checks.
    pub checks: &'a dyn crate::health::CheckRunner,
    /// The clock.
    pub clock: &'a dyn crate::host::clock::Clock,
    /// Whether a failed trial may ask for a reboot (the config may also forbid it); the
    /// caller reboots when the outcome says `rebooting`.
    pub allow_reboot: bool,
}

impl std::fmt::Debug for HealthEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthEnv")
            .field("allow_reboot", &self.allow_reboot)
            .finish_non_exhaustive()
    }
}

/// Assesses this boot: records earlier failed trials as rollbacks, runs the health checks,
/// and commits the booted slot or falls back from it.
pub fn health(agent: &Agent, env: &HealthEnv<'_>) -> Result<HealthOutcome> {
    use crate::health::assess::{assess, BootKind};
    let _lock = agent.lock()?;
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let ab = bl.state()?;
    let status_path = agent.status_path();
    let mut status = StatusFile::load(&status_path)?;
    let a = assess(&agent.cfg, booted, &ab, &status);
    let now = env.clock.now_unix();

    let mut rollbacks = Vec::new();
    for f in &a.failed_trials {
        if f.needs_mark_bad {
            bl.mark_bad(&f.slot.bootname)
                .with_context(|| format!("cannot mark failed slot {} bad", f.slot.name))?;
        }
        let to = booted.map(|b| b.name.clone()).unwrap_or_default();
        let to_version = status.slots.get(&to).and_then(|r| r.bundle_version.clone());
        let Some(rec) = status.slots.get_mut(&f.slot.name) else {
            continue;
        };
        rec.trial.rolled_back_at = Some(now);
        let rb = RollbackRecord {
            from_slot: f.slot.name.clone(),
            from_version: rec.bundle_version.clone(),
            to_slot: to,
            to_version,
            reason: f.reason.clone(),
            at: now,
        };
        log::warn!(
            "rolled back from slot {} to {}: {}",
            rb.from_slot,
            rb.to_slot,
            rb.reason
        );
        status.last_rollback = Some(rb.clone());
        rollbacks.push(rb);
    }
    if !rollbacks.is_empty() {
        status.save(&status_path)?;
    }

    let (boot, run) = match a.kind {
        BootKind::NotFromSlot => ("not-from-slot", false),
        BootKind::BootedBad => ("booted-bad", true),
        BootKind::Routine => ("routine", true),
        BootKind::Trial => ("trial", true),
    };
    let verdict = run.then(|| crate::health::run_checks(&agent.cfg.health, env.checks));
    let mut out = HealthOutcome {
        booted: booted.map(|b| b.name.clone()),
        boot,
        verdict: verdict.clone(),
        action: "none",
        rollbacks,
        rebooting: false,
    };
    let (Some(b), Some(v)) = (booted, verdict) else {
        return Ok(out);
    };
    match a.kind {
        BootKind::Trial if v.healthy => {
            bl.mark_good(&b.bootname)
                .with_context(|| format!("cannot commit slot {}", b.name))?;
            if let Some(rec) = status.slots.get_mut(&b.name) {
                rec.trial.committed_at = Some(now);
            }
            status.save(&status_path)?;
            out.action = "committed";
        }
        BootKind::Trial => {
            // Record the reason first: whatever happens next, the boot after this one
            // finds it (the bootloader falls back on its own if we crash here).
            if let Some(rec) = status.slots.get_mut(&b.name) {
                rec.trial.health_failure = v.reason.clone();
            }
            status.save(&status_path)?;
            crate::host::failpoint::hit("health-before-mark-bad");
            bl.mark_bad(&b.bootname)
                .with_context(|| format!("cannot mark slot {} bad", b.name))?;
            out.action = "fallback";
            out.rebooting = agent.cfg.health.reboot_on_failure && env.allow_reboot;
        }
        BootKind::Routine => {
            if !v.healthy {
                log::warn!(
                    "slot {} is committed; keeping it although a health check failed: {}",
                    b.name,
                    v.reason.as_deref().unwrap_or("")
                );
            }
            bl.mark_good(&b.bootname)
                .with_context(|| format!("cannot mark slot {} good", b.name))?;
            out.action = "kept";
        }
        BootKind::BootedBad | BootKind::NotFromSlot => {}
    }
    Ok(out)
}
