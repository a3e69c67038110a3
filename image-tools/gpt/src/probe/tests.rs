#![allow(clippy::unwrap_used)] // tests fail by panicking

use super::*;
use crate::encode::encode;
use crate::guid::LINUX_FS_TYPE;
use crate::planner::{plan, PartitionRequest};

const WINDOW: usize = 128 * KIB;

fn blank() -> (Vec<u8>, Vec<u8>) {
    (vec![0u8; WINDOW], vec![0u8; WINDOW])
}

fn with(offset: usize, bytes: &[u8]) -> Vec<Signature> {
    let (mut head, tail) = blank();
    head[offset..offset + bytes.len()].copy_from_slice(bytes);
    probe(&head, &tail)
}

fn mbr_with(records: &[(u8, u8)]) -> Vec<u8> {
    let mut head = vec![0u8; WINDOW];
    for (i, &(boot, kind)) in records.iter().enumerate() {
        let r = 446 + 16 * i;
        head[r] = boot;
        head[r + 4] = kind;
        head[r + 8] = 1;
        head[r + 12] = 0x10;
    }
    head[510] = 0x55;
    head[511] = 0xAA;
    head
}

#[test]
fn a_blank_disk_holds_nothing() {
    let (head, tail) = blank();
    assert!(probe(&head, &tail).is_empty());
    assert!(probe(&[], &[]).is_empty());
    // Short input never panics.
    for n in [1, 100, 511, 512, 1081, 4097, 32772, 65600] {
        let junk = vec![0xFFu8; n];
        let _found: Vec<Signature> = probe(&junk, &junk);
    }
}

#[test]
fn single_magic_signatures() {
    assert_eq!(with(1080, &[0x53, 0xEF]), [Signature::Ext]);
    assert_eq!(with(0, b"hsqs"), [Signature::Squashfs]);
    assert_eq!(
        with(1024, &0xE0F5_E1E2u32.to_le_bytes()),
        [Signature::Erofs]
    );
    assert_eq!(with(0, b"XFSB"), [Signature::Xfs]);
    assert_eq!(with(65536 + 64, b"_BHRfS_M"), [Signature::Btrfs]);
    assert_eq!(with(4096 - 10, b"SWAPSPACE2"), [Signature::Swap]);
    assert_eq!(with(65536 - 10, b"SWAP-SPACE"), [Signature::Swap]);
    assert_eq!(with(32769, b"CD001"), [Signature::Iso9660]);
    assert_eq!(with(0, b"LUKS\xBA\xBE"), [Signature::Luks]);
    assert_eq!(with(32 * KIB, b"SKUL\xBA\xBE"), [Signature::Luks]);
    assert_eq!(with(512, b"EFI PART"), [Signature::Gpt]);
    assert_eq!(with(4096, b"EFI PART"), [Signature::Gpt]);
}

#[test]
fn lvm2_needs_both_strings_in_one_of_the_first_sectors() {
    let (mut head, tail) = blank();
    head[1024..1032].copy_from_slice(b"LABELONE");
    assert!(probe(&head, &tail).is_empty());
    head[1048..1056].copy_from_slice(b"LVM2 001");
    assert_eq!(probe(&head, &tail), [Signature::Lvm2]);
}

#[test]
fn md_superblocks_at_the_start() {
    let mut sb = 0xa92b_4efcu32.to_le_bytes().to_vec();
    sb.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(with(0, &sb), [Signature::MdRaid]);
    assert_eq!(with(4096, &sb), [Signature::MdRaid]);
    // The magic with another major version is not an md 1.x superblock.
    let mut v2 = sb.clone();
    v2[4] = 2;
    assert!(with(4096, &v2).is_empty());
}

#[test]
fn md_superblocks_at_the_end_for_any_disk_size() {
    let v1 = [0xa92b_4efcu32.to_le_bytes(), 1u32.to_le_bytes()].concat();
    let v090 = [0xa92b_4efcu32.to_le_bytes(), 0u32.to_le_bytes()].concat();
    let v090_be = [0xa92b_4efcu32.to_be_bytes(), 0u32.to_be_bytes()].concat();
    for size in [
        1u64 << 30,
        (1 << 30) + 512,
        (1 << 30) + 7 * 512,
        (1 << 30) + 65536 - 512,
        (1 << 30) + 12345 * 512,
    ] {
        let tail_start = size - WINDOW as u64;
        // md 1.0: 8 KiB before the end, rounded down to 4 KiB (in 512-byte sectors).
        let sb10 = ((size / 512 - 16) & !7) * 512;
        // md 0.90: the end rounded down to 64 KiB, less 64 KiB.
        let sb090 = (size & !0xFFFF) - 0x10000;
        for (at, sb) in [(sb10, &v1), (sb090, &v090), (sb090, &v090_be)] {
            let (head, mut tail) = blank();
            let o = (at - tail_start) as usize;
            tail[o..o + 8].copy_from_slice(sb);
            assert_eq!(
                probe(&head, &tail),
                [Signature::MdRaid],
                "size {size} at {at}"
            );
        }
    }
}

#[test]
fn a_plain_mbr_is_an_mbr_and_a_protective_one_a_gpt() {
    let tail = vec![0u8; WINDOW];
    assert_eq!(probe(&mbr_with(&[(0x80, 0x83)]), &tail), [Signature::Mbr]);
    assert_eq!(
        probe(&mbr_with(&[(0, 0x0C), (0, 0x83)]), &tail),
        [Signature::Mbr]
    );
    assert_eq!(probe(&mbr_with(&[(0, 0xEE)]), &tail), [Signature::Gpt]);
    // A hybrid MBR lists more than the protective record: an MBR, and a GPT only when
    // its header is there.
    let mut hybrid = mbr_with(&[(0, 0xEE), (0, 0x0C)]);
    assert_eq!(probe(&hybrid, &tail), [Signature::Mbr]);
    hybrid[512..520].copy_from_slice(b"EFI PART");
    assert_eq!(probe(&hybrid, &tail), [Signature::Mbr, Signature::Gpt]);
    // No record in use, or a boot flag that is neither 0 nor 0x80: not a partition table.
    assert!(probe(&mbr_with(&[]), &tail).is_empty());
    assert!(probe(&mbr_with(&[(0x12, 0x83)]), &tail).is_empty());
}

#[test]
fn a_fat_boot_sector_is_fat_and_not_an_mbr() {
    let mut head = mbr_with(&[(0, 0x83)]);
    head[0] = 0xEB;
    head[11..13].copy_from_slice(&512u16.to_le_bytes());
    head[54..62].copy_from_slice(b"FAT16   ");
    let tail = vec![0u8; WINDOW];
    assert_eq!(probe(&head, &tail), [Signature::Fat]);
    head[54..62].fill(0);
    head[82..90].copy_from_slice(b"FAT32   ");
    assert_eq!(probe(&head, &tail), [Signature::Fat]);
    // Without the type string it is not taken for FAT.
    head[82..90].fill(0);
    assert_eq!(probe(&head, &tail), [Signature::Mbr]);
    // NTFS and exFAT boot sectors are not MBRs.
    head[3..11].copy_from_slice(b"NTFS    ");
    assert!(probe(&head, &tail).is_empty());
}

#[test]
fn an_encoded_table_is_a_gpt_from_either_end() {
    for sector in [512u64, 4096] {
        let parts = [PartitionRequest {
            label: "data".into(),
            type_guid: LINUX_FS_TYPE,
            size: None,
        }];
        let p = plan(8 << 20, sector, &parts, b"s").unwrap();
        let e = encode(&p);
        let mut disk = vec![0u8; p.disk_size as usize];
        disk[..e.mbr.len()].copy_from_slice(&e.mbr);
        let at = e.primary_offset as usize;
        disk[at..at + e.primary.len()].copy_from_slice(&e.primary);
        let at = e.backup_offset as usize;
        disk[at..at + e.backup.len()].copy_from_slice(&e.backup);
        let (head, tail) = (&disk[..WINDOW], &disk[disk.len() - WINDOW..]);
        assert_eq!(probe(head, tail), [Signature::Gpt]);
        // Only the backup left.
        let blank = vec![0u8; WINDOW];
        assert_eq!(probe(&blank, tail), [Signature::Gpt]);
    }
}

#[test]
fn several_signatures_are_listed_in_order() {
    let mut head = mbr_with(&[(0x80, 0x17)]);
    head[32769..32774].copy_from_slice(b"CD001");
    head[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    let found = probe(&head, &[0u8; WINDOW]);
    assert_eq!(found, [Signature::Mbr, Signature::Ext, Signature::Iso9660]);
    let names: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["mbr", "ext", "iso9660"]);
}

#[test]
fn names_are_lower_case() {
    let all = [
        Signature::Mbr,
        Signature::Gpt,
        Signature::Ext,
        Signature::Fat,
        Signature::Squashfs,
        Signature::Erofs,
        Signature::Xfs,
        Signature::Btrfs,
        Signature::Lvm2,
        Signature::MdRaid,
        Signature::Swap,
        Signature::Iso9660,
        Signature::Luks,
    ];
    let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "mbr", "gpt", "ext", "fat", "squashfs", "erofs", "xfs", "btrfs", "lvm2", "mdraid",
            "swap", "iso9660", "luks"
        ]
    );
    for s in all {
        assert_eq!(s.to_string(), s.name());
    }
}
