//! The plan of a channel change (`flipslot-image channel-diff OLD NEW`): a channel file is
//! the desired state of a fleet (which release, for which share of the devices, until
//! when), and replacing it is a change of that state. [`plan`] says, before the new file is
//! published, what the change does: which fields change, which cohorts of devices move
//! from which release to which, whether the devices that already installed the old
//! release are affected, and what is wrong or risky about it.
//!
//! Cohorts are the rollout buckets of `flipslot_format::channel::rollout_bucket`: a device
//! is offered a release when its bucket for that release is below the rollout percentage.
//! The buckets of two different releases are independent draws (the version is hashed), so
//! for a version change the share of each cohort is an expected value; for the same
//! release the buckets are the same and the shares exact.
//!
//! What a device does with an offer is the agent's rule (`flipslot daemon`): it installs a
//! release only when it is newer than what it runs, so lowering the percentage, a
//! downgrade, or a rebuilt bundle under the same version leaves installed devices alone.
//!
//! Pure: two verified (or explicitly unverified) channels and the time in, a [`Plan`] out.

use flipslot_format::channel::Channel;
use flipslot_format::digest::Sha256Digest;
use flipslot_format::timefmt::rfc3339;
use serde::Serialize;
use std::cmp::Ordering;

/// A change that cannot be planned: the two files are not two states of one channel, or
/// devices would refuse the new one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The files are different channels.
    #[error("the channels have different names ({old:?} and {new:?}): they are not two states of one channel")]
    Name {
        /// OLD's name.
        old: String,
        /// NEW's name.
        new: String,
    },
    /// The files are for different kinds of system.
    #[error("the channels are for different compatibles ({old:?} and {new:?}): devices of {old:?} would refuse NEW")]
    Compatible {
        /// OLD's compatible.
        old: String,
        /// NEW's compatible.
        new: String,
    },
    /// NEW's serial is lower: every device that accepted OLD refuses NEW.
    #[error("NEW's serial {new} is lower than OLD's {old}: every device that accepted OLD would refuse NEW as a rollback (give NEW a higher serial, or see whether OLD and NEW are swapped)")]
    SerialRollback {
        /// OLD's serial.
        old: u64,
        /// NEW's serial.
        new: u64,
    },
}

/// How the release changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionChange {
    /// The same version (the bundle may still differ: [`Plan::bundle_changed`]).
    Same,
    /// NEW names a newer version.
    Upgrade,
    /// NEW names an older version, which devices that run OLD's do not install.
    Downgrade,
}

/// A field that changes, as text (`old` and `new` as shown to people).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The payload field (`version`, `rollout_percent`, `bundle.urls`, ...).
    pub field: &'static str,
    /// OLD's value.
    pub old: String,
    /// NEW's value.
    pub new: String,
}

/// A range of rollout buckets, `from` to `to` inclusive (0 to 99), of one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Buckets {
    /// The lowest bucket.
    pub from: u8,
    /// The highest bucket.
    pub to: u8,
}

impl Buckets {
    /// How many buckets (each is 1 % of the fleet).
    pub fn count(self) -> u8 {
        self.to - self.from + 1
    }
}

impl std::fmt::Display for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

/// What a change does to a cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Offered the same bundle as before, or held back before and after.
    Unchanged,
    /// Held back before, offered NEW's release now: they install it (when it is newer
    /// than what they run).
    Offered,
    /// Offered OLD's release before, NEW's newer one now: devices that installed OLD's
    /// install NEW's.
    Upgraded,
    /// Offered OLD's release before, held back now: devices that installed it keep it, the
    /// others no longer get it.
    Withdrawn,
    /// Offered OLD's release before, NEW's older one now: devices that installed OLD's
    /// keep it (a device installs only newer versions from a channel); the others install
    /// NEW's when it is newer than what they run.
    DowngradeIgnored,
    /// Offered the same version before and after, as another bundle: devices that
    /// installed OLD's bundle keep it (the version is not newer), the others get NEW's.
    Rebuilt,
}

impl Effect {
    /// The name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Unchanged => "unchanged",
            Effect::Offered => "offered",
            Effect::Upgraded => "upgraded",
            Effect::Withdrawn => "withdrawn",
            Effect::DowngradeIgnored => "downgrade-ignored",
            Effect::Rebuilt => "rebuilt",
        }
    }
}

/// A group of devices that the change treats alike: in or out of OLD's rollout, and in or
/// out of NEW's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// Its buckets for OLD's release.
    pub old_buckets: Buckets,
    /// Its buckets for NEW's release (the same as `old_buckets` when the version is).
    pub new_buckets: Buckets,
    /// Its share of the fleet, in percent.
    pub share_percent: f64,
    /// Whether `share_percent` is exact (same release: same buckets; or one side is the
    /// whole fleet) or expected (two releases, independent buckets).
    pub exact: bool,
    /// The release OLD offers it, `None`: held back.
    pub from: Option<String>,
    /// The release NEW offers it, `None`: held back.
    pub to: Option<String>,
    /// What the change does to it.
    pub effect: Effect,
}

/// The devices that already installed OLD's release, and what becomes of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OldReleaseDevices {
    /// At most this share of the fleet (OLD's rollout percentage) was offered it.
    pub share_percent: f64,
    /// The share of the fleet among them that NEW moves to its release.
    pub moving_percent: f64,
    /// Whether they are affected at all.
    pub affected: bool,
    /// For people.
    pub text: String,
}

/// Something worth a second look before NEW is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Warning {
    /// NEW names an older version than OLD.
    Downgrade {
        /// OLD's version.
        old: String,
        /// NEW's version.
        new: String,
    },
    /// The same version, another bundle: two builds under one version in the fleet.
    Rebuilt {
        /// The version.
        version: String,
    },
    /// The serial did not increase although the payload changed.
    SameSerial {
        /// The serial.
        serial: u64,
    },
    /// NEW has expired already: devices refuse it.
    NewExpired {
        /// NEW's `expires_at`.
        expires_at: u64,
    },
    /// NEW expires earlier than OLD.
    ExpiresEarlier {
        /// OLD's `expires_at`.
        old: u64,
        /// NEW's `expires_at`.
        new: u64,
    },
    /// OLD had expired: devices stopped following the channel until NEW.
    OldExpired {
        /// OLD's `expires_at`.
        expires_at: u64,
    },
    /// NEW holds every device back (rollout 0 %).
    HoldsAllBack,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::Downgrade { old, new } => write!(
                f,
                "downgrade from {old} to {new}: devices that run {old} keep it (a device \
                 installs only newer versions from a channel); to replace a bad release, \
                 publish a newer version"
            ),
            Warning::Rebuilt { version } => write!(
                f,
                "NEW names another bundle under the same version {version}: devices that \
                 installed OLD's keep it, so the fleet runs two builds of {version}; give a \
                 rebuild a new version"
            ),
            Warning::SameSerial { serial } => write!(
                f,
                "the payload changes but the serial stays {serial}: an equal serial should \
                 mean the same file fetched again; give NEW a higher serial"
            ),
            Warning::NewExpired { expires_at } => write!(
                f,
                "NEW expired at {}: devices refuse it; sign it again with a later expiry",
                rfc3339(*expires_at)
            ),
            Warning::ExpiresEarlier { old, new } => write!(
                f,
                "NEW expires at {}, earlier than OLD ({}): re-sign it before then or \
                 devices stop updating",
                rfc3339(*new),
                rfc3339(*old)
            ),
            Warning::OldExpired { expires_at } => write!(
                f,
                "OLD expired at {}: devices have not followed the channel since then",
                rfc3339(*expires_at)
            ),
            Warning::HoldsAllBack => write!(f, "NEW's rollout is 0 %: it holds every device back"),
        }
    }
}

/// What replacing OLD by NEW does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The channel's name (the same in both).
    pub name: String,
    /// Its compatible (the same in both).
    pub compatible: String,
    /// Whether the signed payloads are identical.
    pub no_changes: bool,
    /// Every field that changes, in payload order.
    pub changes: Vec<FieldChange>,
    /// How the version changes.
    pub version_change: VersionChange,
    /// Whether NEW names another bundle (manifest SHA-256).
    pub bundle_changed: bool,
    /// Every cohort, OLD's rollout before NEW's, in bucket order.
    pub cohorts: Vec<Cohort>,
    /// The devices that installed OLD's release.
    pub old_release_devices: OldReleaseDevices,
    /// What deserves a second look.
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// The total share of the cohorts with `effect`, in percent of the fleet.
    pub fn share(&self, effect: Effect) -> f64 {
        self.cohorts
            .iter()
            .filter(|c| c.effect == effect)
            .fold(0.0, |sum, c| sum + c.share_percent)
    }
}

/// Plans the change from `old` to `new` at `now` (seconds since the epoch, for expiry).
pub fn plan(old: &Channel, new: &Channel, now: u64) -> Result<Plan, PlanError> {
    if old.name != new.name {
        return Err(PlanError::Name {
            old: old.name.clone(),
            new: new.name.clone(),
        });
    }
    if old.compatible != new.compatible {
        return Err(PlanError::Compatible {
            old: old.compatible.clone(),
            new: new.compatible.clone(),
        });
    }
    if new.serial < old.serial {
        return Err(PlanError::SerialRollback {
            old: old.serial,
            new: new.serial,
        });
    }
    let version_change = match new.version.cmp(&old.version) {
        Ordering::Equal => VersionChange::Same,
        Ordering::Greater => VersionChange::Upgrade,
        Ordering::Less => VersionChange::Downgrade,
    };
    let bundle_changed = old.bundle.manifest_sha256 != new.bundle.manifest_sha256;
    let cohorts = cohorts(old, new, version_change, bundle_changed);
    let old_release_devices = old_release_devices(old, new, version_change, &cohorts);
    let mut warnings = Vec::new();
    match version_change {
        VersionChange::Downgrade => warnings.push(Warning::Downgrade {
            old: old.version.to_string(),
            new: new.version.to_string(),
        }),
        VersionChange::Same if bundle_changed => warnings.push(Warning::Rebuilt {
            version: new.version.to_string(),
        }),
        _ => {}
    }
    if new.serial == old.serial && new != old {
        warnings.push(Warning::SameSerial { serial: new.serial });
    }
    if now >= new.expires_at {
        warnings.push(Warning::NewExpired {
            expires_at: new.expires_at,
        });
    } else if new.expires_at < old.expires_at {
        warnings.push(Warning::ExpiresEarlier {
            old: old.expires_at,
            new: new.expires_at,
        });
    }
    if now >= old.expires_at {
        warnings.push(Warning::OldExpired {
            expires_at: old.expires_at,
        });
    }
    if new.rollout_percent == 0 && old.rollout_percent != 0 {
        warnings.push(Warning::HoldsAllBack);
    }
    Ok(Plan {
        name: new.name.clone(),
        compatible: new.compatible.clone(),
        no_changes: old == new,
        changes: changes(old, new),
        version_change,
        bundle_changed,
        cohorts,
        old_release_devices,
        warnings,
    })
}

/// Every payload field that differs, as text.
fn changes(old: &Channel, new: &Channel) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let mut field = |field: &'static str, o: String, n: String| {
        if o != n {
            out.push(FieldChange {
                field,
                old: o,
                new: n,
            });
        }
    };
    field("version", old.version.to_string(), new.version.to_string());
    field("serial", old.serial.to_string(), new.serial.to_string());
    field("issued_at", rfc3339(old.issued_at), rfc3339(new.issued_at));
    field(
        "expires_at",
        rfc3339(old.expires_at),
        rfc3339(new.expires_at),
    );
    field(
        "bundle.manifest_sha256",
        digest(&old.bundle.manifest_sha256),
        digest(&new.bundle.manifest_sha256),
    );
    field(
        "bundle.size",
        old.bundle.size.to_string(),
        new.bundle.size.to_string(),
    );
    field(
        "bundle.urls",
        old.bundle.urls.join(" "),
        new.bundle.urls.join(" "),
    );
    field(
        "rollout_percent",
        format!("{} %", old.rollout_percent),
        format!("{} %", new.rollout_percent),
    );
    out
}

fn digest(d: &Sha256Digest) -> String {
    d.to_hex()
}

/// The buckets below `percent` (offered) and from it (held back), the empty one left out.
fn split(percent: u8) -> Vec<(Buckets, bool)> {
    let mut out = Vec::new();
    if percent > 0 {
        out.push((
            Buckets {
                from: 0,
                to: percent - 1,
            },
            true,
        ));
    }
    if percent < 100 {
        out.push((
            Buckets {
                from: percent,
                to: 99,
            },
            false,
        ));
    }
    out
}

fn cohorts(
    old: &Channel,
    new: &Channel,
    version: VersionChange,
    bundle_changed: bool,
) -> Vec<Cohort> {
    let effect = |in_old: bool, in_new: bool| match (in_old, in_new) {
        (false, false) => Effect::Unchanged,
        (false, true) => Effect::Offered,
        (true, false) => Effect::Withdrawn,
        (true, true) => match version {
            VersionChange::Upgrade => Effect::Upgraded,
            VersionChange::Downgrade => Effect::DowngradeIgnored,
            VersionChange::Same if bundle_changed => Effect::Rebuilt,
            VersionChange::Same => Effect::Unchanged,
        },
    };
    let cohort =
        |o: Buckets, n: Buckets, share: f64, exact: bool, in_old: bool, in_new: bool| Cohort {
            old_buckets: o,
            new_buckets: n,
            share_percent: share,
            exact,
            from: in_old.then(|| old.version.to_string()),
            to: in_new.then(|| new.version.to_string()),
            effect: effect(in_old, in_new),
        };
    let mut out = Vec::new();
    if version == VersionChange::Same {
        // One bucket space: cut it at both percentages.
        let mut cuts = vec![0u8, old.rollout_percent, new.rollout_percent, 100];
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let b = Buckets {
                from: w[0],
                to: w[1] - 1,
            };
            let (in_old, in_new) = (b.from < old.rollout_percent, b.from < new.rollout_percent);
            out.push(cohort(b, b, f64::from(b.count()), true, in_old, in_new));
        }
    } else {
        // Independent draws: every pair of OLD's and NEW's groups, with the expected share
        // (exact when one of the two is the whole fleet).
        for (o, in_old) in split(old.rollout_percent) {
            for (n, in_new) in split(new.rollout_percent) {
                let share = f64::from(o.count()) * f64::from(n.count()) / 100.0;
                let exact = o.count() == 100 || n.count() == 100;
                out.push(cohort(o, n, share, exact, in_old, in_new));
            }
        }
    }
    out
}

fn old_release_devices(
    old: &Channel,
    new: &Channel,
    version: VersionChange,
    cohorts: &[Cohort],
) -> OldReleaseDevices {
    let share = f64::from(old.rollout_percent);
    // A fold from 0.0: an empty f64 sum is -0.0, which JSON would show.
    let moving = cohorts
        .iter()
        .filter(|c| c.effect == Effect::Upgraded)
        .fold(0.0, |sum, c| sum + c.share_percent);
    let (o, n) = (&old.version, &new.version);
    let text = if old.rollout_percent == 0 {
        format!("no device was offered {o}")
    } else {
        match version {
            VersionChange::Upgrade if new.rollout_percent == 100 => {
                format!("all of them move to {n}")
            }
            VersionChange::Upgrade if moving > 0.0 => format!(
                "of the devices offered {o} ({share} % of the fleet), about {} % of the \
                 fleet (those in buckets 0-{} of {n}) move to {n}; the others keep {o}",
                pct(moving),
                new.rollout_percent.saturating_sub(1)
            ),
            VersionChange::Upgrade => {
                format!("not affected: NEW holds every device back, they keep {o}")
            }
            VersionChange::Downgrade => format!(
                "not affected: they keep {o} (a device installs only newer versions from a \
                 channel)"
            ),
            VersionChange::Same if old.bundle.manifest_sha256 != new.bundle.manifest_sha256 => {
                format!("not affected: they keep OLD's bundle of {o} (the version is not newer)")
            }
            VersionChange::Same if new.rollout_percent < old.rollout_percent => format!(
                "not affected: lowering the rollout uninstalls nothing, they keep {o}; \
                 buckets {}-{} no longer get it",
                new.rollout_percent,
                old.rollout_percent - 1
            ),
            VersionChange::Same => format!("not affected: they keep {o}"),
        }
    };
    OldReleaseDevices {
        share_percent: share,
        moving_percent: moving,
        affected: moving > 0.0,
        text,
    }
}

/// A share of the fleet for people: whole numbers as such, others with one decimal.
pub fn pct(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests;
