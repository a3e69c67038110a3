//! Pure install decisions: is this bundle acceptable here, and which slot receives each
//! image. No I/O: everything arrives as plain data.

use crate::config::{Slot, SystemConfig};
use crate::slots::{choose_target, SlotHistory};
use crate::status::{InstallResult, StatusFile};
use flipslot_image::Manifest;

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
    semver::Version::parse(rec.bundle_version.as_deref()?).ok()
}

/// Checks compatible and version, and maps each image to its target slot.
pub fn plan(
    cfg: &SystemConfig,
    manifest: &Manifest,
    booted: Option<&Slot>,
    status: &StatusFile,
    allow_downgrade: bool,
) -> Result<Vec<Target>, PlanError> {
    if manifest.compatible != cfg.compatible {
        return Err(PlanError::Incompatible {
            bundle: manifest.compatible.clone(),
            system: cfg.compatible.clone(),
        });
    }
    if let (Some(current), Some(slot)) = (booted_version(status, booted), booted) {
        if manifest.version < current && !allow_downgrade {
            return Err(PlanError::Downgrade {
                bundle: manifest.version.to_string(),
                booted: current.to_string(),
                slot: slot.name.clone(),
            });
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
    for (i, img) in manifest.images.iter().enumerate() {
        if manifest.images[..i].iter().any(|o| o.class == img.class) {
            return Err(PlanError::DuplicateClass(img.class.clone()));
        }
        let slot =
            choose_target(cfg, &img.class, booted, &history).map_err(|e| PlanError::NoSlot {
                class: img.class.clone(),
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
