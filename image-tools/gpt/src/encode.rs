//! A [`Plan`] as the bytes of a GPT: the protective MBR, the primary header and entry
//! array after it, and the backup entry array and header at the end of the disk (layout
//! in [`crate::ondisk`]). Header revision 1.0, header size 92, 128 entries of 128 bytes,
//! attributes 0, names UTF-16LE.

use crate::ondisk::{self, Entry, Header, ENTRY_ARRAY_BYTES, ENTRY_SIZE, NUM_ENTRIES, REVISION};
use crate::planner::Plan;

/// The bytes of a GPT and where each piece goes on the disk.
///
/// Writing `mbr` at offset 0, `primary` at `primary_offset` and `backup` at
/// `backup_offset` (the last bytes of the disk) writes the whole table; nothing else on
/// the disk is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The protective MBR: one sector, for offset 0.
    pub mbr: Vec<u8>,
    /// The primary header sector followed by the primary entry array.
    pub primary: Vec<u8>,
    /// Where `primary` goes: the sector size (LBA 1).
    pub primary_offset: u64,
    /// The backup entry array followed by the backup header sector.
    pub backup: Vec<u8>,
    /// Where `backup` goes: it ends at the end of the disk.
    pub backup_offset: u64,
}

/// Encodes `plan`.
///
/// Meant for plans made by [`crate::plan()`]. A plan changed by hand is encoded as far as
/// it goes, without panicking: entries are placed by partition number and numbers
/// outside 1..=128 are left out, names are cut at 36 UTF-16 code units, and a sector
/// size other than 4096 is taken as 512.
pub fn encode(plan: &Plan) -> Encoded {
    let (sector, sector_len) = if plan.sector_size == 4096 {
        (4096u64, 4096usize)
    } else {
        (512, 512)
    };
    let lbas = plan.disk_size / sector;
    let array_sectors = ondisk::entry_array_sectors(sector);
    let last_lba = lbas.saturating_sub(1);
    let backup_array_lba = last_lba.saturating_sub(array_sectors);

    let mut entries = vec![0u8; (array_sectors * sector) as usize];
    for p in &plan.partitions {
        let Some(slot) = (p.number as usize)
            .checked_sub(1)
            .filter(|&index| index < NUM_ENTRIES as usize)
            .and_then(|index| {
                let at = index * ENTRY_SIZE as usize;
                entries.get_mut(at..at + ENTRY_SIZE as usize)
            })
        else {
            continue;
        };
        Entry {
            type_guid: p.type_guid,
            unique_guid: p.unique_guid,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            attributes: 0,
            name: p.label.clone(),
        }
        .write(slot);
    }
    let entries_crc = crc32fast::hash(&entries[..ENTRY_ARRAY_BYTES as usize]);

    let header = |my_lba: u64, alternate_lba: u64, entry_lba: u64| Header {
        revision: REVISION,
        header_size: ondisk::HEADER_SIZE,
        header_crc: 0,
        my_lba,
        alternate_lba,
        first_usable_lba: ondisk::first_usable_lba(sector),
        last_usable_lba: ondisk::last_usable_lba(lbas, sector),
        disk_guid: plan.disk_guid,
        entry_lba,
        num_entries: NUM_ENTRIES,
        entry_size: ENTRY_SIZE,
        entries_crc,
    };

    let mut primary = header(1, last_lba, 2).to_sector(sector_len);
    primary.extend_from_slice(&entries);
    let mut backup = entries;
    backup.extend_from_slice(&header(last_lba, 1, backup_array_lba).to_sector(sector_len));

    Encoded {
        mbr: ondisk::protective_mbr(lbas, sector_len),
        primary,
        primary_offset: sector,
        backup,
        backup_offset: backup_array_lba * sector,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use crate::guid::{ESP_TYPE, LINUX_FS_TYPE};
    use crate::planner::{plan, PartitionRequest, PlannedPartition};

    fn example(sector: u64) -> Plan {
        let parts = [
            PartitionRequest {
                label: "esp".into(),
                type_guid: ESP_TYPE,
                size: Some(32 << 20),
            },
            PartitionRequest {
                label: "data".into(),
                type_guid: LINUX_FS_TYPE,
                size: None,
            },
        ];
        plan(256 << 20, sector, &parts, b"seed").unwrap()
    }

    #[test]
    fn pieces_sit_where_the_layout_says() {
        for sector in [512u64, 4096] {
            let p = example(sector);
            let e = encode(&p);
            let array = ondisk::entry_array_sectors(sector);
            assert_eq!(e.mbr.len() as u64, sector);
            assert_eq!(e.primary_offset, sector);
            assert_eq!(e.primary.len() as u64, (1 + array) * sector);
            assert_eq!(e.backup.len() as u64, (1 + array) * sector);
            assert_eq!(e.backup_offset + e.backup.len() as u64, p.disk_size);
            assert_eq!(&e.primary[..8], b"EFI PART");
            assert_eq!(
                &e.backup[e.backup.len() - sector as usize..][..8],
                b"EFI PART"
            );
            // Both copies carry the same entry array.
            assert_eq!(
                e.primary[sector as usize..],
                e.backup[..e.backup.len() - sector as usize]
            );
        }
    }

    #[test]
    fn headers_point_at_each_other() {
        let p = example(512);
        let e = encode(&p);
        let lbas = p.disk_size / 512;
        let primary = Header::read(&e.primary).unwrap();
        let backup = Header::read(&e.backup[e.backup.len() - 512..]).unwrap();
        assert_eq!((primary.my_lba, primary.alternate_lba), (1, lbas - 1));
        assert_eq!((backup.my_lba, backup.alternate_lba), (lbas - 1, 1));
        assert_eq!(primary.entry_lba, 2);
        assert_eq!(backup.entry_lba, lbas - 33);
        assert_eq!(primary.first_usable_lba, 34);
        assert_eq!(primary.last_usable_lba, lbas - 34);
        assert_eq!(primary.revision, 0x0001_0000);
        assert_eq!(primary.header_size, 92);
        assert_eq!(primary.disk_guid, p.disk_guid);
    }

    #[test]
    fn hand_made_plans_do_not_panic() {
        let mut p = example(512);
        p.partitions[0].number = 0;
        p.partitions[1].number = 500;
        p.partitions.push(PlannedPartition::clone(&p.partitions[1]));
        encode(&p);
        p.sector_size = 0;
        p.disk_size = 3;
        let e = encode(&p);
        assert_eq!(e.mbr.len(), 512);
    }
}
