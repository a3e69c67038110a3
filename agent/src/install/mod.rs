//! The install pipeline: verify the bundle, plan targets, take each target out of the
//! boot rotation, stream verified chunks into it, read it back, record the result and
//! finally ask the bootloader to try it.
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

use crate::bootloader::{Bootloader, SlotBootState};
use crate::config::{Slot, SystemConfig};
use crate::host::clock::Clock;
use crate::install::plan::{DeviceFacts, Target};
use crate::slot::device::SlotDevices;
use crate::slot::status::{InstallResult, SlotRecord, StatusFile};
use anyhow::{bail, Context, Result};
use flipslot_format::source::ByteSource;
use flipslot_format::{Bundle, Keyring, VerifyPolicy};
use flipslot_rauc::bundle::RaucBundle;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Choices the caller makes.
#[derive(Debug, Clone, Copy)]
pub struct InstallOptions {
    /// Install even if the bundle is older than the booted version.
    pub allow_downgrade: bool,
    /// Read the slot back after writing and compare with the image hash.
    pub read_back: bool,
    /// Refuse the bundle unless its signed manifest has this SHA-256 (the daemon passes
    /// the hash its signed channel names). Checked right after the signatures, before
    /// anything is written.
    pub expected_manifest_sha256: Option<flipslot_format::Sha256Digest>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            allow_downgrade: false,
            read_back: true,
            expected_manifest_sha256: None,
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
    /// SHA-256 of the image (as read back when read-back is on).
    pub sha256: String,
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
    /// SHA-256 of the signed manifest.
    pub manifest_sha256: String,
    /// What was written where.
    pub images: Vec<InstalledImage>,
    /// The slot the bootloader will try at the next boot.
    pub primary: String,
    /// Its bootname.
    pub primary_bootname: String,
    /// Whether each slot was read back.
    pub read_back: bool,
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

/// Installs the flipslot bundle read from `source`, verified against `keyring`. On
/// error nothing about the booted slot or the bootloader's primary slot has changed; a
/// target that was being written stays marked bad.
pub fn install<S: ByteSource + Send>(
    env: &mut InstallEnv<'_>,
    keyring: &Keyring,
    source: S,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let what = source.describe();
    let policy = VerifyPolicy {
        min_signatures: env.cfg.min_signatures,
    };
    let mut bundle = Bundle::open(source, keyring, &policy)
        .with_context(|| format!("bundle {what} rejected"))?;
    if let Some(want) = opts.expected_manifest_sha256 {
        let got = bundle.manifest_sha256();
        if got != want {
            bail!(
                "bundle {what} rejected: its manifest has sha256 {}, but {} was expected \
                 (the channel names another bundle)",
                got.to_hex(),
                want.to_hex()
            );
        }
    }
    let mut writer = FlipslotWriter {
        bundle: &mut bundle,
    };
    run(env, &what, &mut writer, opts, progress)
}

/// The X.509 trust a RAUC bundle is checked against.
#[derive(Debug)]
pub struct RaucTrust<'a> {
    /// Trusted certificates.
    pub store: &'a flipslot_rauc::x509::TrustStore,
    /// Purpose, partial chains, allowed signers, signing time.
    pub options: &'a flipslot_rauc::x509::VerifyOptions,
    /// Which bundle formats are accepted.
    pub formats: flipslot_rauc::bundle::AllowedFormats,
}

/// Installs the RAUC bundle (`.raucb`) read from `source`, with the same steps and
/// guarantees as [`install`]: its CMS signature (and hash tree) is verified against
/// `trust` before anything is parsed, each image's SHA-256 is checked as it is written
/// and again on read-back, and the slot is activated only after all of that.
pub fn install_rauc<S: ByteSource + Send>(
    env: &mut InstallEnv<'_>,
    trust: &RaucTrust<'_>,
    source: S,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let what = source.describe();
    let local = source.rereads_are_cheap();
    let now = env.clock.now_unix();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let mut bundle = RaucBundle::open(
        source,
        trust.store,
        trust.options,
        trust.formats,
        now,
        &mut |d, n| progress.update("verify signature", d, n),
    )
    .with_context(|| format!("bundle {what} rejected"))?;
    if local && bundle.is_verity() {
        // A local file is cheap to read twice: check every block now, so a damaged
        // bundle is refused before the target slot is touched. (Streamed bundles are
        // checked block by block as they are written; the target stays marked bad.)
        bundle
            .verify_payload(&mut |d, n| progress.update("verify payload", d, n))
            .with_context(|| format!("bundle {what} rejected"))?;
    }
    log::info!(
        "bundle {what}: {} bundle signed by {}",
        bundle.manifest().format.as_str(),
        bundle.signer().subject
    );
    let mut writer = RaucWriter {
        bundle: &mut bundle,
    };
    run(env, &what, &mut writer, opts, progress)
}

/// A verified bundle, as the install steps see it.
struct Verified {
    facts: plan::BundleFacts,
    /// Image sizes, in bundle order.
    sizes: Vec<u64>,
    /// Image SHA-256s (hex), in bundle order.
    sha256s: Vec<String>,
    manifest_sha256: String,
}

/// A verified bundle of one format: what the steps need to know, and writing (and
/// reading back) one of its images into its target.
trait ImageWriter {
    fn verified(&self) -> Verified;

    fn write(
        &mut self,
        t: &Target,
        dev: &mut dyn crate::slot::device::SlotDevice,
        opts: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstalledImage>;
}

struct FlipslotWriter<'b, S: ByteSource + Send> {
    bundle: &'b mut Bundle<S>,
}

impl<S: ByteSource + Send> ImageWriter for FlipslotWriter<'_, S> {
    fn verified(&self) -> Verified {
        let m = self.bundle.manifest();
        Verified {
            facts: plan::BundleFacts::from(m),
            sizes: m.images.iter().map(|i| i.size).collect(),
            sha256s: m.images.iter().map(|i| i.sha256.to_hex()).collect(),
            manifest_sha256: self.bundle.manifest_sha256().to_hex(),
        }
    }

    fn write(
        &mut self,
        t: &Target,
        dev: &mut dyn crate::slot::device::SlotDevice,
        opts: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstalledImage> {
        write_and_check(self.bundle, t, dev, opts, progress)
    }
}

struct RaucWriter<'b, S: ByteSource + Send> {
    bundle: &'b mut RaucBundle<S>,
}

impl<S: ByteSource + Send> ImageWriter for RaucWriter<'_, S> {
    fn verified(&self) -> Verified {
        let m = self.bundle.manifest();
        Verified {
            facts: plan::BundleFacts {
                compatible: m.compatible.clone(),
                version: m.version.clone().unwrap_or_default(),
                classes: m.images.iter().map(|i| i.class.clone()).collect(),
            },
            sizes: m.images.iter().map(|i| i.size).collect(),
            sha256s: m.images.iter().map(|i| i.sha256.to_hex()).collect(),
            manifest_sha256: self.bundle.manifest_sha256().to_hex(),
        }
    }

    fn write(
        &mut self,
        t: &Target,
        dev: &mut dyn crate::slot::device::SlotDevice,
        opts: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstalledImage> {
        let img = self.bundle.manifest().images[t.image].clone();
        let phase = format!("write {}", t.slot.name);
        // The bytes come through the bundle's checks (every verity block against the
        // tree, every plain block against the hashes taken with the signature), so they
        // are the signed ones. The manifest's SHA-256 is still checked once: on read-back,
        // or, without read-back, while writing.
        let hash_now = !opts.read_back;
        let mut result: Option<Result<Option<flipslot_format::Sha256Digest>>> = None;
        self.bundle
            .with_image_reader(t.image, |r| {
                result = Some(crate::install::rauc::write_from_reader(
                    r,
                    img.size,
                    &img.filename,
                    &mut *dev,
                    hash_now,
                    &mut |d, n| progress.update(&phase, d, n),
                ));
                Ok(())
            })
            .with_context(|| format!("cannot read image {} from the bundle", img.filename))?;
        if let Some(got) = result.context("the image was not read")?? {
            if got != img.sha256 {
                bail!(
                    "image {} has sha256 {}, but the signed manifest says {}",
                    img.filename,
                    got.to_hex(),
                    img.sha256.to_hex()
                );
            }
        }
        dev.sync()
            .with_context(|| format!("cannot flush slot device {}", dev.path().display()))?;
        if opts.read_back {
            let phase = format!("read-back {}", t.slot.name);
            crate::install::rauc::verify_sha256(dev, img.size, &img.sha256, &mut |d, n| {
                progress.update(&phase, d, n)
            })
            .with_context(|| {
                format!(
                    "read-back of slot {} ({}) does not match the image",
                    t.slot.name,
                    dev.path().display()
                )
            })?;
        }
        Ok(InstalledImage {
            class: img.class.clone(),
            slot: t.slot.name.clone(),
            device: t.slot.device.clone(),
            size: img.size,
            sha256: img.sha256.to_hex(),
            io: Some(dev.io_mode()),
        })
    }
}

/// The install steps after verification, the same for every bundle format.
fn run(
    env: &mut InstallEnv<'_>,
    what: &str,
    writer: &mut dyn ImageWriter,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let bundle = writer.verified();
    let facts = &bundle.facts;
    let mut status = StatusFile::load(&env.status_path)?;
    let booted_trying = match env.booted {
        Some(b) => env.bootloader.slot_state(&b.bootname)? == SlotBootState::Trying,
        None => false,
    };
    let targets = plan::plan(
        env.cfg,
        facts,
        env.booted,
        booted_trying,
        &status,
        opts.allow_downgrade,
    )
    .with_context(|| format!("bundle {what} cannot be installed here"))?;
    let boot_target = plan::boot_target(&targets, env.booted)
        .map(|t| t.slot.clone())
        .context("bundle has no image")?;

    // Open and check every target before changing anything.
    let mut devices = Vec::new();
    // RAUC's install-same=false: a slot that already holds this very image (recorded
    // as a good install) is not written again; it is only activated.
    let skip: Vec<bool> = targets
        .iter()
        .map(|t| {
            !t.slot.install_same
                && status.slots.get(&t.slot.name).is_some_and(|r| {
                    r.result == InstallResult::Ok
                        && r.image_sha256.as_deref() == Some(bundle.sha256s[t.image].as_str())
                })
        })
        .collect();
    for t in &targets {
        devices.push(open_target(
            env,
            t,
            &facts.classes[t.image],
            bundle.sizes[t.image],
        )?);
    }
    let names: Vec<String> = targets.iter().map(|t| t.slot.name.clone()).collect();
    progress.started(what, &facts.version, &names);

    // Step 1: out of rotation, and recorded as interrupted until proven otherwise.
    let started = env.clock.now_unix();
    for t in targets
        .iter()
        .zip(&skip)
        .filter(|(_, s)| !**s)
        .map(|(t, _)| t)
    {
        env.bootloader
            .mark_bad(&t.slot.bootname)
            .with_context(|| format!("cannot mark slot {} bad", t.slot.name))?;
        status.set_record(
            &t.slot.name,
            SlotRecord {
                bundle_version: Some(facts.version.clone()),
                compatible: facts.compatible.clone(),
                manifest_sha256: Some(bundle.manifest_sha256.clone()),
                image_sha256: None,
                installed_at: Some(started),
                result: InstallResult::Failed,
                message: Some("installation interrupted".into()),
                trial: Default::default(),
            },
        );
    }
    status.save(&env.status_path)?;
    crate::host::failpoint::hit("install-after-mark-bad");

    // Step 2: write and verify.
    let mut images = Vec::new();
    for ((t, dev), skipped) in targets.iter().zip(devices.iter_mut()).zip(&skip) {
        if *skipped {
            log::info!(
                "slot {} already holds image {} (install-same=false): not written again",
                t.slot.name,
                bundle.sha256s[t.image]
            );
            images.push(InstalledImage {
                class: facts.classes[t.image].clone(),
                slot: t.slot.name.clone(),
                device: t.slot.device.clone(),
                size: bundle.sizes[t.image],
                sha256: bundle.sha256s[t.image].clone(),
                io: None,
            });
            continue;
        }
        let r = writer.write(t, dev.as_mut(), opts, progress);
        match r {
            Ok(img) => images.push(img),
            Err(e) => {
                let msg = format!("{e:#}");
                if let Some(rec) = status.slots.get_mut(&t.slot.name) {
                    rec.message = Some(msg);
                }
                if let Err(save_err) = status.save(&env.status_path) {
                    log::error!("cannot record the failure: {save_err:#}");
                }
                return Err(e.context(format!(
                    "installing into slot {} failed; it stays marked bad",
                    t.slot.name
                )));
            }
        }
    }

    crate::host::failpoint::hit("install-before-record");
    // Step 3: record success.
    let finished = env.clock.now_unix();
    for img in images.iter().filter(|i| {
        !targets
            .iter()
            .zip(&skip)
            .any(|(t, s)| *s && t.slot.name == i.slot)
    }) {
        if let Some(rec) = status.slots.get_mut(&img.slot) {
            rec.image_sha256 = Some(img.sha256.clone());
            rec.installed_at = Some(finished);
            rec.result = InstallResult::Ok;
            rec.message = None;
        }
    }
    status.save(&env.status_path)?;

    crate::host::failpoint::hit("install-before-activate");
    // Step 4: try it at the next boot. The booted slot is the fallback: a routine boot
    // whose health run has not reset its TRY flag yet gets it reset now, or a failed
    // trial of the new slot would find nothing bootable.
    if let Some(b) = env.booted.filter(|_| booted_trying) {
        env.bootloader
            .mark_good(&b.bootname)
            .with_context(|| format!("cannot keep the booted slot {} as fallback", b.name))?;
    }
    env.bootloader
        .mark_active(&boot_target.bootname)
        .with_context(|| format!("cannot make slot {} primary", boot_target.name))?;
    progress.finished();
    Ok(InstallOutcome {
        version: facts.version.clone(),
        compatible: facts.compatible.clone(),
        manifest_sha256: bundle.manifest_sha256.clone(),
        images,
        primary: boot_target.name.clone(),
        primary_bootname: boot_target.bootname.clone(),
        read_back: opts.read_back,
    })
}

/// Opens a target slot's device after [`plan::check_target`] allowed writing it.
fn open_target(
    env: &InstallEnv<'_>,
    t: &Target,
    class: &str,
    size: u64,
) -> Result<Box<dyn crate::slot::device::SlotDevice>> {
    let slot = &t.slot;
    // The cheapest rule first: no device is touched for the booted slot itself.
    plan::check_target(
        t,
        env.booted,
        class,
        size,
        &DeviceFacts {
            size: u64::MAX,
            ..DeviceFacts::default()
        },
    )?;
    let is_booted_device = env
        .booted
        .is_some_and(|b| env.devices.same_device(&b.device, &slot.device));
    let dev = env
        .devices
        .open(&slot.device)
        .with_context(|| format!("slot {}", slot.name))?;
    let facts = DeviceFacts {
        is_booted_device,
        mounted_at: env.devices.mounted_at(&slot.device)?,
        size: dev.size(),
    };
    plan::check_target(t, env.booted, class, size, &facts)?;
    Ok(dev)
}

fn write_and_check<S: ByteSource + Send>(
    bundle: &mut Bundle<S>,
    t: &Target,
    dev: &mut dyn crate::slot::device::SlotDevice,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstalledImage> {
    let img = bundle.manifest().images[t.image].clone();
    let phase = format!("write {}", t.slot.name);
    fsb::write_image(bundle, t.image, dev, &mut |d, n| {
        progress.update(&phase, d, n)
    })?;
    dev.sync()
        .with_context(|| format!("cannot flush slot device {}", dev.path().display()))?;
    if opts.read_back {
        let phase = format!("read-back {}", t.slot.name);
        fsb::verify_device(dev, &img, &mut |d, n| progress.update(&phase, d, n)).with_context(
            || {
                format!(
                    "read-back of slot {} ({}) does not match the image",
                    t.slot.name,
                    dev.path().display()
                )
            },
        )?;
    }
    let sha256 = img.sha256;
    Ok(InstalledImage {
        class: img.class.clone(),
        slot: t.slot.name.clone(),
        device: t.slot.device.clone(),
        size: img.size,
        sha256: sha256.to_hex(),
        io: Some(dev.io_mode()),
    })
}
