//! The daemon's decisions as pure functions over plain data: whether to install what a
//! verified channel offers, whether a reboot may start now, how long to wait before the
//! next poll, and which boot outcomes are still to be reported.

use crate::config::update::{RebootPolicy, RebootWindow};
use crate::config::{Slot, SystemConfig};
use crate::slot::status::{InstallResult, StatusFile};
use flipslot_format::Sha256Digest;
use std::path::PathBuf;
use std::time::Duration;

/// What the daemon knows when it decides about a channel.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The channel's version.
    pub channel_version: &'a semver::Version,
    /// The channel's manifest hash, hex.
    pub channel_manifest: &'a str,
    /// The booted slot's recorded version (`None`: nothing recorded, older than anything).
    pub booted_version: Option<semver::Version>,
    /// Whether this machine is in the channel's rollout.
    pub in_rollout: bool,
    /// The channel's rollout percentage (for messages).
    pub rollout_percent: u8,
    /// The first inhibit file that exists, if any.
    pub inhibited_by: Option<PathBuf>,
    /// The slot that already holds the channel's bundle and boots next, if any.
    pub staged_in: Option<String>,
    /// A slot whose trial of this very bundle failed and was rolled back from.
    pub rolled_back_in: Option<String>,
    /// The booted slot is on a trial boot that `flipslot health` has not committed yet
    /// (the other slot is its fallback and must not be overwritten).
    pub booted_on_trial: bool,
}

/// What to do about a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Install it.
    Install,
    /// It is already installed in `slot`, which boots next: only the reboot is left.
    AlreadyStaged {
        /// The staged slot.
        slot: String,
    },
    /// Do nothing; the reason is logged.
    Skip(SkipReason),
}

/// Why nothing is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The channel's version is not newer than the booted one.
    NotNewer {
        /// The booted version.
        booted: String,
        /// The channel's.
        channel: String,
    },
    /// The booted slot's trial boot is not committed yet.
    TrialBoot,
    /// This machine is outside the rollout.
    NotInRollout {
        /// The rollout percentage.
        percent: u8,
    },
    /// This bundle's trial boot failed here before: installing it again would loop.
    RolledBack {
        /// The slot it failed in.
        slot: String,
    },
    /// An inhibit file exists.
    Inhibited {
        /// The file.
        file: PathBuf,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotNewer { booted, channel } => write!(
                f,
                "channel version {channel} is not newer than the booted version {booted}"
            ),
            SkipReason::NotInRollout { percent } => write!(
                f,
                "this machine is not in the channel's rollout ({percent} %)"
            ),
            SkipReason::TrialBoot => write!(
                f,
                "the booted slot is on a trial boot that is not committed yet; its fallback \
                 slot is kept"
            ),
            SkipReason::RolledBack { slot } => write!(
                f,
                "this bundle failed its trial boot in slot {slot} and was rolled back; \
                 waiting for a newer bundle"
            ),
            SkipReason::Inhibited { file } => {
                write!(f, "inhibited by {}", file.display())
            }
        }
    }
}

/// Decides about a verified channel. Order: not newer, already staged, trial boot not
/// committed, rolled back before, rollout, inhibit.
pub fn decide(f: &Facts<'_>) -> Decision {
    if let Some(booted) = &f.booted_version {
        if f.channel_version <= booted {
            return Decision::Skip(SkipReason::NotNewer {
                booted: booted.to_string(),
                channel: f.channel_version.to_string(),
            });
        }
    }
    if let Some(slot) = &f.staged_in {
        return Decision::AlreadyStaged { slot: slot.clone() };
    }
    if f.booted_on_trial {
        return Decision::Skip(SkipReason::TrialBoot);
    }
    if let Some(slot) = &f.rolled_back_in {
        return Decision::Skip(SkipReason::RolledBack { slot: slot.clone() });
    }
    if !f.in_rollout {
        return Decision::Skip(SkipReason::NotInRollout {
            percent: f.rollout_percent,
        });
    }
    if let Some(file) = &f.inhibited_by {
        return Decision::Skip(SkipReason::Inhibited { file: file.clone() });
    }
    Decision::Install
}

/// The slot (not the booted one) that boots next and whose last install, which
/// succeeded, was the bundle with manifest hash `manifest`.
pub fn staged_slot(
    cfg: &SystemConfig,
    booted: Option<&Slot>,
    primary_bootname: Option<&str>,
    status: &StatusFile,
    manifest: &Sha256Digest,
) -> Option<String> {
    let primary = cfg.slot_by_bootname(primary_bootname?)?;
    if booted.is_some_and(|b| b.name == primary.name) {
        return None;
    }
    let rec = status.record(&primary.name)?;
    (rec.result == InstallResult::Ok && rec.manifest_sha256.as_ref() == Some(manifest))
        .then(|| primary.name.clone())
}

/// The slot whose last install was the bundle `manifest` and whose trial boot failed
/// (health check failure or rollback recorded).
pub fn rolled_back_slot(status: &StatusFile, manifest: &Sha256Digest) -> Option<String> {
    status
        .slots
        .iter()
        .find(|(_, rec)| {
            rec.manifest_sha256.as_ref() == Some(manifest)
                && (rec.trial.rolled_back_at.is_some() || rec.trial.health_failure.is_some())
        })
        .map(|(name, _)| name.clone())
}

/// Whether a pending reboot may start at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootGate {
    /// Reboot now.
    Go,
    /// Wait: an inhibit file exists.
    Inhibited(PathBuf),
    /// Wait this long for the window to open.
    OutsideWindow(Duration),
    /// The policy is `never`.
    Never,
}

/// Decides whether a reboot may start now.
pub fn reboot_gate(
    policy: RebootPolicy,
    window: Option<&RebootWindow>,
    inhibited_by: Option<PathBuf>,
    now: u64,
) -> RebootGate {
    if policy == RebootPolicy::Never {
        return RebootGate::Never;
    }
    if let Some(f) = inhibited_by {
        return RebootGate::Inhibited(f);
    }
    if policy == RebootPolicy::Window {
        if let Some(w) = window {
            let wait = w.seconds_until_open(now);
            if wait > 0 {
                return RebootGate::OutsideWindow(Duration::from_secs(wait));
            }
        }
    }
    RebootGate::Go
}

/// The wait before the next poll: the interval plus `unit` (uniform in `[0, 1)`) times
/// the jitter, rounded to whole seconds.
pub fn poll_wait(interval: u64, jitter: u64, unit: f64) -> Duration {
    let extra = (jitter as f64 * unit.clamp(0.0, 1.0)).round() as u64;
    Duration::from_secs(interval.saturating_add(extra.min(jitter)))
}

/// A boot outcome still to be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A trial of `slot` was committed at `at`.
    Committed {
        /// The slot.
        slot: String,
        /// Its version.
        version: Option<String>,
        /// When.
        at: u64,
    },
    /// The system fell back from `from_slot` at `at`.
    RolledBack {
        /// The slot that failed.
        from_slot: String,
        /// Its version.
        from_version: Option<String>,
        /// The slot running now.
        to_slot: String,
        /// Why.
        reason: String,
        /// When.
        at: u64,
    },
}

/// The outcomes in `status` not yet reported: the booted slot's commit (if later than
/// `reported_commit_at`) and the last rollback (if later than `reported_rollback_at`).
pub fn unreported_outcomes(
    status: &StatusFile,
    booted: Option<&Slot>,
    reported_commit_at: Option<u64>,
    reported_rollback_at: Option<u64>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    if let Some(rb) = &status.last_rollback {
        if reported_rollback_at.map_or(true, |r| rb.at > r) {
            out.push(Outcome::RolledBack {
                from_slot: rb.from_slot.clone(),
                from_version: rb.from_version.clone(),
                to_slot: rb.to_slot.clone(),
                reason: rb.reason.clone(),
                at: rb.at,
            });
        }
    }
    if let Some(b) = booted {
        if let Some(rec) = status.record(&b.name) {
            if let Some(at) = rec.trial.committed_at {
                if reported_commit_at.map_or(true, |r| at > r) {
                    out.push(Outcome::Committed {
                        slot: b.name.clone(),
                        version: rec.bundle_version.clone(),
                        at,
                    });
                }
            }
        }
    }
    out.sort_by_key(|o| match o {
        Outcome::Committed { at, .. } | Outcome::RolledBack { at, .. } => *at,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::status::{RollbackRecord, SlotRecord, Trial};
    use std::path::Path;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn facts<'a>(ver: &'a semver::Version) -> Facts<'a> {
        Facts {
            channel_version: ver,
            channel_manifest: "ab",
            booted_version: Some(v("1.0.0")),
            in_rollout: true,
            rollout_percent: 100,
            inhibited_by: None,
            staged_in: None,
            rolled_back_in: None,
            booted_on_trial: false,
        }
    }

    #[test]
    fn installs_a_newer_version() {
        let ver = v("1.1.0");
        assert_eq!(decide(&facts(&ver)), Decision::Install);
        let f = Facts {
            booted_version: None,
            ..facts(&ver)
        };
        assert_eq!(decide(&f), Decision::Install);
    }

    #[test]
    fn skips_same_or_older() {
        for s in ["1.0.0", "0.9.9", "1.0.0-rc.1"] {
            let ver = v(s);
            assert!(
                matches!(
                    decide(&facts(&ver)),
                    Decision::Skip(SkipReason::NotNewer { .. })
                ),
                "{s}"
            );
        }
        let ver = v("0.1.0");
        let f = Facts {
            staged_in: Some("rootfs.1".into()),
            ..facts(&ver)
        };
        assert!(matches!(decide(&f), Decision::Skip(_)));
    }

    #[test]
    fn staged_rollout_and_inhibit() {
        let ver = v("2.0.0");
        let f = Facts {
            staged_in: Some("rootfs.1".into()),
            inhibited_by: Some("/run/flipslot/inhibit".into()),
            in_rollout: false,
            ..facts(&ver)
        };
        assert_eq!(
            decide(&f),
            Decision::AlreadyStaged {
                slot: "rootfs.1".into()
            }
        );
        let f = Facts {
            staged_in: None,
            ..f
        };
        let d = decide(&f);
        assert_eq!(d, Decision::Skip(SkipReason::NotInRollout { percent: 100 }));
        let f = Facts {
            in_rollout: true,
            ..f
        };
        let Decision::Skip(r) = decide(&f) else {
            panic!("not skipped")
        };
        assert_eq!(r.to_string(), "inhibited by /run/flipslot/inhibit");
    }

    #[test]
    fn nothing_is_installed_during_a_trial_boot() {
        let ver = v("2.0.0");
        let f = Facts {
            booted_on_trial: true,
            ..facts(&ver)
        };
        assert_eq!(decide(&f), Decision::Skip(SkipReason::TrialBoot));
    }

    #[test]
    fn a_rolled_back_bundle_is_not_installed_again() {
        let ver = v("2.0.0");
        let f = Facts {
            rolled_back_in: Some("rootfs.1".into()),
            ..facts(&ver)
        };
        assert_eq!(
            decide(&f),
            Decision::Skip(SkipReason::RolledBack {
                slot: "rootfs.1".into()
            })
        );
        let mut st = StatusFile::default();
        let mut r = rec("2.0.0", "ab", InstallResult::Ok);
        st.set_record("rootfs.1", r.clone());
        assert_eq!(rolled_back_slot(&st, &digest("ab")), None);
        r.trial.rolled_back_at = Some(9);
        st.set_record("rootfs.1", r);
        assert_eq!(
            rolled_back_slot(&st, &digest("AB")),
            Some("rootfs.1".into())
        );
        assert_eq!(rolled_back_slot(&st, &digest("cd")), None);
    }

    fn cfg() -> SystemConfig {
        SystemConfig::parse(
            r#"
compatible = "c"
bootloader = "grub"
grubenv = "/g"
keyring = "/k"
data-directory = "/d"
[[slot.rootfs]]
device = "/dev/a"
bootname = "A"
[[slot.rootfs]]
device = "/dev/b"
bootname = "B"
"#,
            Path::new("/s.toml"),
        )
        .unwrap()
    }

    /// The digest whose hex form is the byte `byte` (two hex digits, either case) 32 times.
    fn digest(byte: &str) -> Sha256Digest {
        byte.repeat(32).parse().unwrap()
    }

    fn rec(version: &str, manifest: &str, result: InstallResult) -> SlotRecord {
        SlotRecord {
            bundle_version: Some(version.into()),
            compatible: "c".into(),
            manifest_sha256: Some(digest(manifest)),
            image_sha256: None,
            installed_at: Some(1),
            result,
            message: None,
            trial: Trial::default(),
        }
    }

    #[test]
    fn staged_needs_primary_ok_and_same_manifest() {
        let cfg = cfg();
        let a = cfg.slot_by_bootname("A");
        let mut st = StatusFile::default();
        st.set_record("rootfs.0", rec("1.0.0", "00", InstallResult::Ok));
        st.set_record("rootfs.1", rec("2.0.0", "AB", InstallResult::Ok));
        assert_eq!(
            staged_slot(&cfg, a, Some("B"), &st, &digest("ab")),
            Some("rootfs.1".into())
        );
        assert_eq!(staged_slot(&cfg, a, Some("A"), &st, &digest("ab")), None);
        assert_eq!(staged_slot(&cfg, a, None, &st, &digest("ab")), None);
        assert_eq!(staged_slot(&cfg, a, Some("B"), &st, &digest("cd")), None);
        st.set_record("rootfs.1", rec("2.0.0", "ab", InstallResult::Failed));
        assert_eq!(staged_slot(&cfg, a, Some("B"), &st, &digest("ab")), None);
    }

    #[test]
    fn reboot_gates() {
        let w = RebootWindow::parse("02:00-04:00").unwrap();
        let day = 19_000 * 86_400;
        assert_eq!(
            reboot_gate(RebootPolicy::Immediate, None, None, day),
            RebootGate::Go
        );
        assert_eq!(
            reboot_gate(RebootPolicy::Never, None, None, day),
            RebootGate::Never
        );
        assert_eq!(
            reboot_gate(RebootPolicy::Immediate, None, Some("/x".into()), day),
            RebootGate::Inhibited("/x".into())
        );
        assert_eq!(
            reboot_gate(RebootPolicy::Window, Some(&w), None, day + 3600),
            RebootGate::OutsideWindow(Duration::from_secs(3600))
        );
        assert_eq!(
            reboot_gate(RebootPolicy::Window, Some(&w), None, day + 3 * 3600),
            RebootGate::Go
        );
        assert_eq!(
            reboot_gate(
                RebootPolicy::Window,
                Some(&w),
                Some("/x".into()),
                day + 3 * 3600
            ),
            RebootGate::Inhibited("/x".into())
        );
    }

    #[test]
    fn waits_with_jitter() {
        assert_eq!(poll_wait(3600, 360, 0.0), Duration::from_secs(3600));
        assert_eq!(poll_wait(3600, 360, 0.5), Duration::from_secs(3780));
        assert_eq!(poll_wait(3600, 360, 0.99999), Duration::from_secs(3960));
        assert_eq!(poll_wait(3600, 360, 7.0), Duration::from_secs(3960));
        assert_eq!(poll_wait(1, 0, 0.7), Duration::from_secs(1));
    }

    #[test]
    fn outcomes_are_reported_once() {
        let cfg = cfg();
        let b = cfg.slot_by_bootname("B");
        let mut st = StatusFile::default();
        let mut r = rec("2.0.0", "ab", InstallResult::Ok);
        r.trial.committed_at = Some(50);
        st.set_record("rootfs.1", r);
        st.last_rollback = Some(RollbackRecord {
            from_slot: "rootfs.0".into(),
            from_version: Some("3.0.0".into()),
            to_slot: "rootfs.1".into(),
            to_version: Some("2.0.0".into()),
            reason: "health check failed".into(),
            at: 60,
        });
        let all = unreported_outcomes(&st, b, None, None);
        assert_eq!(all.len(), 2);
        assert!(matches!(all[0], Outcome::Committed { at: 50, .. }));
        assert!(matches!(all[1], Outcome::RolledBack { at: 60, .. }));
        assert!(unreported_outcomes(&st, b, Some(50), Some(60)).is_empty());
        assert_eq!(unreported_outcomes(&st, b, Some(50), Some(59)).len(), 1);
        assert_eq!(
            unreported_outcomes(&st, cfg.slot_by_bootname("A"), None, Some(60)),
            vec![]
        );
    }
}
