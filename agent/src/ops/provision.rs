//! `flipslot provision`: verifies the signed description (before anything in it is
//! parsed), verifies the bundle, picks and locks the disk the signed target rule allows,
//! then runs the provisioning steps, reporting each to the caller and to `--report-url`.
//! Needs no system config: it runs from a netbooted initramfs or a rescue system.

use crate::host::clock::{Clock, SystemClock};
use crate::host::disks;
use crate::host::paths::Root;
use crate::net::HttpOptions;
use crate::provision::fetch::{read_bounded, Location};
use crate::provision::report::StepReports;
use crate::provision::{self, select, Events, Job, Mke2fs, Outcome};
use crate::slot::device::HostDevice;
use anyhow::{Context, Result};
use flipslot_format::provision::{verify_provision, MAX_PROVISION_LEN};
use flipslot_format::{Bundle, Keyring, VerifyPolicy};
use serde_json::json;
use std::path::PathBuf;

/// Where the keyring of provisioning lives in a netboot initramfs.
pub const DEFAULT_PROVISION_KEYRING: &str = "/etc/flipslot/provision-keys";

/// What `flipslot provision` was asked to do.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The signed description (file or URL).
    pub description: String,
    /// The bundle (file or URL).
    pub bundle: String,
    /// The trusted keys (a `.pub` file or a directory of them).
    pub keyring: PathBuf,
    /// `--disk`: the disk to write; otherwise the description's target rule picks one.
    pub disk: Option<PathBuf>,
    /// `--wipe`: erase a disk that holds data (only if the description allows it).
    pub wipe: bool,
    /// `--report-url`.
    pub report_url: Option<String>,
    /// Use direct I/O on the disk.
    pub direct_io: bool,
}

/// Runs provisioning under `root` (sysfs, `/dev` and `/proc` are read there).
pub fn provision(
    root: &Root,
    req: &ProvisionRequest,
    http: &HttpOptions,
    ui: &mut dyn Events,
) -> Result<Outcome> {
    let reports = StepReports::new(req.report_url.as_deref(), http, "unknown");
    let mut ev = Tee {
        ui,
        reports: &reports,
    };
    let result = run(root, req, http, &mut ev);
    if let Err(e) = &result {
        reports.send("failed", "error", &format!("{e:#}"), json!({}));
    }
    result
}

fn run(
    root: &Root,
    req: &ProvisionRequest,
    http: &HttpOptions,
    ev: &mut Tee<'_>,
) -> Result<Outcome> {
    let reports = ev.reports;
    // Paths from the command line are the caller's; --root only moves sysfs, /dev and /proc.
    let keyring = Keyring::load(&req.keyring)
        .with_context(|| format!("cannot load the keyring {}", req.keyring.display()))?;
    let policy = VerifyPolicy { min_signatures: 1 };

    let desc_at = Location::parse(&req.description);
    ev.step("description", &desc_at.describe());
    let bytes = read_bounded(&desc_at, MAX_PROVISION_LEN as u64, http).with_context(|| {
        format!(
            "cannot read the provisioning description {}",
            desc_at.describe()
        )
    })?;
    let desc = verify_provision(&bytes, &keyring, &policy)
        .with_context(|| format!("provisioning description {} rejected", desc_at.describe()))?;

    let bundle_at = Location::parse(&req.bundle);
    ev.step("bundle", &bundle_at.describe());
    let mut source = bundle_at.open(http)?;
    let mut bundle = Bundle::open(&mut *source, &keyring, &policy)
        .with_context(|| format!("bundle {} rejected", bundle_at.describe()))?;
    provision::plan::check_compatible(&desc, &bundle.manifest().compatible)
        .with_context(|| format!("bundle {} rejected", bundle_at.describe()))?;

    let requests = provision::plan::requests(&desc)?;
    let explicit = match &req.disk {
        Some(p) => Some(disks::explicit(root, p)?),
        None => None,
    };
    let all = match &explicit {
        Some(_) => Vec::new(),
        None => disks::list(root)?,
    };
    let sector_hint = explicit.as_ref().map_or(512, |d| d.sector_size);
    let min_size = flipslot_gpt::min_disk_size(sector_hint, &requests);
    let disk = select::select(&all, explicit.as_ref(), &desc.target, min_size)?;
    let shown = disk.path.display().to_string();
    reports.set_machine(disk.serial.as_deref().unwrap_or(&disk.name));
    ev.step(
        "select",
        &format!(
            "disk {shown}: {} bytes{}",
            disk.size,
            disk.serial
                .as_deref()
                .map(|s| format!(", serial {s}"))
                .unwrap_or_default()
        ),
    );

    let dev_path = match &req.disk {
        Some(p) => p.clone(),
        None => root.resolve(&disk.path),
    };
    let _lock = crate::host::sys::lock_exclusive(&dev_path)
        .with_context(|| format!("cannot lock disk {shown}: is another provisioning running?"))?;
    let mut dev = HostDevice::open(&dev_path, req.direct_io)
        .with_context(|| format!("cannot open disk {shown}"))?;

    let esp_at = desc_at.sibling(&desc.esp.file);
    let mut esp = esp_at
        .open(http)
        .with_context(|| format!("cannot open the ESP image {}", esp_at.describe()))?;
    let scratch = tempfile::Builder::new()
        .prefix("flipslot-provision.")
        .tempdir()
        .context("cannot make a scratch directory")?;
    let job = Job {
        desc: &desc,
        esp: &mut *esp,
        bundle: &mut bundle,
        sector_size: disk.sector_size,
        wipe: req.wipe,
        now: SystemClock.now_unix(),
        mkfs: &Mke2fs,
        scratch: scratch.path(),
    };
    let outcome = provision::run(job, &mut dev, &shown, ev)?;
    drop(dev);
    if !outcome.nothing_to_do {
        if let Err(e) = crate::host::sys::reread_partitions(&dev_path) {
            // A loop device without partition scanning refuses this; nothing needs it here.
            log::info!("the kernel did not re-read the partitions of {shown}: {e}");
        }
    }
    reports.send(
        if outcome.nothing_to_do {
            "nothing-to-do"
        } else {
            "complete"
        },
        "ok",
        &shown,
        json!({ "version": outcome.version, "compatible": outcome.compatible }),
    );
    Ok(outcome)
}

/// Sends each step to the caller and as a report.
struct Tee<'a> {
    ui: &'a mut dyn Events,
    reports: &'a StepReports,
}

impl Events for Tee<'_> {
    fn step(&mut self, step: &str, detail: &str) {
        self.ui.step(step, detail);
        self.reports.send(step, "started", detail, json!({}));
    }

    fn bytes(&mut self, phase: &str, done: u64, total: u64) {
        self.ui.bytes(phase, done, total);
    }
}
