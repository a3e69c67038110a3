//! Provisioning: a blank disk becomes an A/B flipslot disk from a signed provisioning
//! description and a bundle, through the same verified pipeline as every later update.
//!
//! [`select`] picks the disk the signed target rule allows, [`plan`] holds the pure rules
//! (partition requests, the deterministic table, disk states, slot targets, the factory
//! status record), [`steps`] writes the disk (the partition table last, so the disk is
//! blank until it is complete), [`fetch`] reads inputs from files or URLs and [`report`]
//! posts each step to a URL. The caller (`ops::provision`) verifies the description and
//! the bundle, opens and locks the disk and renders progress.

pub mod fetch;
pub mod plan;
pub mod report;
pub mod select;
pub mod steps;

use anyhow::{Context, Result};
use flipslot_format::Sha256Digest;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

pub use steps::{run, Job, FAILPOINTS};

/// The longest `mke2fs` may take for the data partition.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);

/// Where provisioning reports what it does: a step starting, and bytes of a long phase.
pub trait Events {
    /// A step starts (`inspect`, `wipe`, `clear`, `esp`, `slot <label>`, `data`,
    /// `partition-table`, `done`, `nothing-to-do`), with a line naming disk and partition.
    fn step(&mut self, step: &str, detail: &str);
    /// `done` of `total` bytes of a phase (`write esp`, `write rootfs-a`, ...).
    fn bytes(&mut self, phase: &str, done: u64, total: u64);
}

/// Makes the data partition's filesystem: the one step that runs a program.
pub trait MakeFs {
    /// An ext4 filesystem of `len` bytes at byte `offset` of `disk`, labelled `label`,
    /// holding the tree `dir`.
    fn make_ext4(&self, disk: &Path, offset: u64, len: u64, label: &str, dir: &Path) -> Result<()>;
}

/// `mke2fs -t ext4 -d DIR -E offset=N` from e2fsprogs, writing inside the whole disk, so
/// no partition device node (and no partition rescan) is needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mke2fs;

impl MakeFs for Mke2fs {
    fn make_ext4(&self, disk: &Path, offset: u64, len: u64, label: &str, dir: &Path) -> Result<()> {
        // Labels are at most 16 bytes; the description's labels are ASCII.
        let label: String = label.chars().take(16).collect();
        let blocks = len / 4096;
        flipslot_os::process::Cmd::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L"])
            .arg(&label)
            .arg("-E")
            .arg(format!("offset={offset},nodiscard,root_owner=0:0"))
            .arg("-d")
            .arg(dir)
            .arg(disk)
            .arg(blocks.to_string())
            .timeout(MKFS_TIMEOUT)
            .run()
            .context("mke2fs failed")?;
        Ok(())
    }
}

/// One partition of the provisioned disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// GPT partition number.
    pub number: u32,
    /// GPT name (PARTLABEL).
    pub label: String,
    /// `esp`, `slot` or `data`.
    pub role: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type GUID.
    pub type_guid: String,
    /// Unique partition GUID (PARTUUID).
    pub guid: String,
    /// For slots: the agent's slot name.
    pub slot: Option<String>,
    /// For slots: the bootname.
    pub bootname: Option<String>,
    /// Whether this run wrote it (slots beyond the first only with `write_all_slots`).
    pub written: bool,
}

/// The result of a provisioning run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The disk as shown.
    pub disk: String,
    /// Its size in bytes.
    pub disk_size: u64,
    /// The disk was already provisioned with this description: nothing was written.
    pub nothing_to_do: bool,
    /// Data on the disk was erased (`--wipe`).
    pub wiped: bool,
    /// The bundle's compatible string.
    pub compatible: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of its signed manifest; hex in JSON.
    pub manifest_sha256: Sha256Digest,
    /// The disk GUID.
    pub disk_guid: String,
    /// The partitions.
    pub partitions: Vec<PartitionReport>,
    /// The slots written by this run.
    pub slots_written: Vec<String>,
}
