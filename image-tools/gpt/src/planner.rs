//! The layout planner: from partition requests (label, type, size or "the rest") and a
//! disk size to the exact LBAs and deterministic GUIDs of every partition.
//!
//! Rules:
//! - The sector size is 512 or 4096 bytes. The table holds 128 entries of 128 bytes, so
//!   the first usable LBA is 34 (512-byte sectors) or 6 (4096), and the last usable LBA
//!   leaves room for the backup entry array and header at the end of the disk.
//! - The first partition starts at 1 MiB; each next one at the end of the previous one
//!   rounded up to 1 MiB.
//! - A size is a positive multiple of the sector size. Only the last partition may ask
//!   for the rest of the disk (`size: None`): it ends at the last usable byte rounded down
//!   to 1 MiB, and gets at least 1 MiB.
//! - Labels are 1 to 36 UTF-16 code units without control characters, unique; at most
//!   128 partitions.
//! - The disk GUID is [`Guid::derive`]`(seed, 0)`, partition `n`'s unique GUID
//!   [`Guid::derive`]`(seed, n)`: the same requests and seed always give the same plan.

use crate::guid::Guid;
use crate::ondisk::{self, NAME_UNITS, NUM_ENTRIES};

/// Alignment of every partition start, and the smallest "rest" partition: 1 MiB.
pub const ALIGNMENT: u64 = 1 << 20;

/// Most partitions in one plan (the entries of the table).
pub const MAX_PARTITIONS: usize = NUM_ENTRIES as usize;

/// Longest label, in UTF-16 code units (the name field of an entry).
pub const MAX_LABEL_UNITS: usize = NAME_UNITS;

/// One partition asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionRequest {
    /// The partition name (GPT label).
    pub label: String,
    /// The partition type GUID.
    pub type_guid: Guid,
    /// Size in bytes; `None` for the rest of the disk (only the last partition).
    pub size: Option<u64>,
}

/// One partition of a [`Plan`], or of a decoded [`crate::Table`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlannedPartition {
    /// The partition number, 1-based (its entry's index + 1).
    pub number: u32,
    /// The partition name.
    pub label: String,
    /// The partition type GUID.
    pub type_guid: Guid,
    /// The unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
}

impl PlannedPartition {
    /// Byte offset of the partition on the disk.
    pub fn offset(&self, sector_size: u64) -> u64 {
        self.first_lba.saturating_mul(sector_size)
    }

    /// Length of the partition in bytes.
    pub fn len(&self, sector_size: u64) -> u64 {
        self.last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1)
            .saturating_mul(sector_size)
    }
}

/// A partition table for one disk, made by [`plan()`]; [`crate::encode()`] turns it into bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Plan {
    /// Size of the disk in bytes.
    pub disk_size: u64,
    /// Logical sector size in bytes (512 or 4096).
    pub sector_size: u64,
    /// The disk GUID.
    pub disk_guid: Guid,
    /// The partitions, numbered from 1 in request order.
    pub partitions: Vec<PlannedPartition>,
}

impl Plan {
    /// Number of logical blocks on the disk (a partial last sector does not count).
    pub fn lbas(&self) -> u64 {
        self.disk_size.checked_div(self.sector_size).unwrap_or(0)
    }

    /// The first usable LBA of the table.
    pub fn first_usable_lba(&self) -> u64 {
        ondisk::first_usable_lba(self.sector_size)
    }

    /// The last usable LBA of the table.
    pub fn last_usable_lba(&self) -> u64 {
        ondisk::last_usable_lba(self.lbas(), self.sector_size)
    }
}

/// Why requests cannot be planned on a disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The sector size is neither 512 nor 4096.
    #[error("sector size {0} is not supported (512 or 4096)")]
    BadSectorSize(u64),
    /// No partition was requested.
    #[error("no partitions requested")]
    Empty,
    /// More than [`MAX_PARTITIONS`] partitions were requested.
    #[error("{count} partitions requested, at most 128 fit in the table")]
    TooManyPartitions {
        /// How many were requested.
        count: usize,
    },
    /// A label is empty, too long, holds a control character or is used twice.
    #[error("partition label {label:?}: {reason}")]
    BadLabel {
        /// The label.
        label: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A size is zero or not a multiple of the sector size.
    #[error("partition {label:?}: size {size} is not a positive multiple of the sector size")]
    BadSize {
        /// The partition's label.
        label: String,
        /// The size asked for.
        size: u64,
    },
    /// A partition other than the last asks for the rest of the disk.
    #[error("partition {label:?} asks for the rest of the disk but is not the last partition")]
    RestNotLast {
        /// The partition's label.
        label: String,
    },
    /// The disk is smaller than the layout needs ([`min_disk_size`]).
    #[error("disk of {have} bytes is too small: the layout needs {need} bytes")]
    DiskTooSmall {
        /// The smallest disk size the layout fits on (`u64::MAX` when no disk can hold it).
        need: u64,
        /// The disk size given.
        have: u64,
    },
}

/// Plans `parts` on a disk of `disk_size` bytes with `sector_size`-byte sectors; the
/// GUIDs are derived from `seed` (see the module doc for every rule).
pub fn plan(
    disk_size: u64,
    sector_size: u64,
    parts: &[PartitionRequest],
    seed: &[u8],
) -> Result<Plan, PlanError> {
    check_requests(sector_size, parts)?;
    let layout = extents(parts);
    let needed = layout.as_deref().and_then(|e| need(sector_size, e));
    let (Some(layout), Some(needed)) = (layout, needed) else {
        return Err(PlanError::DiskTooSmall {
            need: u64::MAX,
            have: disk_size,
        });
    };
    if needed > disk_size {
        return Err(PlanError::DiskTooSmall {
            need: needed,
            have: disk_size,
        });
    }
    let lbas = disk_size / sector_size;
    // The end of the usable space, rounded down to 1 MiB: at least 1 MiB after the rest
    // partition's start, since the disk holds `needed` bytes.
    let usable_end = (ondisk::last_usable_lba(lbas, sector_size) + 1) * sector_size;
    let rest_end = usable_end / ALIGNMENT * ALIGNMENT;
    let mut partitions = Vec::with_capacity(parts.len());
    for (i, (p, &(start, end))) in parts.iter().zip(&layout).enumerate() {
        let end = if p.size.is_none() { rest_end } else { end };
        let number = (i + 1) as u32; // at most MAX_PARTITIONS, checked above
        partitions.push(PlannedPartition {
            number,
            label: p.label.clone(),
            type_guid: p.type_guid,
            unique_guid: Guid::derive(seed, number),
            first_lba: start / sector_size,
            last_lba: end / sector_size - 1,
        });
    }
    Ok(Plan {
        disk_size,
        sector_size,
        disk_guid: Guid::derive(seed, 0),
        partitions,
    })
}

/// The smallest disk size [`plan()`] accepts for `parts`: the partitions with a size, 1 MiB
/// for a rest partition, and the backup table. `u64::MAX` when the sizes overflow; for
/// requests [`plan()`] refuses for another reason the value means nothing.
pub fn min_disk_size(sector_size: u64, parts: &[PartitionRequest]) -> u64 {
    extents(parts)
        .and_then(|e| need(sector_size, &e))
        .unwrap_or(u64::MAX)
}

/// Checks everything but the disk size.
fn check_requests(sector_size: u64, parts: &[PartitionRequest]) -> Result<(), PlanError> {
    if sector_size != 512 && sector_size != 4096 {
        return Err(PlanError::BadSectorSize(sector_size));
    }
    if parts.is_empty() {
        return Err(PlanError::Empty);
    }
    if parts.len() > MAX_PARTITIONS {
        return Err(PlanError::TooManyPartitions { count: parts.len() });
    }
    for (i, p) in parts.iter().enumerate() {
        let bad_label = |reason: String| PlanError::BadLabel {
            label: p.label.clone(),
            reason,
        };
        let units = p.label.encode_utf16().count();
        if units == 0 {
            return Err(bad_label("is empty".into()));
        }
        if units > MAX_LABEL_UNITS {
            return Err(bad_label(format!(
                "is {units} utf-16 code units long, at most {MAX_LABEL_UNITS} fit"
            )));
        }
        if p.label.chars().any(char::is_control) {
            return Err(bad_label("holds a control character".into()));
        }
        if let Some(first) = parts[..i].iter().position(|q| q.label == p.label) {
            return Err(bad_label(format!(
                "names partitions {} and {}",
                first + 1,
                i + 1
            )));
        }
        match p.size {
            Some(size) if size == 0 || size % sector_size != 0 => {
                return Err(PlanError::BadSize {
                    label: p.label.clone(),
                    size,
                });
            }
            None if i + 1 != parts.len() => {
                return Err(PlanError::RestNotLast {
                    label: p.label.clone(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Byte ranges `[start, end)` of the partitions, a rest partition at its smallest
/// (1 MiB); `None` when the arithmetic overflows.
fn extents(parts: &[PartitionRequest]) -> Option<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
    for p in parts {
        let start = match out.last() {
            Some(&(_, end)) => round_up(end)?,
            None => ALIGNMENT,
        };
        out.push((start, start.checked_add(p.size.unwrap_or(ALIGNMENT))?));
    }
    Some(out)
}

/// The disk size `extents` need: the end of the last one plus the backup entry array and
/// header.
fn need(sector_size: u64, extents: &[(u64, u64)]) -> Option<u64> {
    let end = extents.last().map_or(ALIGNMENT, |&(_, end)| end);
    let backup = ondisk::entry_array_sectors(sector_size)
        .checked_add(1)?
        .checked_mul(sector_size)?;
    end.checked_add(backup)
}

/// `v` rounded up to [`ALIGNMENT`]; `None` on overflow.
fn round_up(v: u64) -> Option<u64> {
    Some(v.checked_add(ALIGNMENT - 1)? / ALIGNMENT * ALIGNMENT)
}

#[cfg(test)]
mod tests;
