//! The install steps after verification, the same for every bundle format: plan and open
//! the targets, then the irreversible steps listed in [`crate::install`], in order. With
//! `if_needed`, a bundle that already boots next is left alone before any of them.

use crate::bootloader::SlotBootState;
use crate::install::plan::{self, DeviceFacts, Target};
use crate::install::{
    ImageWriter, InstallEnv, InstallOptions, InstallOutcome, InstalledImage, Progress,
};
use crate::slot::device::SlotDevice;
use crate::slot::status::{InstallResult, SlotRecord, StatusFile};
use anyhow::{Context, Result};

/// The install steps after verification, the same for every bundle format.
pub(super) fn run(
    env: &mut InstallEnv<'_>,
    what: &str,
    writer: &mut dyn ImageWriter,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let bundle = writer.verified();
    let facts = bundle.plan_facts();
    let mut status = StatusFile::load(&env.status_path)?;
    let booted_trying = match env.booted {
        Some(b) => env.bootloader.slot_state(&b.bootname)? == SlotBootState::Trying,
        None => false,
    };
    if opts.if_needed {
        let primary = env.bootloader.primary()?;
        let primary = primary.and_then(|bn| env.cfg.slot_by_bootname(&bn));
        if let (Some(why), Some(slot)) = (
            plan::already_installed(&bundle.manifest_sha256, env.booted, primary, &status),
            primary,
        ) {
            log::info!(
                "bundle {what} ({} {}) is already installed in slot {} ({}); nothing to do",
                bundle.compatible,
                bundle.version,
                slot.name,
                why.as_str()
            );
            return Ok(InstallOutcome {
                version: bundle.version.clone(),
                compatible: bundle.compatible.clone(),
                manifest_sha256: bundle.manifest_sha256,
                images: Vec::new(),
                primary: slot.name.clone(),
                primary_bootname: slot.bootname.clone(),
                read_back: false,
                skipped: Some(why),
            });
        }
    }
    let targets = plan::plan(
        env.cfg,
        &facts,
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
                        && r.image_sha256 == Some(bundle.images[t.image].sha256)
                })
        })
        .collect();
    for t in &targets {
        devices.push(open_target(
            env,
            t,
            &bundle.images[t.image].class,
            bundle.images[t.image].size,
        )?);
    }
    let names: Vec<String> = targets.iter().map(|t| t.slot.name.clone()).collect();
    progress.started(what, &bundle.version, &names);

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
                bundle_version: Some(bundle.version.clone()),
                compatible: bundle.compatible.clone(),
                manifest_sha256: Some(bundle.manifest_sha256),
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
            let image = &bundle.images[t.image];
            log::info!(
                "slot {} already holds image {} (install-same=false): not written again",
                t.slot.name,
                image.sha256
            );
            images.push(InstalledImage {
                class: image.class.clone(),
                slot: t.slot.name.clone(),
                device: t.slot.device.clone(),
                size: image.size,
                sha256: image.sha256,
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
            rec.image_sha256 = Some(img.sha256);
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
        version: bundle.version.clone(),
        compatible: bundle.compatible.clone(),
        manifest_sha256: bundle.manifest_sha256,
        images,
        primary: boot_target.name.clone(),
        primary_bootname: boot_target.bootname.clone(),
        read_back: opts.read_back,
        skipped: None,
    })
}

/// Opens a target slot's device after [`plan::check_target`] allowed writing it.
fn open_target(
    env: &InstallEnv<'_>,
    t: &Target,
    class: &str,
    size: u64,
) -> Result<Box<dyn SlotDevice>> {
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
