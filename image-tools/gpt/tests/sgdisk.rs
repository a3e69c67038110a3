#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
//! The codec against the real `sgdisk` (Debian's `gdisk`), on sparse files: tables this
//! crate encodes pass `sgdisk -v` and read back through `sgdisk -p` / `sgdisk -i` as
//! planned, tables `sgdisk` writes decode exactly, and for the same partitions and GUIDs
//! both write the same GPT bytes.
//!
//! `sgdisk` treats a plain file as a disk of 512-byte sectors, so these tests use 512.
//! Without `sgdisk` the tests skip, except under CI (`CI=true`), where they fail.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flipslot_gpt::{
    decode, encode, head_len, plan, tail_len, Guid, PartitionRequest, Plan, PlannedPartition,
    Table, ESP_TYPE, LINUX_FS_TYPE,
};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// The tool, or `None` (after saying so) when it is missing outside CI.
fn sgdisk() -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = dirs
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("sgdisk"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("sgdisk is required under CI: install Debian's gdisk");
        }
        println!("skipping: sgdisk not installed (Debian package gdisk)");
    }
    found
}

fn run(tool: &Path, args: &[&str], file: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run sgdisk");
    assert!(
        out.status.success(),
        "sgdisk {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn req(label: &str, type_guid: Guid, size: Option<u64>) -> PartitionRequest {
    PartitionRequest {
        label: label.into(),
        type_guid,
        size,
    }
}

fn layout() -> Vec<PartitionRequest> {
    vec![
        req("esp", ESP_TYPE, Some(32 * MIB)),
        req("rootfs-a", LINUX_FS_TYPE, Some(64 * MIB + 4096)),
        req("rootfs-b", LINUX_FS_TYPE, Some(64 * MIB + 4096)),
        req("data", LINUX_FS_TYPE, None),
    ]
}

/// A sparse file of the plan's disk size with the encoded table written into it.
fn write_table(dir: &Path, plan: &Plan) -> PathBuf {
    let path = dir.join("disk.img");
    let f = File::create(&path).unwrap();
    f.set_len(plan.disk_size).unwrap();
    let e = encode(plan);
    f.write_all_at(&e.mbr, 0).unwrap();
    f.write_all_at(&e.primary, e.primary_offset).unwrap();
    f.write_all_at(&e.backup, e.backup_offset).unwrap();
    path
}

fn read_at(f: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Decodes the file as the agent reads a disk: its first and last bytes.
fn decode_file(path: &Path) -> Table {
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let head = read_at(&f, 0, head_len(SECTOR).min(size as usize));
    let tail_n = tail_len(SECTOR).min(size as usize);
    let tail = read_at(&f, size - tail_n as u64, tail_n);
    decode(&head, &tail, size, SECTOR)
        .unwrap()
        .expect("a gpt on the disk")
}

/// One partition as `sgdisk -i N` shows it.
#[derive(Debug, PartialEq, Eq)]
struct Info {
    type_guid: Guid,
    unique_guid: Guid,
    first: u64,
    last: u64,
    name: String,
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"))
        .trim()
}

fn info(tool: &Path, file: &Path, number: u32) -> Info {
    let out = run(tool, &["-i", &number.to_string()], file);
    let guid = |key: &str| {
        field(&out, key)
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<Guid>()
            .unwrap()
    };
    let sector = |key: &str| {
        field(&out, key)
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let name = field(&out, "Partition name:");
    Info {
        type_guid: guid("Partition GUID code:"),
        unique_guid: guid("Partition unique GUID:"),
        first: sector("First sector:"),
        last: sector("Last sector:"),
        name: name.trim_matches('\'').to_string(),
    }
}

/// `(number, first, last, name)` of every row of `sgdisk -p`, and the disk GUID.
fn print(tool: &Path, file: &Path) -> (Guid, Vec<(u32, u64, u64, String)>) {
    let out = run(tool, &["-p"], file);
    let disk_guid = field(&out, "Disk identifier (GUID):").parse().unwrap();
    let rows = out
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // Number, Start, End, Size, unit, Code, Name.
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(cols.len() >= 7, "row {l:?}");
            (
                cols[0].parse().unwrap(),
                cols[1].parse().unwrap(),
                cols[2].parse().unwrap(),
                cols[6..].join(" "),
            )
        })
        .collect();
    (disk_guid, rows)
}

fn expected_info(p: &PlannedPartition) -> Info {
    Info {
        type_guid: p.type_guid,
        unique_guid: p.unique_guid,
        first: p.first_lba,
        last: p.last_lba,
        name: p.label.clone(),
    }
}

fn check_sgdisk_reads(tool: &Path, file: &Path, plan: &Plan) {
    let verify = run(tool, &["-v"], file);
    assert!(verify.contains("No problems found"), "sgdisk -v:\n{verify}");
    let (disk_guid, rows) = print(tool, file);
    assert_eq!(disk_guid, plan.disk_guid);
    let want: Vec<(u32, u64, u64, String)> = plan
        .partitions
        .iter()
        .map(|p| (p.number, p.first_lba, p.last_lba, p.label.clone()))
        .collect();
    assert_eq!(rows, want);
    for p in &plan.partitions {
        assert_eq!(
            info(tool, file, p.number),
            expected_info(p),
            "partition {}",
            p.number
        );
    }
}

#[test]
fn sgdisk_accepts_and_reads_what_we_encode() {
    let Some(tool) = sgdisk() else { return };
    let dir = tempfile::tempdir().unwrap();
    let small = vec![
        req("esp", ESP_TYPE, Some(8 * MIB)),
        // A name outside ASCII (UTF-16LE on disk; sgdisk prints it as UTF-8).
        req("dätä", LINUX_FS_TYPE, None),
    ];
    for (size, parts) in [
        (256 * MIB, layout()),
        (256 * MIB + 7 * SECTOR, layout()),
        (64 * MIB + 123 * SECTOR, small),
    ] {
        let plan = plan(size, SECTOR, &parts, b"sgdisk test").unwrap();
        let file = write_table(dir.path(), &plan);
        check_sgdisk_reads(&tool, &file, &plan);
    }
}

#[test]
fn sgdisk_accepts_a_table_beyond_2_tib() {
    let Some(tool) = sgdisk() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The protective MBR's size saturates at 0xFFFFFFFF sectors.
    let plan = plan(3 << 40, SECTOR, &layout(), b"big").unwrap();
    let file = write_table(dir.path(), &plan);
    check_sgdisk_reads(&tool, &file, &plan);
    assert!(decode_file(&file).matches(&plan));
}

#[test]
fn decode_reads_what_sgdisk_writes() {
    let Some(tool) = sgdisk() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    File::create(&file).unwrap().set_len(128 * MIB).unwrap();
    let disk_guid = "0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F9";
    let esp_guid = "11111111-2222-4333-8444-55555555555A";
    run(
        &tool,
        &[
            "-o",
            &format!("--disk-guid={disk_guid}"),
            "-n",
            "1:2048:+32M",
            "-t",
            "1:ef00",
            "-c",
            "1:esp",
            &format!("--partition-guid=1:{esp_guid}"),
            "-n",
            "2:0:+16M",
            "-t",
            "2:8300",
            "-c",
            "2:rootfs-a",
            "-n",
            "4:0:0",
            "-t",
            "4:8300",
            "-c",
            "4:data",
        ],
        &file,
    );
    let table = decode_file(&file);
    assert!(table.primary_ok && table.backup_ok);
    assert_eq!(table.disk_guid, disk_guid.parse().unwrap());
    assert_eq!(table.sector_size, SECTOR);
    let lbas = 128 * MIB / SECTOR;
    assert_eq!(table.first_usable_lba, 34);
    assert_eq!(table.last_usable_lba, lbas - 34);
    let (guid, rows) = print(&tool, &file);
    assert_eq!(guid, table.disk_guid);
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 4]);
    assert_eq!(rows.len(), 3);
    for p in &table.partitions {
        assert_eq!(info(&tool, &file, p.number), expected_info(p));
    }
    assert_eq!(table.partitions[0].unique_guid, esp_guid.parse().unwrap());
    assert_eq!(table.partitions[0].type_guid, ESP_TYPE);
    assert_eq!(
        (table.partitions[0].first_lba, table.partitions[0].last_lba),
        (2048, 2048 + 32 * 2048 - 1)
    );
    assert_eq!(table.partitions[2].type_guid, LINUX_FS_TYPE);
    assert_eq!(table.partitions[2].label, "data");
}

#[test]
fn sgdisk_and_encode_write_the_same_gpt() {
    let Some(tool) = sgdisk() else { return };
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(256 * MIB, SECTOR, &layout(), b"same bytes").unwrap();
    let ours = write_table(dir.path(), &plan);

    let theirs = dir.path().join("sgdisk.img");
    File::create(&theirs)
        .unwrap()
        .set_len(plan.disk_size)
        .unwrap();
    let mut args = vec!["-o".to_string(), format!("--disk-guid={}", plan.disk_guid)];
    for p in &plan.partitions {
        let n = p.number;
        args.push(format!("--new={n}:{}:{}", p.first_lba, p.last_lba));
        args.push(format!("--typecode={n}:{}", p.type_guid));
        args.push(format!("--change-name={n}:{}", p.label));
        args.push(format!("--partition-guid={n}:{}", p.unique_guid));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&tool, &args, &theirs);

    let table = decode_file(&theirs);
    assert!(table.matches(&plan), "{table:?}");
    assert!(table.primary_ok && table.backup_ok);

    // Headers and entry arrays are byte for byte the same.
    let (a, b) = (File::open(&ours).unwrap(), File::open(&theirs).unwrap());
    let e = encode(&plan);
    for (offset, len) in [
        (e.primary_offset, e.primary.len()),
        (e.backup_offset, e.backup.len()),
    ] {
        assert!(
            read_at(&a, offset, len) == read_at(&b, offset, len),
            "bytes at {offset} differ"
        );
    }
    // The protective MBR's partition record and boot signature agree (sgdisk may fill in
    // the end CHS differently).
    let (ma, mb) = (read_at(&a, 0, 512), read_at(&b, 0, 512));
    assert_eq!(ma[446 + 4], mb[446 + 4], "mbr type");
    assert_eq!(
        ma[446 + 8..446 + 16],
        mb[446 + 8..446 + 16],
        "mbr lba range"
    );
    assert_eq!(ma[510..], mb[510..]);
}
