//! Pure install decisions: is this bundle acceptable here, and which slot receives each
//! image. No I/O: everything arrives as plain data.

use crate::config::{Slot, SystemConfig};
use crate::slot::status::{InstallResult, StatusFile};
use crate::slot::{choose_target, SlotHistory};
use flipslot_format::Manifest;

/// What planning needs to know about a verified bundle, whatever its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFacts {
    /// The bundle's compatible string.
    pub compatible: String,
    /// Its version as written.
    pub version: String,
    /// The slot class of each image, in bundle order.
    pub classes: Vec<String>,
}

impl From<&Manifest> for BundleFacts {
    fn from(m: &Manifest) -> Self {
        BundleFacts {
            compatible: m.compatible.clone(),
            version: m.version.to_string(),
            classes: m.images.iter().map(|i| i.class.clone()).collect(),
        }
    }
}

/// Reads a version the way versions are written in practice: semver, or one to three
/// dot-separated numbers (leading zeros allowed, as in `2024.05.1`) with an optional
/// `-prerelease`. Anything else cannot be ordered and is `None`.
pub fn parse_version(s: &str) -> Option<semver::Version> {
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    let nums: Vec<u64> = core
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect::<Option<_>>()?;
    if nums.is_empty() || nums.len() > 3 {
        return None;
    }
    let mut v = semver::Version::new(
        nums[0],
        nums.get(1).copied().unwrap_or(0),
        nums.get(2).copied().unwrap_or(0),
    );
    if let Some(p) = pre {
        v.pre = semver::Prerelease::new(p).ok()?;
    }
    Some(v)
}

/// Why a bundle is refused before anything is written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// The bundle is for another kind of system.
    #[error("bundle is for compatible {bundle:?}, this system is {system:?}")]
    Incompatible {
        /// The bundle's compatible.
        bundle: String,
        /// The system's compatible.
        system: String,
    },
    /// The bundle is older than what runs now.
    #[error("bundle version {bundle} is older than the booted slot {slot}'s version {booted}; use --allow-downgrade to install it anyway")]
    Downgrade {
        /// The bundle's version.
        bundle: String,
        /// The booted version.
        booted: String,
        /// The booted slot.
        slot: String,
    },
    /// The bundle's version cannot be ordered against the booted one.
    #[error("bundle version {bundle:?} cannot be compared with the booted slot {slot}'s version {booted}; use --allow-downgrade to install it anyway")]
    Unordered {
        /// The bundle's version.
        bundle: String,
        /// The booted version.
        booted: String,
        /// The booted slot.
        slot: String,
    },
    /// The bundle is older than the configured minimum (`min-bundle-version`).
    #[error("bundle version {bundle:?} is below min-bundle-version {min}")]
    BelowMinimum {
        /// The bundle's version.
        bundle: String,
        /// The configured minimum.
        min: String,
    },
    /// Two images of one class.
    #[error("bundle has more than one image for slot class {0}")]
    DuplicateClass(String),
    /// No slot can take an image.
    #[error("no slot for image class {class}: {reason}")]
    NoSlot {
        /// The class.
        class: String,
        /// Why.
        reason: String,
    },
}

/// One image and the slot it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the image in the manifest.
    pub image: usize,
    /// The slot that receives it.
    pub slot: Slot,
}

/// The version recorded for the booted slot, if the status file knows it.
pub fn booted_version(status: &StatusFile, booted: Option<&Slot>) -> Option<semver::Version> {
    let rec = status.slots.get(&booted?.name)?;
    if rec.result != InstallResult::Ok {
        return None;
    }
    parse_version(rec.bundle_version.as_deref()?)
}

/// Checks compatible and version, and maps each image to its target slot.
pub fn plan(
    cfg: &SystemConfig,
    bundle: &BundleFacts,
    booted: Option<&Slot>,
    status: &StatusFile,
    allow_downgrade: bool,
) -> Result<Vec<Target>, PlanError> {
    if bundle.compatible != cfg.compatible {
        return Err(PlanError::Incompatible {
            bundle: bundle.compatible.clone(),
            system: cfg.compatible.clone(),
        });
    }
    let version = parse_version(&bundle.version);
    if let Some(min) = &cfg.rauc_bundles.min_bundle_version {
        let below = match (&version, parse_version(min)) {
            (Some(v), Some(m)) => *v < m,
            _ => true,
        };
        if below {
            return Err(PlanError::BelowMinimum {
                bundle: bundle.version.clone(),
                min: min.clone(),
            });
        }
    }
    if let (Some(current), Some(slot)) = (booted_version(status, booted), booted) {
        if !allow_downgrade {
            match &version {
                Some(v) if *v < current => {
                    return Err(PlanError::Downgrade {
                        bundle: bundle.version.clone(),
                        booted: current.to_string(),
                        slot: slot.name.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    return Err(PlanError::Unordered {
                        bundle: bundle.version.clone(),
                        booted: current.to_string(),
                        slot: slot.name.clone(),
                    })
                }
            }
        }
    }
    let history = |s: &Slot| match status.slots.get(&s.name) {
        Some(r) => SlotHistory {
            installed_at: r.installed_at,
            failed: r.result != InstallResult::Ok,
        },
        None => SlotHistory::default(),
    };
    let mut targets = Vec::new();
    for (i, class) in bundle.classes.iter().enumerate() {
        if bundle.classes[..i].contains(class) {
            return Err(PlanError::DuplicateClass(class.clone()));
        }
        let slot = choose_target(cfg, class, booted, &history).map_err(|e| PlanError::NoSlot {
            class: class.clone(),
            reason: e.to_string(),
        })?;
        targets.push(Target {
            image: i,
            slot: slot.clone(),
        });
    }
    Ok(targets)
}

/// The slot the bootloader should try next: the target of the class that holds the
/// booted slot, else of the first image.
pub fn boot_target<'t>(targets: &'t [Target], booted: Option<&Slot>) -> Option<&'t Target> {
    booted
        .and_then(|b| targets.iter().find(|t| t.slot.class == b.class))
        .or_else(|| targets.first())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn versions_are_ordered_leniently() {
        let v = |s: &str| parse_version(s);
        assert_eq!(v("1.2.3"), Some(semver::Version::new(1, 2, 3)));
        assert_eq!(v("2024.05.1"), Some(semver::Version::new(2024, 5, 1)));
        assert_eq!(v("7"), Some(semver::Version::new(7, 0, 0)));
        assert!(v("2.0-rc1").unwrap() < v("2.0").unwrap());
        assert!(v("2024.05.1").unwrap() < v("2024.10").unwrap());
        for bad in ["", "v1.2", "1..2", "1.2.3.4", "nightly", "1.x"] {
            assert_eq!(v(bad), None, "{bad}");
        }
    }

    fn cfg(extra: &str) -> SystemConfig {
        SystemConfig::parse(
            &format!(
                "compatible = \"x\"\nbootloader = \"grub\"\ngrubenv = \"/g\"\nkeyring = \"/k\"\n\
                 data-directory = \"/d\"\n{extra}[[slot.rootfs]]\ndevice = \"/dev/a\"\nbootname = \"A\"\n\
                 [[slot.rootfs]]\ndevice = \"/dev/b\"\nbootname = \"B\"\n"
            ),
            Path::new("/etc/flipslot/system.toml"),
        )
        .unwrap()
    }

    fn facts(version: &str) -> BundleFacts {
        BundleFacts {
            compatible: "x".into(),
            version: version.into(),
            classes: vec!["rootfs".into()],
        }
    }

    fn booted_at(version: &str) -> StatusFile {
        let mut s = StatusFile::default();
        s.slots.insert(
            "rootfs.0".into(),
            crate::slot::status::SlotRecord {
                bundle_version: Some(version.into()),
                compatible: "x".into(),
                manifest_sha256: None,
                image_sha256: None,
                installed_at: Some(1),
                result: InstallResult::Ok,
                message: None,
                trial: Default::default(),
            },
        );
        s
    }

    #[test]
    fn rauc_style_versions_min_version_and_unordered() {
        let c = cfg("");
        let a = c.slot_by_name("rootfs.0");
        let st = booted_at("2024.05.1");
        let t = plan(&c, &facts("2024.06"), a, &st, false).unwrap();
        assert_eq!(t[0].slot.name, "rootfs.1");
        assert!(matches!(
            plan(&c, &facts("2024.04"), a, &st, false),
            Err(PlanError::Downgrade { .. })
        ));
        assert!(matches!(
            plan(&c, &facts("nightly"), a, &st, false),
            Err(PlanError::Unordered { .. })
        ));
        assert!(plan(&c, &facts("nightly"), a, &st, true).is_ok());
        let c = cfg("[rauc-bundles]\nmin-bundle-version = \"3.0\"\n");
        let e = plan(&c, &facts("2.9.9"), None, &StatusFile::default(), true).unwrap_err();
        assert!(e.to_string().contains("min-bundle-version 3.0"), "{e}");
        assert!(plan(&c, &facts("3.0.0"), None, &StatusFile::default(), false).is_ok());
    }
}
