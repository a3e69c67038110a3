//! Pure boot assessment: from the booted slot, the bootloader's A/B state and the status
//! file, decide what kind of boot this is and which earlier trials have failed.
//!
//! With the reference boot script every boot sets the chosen slot's `TRY=1`, so every
//! boot needs a `mark-good` to keep its slot. What makes a boot a *trial* is the status
//! file: the booted slot was installed and activated but never committed. Only a trial's
//! failed checks lead to a fallback; a committed slot that fails its checks later is
//! reported and kept (the older slot is not a better bet), see `docs/boot-assessment.md`.

use crate::bootloader::{AbState, SlotBootState};
use crate::config::{Slot, SystemConfig};
use crate::slot::status::StatusFile;

/// What kind of boot this is (`not-from-slot`, `trial`, `routine`, `booted-bad` in JSON
/// and text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootKind {
    /// The system did not boot from a configured slot.
    NotFromSlot,
    /// First boot of a newly installed slot: checks decide commit or fallback.
    Trial,
    /// A boot of a committed slot (or of a slot with no install record, e.g. the factory
    /// image): checks are run and reported, the slot is kept.
    Routine,
    /// The booted slot is marked bad, yet booted (nothing else was bootable, or a manual
    /// choice): checks are reported, nothing is marked.
    BootedBad,
}

impl BootKind {
    /// The name in JSON and text.
    pub fn as_str(&self) -> &'static str {
        match self {
            BootKind::NotFromSlot => "not-from-slot",
            BootKind::Trial => "trial",
            BootKind::Routine => "routine",
            BootKind::BootedBad => "booted-bad",
        }
    }
}

impl std::fmt::Display for BootKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A slot whose trial ended without a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTrial {
    /// The slot.
    pub slot: Slot,
    /// Why it is considered failed.
    pub reason: String,
    /// Whether the bootloader still has it as tried-but-ok (it must be marked bad).
    pub needs_mark_bad: bool,
}

/// The assessment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The booted slot, if any.
    pub booted: Option<Slot>,
    /// The kind of boot.
    pub kind: BootKind,
    /// Earlier trials that failed and are not recorded as rolled back yet.
    pub failed_trials: Vec<FailedTrial>,
}

/// Message for a trial that never reached its health check.
pub const NEVER_CHECKED: &str =
    "the trial boot never reached the health check (kernel panic, hang, watchdog reset or power loss)";

/// Message for a trial that the bootloader gave up on without a recorded check.
pub const ATTEMPTS_USED_UP: &str =
    "the trial boot never passed the health check and the bootloader took the slot out of \
     rotation (boot attempts used up, or it was marked bad)";

/// Assesses this boot.
pub fn assess(
    cfg: &SystemConfig,
    booted: Option<&Slot>,
    ab: &AbState,
    status: &StatusFile,
) -> Assessment {
    let kind = match booted {
        None => BootKind::NotFromSlot,
        Some(b) => match ab.state(&b.bootname) {
            SlotBootState::Bad => BootKind::BootedBad,
            _ if status.is_uncommitted_trial(&b.name) => BootKind::Trial,
            _ => BootKind::Routine,
        },
    };
    let failed_trials = cfg
        .slots
        .iter()
        .filter(|s| booted.is_some_and(|b| b.name != s.name))
        .filter(|s| status.is_uncommitted_trial(&s.name))
        .filter_map(|s| {
            let rec = status.slots.get(&s.name)?;
            match (ab.state(&s.bootname), &rec.trial.health_failure) {
                (SlotBootState::Trying, failure) => Some(FailedTrial {
                    slot: s.clone(),
                    reason: failure.clone().unwrap_or_else(|| NEVER_CHECKED.to_string()),
                    needs_mark_bad: true,
                }),
                (SlotBootState::Bad, Some(failure)) => Some(FailedTrial {
                    slot: s.clone(),
                    reason: failure.clone(),
                    needs_mark_bad: false,
                }),
                // Counting bootloaders (U-Boot's BOOT_x_LEFT) end a trial that never
                // reached its check by running out of attempts: the slot reads bad.
                (SlotBootState::Bad, None) => Some(FailedTrial {
                    slot: s.clone(),
                    reason: ATTEMPTS_USED_UP.to_string(),
                    needs_mark_bad: false,
                }),
                _ => None,
            }
        })
        .collect();
    Assessment {
        booted: booted.cloned(),
        kind,
        failed_trials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::status::{InstallResult, SlotRecord, Trial};
    use std::path::Path;

    fn cfg() -> SystemConfig {
        SystemConfig::parse(
            "compatible = \"x\"\nbootloader = \"grub\"\ngrubenv = \"/g\"\nkeyring = \"/k\"\n\
             data-directory = \"/d\"\n[[slot.rootfs]]\ndevice = \"/dev/a\"\nbootname = \"A\"\n\
             [[slot.rootfs]]\ndevice = \"/dev/b\"\nbootname = \"B\"\n",
            Path::new("/etc/flipslot/system.toml"),
        )
        .unwrap()
    }

    fn ab(vars: &[(&str, &str)]) -> AbState {
        AbState::from_vars(vars.iter().copied(), &["A".to_string(), "B".to_string()])
    }

    fn rec(trial: Trial) -> SlotRecord {
        SlotRecord {
            bundle_version: Some("2.0.0".into()),
            compatible: "x".into(),
            manifest_sha256: None,
            image_sha256: None,
            installed_at: Some(10),
            result: InstallResult::Ok,
            message: None,
            trial,
        }
    }

    fn status(b: Option<Trial>) -> StatusFile {
        let mut s = StatusFile::default();
        if let Some(t) = b {
            s.slots.insert("rootfs.1".into(), rec(t));
        }
        s
    }

    #[test]
    fn trial_the_bootloader_gave_up_on_is_a_failed_trial() {
        // U-Boot: B's attempts ran out (reads bad), A booted again, no check recorded.
        let c = cfg();
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        let a = assess(
            &c,
            c.slot_by_bootname("A"),
            &st,
            &status(Some(Trial::default())),
        );
        assert_eq!(a.kind, BootKind::Routine);
        assert_eq!(a.failed_trials.len(), 1);
        assert_eq!(a.failed_trials[0].slot.name, "rootfs.1");
        assert_eq!(a.failed_trials[0].reason, ATTEMPTS_USED_UP);
        assert!(!a.failed_trials[0].needs_mark_bad);
    }

    #[test]
    fn first_boot_of_new_slot_is_a_trial() {
        let c = cfg();
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ]);
        let a = assess(
            &c,
            c.slot_by_bootname("B"),
            &st,
            &status(Some(Trial::default())),
        );
        assert_eq!(a.kind, BootKind::Trial);
        assert!(a.failed_trials.is_empty());
    }

    #[test]
    fn committed_or_unrecorded_slots_boot_routinely() {
        let c = cfg();
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ]);
        let committed = Trial {
            committed_at: Some(20),
            ..Trial::default()
        };
        let a = assess(&c, c.slot_by_bootname("B"), &st, &status(Some(committed)));
        assert_eq!(a.kind, BootKind::Routine);
        let a = assess(&c, c.slot_by_bootname("A"), &st, &status(None));
        assert_eq!(a.kind, BootKind::Routine);
    }

    #[test]
    fn a_trial_that_never_came_up_is_a_failed_trial() {
        let c = cfg();
        // B was tried (TRY=1) and the bootloader fell back to A.
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "1"),
            ("B_TRY", "1"),
        ]);
        let a = assess(
            &c,
            c.slot_by_bootname("A"),
            &st,
            &status(Some(Trial::default())),
        );
        assert_eq!(a.kind, BootKind::Routine);
        assert_eq!(a.failed_trials.len(), 1);
        assert_eq!(a.failed_trials[0].slot.name, "rootfs.1");
        assert_eq!(a.failed_trials[0].reason, NEVER_CHECKED);
        assert!(a.failed_trials[0].needs_mark_bad);
    }

    #[test]
    fn a_trial_that_failed_its_checks_keeps_its_reason() {
        let c = cfg();
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        let failed = Trial {
            health_failure: Some("unit app.service: failed".into()),
            ..Trial::default()
        };
        let a = assess(&c, c.slot_by_bootname("A"), &st, &status(Some(failed)));
        assert_eq!(a.failed_trials[0].reason, "unit app.service: failed");
        assert!(!a.failed_trials[0].needs_mark_bad);
    }

    #[test]
    fn pending_activation_and_recorded_rollbacks_are_not_failures() {
        let c = cfg();
        // Installed and activated, not rebooted yet: B is OK=1 TRY=0.
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "1"),
            ("B_TRY", "0"),
        ]);
        let a = assess(
            &c,
            c.slot_by_bootname("A"),
            &st,
            &status(Some(Trial::default())),
        );
        assert!(a.failed_trials.is_empty());
        let st = ab(&[
            ("ORDER", "B A"),
            ("A_OK", "1"),
            ("A_TRY", "1"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        let done = Trial {
            health_failure: Some("x".into()),
            rolled_back_at: Some(30),
            ..Trial::default()
        };
        let a = assess(&c, c.slot_by_bootname("A"), &st, &status(Some(done)));
        assert!(a.failed_trials.is_empty());
    }

    #[test]
    fn booted_bad_and_not_from_slot() {
        let c = cfg();
        let st = ab(&[
            ("ORDER", "A B"),
            ("A_OK", "0"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]);
        assert_eq!(
            assess(&c, c.slot_by_bootname("A"), &st, &status(None)).kind,
            BootKind::BootedBad
        );
        assert_eq!(
            assess(&c, None, &st, &status(None)).kind,
            BootKind::NotFromSlot
        );
    }
}
