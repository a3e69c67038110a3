//! Builds real A/B disk images from a small squashfs bundle and inspects them with the tools a
//! person would use: `sgdisk -i`, mtools at an offset (`-i disk.img@@OFFSET`), `grub-editenv`,
//! `debugfs`. Also checks that two builds are byte-identical and that bad inputs give clear
//! errors.
//!
//! A missing tool skips the tests that need it, except with `CI=true`, where it fails naming
//! the Debian package (gdisk, mtools, dosfstools, grub-common, grub-efi-amd64-bin,
//! e2fsprogs, squashfs-tools).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use flipslot_format::builder::{self, BuildOptions, ImageInput};
use flipslot_format::keys::key_id;
use flipslot_format::source::FileSource;
use flipslot_format::{Bundle, Compression, Keyring, VerifyPolicy};
use flipslot_image::disk::{
    self, build_disk, grub, DiskError, DiskOptions, DiskSummary, Layout, DEFAULT_GRUB_DIR,
};
use flipslot_image::mkfs::{build_fs, uuid_from_seed, FsType, MkfsOptions};
use flipslot_os::process::{find_program, Cmd};

const BUILD_TIME: u64 = 1_700_000_000;
const MIB: u64 = 1 << 20;

const LAYOUT: &str = r#"
bootloader = "grub-efi"
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 panic=-1"
boot-attempts = 1

[[partition]]
label = "esp"
role = "esp"
size = "8M"

[[partition]]
label = "rootfs-a"
role = "slot"
class = "rootfs"
bootname = "A"
size = "16M"

[[partition]]
label = "rootfs-b"
role = "slot"
class = "rootfs"
bootname = "B"
size = "16M"

[[partition]]
label = "data"
role = "data"
size = "16M"
fs = "ext4"
from = "dir"
status-file = "flipslot/status.json"
"#;

/// Whether every tool is installed; panics under `CI=true` when one is not.
fn tools_present(layout: &Layout) -> bool {
    let mut result = disk::check_tools(layout, Path::new(DEFAULT_GRUB_DIR))
        .err()
        .map(|e| e.to_string());
    for (program, package) in [
        ("mksquashfs", "squashfs-tools"),
        ("mtype", "mtools"),
        ("mdir", "mtools"),
        ("grub-editenv", "grub-common"),
        ("debugfs", "e2fsprogs"),
    ] {
        if find_program(OsStr::new(program)).is_none() {
            let msg = format!("{program} (Debian package {package})");
            result = Some(match result {
                Some(r) => format!("{r}, {msg}"),
                None => format!("missing tools: {msg}"),
            });
        }
    }
    match result {
        None => true,
        Some(msg) if std::env::var("CI").as_deref() == Ok("true") => panic!("{msg}"),
        Some(msg) => {
            eprintln!("skipping disk image test: {msg}");
            false
        }
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn keyring() -> Keyring {
    let k = key().verifying_key();
    Keyring::from_keys([(k, PathBuf::from(format!("{}.pub", key_id(&k))))])
}

/// Pseudo-random bytes (incompressible, so the squashfs is a few MiB).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A bundle with one `class` image made from `image`.
fn bundle_of(dir: &Path, class: &str, image: &Path) -> PathBuf {
    let out = dir.join(format!("{class}.fsb"));
    let opts = BuildOptions {
        compatible: "acme-box".into(),
        version: semver::Version::new(1, 2, 3),
        build_time: BUILD_TIME,
        description: None,
        chunk_size: 256 * 1024,
        compression: Compression::Zstd,
        zstd_level: 3,
        block_index: false,
        chunk_hash: Default::default(),
    };
    let input = ImageInput {
        class: class.into(),
        path: image.to_path_buf(),
    };
    builder::build(
        &[input],
        &opts,
        &[key()],
        &mut std::fs::File::create(&out).unwrap(),
        &mut |_, _, _| {},
    )
    .unwrap();
    out
}

/// A squashfs root with /boot/vmlinuz, /boot/initrd.img and 3 MiB of noise; its path.
fn squashfs_root(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join("boot/vmlinuz"), b"not really a kernel\n").unwrap();
    fs::write(tree.join("boot/initrd.img"), b"not really an initrd\n").unwrap();
    fs::write(tree.join("noise.bin"), noise(3 << 20)).unwrap();
    let image = dir.join("rootfs.squashfs");
    let opts = MkfsOptions::new(FsType::Squashfs, BUILD_TIME, uuid_from_seed(b"t"));
    build_fs(&tree, &image, &opts).unwrap();
    image
}

fn data_dir(dir: &Path) -> PathBuf {
    let d = dir.join("data");
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::write(d.join("etc/hello.txt"), b"hello from the data partition\n").unwrap();
    d
}

fn open(bundle: &Path) -> Bundle<FileSource> {
    Bundle::open(
        FileSource::open(bundle).unwrap(),
        &keyring(),
        &VerifyPolicy::default(),
    )
    .unwrap()
}

fn build(
    layout: &Layout,
    bundle: &Path,
    out: &Path,
    data: Option<&Path>,
) -> Result<DiskSummary, DiskError> {
    let mut opts = DiskOptions::new(out);
    opts.data_dir = data.map(Path::to_path_buf);
    build_disk(layout, &mut open(bundle), &opts, &mut |_, _, _| {})
}

/// `sgdisk -i N` of the disk: (type GUID line, first sector, last sector, name).
fn sgdisk_info(disk: &Path, n: u32) -> String {
    Cmd::new("sgdisk")
        .arg("-i")
        .arg(n.to_string())
        .arg(disk)
        .run_stdout()
        .unwrap()
}

/// Runs an mtools program on the filesystem at `offset` of `disk`.
fn mtools(program: &str, disk: &Path, offset: u64, path: &str) -> Vec<u8> {
    Cmd::new(program)
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLSRC", "/dev/null")
        .arg("-i")
        .arg(format!("{}@@{offset}", disk.display()))
        .arg(format!("::{path}"))
        .run()
        .unwrap()
        .stdout
}

fn read_range(path: &Path, start: u64, len: u64) -> Vec<u8> {
    let all = fs::read(path).unwrap();
    all[start as usize..(start + len) as usize].to_vec()
}

#[test]
fn disk_image_is_complete_and_reproducible() {
    let layout = Layout::parse(LAYOUT, "test-layout.toml").unwrap();
    if !tools_present(&layout) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rootfs = squashfs_root(dir);
    let bundle = bundle_of(dir, "rootfs", &rootfs);
    let data = data_dir(dir);
    let disk_path = dir.join("disk.img");
    let summary = build(&layout, &bundle, &disk_path, Some(&data)).unwrap();

    // Summary.
    assert_eq!(summary.boot_slot, "A");
    assert_eq!(summary.size, layout.disk_size());
    assert_eq!(fs::metadata(&disk_path).unwrap().len(), summary.size);
    assert!(summary.reproducible);
    let starts: Vec<(u32, &str, &str, u64, u64)> = summary
        .partitions
        .iter()
        .map(|p| (p.number, p.label.as_str(), p.role.as_str(), p.start, p.size))
        .collect();
    assert_eq!(
        starts,
        [
            (1, "esp", "esp", MIB, 8 * MIB),
            (2, "rootfs-a", "slot", 9 * MIB, 16 * MIB),
            (3, "rootfs-b", "slot", 25 * MIB, 16 * MIB),
            (4, "data", "data", 41 * MIB, 16 * MIB),
        ]
    );
    // Nothing but the image is left next to it.
    let mut left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["data", "disk.img", "rootfs.fsb", "rootfs.squashfs", "tree"]
    );

    // The partition table, as sgdisk reads it.
    let table = Cmd::new("sgdisk")
        .arg("-p")
        .arg(&disk_path)
        .run_stdout()
        .unwrap();
    assert!(
        table.contains(&format!(
            "Disk identifier (GUID): {}",
            summary.disk_guid.to_uppercase()
        )),
        "{table}"
    );
    for (n, part) in summary.partitions.iter().enumerate() {
        let info = sgdisk_info(&disk_path, n as u32 + 1);
        assert!(
            info.contains(&format!("Partition name: '{}'", part.label)),
            "{info}"
        );
        assert!(
            info.contains(&format!("First sector: {} ", part.start / 512)),
            "{info}"
        );
        assert!(
            info.contains(&format!("Partition size: {} sectors", part.size / 512)),
            "{info}"
        );
        assert!(
            info.contains(&format!(
                "Partition unique GUID: {}",
                part.guid.to_uppercase()
            )),
            "{info}"
        );
        let type_guid = if part.role == "esp" {
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        } else {
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        };
        assert!(
            info.contains(&format!("Partition GUID code: {type_guid}")),
            "{info}"
        );
    }
    let verify = Cmd::new("sgdisk")
        .arg("-v")
        .arg(&disk_path)
        .run_stdout()
        .unwrap();
    assert!(verify.contains("No problems found"), "{verify}");

    // The ESP: GRUB, grub.cfg as generated, and the grubenv block.
    let esp = MIB;
    let listing = String::from_utf8(mtools("mdir", &disk_path, esp, "/EFI/BOOT")).unwrap();
    assert!(listing.contains("BOOTX64  EFI"), "{listing}");
    let efi = mtools("mtype", &disk_path, esp, "/EFI/BOOT/BOOTX64.EFI");
    assert!(
        efi.len() > 100_000 && efi.starts_with(b"MZ"),
        "{} bytes",
        efi.len()
    );
    let cfg = mtools("mtype", &disk_path, esp, "/EFI/BOOT/grub.cfg");
    assert_eq!(String::from_utf8(cfg).unwrap(), grub::grub_cfg(&layout));
    let env = mtools("mtype", &disk_path, esp, "/EFI/BOOT/grubenv");
    assert_eq!(env.len(), grub::GRUBENV_SIZE);
    let vars = grub::parse_grubenv(&env).unwrap();
    let expected: Vec<(String, String)> = [
        ("ORDER", "A B"),
        ("A_OK", "1"),
        ("A_TRY", "0"),
        ("B_OK", "0"),
        ("B_TRY", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(vars, expected);
    // grub-editenv reads the block the same way.
    let env_file = dir.join("grubenv.copy");
    fs::write(&env_file, &env).unwrap();
    let listed = Cmd::new("grub-editenv")
        .arg(&env_file)
        .arg("list")
        .run_stdout()
        .unwrap();
    assert_eq!(listed, "ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n");
    fs::remove_file(&env_file).unwrap();

    // Slot A holds the image, then zeros; slot B is zeros.
    let image = fs::read(&rootfs).unwrap();
    let slot_a = read_range(&disk_path, 9 * MIB, 16 * MIB);
    assert_eq!(&slot_a[..image.len()], &image[..]);
    assert!(slot_a[image.len()..].iter().all(|&b| b == 0));
    assert!(read_range(&disk_path, 25 * MIB, 16 * MIB)
        .iter()
        .all(|&b| b == 0));

    // The data partition is an ext4 holding the data directory.
    let part = dir.join("data.ext4");
    fs::write(&part, read_range(&disk_path, 41 * MIB, 16 * MIB)).unwrap();
    let hello = Cmd::new("debugfs")
        .arg("-R")
        .arg("cat /etc/hello.txt")
        .arg(&part)
        .run_stdout()
        .unwrap();
    assert_eq!(hello, "hello from the data partition\n");
    // Next to it, the agent's status file records the factory image in slot A.
    let status = Cmd::new("debugfs")
        .arg("-R")
        .arg("cat /flipslot/status.json")
        .arg(&part)
        .run_stdout()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let rec = &status["slots"]["rootfs.0"];
    assert_eq!(status["format"], 1);
    assert_eq!(rec["result"], "ok");
    assert_eq!(rec["bundle_version"], summary.version.as_str());
    assert!(rec["trial"]["committed_at"].is_u64(), "{status}");
    assert!(status["slots"].get("rootfs.1").is_none());
    fs::remove_file(&part).unwrap();

    // A second build, later and to another name, is byte-identical; the image is sparse.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = dir.join("again.img");
    let summary2 = build(&layout, &bundle, &again, Some(&data)).unwrap();
    assert_eq!(summary2.partitions, summary.partitions);
    assert!(
        fs::read(&disk_path).unwrap() == fs::read(&again).unwrap(),
        "two builds differ"
    );
    use std::os::unix::fs::MetadataExt;
    let allocated = fs::metadata(&again).unwrap().blocks() * 512;
    assert!(allocated < summary.size / 2, "{allocated} bytes allocated");
}

#[test]
fn empty_data_partition_and_replacing_an_image() {
    let text = LAYOUT.replace("from = \"dir\"\n", "");
    let layout = Layout::parse(&text, "t").unwrap();
    if !tools_present(&layout) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let raw = dir.join("raw.img");
    fs::write(&raw, noise(300_000)).unwrap();
    let bundle = bundle_of(dir, "rootfs", &raw);
    let out = dir.join("disk.img");
    fs::write(&out, b"old contents").unwrap();
    let summary = build(&layout, &bundle, &out, None).unwrap();
    assert_eq!(summary.partitions[3].contents, "empty ext4");
    assert_eq!(&read_range(&out, 9 * MIB, 300_000), &noise(300_000)[..]);
    let part = dir.join("data.ext4");
    fs::write(&part, read_range(&out, 41 * MIB, 16 * MIB)).unwrap();
    let ls = Cmd::new("debugfs")
        .arg("-R")
        .arg("ls -l /")
        .arg(&part)
        .run_stdout()
        .unwrap();
    assert!(ls.contains("lost+found"), "{ls}");
}

#[test]
fn bad_inputs_give_clear_errors() {
    let layout = Layout::parse(LAYOUT, "t").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let big = dir.join("big.img");
    fs::write(&big, noise(17 << 20)).unwrap();
    let bundle = bundle_of(dir, "rootfs", &big);
    let data = data_dir(dir);
    let out = dir.join("disk.img");

    let e = build(&layout, &bundle, &out, Some(&data)).unwrap_err();
    assert!(matches!(e, DiskError::SlotTooSmall { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"rootfs-a\"") && msg.contains("too small"),
        "{msg}"
    );

    let small = dir.join("small.img");
    fs::write(&small, noise(8192)).unwrap();
    let app = bundle_of(dir, "appfs", &small);
    let e = build(&layout, &app, &out, Some(&data)).unwrap_err();
    assert!(
        e.to_string().contains("no image of class \"rootfs\"") && e.to_string().contains("appfs"),
        "{e}"
    );

    let rootfs = bundle_of(dir, "rootfs", &small);
    let e = build(&layout, &rootfs, &out, None).unwrap_err();
    assert!(e.to_string().contains("--data-dir"), "{e}");
    let no_dir_layout = Layout::parse(&LAYOUT.replace("from = \"dir\"\n", ""), "t").unwrap();
    let e = build(&no_dir_layout, &rootfs, &out, Some(&data)).unwrap_err();
    assert!(e.to_string().contains("no data partition"), "{e}");

    // An output that is not a regular file is refused, and nothing is left behind.
    fs::create_dir(dir.join("adir")).unwrap();
    if tools_present(&layout) {
        let e = build(&layout, &rootfs, &dir.join("adir"), Some(&data)).unwrap_err();
        let e = flipslot_cli_support::source_chain(&e);
        assert!(e.contains("not a regular file"), "{e}");
    }
    assert!(!out.exists());
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn missing_grub_modules_name_the_package() {
    let layout = Layout::parse(LAYOUT, "t").unwrap();
    let e = disk::check_tools(&layout, Path::new("/nonexistent/grub")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("grub-efi-amd64-bin") && msg.contains("part_gpt"),
        "{msg}"
    );
}

/// Boots the disk in QEMU (TCG, OVMF) with a slot whose "kernel" is not a kernel: GRUB must
/// pick A, save A_TRY=1, fail to load it, reboot, find nothing bootable and halt.
#[test]
fn grub_counts_and_falls_through_in_qemu() {
    const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
    let layout = Layout::parse(&LAYOUT.replace("from = \"dir\"\n", ""), "t").unwrap();
    if !tools_present(&layout) {
        return;
    }
    if find_program(OsStr::new("qemu-system-x86_64")).is_none() || !Path::new(OVMF).is_file() {
        let msg = "qemu-system-x86_64 or OVMF missing: install qemu-system-x86 and ovmf";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bundle = bundle_of(dir, "rootfs", &squashfs_root(dir));
    let disk_path = dir.join("disk.img");
    build(&layout, &bundle, &disk_path, None).unwrap();
    let serial = dir.join("serial.log");
    Cmd::new("timeout")
        .args([
            "180",
            "qemu-system-x86_64",
            "-machine",
            "q35",
            "-cpu",
            "max",
            "-m",
            "512",
        ])
        .args([
            "-bios", OVMF, "-display", "none", "-monitor", "none", "-net", "none",
        ])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk_path.display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .run()
        .unwrap();
    let log = String::from_utf8_lossy(&fs::read(&serial).unwrap()).replace('\r', "");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("flipslot:")).collect();
    let expect = [
        "flipslot: booting slot A from (hd0,gpt2) (rootfs-a)",
        "flipslot: slot A failed to load; rebooting to try the next slot in ORDER",
        "flipslot: no bootable slot: ORDER='A B' A_OK=1 A_TRY=1 B_OK=0 B_TRY=0",
    ];
    for (i, want) in expect.iter().enumerate() {
        assert!(
            lines.iter().any(|l| l.ends_with(want)),
            "line {i} {want:?} not in {lines:#?}"
        );
    }
    let env = grub::parse_grubenv(&mtools("mtype", &disk_path, MIB, "/EFI/BOOT/grubenv")).unwrap();
    assert!(
        env.contains(&("A_TRY".to_string(), "1".to_string())),
        "{env:?}"
    );
}
