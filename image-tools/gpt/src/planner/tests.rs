#![allow(clippy::unwrap_used)] // tests fail by panicking

use super::*;
use crate::guid::{ESP_TYPE, LINUX_FS_TYPE};

const MIB: u64 = 1 << 20;

fn req(label: &str, size: Option<u64>) -> PartitionRequest {
    PartitionRequest {
        label: label.into(),
        type_guid: if label == "esp" {
            ESP_TYPE
        } else {
            LINUX_FS_TYPE
        },
        size,
    }
}

fn layout() -> Vec<PartitionRequest> {
    vec![
        req("esp", Some(32 * MIB)),
        req("root-a", Some(100 * MIB + 4096)),
        req("root-b", Some(100 * MIB + 4096)),
        req("data", None),
    ]
}

fn lbas(p: &Plan) -> Vec<(u64, u64)> {
    p.partitions
        .iter()
        .map(|p| (p.first_lba, p.last_lba))
        .collect()
}

#[test]
fn partitions_start_on_mib_boundaries_and_keep_their_sizes() {
    let p = plan(1 << 30, 512, &layout(), b"seed").unwrap();
    assert_eq!(p.disk_size, 1 << 30);
    assert_eq!(p.sector_size, 512);
    assert_eq!(p.partitions.len(), 4);
    let esp = &p.partitions[0];
    assert_eq!((esp.first_lba, esp.last_lba), (2048, 2048 + 65536 - 1));
    assert_eq!(esp.offset(512), MIB);
    assert_eq!(esp.len(512), 32 * MIB);
    // root-a starts right after the ESP (33 MiB is aligned); root-b after root-a's end,
    // rounded up to the next MiB.
    let a = &p.partitions[1];
    assert_eq!(a.offset(512), 33 * MIB);
    assert_eq!(a.len(512), 100 * MIB + 4096);
    let b = &p.partitions[2];
    assert_eq!(b.offset(512), 134 * MIB);
    assert_eq!(b.len(512), 100 * MIB + 4096);
    for part in &p.partitions {
        assert_eq!(part.offset(512) % MIB, 0, "{part:?}");
    }
    let numbers: Vec<u32> = p.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let labels: Vec<&str> = p.partitions.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["esp", "root-a", "root-b", "data"]);
    assert_eq!(p.partitions[0].type_guid, ESP_TYPE);
    assert_eq!(p.partitions[3].type_guid, LINUX_FS_TYPE);
}

#[test]
fn rest_takes_the_disk_up_to_the_last_usable_mib() {
    let p = plan(1 << 30, 512, &layout(), b"seed").unwrap();
    let data = &p.partitions[3];
    assert_eq!(data.offset(512), 235 * MIB);
    // The last usable LBA is 2^21 - 34; the MiB boundary below it is 1023 MiB.
    assert_eq!(p.last_usable_lba(), (1 << 21) - 34);
    assert_eq!(data.offset(512) + data.len(512), 1023 * MIB);
    // An odd disk size: the rest still ends on a MiB boundary before the backup table.
    let size = (1 << 30) + 7 * 512 + 100;
    let p = plan(size, 512, &layout(), b"seed").unwrap();
    let data = &p.partitions[3];
    assert_eq!((data.offset(512) + data.len(512)) % MIB, 0);
    assert!(data.last_lba <= p.last_usable_lba());
    assert_eq!(p.lbas(), size / 512);
}

#[test]
fn a_single_rest_partition_fills_the_disk() {
    let p = plan(64 * MIB, 512, &[req("data", None)], b"s").unwrap();
    let d = &p.partitions[0];
    assert_eq!(d.offset(512), MIB);
    assert_eq!(d.offset(512) + d.len(512), 63 * MIB);
}

#[test]
fn the_disk_too_small_error_names_the_exact_need() {
    for sector in [512u64, 4096] {
        let backup = (ondisk::entry_array_sectors(sector) + 1) * sector;
        // A rest partition needs 1 MiB.
        let parts = [req("esp", Some(32 * MIB)), req("data", None)];
        let need = 34 * MIB + backup;
        assert_eq!(min_disk_size(sector, &parts), need);
        let p = plan(need, sector, &parts, b"s").unwrap();
        assert_eq!(p.partitions[1].len(sector), MIB);
        assert_eq!(
            plan(need - 1, sector, &parts, b"s").unwrap_err(),
            PlanError::DiskTooSmall {
                need,
                have: need - 1
            }
        );
        // Without a rest partition the last one may end right at the last usable LBA.
        let parts = [req("esp", Some(32 * MIB))];
        let need = 33 * MIB + backup;
        assert_eq!(min_disk_size(sector, &parts), need);
        let p = plan(need, sector, &parts, b"s").unwrap();
        assert_eq!(p.partitions[0].last_lba, p.last_usable_lba());
        assert_eq!(
            plan(need - sector, sector, &parts, b"s").unwrap_err(),
            PlanError::DiskTooSmall {
                need,
                have: need - sector
            }
        );
    }
    let err = plan(MIB, 512, &layout(), b"s").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "disk of 1048576 bytes is too small: the layout needs {} bytes",
            min_disk_size(512, &layout())
        )
    );
}

#[test]
fn sizes_that_overflow_need_more_than_any_disk() {
    let parts = [req("a", Some(u64::MAX / 512 * 512)), req("b", Some(512))];
    assert_eq!(min_disk_size(512, &parts), u64::MAX);
    assert_eq!(
        plan(u64::MAX, 512, &parts, b"s").unwrap_err(),
        PlanError::DiskTooSmall {
            need: u64::MAX,
            have: u64::MAX
        }
    );
    // A partition that ends just below u64::MAX plans without overflowing.
    let parts = [req("a", Some((u64::MAX - 2 * MIB) / 512 * 512))];
    let p = plan(u64::MAX, 512, &parts, b"s").unwrap();
    assert!(p.partitions[0].last_lba <= p.last_usable_lba());
}

#[test]
fn only_the_last_partition_may_take_the_rest() {
    let parts = [req("data", None), req("esp", Some(MIB))];
    let err = plan(1 << 30, 512, &parts, b"s").unwrap_err();
    assert_eq!(
        err,
        PlanError::RestNotLast {
            label: "data".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "partition \"data\" asks for the rest of the disk but is not the last partition"
    );
}

#[test]
fn sizes_are_positive_multiples_of_the_sector_size() {
    for (sector, size) in [(512u64, 0u64), (512, 1000), (4096, 512), (4096, 0)] {
        let err = plan(1 << 30, sector, &[req("x", Some(size))], b"s").unwrap_err();
        assert_eq!(
            err,
            PlanError::BadSize {
                label: "x".into(),
                size
            }
        );
    }
    assert!(plan(1 << 30, 512, &[req("x", Some(512))], b"s").is_ok());
    let err = plan(1 << 30, 512, &[req("x", Some(0))], b"s").unwrap_err();
    assert_eq!(
        err.to_string(),
        "partition \"x\": size 0 is not a positive multiple of the sector size"
    );
}

#[test]
fn labels_are_short_unique_and_printable() {
    let bad = |label: &str| match plan(1 << 30, 512, &[req(label, Some(MIB))], b"s") {
        Err(PlanError::BadLabel { label: l, reason }) => {
            assert_eq!(l, label);
            reason
        }
        other => panic!("{label:?}: {other:?}"),
    };
    assert_eq!(bad(""), "is empty");
    assert_eq!(
        bad(&"x".repeat(37)),
        "is 37 utf-16 code units long, at most 36 fit"
    );
    // Characters outside the BMP take two code units each.
    assert!(bad(&"😀".repeat(19)).starts_with("is 38 utf-16"));
    assert!(plan(1 << 30, 512, &[req(&"😀".repeat(18), Some(MIB))], b"s").is_ok());
    assert!(plan(1 << 30, 512, &[req(&"x".repeat(36), Some(MIB))], b"s").is_ok());
    assert_eq!(bad("a\0b"), "holds a control character");
    assert_eq!(bad("a\nb"), "holds a control character");

    let parts = [
        req("a", Some(MIB)),
        req("b", Some(MIB)),
        req("a", Some(MIB)),
    ];
    let err = plan(1 << 30, 512, &parts, b"s").unwrap_err();
    assert_eq!(
        err.to_string(),
        "partition label \"a\": names partitions 1 and 3"
    );
}

#[test]
fn counts_and_sector_sizes_are_bounded() {
    assert_eq!(plan(1 << 30, 512, &[], b"s").unwrap_err(), PlanError::Empty);
    for sector in [0u64, 256, 1024, 2048, 8192] {
        assert_eq!(
            plan(1 << 30, sector, &layout(), b"s").unwrap_err(),
            PlanError::BadSectorSize(sector)
        );
    }
    let many: Vec<PartitionRequest> = (0..129).map(|i| req(&format!("p{i}"), Some(MIB))).collect();
    assert_eq!(
        plan(1 << 30, 512, &many, b"s").unwrap_err(),
        PlanError::TooManyPartitions { count: 129 }
    );
    let p = plan(1 << 30, 512, &many[..128], b"s").unwrap();
    assert_eq!(p.partitions.last().unwrap().number, 128);
}

#[test]
fn four_k_sectors_use_the_same_byte_layout() {
    let p512 = plan(1 << 30, 512, &layout(), b"seed").unwrap();
    let p4k = plan(1 << 30, 4096, &layout(), b"seed").unwrap();
    assert_eq!(p4k.first_usable_lba(), 6);
    assert_eq!(p4k.last_usable_lba(), (1 << 18) - 6);
    assert_eq!(p4k.partitions[0].first_lba, 256);
    for (a, b) in p512.partitions.iter().zip(&p4k.partitions) {
        assert_eq!(a.offset(512), b.offset(4096));
        assert_eq!(a.len(512), b.len(4096));
    }
    assert_eq!(lbas(&p4k)[0], (256, 256 + 32 * 256 - 1));
}

#[test]
fn guids_come_from_the_seed() {
    let a = plan(1 << 30, 512, &layout(), b"seed").unwrap();
    assert_eq!(a, plan(1 << 30, 512, &layout(), b"seed").unwrap());
    assert_eq!(a.disk_guid, Guid::derive(b"seed", 0));
    for p in &a.partitions {
        assert_eq!(p.unique_guid, Guid::derive(b"seed", p.number));
    }
    let b = plan(1 << 30, 512, &layout(), b"other").unwrap();
    assert_ne!(a.disk_guid, b.disk_guid);
    assert_eq!(lbas(&a), lbas(&b));
}
