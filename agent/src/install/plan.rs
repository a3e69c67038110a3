//! Pure install decisions: is this bundle acceptable here, and which slot receives each
//! image. No I/O: everything arrives as plain data.

use std::path::PathBuf;

use flipslot_format::Sha256Digest;
use serde::{Deserialize, Serialize};

use crate::config::{Slot, SystemConfig};
use crate::slot::status::{InstallResult, StatusFile};
use crate::slot::{choose_target, SlotHistory};

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
    /// The booted slot is on a trial boot that was not committed: installing now could
    /// overwrite the only proven slot.
    #[error("slot {0} is on its trial boot and not committed yet; run `flipslot health` (or `flipslot mark-good`) before installing another update, so the slot that would be overwritten is not the only proven one")]
    UncommittedTrial(String),
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
    /// The target is the booted slot.
    #[error("refusing to write slot {0}: it is the booted slot")]
    TargetIsBooted(String),
    /// The target's device is the booted slot's device under another name.
    #[error(
        "refusing to write slot {slot}: its device {} is the booted slot {booted}'s device {}",
        device.display(),
        booted_device.display()
    )]
    TargetIsBootedDevice {
        /// The target slot.
        slot: String,
        /// Its device.
        device: PathBuf,
        /// The booted slot.
        booted: String,
        /// The booted slot's device.
        booted_device: PathBuf,
    },
    /// The target's device is mounted.
    #[error(
        "refusing to write slot {slot}: its device {} is mounted at {}",
        device.display(),
        mountpoint.display()
    )]
    TargetMounted {
        /// The target slot.
        slot: String,
        /// Its device.
        device: PathBuf,
        /// Where it is mounted.
        mountpoint: PathBuf,
    },
    /// The image is larger than the target's device.
    #[error(
        "image {class} ({size} bytes) does not fit slot {slot} ({}: {capacity} bytes)",
        device.display()
    )]
    TooLarge {
        /// The image's class.
        class: String,
        /// The image's size.
        size: u64,
        /// The target slot.
        slot: String,
        /// Its device.
        device: PathBuf,
        /// The device's size.
        capacity: u64,
    },
}

/// What the host knows about a target slot's device, gathered before it is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceFacts {
    /// The device is the booted slot's device (another name for the same block device).
    pub is_booted_device: bool,
    /// Where the device is mounted, if it is.
    pub mounted_at: Option<PathBuf>,
    /// The device's size in bytes.
    pub size: u64,
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

/// Where `install --if-needed` found the bundle already installed, so nothing is to do
/// (`booted` or `pending` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlreadyInstalled {
    /// The booted slot runs it and boots next.
    Booted,
    /// Another slot holds it and boots next: only the reboot is left.
    Pending,
}

impl AlreadyInstalled {
    /// The name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            AlreadyInstalled::Booted => "booted",
            AlreadyInstalled::Pending => "pending",
        }
    }
}

/// The rule of `install --if-needed`: the bundle whose signed manifest has SHA-256
/// `manifest` need not be installed when the slot the bootloader boots next (`primary`)
/// holds a good install of that very bundle. It is [`AlreadyInstalled::Booted`] when that
/// slot is the booted one, else [`AlreadyInstalled::Pending`]. A slot that holds the bundle
/// but does not boot next (another install came later, or its trial failed and it was
/// marked bad) does not count: installing makes the bundle boot next again.
pub fn already_installed(
    manifest: &Sha256Digest,
    booted: Option<&Slot>,
    primary: Option<&Slot>,
    status: &StatusFile,
) -> Option<AlreadyInstalled> {
    let primary = primary?;
    let rec = status.slots.get(&primary.name)?;
    if rec.result != InstallResult::Ok || rec.manifest_sha256.as_ref() != Some(manifest) {
        return None;
    }
    Some(if booted.is_some_and(|b| b.name == primary.name) {
        AlreadyInstalled::Booted
    } else {
        AlreadyInstalled::Pending
    })
}

/// Checks compatible and version, and maps each image to its target slot. Refuses while
/// the booted slot is on an uncommitted trial (`booted_trying`: the bootloader says the
/// booted slot is being tried).
pub fn plan(
    cfg: &SystemConfig,
    bundle: &BundleFacts,
    booted: Option<&Slot>,
    booted_trying: bool,
    status: &StatusFile,
    allow_downgrade: bool,
) -> Result<Vec<Target>, PlanError> {
    if let Some(b) = booted.filter(|_| booted_trying) {
        if status.is_uncommitted_trial(&b.name) {
            return Err(PlanError::UncommittedTrial(b.name.clone()));
        }
    }
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

/// May `image` (of `class`, `size` bytes) be written to the target slot whose device is
/// described by `dev`? The last rules before the first irreversible step.
pub fn check_target(
    t: &Target,
    booted: Option<&Slot>,
    class: &str,
    size: u64,
    dev: &DeviceFacts,
) -> Result<(), PlanError> {
    let slot = &t.slot;
    if let Some(b) = booted {
        if b.name == slot.name {
            return Err(PlanError::TargetIsBooted(slot.name.clone()));
        }
        if dev.is_booted_device {
            return Err(PlanError::TargetIsBootedDevice {
                slot: slot.name.clone(),
                device: slot.device.clone(),
                booted: b.name.clone(),
                booted_device: b.device.clone(),
            });
        }
    }
    if let Some(mp) = &dev.mounted_at {
        return Err(PlanError::TargetMounted {
            slot: slot.name.clone(),
            device: slot.device.clone(),
            mountpoint: mp.clone(),
        });
    }
    if size > dev.size {
        return Err(PlanError::TooLarge {
            class: class.to_string(),
            size,
            slot: slot.name.clone(),
            device: slot.device.clone(),
            capacity: dev.size,
        });
    }
    Ok(())
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
        let t = plan(&c, &facts("2024.06"), a, false, &st, false).unwrap();
        assert_eq!(t[0].slot.name, "rootfs.1");
        assert!(matches!(
            plan(&c, &facts("2024.04"), a, false, &st, false),
            Err(PlanError::Downgrade { .. })
        ));
        assert!(matches!(
            plan(&c, &facts("nightly"), a, false, &st, false),
            Err(PlanError::Unordered { .. })
        ));
        assert!(plan(&c, &facts("nightly"), a, false, &st, true).is_ok());
        let c = cfg("[rauc-bundles]\nmin-bundle-version = \"3.0\"\n");
        let e = plan(
            &c,
            &facts("2.9.9"),
            None,
            false,
            &StatusFile::default(),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("min-bundle-version 3.0"), "{e}");
        assert!(plan(
            &c,
            &facts("3.0.0"),
            None,
            false,
            &StatusFile::default(),
            false
        )
        .is_ok());
    }

    #[test]
    fn an_uncommitted_trial_of_the_booted_slot_blocks_installs() {
        let c = cfg("");
        let a = c.slot_by_name("rootfs.0");
        let st = booted_at("1.0.0");
        // Trying and never committed: refused, whatever the bundle.
        assert_eq!(
            plan(&c, &facts("2.0.0"), a, true, &st, true),
            Err(PlanError::UncommittedTrial("rootfs.0".into()))
        );
        // Committed, or not on trial: allowed.
        let mut committed = st.clone();
        if let Some(r) = committed.slots.get_mut("rootfs.0") {
            r.trial.committed_at = Some(5);
        }
        assert!(plan(&c, &facts("2.0.0"), a, true, &committed, false).is_ok());
        assert!(plan(&c, &facts("2.0.0"), a, false, &st, false).is_ok());
    }

    #[test]
    fn if_needed_skips_only_the_bundle_that_boots_next() {
        let c = cfg("");
        let (a, b) = (c.slot_by_name("rootfs.0"), c.slot_by_name("rootfs.1"));
        let m = Sha256Digest([7; 32]);
        let other = Sha256Digest([8; 32]);
        let mut st = booted_at("1.0.0");
        if let Some(r) = st.slots.get_mut("rootfs.0") {
            r.manifest_sha256 = Some(m);
        }
        // Booted from A, which holds the bundle and boots next.
        assert_eq!(
            already_installed(&m, a, a, &st),
            Some(AlreadyInstalled::Booted)
        );
        // Another bundle, or nothing recorded for the primary slot: install.
        assert_eq!(already_installed(&other, a, a, &st), None);
        assert_eq!(already_installed(&m, a, b, &st), None);
        assert_eq!(already_installed(&m, a, None, &st), None);
        // B holds it and boots next; the booted slot is A (or none, a factory setup).
        let mut staged = st.clone();
        let mut rec = st.slots["rootfs.0"].clone();
        rec.trial = Default::default();
        staged.slots.insert("rootfs.1".into(), rec);
        assert_eq!(
            already_installed(&m, a, b, &staged),
            Some(AlreadyInstalled::Pending)
        );
        assert_eq!(
            already_installed(&m, None, b, &staged),
            Some(AlreadyInstalled::Pending)
        );
        // A holds it but B boots next (a later install of another bundle): install, so
        // that this bundle boots next again.
        let mut later = staged.clone();
        if let Some(r) = later.slots.get_mut("rootfs.1") {
            r.manifest_sha256 = Some(other);
        }
        assert_eq!(already_installed(&m, a, b, &later), None);
        // A failed or interrupted install of the bundle is no install.
        let mut failed = staged.clone();
        if let Some(r) = failed.slots.get_mut("rootfs.1") {
            r.result = InstallResult::Failed;
        }
        assert_eq!(already_installed(&m, a, b, &failed), None);
        assert_eq!(AlreadyInstalled::Pending.as_str(), "pending");
        assert_eq!(
            serde_json::to_value(AlreadyInstalled::Booted).unwrap(),
            "booted"
        );
    }

    #[test]
    fn targets_must_not_be_booted_mounted_or_too_small() {
        let c = cfg("");
        let a = c.slot_by_name("rootfs.0");
        let t = |name: &str| Target {
            image: 0,
            slot: c.slot_by_name(name).unwrap().clone(),
        };
        let dev = DeviceFacts {
            size: 100,
            ..DeviceFacts::default()
        };
        assert_eq!(check_target(&t("rootfs.1"), a, "rootfs", 100, &dev), Ok(()));
        assert_eq!(
            check_target(&t("rootfs.0"), a, "rootfs", 1, &dev),
            Err(PlanError::TargetIsBooted("rootfs.0".into()))
        );
        let e = check_target(
            &t("rootfs.1"),
            a,
            "rootfs",
            1,
            &DeviceFacts {
                is_booted_device: true,
                ..dev.clone()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing to write slot rootfs.1: its device /dev/b is the booted slot rootfs.0's device /dev/a"
        );
        let e = check_target(
            &t("rootfs.1"),
            a,
            "rootfs",
            1,
            &DeviceFacts {
                mounted_at: Some("/mnt".into()),
                ..dev.clone()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing to write slot rootfs.1: its device /dev/b is mounted at /mnt"
        );
        let e = check_target(&t("rootfs.1"), a, "rootfs", 101, &dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            "image rootfs (101 bytes) does not fit slot rootfs.1 (/dev/b: 100 bytes)"
        );
        // Without a booted slot (factory install) only mounts and sizes matter.
        assert_eq!(
            check_target(&t("rootfs.0"), None, "rootfs", 100, &dev),
            Ok(())
        );
    }
}
