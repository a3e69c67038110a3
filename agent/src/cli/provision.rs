//! `flipslot provision`: its arguments and how the command runs them.

use super::{absolute, HttpArgs};
use crate::host::paths::Root;
use crate::ops::{self, render};
use anyhow::{Context, Result};
use flipslot_cli_support::progress::{ProgressMode, Reporter};
use std::path::{Path, PathBuf};

/// The arguments of `flipslot provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The signed provisioning description (provision.json): a file or an http(s) URL.
    /// The ESP image it names is read from the same directory or URL.
    #[arg(long, value_name = "FILE|URL")]
    pub description: String,
    /// The bundle to install (.fsb): a file or an http(s) URL.
    #[arg(long, value_name = "FILE|URL")]
    pub bundle: String,
    /// The trusted public keys (a .pub file or a directory of them).
    #[arg(long, value_name = "PATH", default_value = ops::DEFAULT_PROVISION_KEYRING)]
    pub keyring: PathBuf,
    /// The disk to write (a block device, or a disk image file); it must still pass
    /// the description's target rule. Default: the disk the rule selects.
    #[arg(long, value_name = "DEV")]
    pub disk: Option<PathBuf>,
    /// Erase a disk that holds data (a partition table, a filesystem, RAID or LVM
    /// signatures); only when the signed description allows it.
    #[arg(long)]
    pub wipe: bool,
    /// POST one JSON object per step to this URL.
    #[arg(long, value_name = "URL")]
    pub report_url: Option<String>,
    /// Reboot when the disk is provisioned (also when there was nothing to do).
    #[arg(long)]
    pub reboot: bool,
    /// Write through the page cache instead of direct I/O.
    #[arg(long)]
    pub buffered_io: bool,
    /// Progress as JSON lines and a final JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Options for URLs.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Runs `flipslot provision` with sysfs, `/dev` and `/proc` read under `root`.
pub fn run(root: &Path, a: ProvisionArgs) -> Result<()> {
    let root = Root::new(root);
    let req = ops::ProvisionRequest {
        description: a.description,
        bundle: a.bundle,
        keyring: absolute(&a.keyring)?,
        disk: a.disk.as_deref().map(absolute).transpose()?,
        wipe: a.wipe,
        report_url: a.report_url,
        direct_io: !a.buffered_io,
    };
    let http_opts = a.http.to_options()?;
    let mut progress = Reporter::new(if a.json {
        ProgressMode::Json
    } else {
        ProgressMode::Auto
    });
    let started = std::time::Instant::now();
    let out = ops::provision(&root, &req, &http_opts, &mut progress);
    progress.finish();
    let out = out?;
    if a.json {
        let mut v = serde_json::to_value(&out)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "done".into());
            o.insert("v".into(), 1.into());
            o.insert("seconds".into(), started.elapsed().as_secs_f64().into());
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{}", render::provision_summary(&out, started.elapsed()));
    }
    if a.reboot {
        crate::host::sys::reboot(&root).context("cannot reboot")?;
    }
    Ok(())
}
