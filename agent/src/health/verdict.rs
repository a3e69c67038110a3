//! The health verdict acted on: the irreversible steps of `flipslot health`. Earlier
//! trials that never committed are recorded as rollbacks (and marked bad), the checks
//! run, then the booted slot is committed (a trial that passed), marked bad with a reboot
//! requested (a trial that failed), or kept (a routine boot).
//!
//! Everything it touches is passed in: the bootloader, the status file's path, the clock
//! and the check runner. The caller holds the install lock.

use super::assess::{assess, BootKind};
use super::{run_checks, CheckRunner, Verdict};
use crate::bootloader::Bootloader;
use crate::config::{Slot, SystemConfig};
use crate::host::clock::Clock;
use crate::slot::status::{RollbackRecord, StatusFile};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// What this run did to the booted slot (`committed`, `kept`, `fallback` or `none` in
/// JSON and text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthAction {
    /// A trial passed its checks: the slot is committed.
    Committed,
    /// A routine boot: the slot stays good whatever the checks said.
    Kept,
    /// A trial failed its checks: the slot is marked bad, the previous one boots next.
    Fallback,
    /// Nothing was changed.
    None,
}

impl HealthAction {
    /// The name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthAction::Committed => "committed",
            HealthAction::Kept => "kept",
            HealthAction::Fallback => "fallback",
            HealthAction::None => "none",
        }
    }
}

impl std::fmt::Display for HealthAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of `flipslot health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthOutcome {
    /// The booted slot.
    pub booted: Option<String>,
    /// What kind of boot this is.
    pub boot: BootKind,
    /// The checks run.
    pub verdict: Option<Verdict>,
    /// What was done to the booted slot.
    pub action: HealthAction,
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
    pub checks: &'a dyn CheckRunner,
    /// The clock.
    pub clock: &'a dyn Clock,
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

/// Assesses this boot of `booted` and acts on it: records earlier failed trials as
/// rollbacks, runs the health checks, and commits the booted slot or falls back from it.
/// The status file at `status_path` is saved before each bootloader change that depends
/// on it, so a crash between the two leaves the reason recorded.
pub fn settle(
    cfg: &SystemConfig,
    booted: Option<&Slot>,
    bootloader: &mut dyn Bootloader,
    status_path: &Path,
    env: &HealthEnv<'_>,
) -> Result<HealthOutcome> {
    let ab = bootloader.state()?;
    let mut status = StatusFile::load(status_path)?;
    let a = assess(cfg, booted, &ab, &status);
    let now = env.clock.now_unix();

    let mut rollbacks = Vec::new();
    for f in &a.failed_trials {
        if f.needs_mark_bad {
            bootloader
                .mark_bad(&f.slot.bootname)
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
        status.save(status_path)?;
    }

    // A boot from no configured slot has nothing to check.
    let run = a.kind != BootKind::NotFromSlot;
    let verdict = run.then(|| run_checks(&cfg.health, env.checks));
    let mut out = HealthOutcome {
        booted: booted.map(|b| b.name.clone()),
        boot: a.kind.clone(),
        verdict: verdict.clone(),
        action: HealthAction::None,
        rollbacks,
        rebooting: false,
    };
    let (Some(b), Some(v)) = (booted, verdict) else {
        return Ok(out);
    };
    match a.kind {
        BootKind::Trial if v.healthy => {
            bootloader
                .mark_good(&b.bootname)
                .with_context(|| format!("cannot commit slot {}", b.name))?;
            if let Some(rec) = status.slots.get_mut(&b.name) {
                rec.trial.committed_at = Some(now);
            }
            status.save(status_path)?;
            out.action = HealthAction::Committed;
        }
        BootKind::Trial => {
            // Record the reason first: whatever happens next, the boot after this one
            // finds it (the bootloader falls back on its own if we crash here).
            if let Some(rec) = status.slots.get_mut(&b.name) {
                rec.trial.health_failure = v.reason.clone();
            }
            status.save(status_path)?;
            crate::host::failpoint::hit("health-before-mark-bad");
            bootloader
                .mark_bad(&b.bootname)
                .with_context(|| format!("cannot mark slot {} bad", b.name))?;
            out.action = HealthAction::Fallback;
            out.rebooting = cfg.health.reboot_on_failure && env.allow_reboot;
        }
        BootKind::Routine => {
            if !v.healthy {
                log::warn!(
                    "slot {} is committed; keeping it although a health check failed: {}",
                    b.name,
                    v.reason.as_deref().unwrap_or("")
                );
            }
            bootloader
                .mark_good(&b.bootname)
                .with_context(|| format!("cannot mark slot {} good", b.name))?;
            out.action = HealthAction::Kept;
        }
        BootKind::BootedBad | BootKind::NotFromSlot => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootloader::{AbState, SlotBootState};
    use crate::health::host::HostChecks;
    use crate::slot::status::{InstallResult, SlotRecord, Trial};

    /// A bootloader over an in-memory [`AbState`].
    struct FakeBootloader {
        names: Vec<String>,
        ab: AbState,
    }

    impl FakeBootloader {
        fn new(vars: &[(&str, &str)]) -> Self {
            let names = vec!["A".to_string(), "B".to_string()];
            let ab = AbState::from_vars(vars.iter().copied(), &names);
            FakeBootloader { names, ab }
        }
    }

    impl Bootloader for FakeBootloader {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn bootnames(&self) -> &[String] {
            &self.names
        }
        fn state(&mut self) -> Result<AbState> {
            Ok(self.ab.clone())
        }
        fn slot_state(&mut self, bootname: &str) -> Result<SlotBootState> {
            Ok(self.ab.state(bootname))
        }
        fn mark_good(&mut self, bootname: &str) -> Result<()> {
            self.ab.mark_good(bootname);
            Ok(())
        }
        fn mark_bad(&mut self, bootname: &str) -> Result<()> {
            self.ab.mark_bad(bootname);
            Ok(())
        }
        fn mark_active(&mut self, bootname: &str) -> Result<()> {
            self.ab.mark_active(bootname, &self.names);
            Ok(())
        }
    }

    struct FixedClock;

    impl Clock for FixedClock {
        fn now_unix(&self) -> u64 {
            1000
        }
    }

    fn cfg() -> SystemConfig {
        SystemConfig::parse(
            "compatible = \"x\"\nbootloader = \"grub\"\ngrubenv = \"/g\"\nkeyring = \"/k\"\n\
             data-directory = \"/d\"\n[[slot.rootfs]]\ndevice = \"/dev/a\"\nbootname = \"A\"\n\
             [[slot.rootfs]]\ndevice = \"/dev/b\"\nbootname = \"B\"\n",
            Path::new("/etc/flipslot/system.toml"),
        )
        .unwrap()
    }

    fn status_with_trial_of_b(dir: &Path) -> std::path::PathBuf {
        let mut s = StatusFile::default();
        s.slots.insert(
            "rootfs.1".into(),
            SlotRecord {
                bundle_version: Some("2.0.0".into()),
                compatible: "x".into(),
                manifest_sha256: None,
                image_sha256: None,
                installed_at: Some(10),
                result: InstallResult::Ok,
                message: None,
                trial: Trial::default(),
            },
        );
        let path = dir.join("status.json");
        s.save(&path).unwrap();
        path
    }

    /// No checks are configured, so the host runner is never called.
    fn no_checks() -> HostChecks {
        HostChecks {
            update_server: None,
        }
    }

    #[test]
    fn a_trial_that_passes_is_committed_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let status_path = status_with_trial_of_b(dir.path());
        let c = cfg();
        let mut bl = FakeBootloader::new(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ]);
        let checks = no_checks();
        let env = HealthEnv {
            checks: &checks,
            clock: &FixedClock,
            allow_reboot: true,
        };
        let out = settle(&c, c.slot_by_bootname("B"), &mut bl, &status_path, &env).unwrap();
        assert_eq!(out.boot, BootKind::Trial);
        assert_eq!(out.action, HealthAction::Committed);
        assert!(!out.rebooting && !out.failed());
        assert_eq!(bl.ab.state("B"), SlotBootState::Good);
        let st = StatusFile::load(&status_path).unwrap();
        assert_eq!(st.slots["rootfs.1"].trial.committed_at, Some(1000));
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["boot"], "trial");
        assert_eq!(v["action"], "committed");
    }

    #[test]
    fn a_trial_the_bootloader_gave_up_on_is_recorded_as_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let status_path = status_with_trial_of_b(dir.path());
        let c = cfg();
        // B was tried and is no longer ok; A booted again.
        let mut bl = FakeBootloader::new(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        let checks = no_checks();
        let env = HealthEnv {
            checks: &checks,
            clock: &FixedClock,
            allow_reboot: true,
        };
        let out = settle(&c, c.slot_by_bootname("A"), &mut bl, &status_path, &env).unwrap();
        assert_eq!(out.boot, BootKind::Routine);
        assert_eq!(out.action, HealthAction::Kept);
        assert_eq!(out.rollbacks.len(), 1);
        assert_eq!(out.rollbacks[0].from_slot, "rootfs.1");
        assert_eq!(out.rollbacks[0].to_slot, "rootfs.0");
        let st = StatusFile::load(&status_path).unwrap();
        assert_eq!(st.slots["rootfs.1"].trial.rolled_back_at, Some(1000));
        assert_eq!(st.last_rollback.as_ref().map(|r| r.at), Some(1000));
        assert_eq!(serde_json::to_value(&out).unwrap()["action"], "kept");
    }

    #[test]
    fn names_in_json_and_text_agree() {
        for (k, name) in [
            (BootKind::NotFromSlot, "not-from-slot"),
            (BootKind::Trial, "trial"),
            (BootKind::Routine, "routine"),
            (BootKind::BootedBad, "booted-bad"),
        ] {
            assert_eq!(serde_json::to_value(&k).unwrap(), name);
            assert_eq!(k.to_string(), name);
        }
        for a in [
            HealthAction::Committed,
            HealthAction::Kept,
            HealthAction::Fallback,
            HealthAction::None,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
            assert_eq!(a.to_string(), a.as_str());
        }
    }
}
