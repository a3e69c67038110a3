//! GUID partition tables for provisioning a blank disk: a layout planner ([`plan()`]), the
//! codec of the on-disk table ([`encode()`], [`decode()`]) and a probe for data signatures
//! ([`probe()`]), so that `flipslot provision` can tell an empty disk from one that holds
//! data, write the table it planned, and recognise that table on the next run.
//!
//! Pure: bytes in, bytes out. This crate never opens a file or a device and never runs a
//! program; the caller reads [`head_len`] bytes from the start of the disk and
//! [`tail_len`] bytes from its end, and writes the pieces of [`Encoded`] where they say.
//!
//! The GUIDs of a plan are derived from a seed ([`Guid::derive`]), so the same
//! description on the same disk gives the same table, byte for byte: provisioning twice
//! finds its own table ([`Table::matches`]) instead of asking to wipe.
//!
//! The byte layout follows the UEFI specification (chapter 5, "GUID Partition Table
//! Disk Layout"); it is summarised in the `ondisk` module's source and checked against
//! `sgdisk` by this crate's integration test.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod decode;
mod encode;
mod guid;
mod ondisk;
mod planner;
mod probe;

pub use decode::{decode, GptError, Table};
pub use encode::{encode, Encoded};
pub use guid::{Guid, GuidError, ESP_TYPE, LINUX_FS_TYPE};
pub use planner::{
    min_disk_size, plan, PartitionRequest, Plan, PlanError, PlannedPartition, ALIGNMENT,
    MAX_LABEL_UNITS, MAX_PARTITIONS,
};
pub use probe::{probe, Signature};

/// Bytes from the start of the disk that [`decode()`] and [`probe()`] read: at least 34
/// sectors (MBR, primary header, entry array) and 128 KiB (btrfs at 64 KiB, ISO 9660 at
/// 32 KiB, swap up to 64 KiB). Read fewer only when the disk is smaller.
pub fn head_len(sector_size: u64) -> usize {
    window(sector_size, 34)
}

/// Bytes at the end of the disk that [`decode()`] and [`probe()`] read: at least 33 sectors
/// (backup entry array and header) and 128 KiB (md superblocks 0.90 and 1.0). Read fewer
/// only when the disk is smaller.
pub fn tail_len(sector_size: u64) -> usize {
    window(sector_size, 33)
}

/// The larger of `sectors` sectors and 128 KiB (sector sizes above 4096 count as 4096).
fn window(sector_size: u64, sectors: usize) -> usize {
    let sector = usize::try_from(sector_size.min(4096)).unwrap_or(4096);
    (sectors * sector).max(128 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_table_and_the_probes() {
        assert_eq!(head_len(512), 128 * 1024);
        assert_eq!(tail_len(512), 128 * 1024);
        assert_eq!(head_len(4096), 34 * 4096);
        assert_eq!(tail_len(4096), 33 * 4096);
    }
}
