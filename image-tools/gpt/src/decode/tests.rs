#![allow(clippy::unwrap_used)] // tests fail by panicking

use super::*;
use crate::encode::encode;
use crate::guid::{ESP_TYPE, LINUX_FS_TYPE};
use crate::planner::{plan, PartitionRequest};

const MIB: u64 = 1 << 20;

fn example(sector: u64, disk_size: u64) -> Plan {
    let parts = [
        PartitionRequest {
            label: "esp".into(),
            type_guid: ESP_TYPE,
            size: Some(4 * MIB),
        },
        PartitionRequest {
            label: "rootfs-a".into(),
            type_guid: LINUX_FS_TYPE,
            size: Some(3 * MIB),
        },
        PartitionRequest {
            label: "dätä".into(),
            type_guid: LINUX_FS_TYPE,
            size: None,
        },
    ];
    plan(disk_size, sector, &parts, b"seed").unwrap()
}

/// A whole disk in memory with the plan's table written on it.
fn disk_with(plan: &Plan) -> Vec<u8> {
    let mut d = vec![0u8; plan.disk_size as usize];
    let e = encode(plan);
    put(&mut d, 0, &e.mbr);
    put(&mut d, e.primary_offset, &e.primary);
    put(&mut d, e.backup_offset, &e.backup);
    d
}

fn put(disk: &mut [u8], offset: u64, bytes: &[u8]) {
    disk[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
}

/// Decodes `disk` from the windows a caller reads.
fn read(disk: &[u8], sector: u64) -> Result<Option<Table>, GptError> {
    let head = &disk[..crate::head_len(sector).min(disk.len())];
    let tail = &disk[disk.len() - crate::tail_len(sector).min(disk.len())..];
    decode(head, tail, disk.len() as u64, sector)
}

/// Rewrites the header at `lba` after `f`, with a correct header CRC.
fn patch_header(disk: &mut [u8], sector: u64, lba: u64, f: impl FnOnce(&mut Header)) {
    let at = (lba * sector) as usize;
    let mut h = Header::read(&disk[at..at + sector as usize]).unwrap();
    f(&mut h);
    let bytes = h.to_sector(sector as usize);
    disk[at..at + sector as usize].copy_from_slice(&bytes);
}

/// Rewrites entry `number` of the copy whose header is at `lba` after `f`, with correct
/// CRCs.
fn patch_entry(disk: &mut [u8], sector: u64, lba: u64, number: usize, f: impl FnOnce(&mut Entry)) {
    let at = (lba * sector) as usize;
    let h = Header::read(&disk[at..at + sector as usize]).unwrap();
    let array = (h.entry_lba * sector) as usize;
    let e_at = array + (number - 1) * 128;
    let mut e = Entry::read(&disk[e_at..e_at + 128]);
    f(&mut e);
    disk[e_at..e_at + 128].fill(0);
    e.write(&mut disk[e_at..e_at + 128]);
    let crc = crc32fast::hash(&disk[array..array + 128 * 128]);
    patch_header(disk, sector, lba, |h| h.entries_crc = crc);
}

fn last_lba(disk: &[u8], sector: u64) -> u64 {
    disk.len() as u64 / sector - 1
}

#[test]
fn round_trips_with_both_sector_sizes() {
    for sector in [512u64, 4096] {
        let p = example(sector, 16 * MIB);
        let t = read(&disk_with(&p), sector).unwrap().unwrap();
        assert!(t.matches(&p));
        assert!(t.primary_ok && t.backup_ok);
        assert_eq!(t.disk_guid, p.disk_guid);
        assert_eq!(t.sector_size, sector);
        assert_eq!(t.partitions, p.partitions);
        assert_eq!(t.partitions[2].label, "dätä");
        assert_eq!(t.first_usable_lba, p.first_usable_lba());
        assert_eq!(t.last_usable_lba, p.last_usable_lba());
    }
}

#[test]
fn a_blank_disk_has_no_table() {
    assert_eq!(read(&vec![0u8; 4 * MIB as usize], 512), Ok(None));
    // Disks smaller than the windows are read whole.
    assert_eq!(read(&[0u8; 4096], 512), Ok(None));
    assert_eq!(read(&[0u8; 512], 512), Ok(None));
    assert_eq!(decode(&[], &[], 0, 4096), Ok(None));
}

#[test]
fn matches_needs_the_same_guids_labels_and_lbas() {
    let p = example(512, 16 * MIB);
    let t = read(&disk_with(&p), 512).unwrap().unwrap();
    assert!(t.matches(&p));
    let other_seed = plan(
        p.disk_size,
        512,
        &[PartitionRequest {
            label: "x".into(),
            type_guid: ESP_TYPE,
            size: None,
        }],
        b"seed",
    )
    .unwrap();
    assert!(!t.matches(&other_seed));
    let mut q = p.clone();
    q.disk_guid = Guid::derive(b"other", 0);
    assert!(!t.matches(&q));
    let mut q = p.clone();
    q.partitions[1].label = "rootfs-b".into();
    assert!(!t.matches(&q));
    let mut q = p.clone();
    q.partitions[2].last_lba -= 1;
    assert!(!t.matches(&q));
    let mut q = p.clone();
    q.sector_size = 4096;
    assert!(!t.matches(&q));
    // The same fixed partitions on a grown disk still match; the backup is not at the end.
    let mut grown = disk_with(&p);
    grown.extend_from_slice(&vec![0u8; MIB as usize]);
    let t = read(&grown, 512).unwrap().unwrap();
    assert!(t.primary_ok && !t.backup_ok);
    assert!(!t.matches(&example(512, 17 * MIB)));
    assert_eq!(t.partitions[..2], p.partitions[..2]);
}

#[test]
fn a_header_crc_mismatch_falls_back_to_the_backup() {
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    d[512 + 56] ^= 1; // a byte of the primary disk GUID
    let t = read(&d, 512).unwrap().unwrap();
    assert!(!t.primary_ok && t.backup_ok);
    assert!(t.matches(&p));
    let disk = Disk::new(
        &d[..128 << 10],
        &d[d.len() - (128 << 10)..],
        d.len() as u64,
        512,
    )
    .unwrap();
    assert!(matches!(
        read_copy(&disk, 1),
        Err(GptError::HeaderCrc { lba: 1, .. })
    ));
    // Both copies broken: an error naming both.
    let last = last_lba(&d, 512) as usize;
    d[last * 512 + 56] ^= 1;
    let err = read(&d, 512).unwrap_err();
    match &err {
        GptError::BothBad { primary, backup } => {
            assert!(matches!(**primary, GptError::HeaderCrc { lba: 1, .. }));
            assert!(matches!(**backup, GptError::HeaderCrc { lba, .. } if lba == last as u64));
        }
        other => panic!("{other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("no valid gpt copy: primary: gpt header at lba 1: crc32"));
}

#[test]
fn an_entry_array_crc_mismatch_is_detected() {
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    d[2 * 512 + 56] ^= 1; // a byte of the primary's first name
    let t = read(&d, 512).unwrap().unwrap();
    assert!(!t.primary_ok && t.backup_ok);
    assert_eq!(t.partitions, p.partitions);
    let disk = Disk::new(
        &d[..128 << 10],
        &d[d.len() - (128 << 10)..],
        d.len() as u64,
        512,
    )
    .unwrap();
    let err = read_copy(&disk, 1).err().unwrap();
    assert!(matches!(
        err,
        GptError::EntriesCrc {
            lba: 1,
            entry_lba: 2,
            ..
        }
    ));
    assert!(
        err.to_string().contains("entry array at lba 2 has crc32"),
        "{err}"
    );

    // The backup's entries broken too: nothing to trust.
    let backup_array = (last_lba(&d, 512) - 32) as usize * 512;
    d[backup_array + 56] ^= 1;
    assert!(matches!(read(&d, 512), Err(GptError::BothBad { .. })));
}

#[test]
fn a_wiped_primary_decodes_from_the_backup() {
    for sector in [512u64, 4096] {
        let p = example(sector, 16 * MIB);
        let mut d = disk_with(&p);
        d[..(34 * sector) as usize].fill(0);
        let t = read(&d, sector).unwrap().unwrap();
        assert!(!t.primary_ok && t.backup_ok);
        assert!(t.matches(&p));
    }
}

#[test]
fn a_broken_backup_is_reported_beside_a_good_primary() {
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    let n = d.len();
    d[n - 512..].fill(0);
    let t = read(&d, 512).unwrap().unwrap();
    assert!(t.primary_ok && !t.backup_ok);
    assert!(t.matches(&p));

    // A valid backup of another table is not this table's backup.
    let mut d = disk_with(&p);
    let last = last_lba(&d, 512);
    patch_header(&mut d, 512, last, |h| h.disk_guid = Guid::derive(b"x", 0));
    let t = read(&d, 512).unwrap().unwrap();
    assert!(t.primary_ok && !t.backup_ok);
    assert_eq!(t.disk_guid, p.disk_guid);

    // A backup that does not point back to LBA 1.
    let mut d = disk_with(&p);
    patch_header(&mut d, 512, last, |h| h.alternate_lba = 7);
    assert!(!read(&d, 512).unwrap().unwrap().backup_ok);
}

#[test]
fn a_backup_with_only_a_corrupt_primary_signature_is_an_error() {
    // Primary with the signature but broken, no backup at all.
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    let n = d.len();
    d[n - (33 * 512)..].fill(0);
    d[512 + 24] = 9; // my_lba, CRC now wrong
    assert!(matches!(
        read(&d, 512),
        Err(GptError::HeaderCrc { lba: 1, .. })
    ));
}

/// Decodes after changing the primary header and wiping the backup, so the primary's error
/// is returned.
fn primary_error(f: impl FnOnce(&mut Header)) -> GptError {
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    patch_header(&mut d, 512, 1, f);
    let n = d.len();
    d[n - 512..].fill(0);
    read(&d, 512).unwrap_err()
}

fn reason(err: GptError) -> String {
    match err {
        GptError::BadHeader { lba: 1, reason } => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn absurd_counts_and_sizes_are_refused_before_use() {
    assert_eq!(
        reason(primary_error(|h| h.num_entries = u32::MAX)),
        "4294967295 entries, at most 128 are read"
    );
    assert_eq!(
        reason(primary_error(|h| h.num_entries = 129)),
        "129 entries, at most 128 are read"
    );
    assert_eq!(
        reason(primary_error(|h| h.entry_size = 1 << 31)),
        "entry size 2147483648 is not 128"
    );
    assert_eq!(
        reason(primary_error(|h| h.entry_size = 256)),
        "entry size 256 is not 128"
    );
    assert_eq!(
        reason(primary_error(|h| h.entry_lba = u64::MAX)),
        "entry array at lba 18446744073709551615 (32 sectors) lies outside the disk"
    );
    assert_eq!(
        reason(primary_error(|h| h.entry_lba = 0)),
        "entry array at lba 0 (32 sectors) lies outside the disk"
    );
    assert_eq!(
        reason(primary_error(|h| h.entry_lba = 1)),
        "entry array at lba 1 (32 sectors) covers the header"
    );
    assert_eq!(
        reason(primary_error(|h| h.entry_lba = 40)),
        "entry array at lba 40 (32 sectors) overlaps the usable lbas"
    );
    assert_eq!(
        reason(primary_error(|h| h.my_lba = 2)),
        "it names itself lba 2"
    );
    assert_eq!(
        reason(primary_error(|h| h.last_usable_lba = u64::MAX)),
        "usable lbas 34..=18446744073709551615 do not fit a disk of 32768 lbas"
    );
    assert_eq!(
        reason(primary_error(|h| h.first_usable_lba = 1)),
        "usable lbas 1..=32734 do not fit a disk of 32768 lbas"
    );
}

#[test]
fn fewer_entries_are_read_as_far_as_they_go() {
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    let crc = crc32fast::hash(&d[1024..1024 + 2 * 128]);
    for lba in [1, last_lba(&d, 512)] {
        patch_header(&mut d, 512, lba, |h| {
            h.num_entries = 2;
            h.entries_crc = crc;
        });
    }
    let t = read(&d, 512).unwrap().unwrap();
    assert!(t.primary_ok && t.backup_ok);
    assert_eq!(t.partitions, p.partitions[..2]);
}

#[test]
fn an_entry_array_outside_the_bytes_read_is_refused() {
    // A valid layout whose primary array sits at 1 MiB, far past the head.
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    let src = 1024..1024 + 16384;
    d.copy_within(src, 3 * 512 * 1024);
    patch_header(&mut d, 512, 1, |h| {
        h.entry_lba = 3 * 1024;
        h.first_usable_lba = 3 * 1024 + 32;
    });
    let n = d.len();
    d[n - 512..].fill(0);
    let err = reason(read(&d, 512).unwrap_err());
    assert_eq!(
        err,
        "entry array at lba 3072 (32 sectors) lies outside the first 131072 and last 131072 bytes read"
    );
}

#[test]
fn entries_must_lie_in_the_usable_range_without_overlap() {
    let entry_error = |f: fn(&mut Entry)| {
        let p = example(512, 16 * MIB);
        let mut d = disk_with(&p);
        patch_entry(&mut d, 512, 1, 2, f);
        let n = d.len();
        d[n - 512..].fill(0);
        match read(&d, 512).unwrap_err() {
            GptError::BadEntry {
                lba: 1,
                number: 2,
                label,
                reason,
            } => {
                assert_eq!(label, "rootfs-a");
                reason
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        entry_error(|e| e.last_lba = 40_000),
        "lbas 10240..=40000 are not inside the usable lbas 34..=32734"
    );
    assert_eq!(
        entry_error(|e| e.first_lba = 20),
        "lbas 20..=16383 are not inside the usable lbas 34..=32734"
    );
    assert_eq!(
        entry_error(|e| e.first_lba = e.last_lba + 1),
        "lbas 16384..=16383 are not inside the usable lbas 34..=32734"
    );
    assert_eq!(
        entry_error(|e| e.first_lba = 10_000),
        "lbas 10000..=16383 overlap partition 1"
    );
    let err = GptError::BadEntry {
        lba: 1,
        number: 2,
        label: "rootfs-a".into(),
        reason: "x".into(),
    };
    assert_eq!(
        err.to_string(),
        "gpt header at lba 1: partition 2 (\"rootfs-a\"): x"
    );
}

#[test]
fn unused_entries_between_used_ones_keep_their_numbers() {
    let p = example(512, 16 * MIB);
    let mut d = disk_with(&p);
    for lba in [1, last_lba(&d, 512)] {
        patch_entry(&mut d, 512, lba, 2, |e| e.type_guid = Guid::NIL);
    }
    let t = read(&d, 512).unwrap().unwrap();
    assert!(t.primary_ok && t.backup_ok);
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 3]);
}

#[test]
fn header_sizes_outside_the_sector_are_refused() {
    let p = example(512, 16 * MIB);
    for size in [0u32, 91, 513, u32::MAX] {
        let mut d = disk_with(&p);
        d[512 + 12..512 + 16].copy_from_slice(&size.to_le_bytes());
        let n = d.len();
        d[n - 512..].fill(0);
        assert_eq!(
            reason(read(&d, 512).unwrap_err()),
            format!("header size {size} is outside 92..=512")
        );
    }
    // A larger header size inside the sector is read, its CRC over the larger size.
    let mut d = disk_with(&p);
    d[512 + 12..512 + 16].copy_from_slice(&128u32.to_le_bytes());
    let crc = ondisk::header_crc(&d[512..512 + 128]);
    d[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
    assert!(read(&d, 512).unwrap().unwrap().primary_ok);
}

#[test]
fn the_windows_given_are_checked() {
    let p = example(512, 16 * MIB);
    let d = disk_with(&p);
    let n = d.len() as u64;
    assert_eq!(
        decode(&d[..1000], &d[d.len() - (128 << 10)..], n, 512),
        Err(GptError::ShortInput {
            what: "head",
            len: 1000,
            need: 128 << 10
        })
    );
    assert_eq!(
        decode(&d[..128 << 10], &d[d.len() - 10..], n, 512)
            .unwrap_err()
            .to_string(),
        "tail of 10 bytes is shorter than the 131072 bytes the gpt is read from"
    );
    assert_eq!(
        decode(&d[..128 << 10], &d[..128 << 10], 4096, 512),
        Err(GptError::InputTooLong {
            what: "head",
            len: 128 << 10,
            disk_size: 4096
        })
    );
    assert_eq!(decode(&d, &d, n, 1024), Err(GptError::BadSectorSize(1024)));
    // Longer windows than needed are fine, up to the whole disk.
    assert!(decode(&d, &d, n, 512).unwrap().unwrap().backup_ok);
}

#[test]
fn a_table_read_with_the_other_sector_size_is_not_found() {
    let p = example(512, 16 * MIB);
    assert_eq!(read(&disk_with(&p), 4096), Ok(None));
}
