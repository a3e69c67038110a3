//! Installing a bundle: verify it, plan targets, take each target out of the boot
//! rotation, stream verified bytes into it, read it back, record the result and finally
//! ask the bootloader to try it. This module owns the public types, the [`Progress`] and
//! `ImageWriter` traits and the curated exports; [`fsb`] and [`rauc`] each verify and
//! write one bundle format, `steps` runs the steps below for both, [`plan`] holds every
//! accept and target rule.
//!
//! Irreversible steps, in order (each named in errors and tested for a crash):
//! 1. target marked bad in the bootloader and its status record set to "failed: interrupted";
//! 2. target slot overwritten;
//! 3. status record set to ok;
//! 4. target made primary (`mark_active`), after which the next boot tries it.
//!
//! Until step 4 the bootloader's choice of primary slot is untouched; the booted slot and
//! its status record are never touched at all.

pub mod fsb;
pub mod plan;
mod pool;
pub mod rauc;
mod readback;
mod steps;

pub use fsb::install;
pub use rauc::{install_rauc, RaucTrust};

use crate::bootloader::Bootloader;
use crate::config::{Slot, SystemConfig};
use crate::host::clock::Clock;
use crate::install::plan::Target;
use crate::slot::device::{SlotDevice, SlotDevices};
use anyhow::Result;
use flipslot_format::Sha256Digest;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Choices the caller makes.
#[derive(Debug, Clone, Copy)]
pub struct InstallOptions {
    /// Install even if the bundle is older than the booted version.
    pub allow_downgrade: bool,
    /// Read the slot back after writing and check every chunk again (against the signed
    /// chunk hashes of a `.fsb`, or the hashes taken while writing a RAUC image).
    pub read_back: bool,
    /// Refuse the bundle unless its signed manifest has this SHA-256 (the daemon passes
    /// the hash its signed channel names). Checked right after the signatures, before
    /// anything is written.
    pub expected_manifest_sha256: Option<Sha256Digest>,
    /// Write nothing when the slot that boots next already holds this bundle
    /// ([`plan::already_installed`]); the outcome says so in `skipped`.
    pub if_needed: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            allow_downgrade: false,
            read_back: true,
            expected_manifest_sha256: None,
            if_needed: false,
        }
    }
}

/// What the install touches.
pub struct InstallEnv<'a> {
    /// The system config.
    pub cfg: &'a SystemConfig,
    /// The booted slot, if the system runs from one.
    pub booted: Option<&'a Slot>,
    /// The bootloader backend.
    pub bootloader: &'a mut dyn Bootloader,
    /// Slot device access.
    pub devices: &'a dyn SlotDevices,
    /// The clock.
    pub clock: &'a dyn Clock,
    /// The status file (already resolved under the root).
    pub status_path: PathBuf,
}

impl std::fmt::Debug for InstallEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallEnv")
            .field("booted", &self.booted.map(|s| &s.name))
            .field("status_path", &self.status_path)
            .finish_non_exhaustive()
    }
}

/// One image written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstalledImage {
    /// Image class.
    pub class: String,
    /// Slot name.
    pub slot: String,
    /// Slot device.
    pub device: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// The signed manifest's SHA-256 of the image (a RAUC image's is not computed on the
    /// device: see [`crate::install::rauc`]); a hex string in JSON.
    pub sha256: Sha256Digest,
    /// How the slot was written (`direct` or `buffered`); `None` when it already held
    /// the image and was not written.
    #[serde(default)]
    pub io: Option<crate::slot::device::IoMode>,
}

/// The result of a successful install.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallOutcome {
    /// Bundle version.
    pub version: String,
    /// Bundle compatible.
    pub compatible: String,
    /// SHA-256 of the signed manifest; a hex string in JSON.
    pub manifest_sha256: Sha256Digest,
    /// What was written where.
    pub images: Vec<InstalledImage>,
    /// The slot the bootloader will try at the next boot.
    pub primary: String,
    /// Its bootname.
    pub primary_bootname: String,
    /// Whether each slot was read back.
    pub read_back: bool,
    /// Set when [`InstallOptions::if_needed`] found the bundle already in `primary`, the
    /// slot that boots next: nothing was written and nothing changed, and `images` is
    /// empty. `skip_reason` in JSON (`booted` or `pending`).
    #[serde(
        default,
        rename = "skip_reason",
        skip_serializing_if = "Option::is_none"
    )]
    pub skipped: Option<plan::AlreadyInstalled>,
}

/// Where an install reports what it does: the CLI draws a bar or prints JSON lines, the
/// daemon streams JSON lines to its socket and turns them into reports. The install
/// pipeline knows nothing of terminals or formats.
pub trait Progress {
    /// The install starts writing: the bundle as shown, its version and the target slots.
    fn started(&mut self, bundle: &str, version: &str, targets: &[String]);
    /// `done` of `total` bytes of a phase (`verify signature`, `write rootfs.1`, …).
    fn update(&mut self, phase: &str, done: u64, total: u64);
    /// The install has finished writing and activated its slot.
    fn finished(&mut self);
}

/// A verified bundle, as the install steps see it.
struct Verified {
    /// The bundle's compatible string.
    compatible: String,
    /// Its version as written.
    version: String,
    /// Its images, in bundle order.
    images: Vec<VerifiedImage>,
    /// SHA-256 of the signed manifest.
    manifest_sha256: Sha256Digest,
}

/// One image of a verified bundle, as the signed manifest describes it.
struct VerifiedImage {
    /// The slot class it is for.
    class: String,
    /// Its size in bytes.
    size: u64,
    /// Its SHA-256.
    sha256: Sha256Digest,
}

impl Verified {
    /// A verified bundle from its manifest's parts; `images` yields each image's class,
    /// size and SHA-256 in bundle order.
    fn new<'m>(
        compatible: &str,
        version: String,
        images: impl Iterator<Item = (&'m str, u64, Sha256Digest)>,
        manifest_sha256: Sha256Digest,
    ) -> Verified {
        Verified {
            compatible: compatible.to_string(),
            version,
            images: images
                .map(|(class, size, sha256)| VerifiedImage {
                    class: class.to_string(),
                    size,
                    sha256,
                })
                .collect(),
            manifest_sha256,
        }
    }

    /// What planning needs to know.
    fn plan_facts(&self) -> plan::BundleFacts {
        plan::BundleFacts {
            compatible: self.compatible.clone(),
            version: self.version.clone(),
            classes: self.images.iter().map(|i| i.class.clone()).collect(),
        }
    }
}

/// A verified bundle of one format: what the steps need to know, and writing (and
/// reading back) one of its images into its target.
trait ImageWriter {
    /// What the bundle says, once its signature has been checked.
    fn verified(&self) -> Verified;

    /// Writes the image of target `t` into `dev`, flushes it, and reads it back when
    /// `opts` asks for that. The slot counts as written only if this returns `Ok`.
    fn write(
        &mut self,
        t: &Target,
        dev: &mut dyn SlotDevice,
        opts: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstalledImage>;
}
