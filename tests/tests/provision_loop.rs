#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot provision` of a blank loop device from the set `flipslot-image provision`
//! really builds (GRUB ESP, signed description, data files), then the result read back by
//! other tools: `sgdisk` for the table, mtools and `grub-editenv` for the ESP, the bundle's
//! own image (`flipslot-image extract`) for slot A, `e2fsck` and `debugfs` for the data
//! partition, and the agent's `status --root` on a root assembled from what is on the disk.
//! A second run has nothing to do; a loop device holding ext4 is refused, unchanged.
//!
//! Needs root, util-linux's `losetup` and the packer's tools; without them the test is
//! skipped with a message (a failure under `CI=true`). The build host's kernel scans no
//! GPT on loop devices and has no vfat, so partitions are read at their byte offsets in the
//! backing file: nothing is mounted and no `/dev/loopNpM` is used.

use flipslot_e2e::host::{self, Need};
use flipslot_e2e::images::{ImageTool, KeyPair};
use flipslot_e2e::{cargo_build, cmd, inspect};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1 << 20;
/// Each loop device's backing file (sparse): room for the layout's fixed 64 MiB and a data
/// partition of about 62 MiB.
const DISK_SIZE: u64 = 128 * MIB;
const COMPATIBLE: &str = "loop-board";
const VERSION: &str = "1.0.0";

/// The rig's layout, small: the ESP keeps the 32 MiB GRUB needs, the data partition takes
/// the rest of whatever disk the machine has.
const LAYOUT: &str = r#"bootloader = "grub-efi"
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 panic=-1"

[[partition]]
label = "esp"
role = "esp"
size = "32M"

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
size = "rest"
fs = "ext4"
from = "dir"
status-file = "flipslot/status.json"
"#;

/// The agent config the data partition carries (`/data/flipslot/etc/system.toml`).
fn system_toml() -> String {
    format!(
        "compatible = \"{COMPATIBLE}\"\n\
         bootloader = \"grub\"\n\
         grubenv = \"/boot/efi/EFI/BOOT/grubenv\"\n\
         keyring = \"/data/flipslot/etc/keys\"\n\
         min-signatures = 1\n\
         data-directory = \"/data/flipslot\"\n\
         \n\
         [[slot.rootfs]]\n\
         device = \"/dev/disk/by-partlabel/rootfs-a\"\n\
         bootname = \"A\"\n\
         \n\
         [[slot.rootfs]]\n\
         device = \"/dev/disk/by-partlabel/rootfs-b\"\n\
         bootname = \"B\"\n"
    )
}

/// What the test runs besides the workspace's binaries.
const NEEDS: &[Need] = &[
    Need {
        what: "losetup",
        package: "mount",
    },
    Need {
        what: "sha256sum",
        package: "coreutils",
    },
    Need {
        what: "mksquashfs",
        package: "squashfs-tools",
    },
    Need {
        what: "mkfs.vfat",
        package: "dosfstools",
    },
    Need {
        what: "mcopy",
        package: "mtools",
    },
    Need {
        what: "mdir",
        package: "mtools",
    },
    Need {
        what: "grub-mkimage",
        package: "grub-common",
    },
    Need {
        what: "grub-editenv",
        package: "grub-common",
    },
    Need {
        what: "/usr/lib/grub/x86_64-efi/linux.mod",
        package: "grub-efi-amd64-bin",
    },
    Need {
        what: "sgdisk",
        package: "gdisk",
    },
    Need {
        what: "mke2fs",
        package: "e2fsprogs",
    },
    Need {
        what: "e2fsck",
        package: "e2fsprogs",
    },
    Need {
        what: "debugfs",
        package: "e2fsprogs",
    },
    Need {
        what: "dumpe2fs",
        package: "e2fsprogs",
    },
];

/// Skips with a message or, under `CI=true`, fails.
fn skip(test: &str, why: &str) {
    let msg = format!("{test}: {why}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("skipped {msg}");
}

/// Whether this process runs with effective uid 0 (`/proc/self/status`, `Uid:` real,
/// effective, ...).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A loop device over a sparse backing file, detached on drop. (The agent tests' helper
/// needs `nix`, which this crate does not use.)
#[derive(Debug)]
struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    fn create(backing: &Path, size: u64) -> anyhow::Result<LoopDevice> {
        std::fs::File::create(backing)?.set_len(size)?;
        let out = cmd::run_text(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(backing),
        )?;
        let dev = out.trim();
        anyhow::ensure!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Ok(LoopDevice {
            device: PathBuf::from(dev),
            backing: backing.to_path_buf(),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = cmd::run(Command::new("losetup").arg("-d").arg(&self.device)) {
            eprintln!("cannot detach {}: {e:#}", self.device.display());
        }
    }
}

/// `len` pseudo-random bytes (xorshift), so the slot image is not mostly zeros.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn read_range(file: &Path, offset: u64, len: u64) -> Vec<u8> {
    let f = std::fs::File::open(file).unwrap();
    let mut buf = vec![0u8; usize::try_from(len).unwrap()];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Copies `len` bytes at `offset` of `file` into the new file `out`.
fn copy_range(file: &Path, offset: u64, len: u64, out: &Path) {
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut o = std::fs::File::create(out).unwrap();
    let n = std::io::copy(&mut f.take(len), &mut o).unwrap();
    assert_eq!(n, len, "{} is shorter than expected", file.display());
}

fn sha256_file(file: &Path) -> String {
    let out = cmd::run_text(Command::new("sha256sum").arg(file)).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

/// `flipslot provision --disk DEV --description D --bundle B --keyring K --json`, to run
/// (more arguments may follow).
fn provision(agent: &Path, dev: &Path, desc: &Path, bundle: &Path, keys: &KeyPair) -> Command {
    let mut c = Command::new(agent);
    c.arg("provision")
        .arg("--disk")
        .arg(dev)
        .arg("--description")
        .arg(desc)
        .arg("--bundle")
        .arg(bundle)
        .arg("--keyring")
        .arg(&keys.public)
        .arg("--json")
        .stdin(Stdio::null());
    c
}

fn output(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd::describe(c)))
}

/// The JSON of the last line of a successful run's standard output.
fn last_json(c: &mut Command) -> (Value, String) {
    let shown = cmd::describe(c);
    let out = output(c);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{shown}: last line is not JSON ({e}): {last}"));
    (v, stdout)
}

fn partition<'v>(outcome: &'v Value, label: &str) -> &'v Value {
    outcome["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == label)
        .unwrap_or_else(|| panic!("no partition {label} in {outcome}"))
}

fn offset_size(p: &Value) -> (u64, u64) {
    (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap())
}

/// Every path under `dir`, relative, directories with a trailing `/`.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// `sgdisk -v` finds no problem; `sgdisk -p` and `sgdisk -i N` show the table the agent
/// reported: disk GUID, and per partition its start, size, type code, name and GUID.
fn check_gpt(dev: &Path, outcome: &Value) {
    let v = cmd::run_text(Command::new("sgdisk").arg("-v").arg(dev)).unwrap();
    assert!(v.contains("No problems found"), "sgdisk -v {dev:?}:\n{v}");

    let p = cmd::run_text(Command::new("sgdisk").arg("-p").arg(dev)).unwrap();
    let disk_guid = outcome["disk_guid"].as_str().unwrap();
    assert!(
        p.contains(&format!("Disk identifier (GUID): {disk_guid}")),
        "sgdisk -p shows another disk GUID than {disk_guid}:\n{p}"
    );
    let sector: u64 = p
        .lines()
        .find_map(|l| l.strip_prefix("Sector size (logical/physical): "))
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sector size in sgdisk -p:\n{p}"));
    // `Number  Start (sector)  End (sector)  Size  Code  Name`, one line per partition.
    let rows: Vec<Vec<&str>> = p
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= 7)
        .collect();
    let parts = outcome["partitions"].as_array().unwrap();
    assert_eq!(rows.len(), parts.len(), "sgdisk -p:\n{p}");
    for (row, part) in rows.iter().zip(parts) {
        let n = part["number"].as_u64().unwrap();
        let (offset, size) = offset_size(part);
        let start: u64 = row[1].parse().unwrap();
        let end: u64 = row[2].parse().unwrap();
        assert_eq!(row[0], n.to_string(), "sgdisk -p:\n{p}");
        assert_eq!(start * sector, offset, "start of {part}; sgdisk -p:\n{p}");
        assert_eq!(
            (end + 1 - start) * sector,
            size,
            "size of {part}; sgdisk -p:\n{p}"
        );
        let code = if part["role"] == "esp" {
            "EF00"
        } else {
            "8300"
        };
        assert_eq!(row[5], code, "type of {part}; sgdisk -p:\n{p}");
        assert_eq!(row[6], part["label"].as_str().unwrap(), "sgdisk -p:\n{p}");

        let i = cmd::run_text(Command::new("sgdisk").arg(format!("-i{n}")).arg(dev)).unwrap();
        let guid = part["guid"].as_str().unwrap();
        assert!(
            i.contains(&format!("Partition unique GUID: {guid}")),
            "sgdisk -i{n}:\n{i}"
        );
    }
}

/// `mdir -/ -b` of the FAT at `offset` of `disk`: every path on it.
fn fat_listing(disk: &Path, offset: u64) -> BTreeSet<String> {
    let mut image = disk.as_os_str().to_owned();
    image.push(format!("@@{offset}"));
    let text = cmd::run_text(
        Command::new("mdir")
            .args(["-/", "-b", "-i"])
            .arg(&image)
            .arg("::/")
            .env("MTOOLS_SKIP_CHECK", "1"),
    )
    .unwrap();
    text.lines().map(str::to_string).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn provision_loop_device() {
    const TEST: &str = "provision_loop_device";
    if !is_root() {
        skip(
            TEST,
            "loop devices need root (run as root; under CI=true this is a failure)",
        );
        return;
    }
    if !host::can_run(TEST, NEEDS) {
        return;
    }
    let started = Instant::now();
    let mut t = Instant::now();
    let mut lap = |step: &str| {
        eprintln!("{TEST}: {:6.2} s  {step}", t.elapsed().as_secs_f64());
        t = Instant::now();
    };
    let tool = ImageTool::build().unwrap();
    let agent = cargo_build::static_agent().unwrap();
    lap("flipslot-image and the static agent (cargo)");

    // Declared before the loop devices, so removed after they are detached.
    let work = tempfile::Builder::new()
        .prefix("provision-loop-")
        .disable_cleanup(std::env::var_os("FLIPSLOT_RIG_KEEP").is_some_and(|v| v == "1"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let w = work.path();

    // 1. Keys, a bundle of a tiny tree, the layout and the data directory.
    let keys = tool.keygen(&w.join("keys"), "release").unwrap();
    let tree_dir = w.join("rootfs");
    for (rel, bytes) in [
        (
            "etc/os-release",
            format!("ID=loop\nVERSION_ID={VERSION}\n").into_bytes(),
        ),
        ("boot/vmlinuz", b"not a kernel\n".to_vec()),
        ("boot/initrd.img", b"not an initramfs\n".to_vec()),
        (
            "usr/share/loop/noise.bin",
            pseudo_random(300 * 1024, 0x9e37_79b9_7f4a_7c15),
        ),
    ] {
        let p = tree_dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let bundle = w.join("system-1.0.0.fsb");
    tool.bundle(&tree_dir, COMPATIBLE, VERSION, &keys.secret, &bundle)
        .unwrap();
    let layout = w.join("layout.toml");
    std::fs::write(&layout, LAYOUT).unwrap();
    let data_dir = w.join("data");
    std::fs::create_dir_all(data_dir.join("flipslot/etc/keys")).unwrap();
    let config = system_toml();
    std::fs::write(data_dir.join("flipslot/etc/system.toml"), &config).unwrap();
    let public_key = std::fs::read(&keys.public).unwrap();
    std::fs::write(data_dir.join("flipslot/etc/keys/release.pub"), &public_key).unwrap();
    for rel in ["flipslot/etc/system.toml", "flipslot/etc/keys/release.pub"] {
        std::fs::set_permissions(data_dir.join(rel), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    // The image slot A must hold, as the bundle's own reader extracts it.
    let image = w.join("rootfs.img");
    let extracted = cmd::run_text(
        Command::new(&tool.0)
            .args(["extract", "--json", "--image", "rootfs", "--keyring"])
            .arg(&keys.public)
            .arg("--out")
            .arg(&image)
            .arg(&bundle),
    )
    .unwrap();
    let extracted: Value = serde_json::from_str(extracted.lines().last().unwrap()).unwrap();
    let image_bytes = std::fs::read(&image).unwrap();
    assert_eq!(extracted["size"], image_bytes.len() as u64, "{extracted}");
    assert!(image_bytes.len() > 256 * 1024, "{extracted}");
    let image_sha256 = extracted["sha256"].as_str().unwrap().to_string();
    lap("keys, bundle, layout, data directory, extract");

    // 2. The provisioning set, verified as a machine verifies it.
    let out_dir = w.join("pxe");
    let built = cmd::run_text(
        Command::new(&tool.0)
            .args(["provision", "--json", "--compatible", COMPATIBLE])
            .arg("--layout")
            .arg(&layout)
            .arg("--key")
            .arg(&keys.secret)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--out-dir")
            .arg(&out_dir),
    )
    .unwrap();
    let built: Value = serde_json::from_str(built.trim()).unwrap();
    let desc = out_dir.join("provision.json");
    let esp_img = out_dir.join("esp.img");
    assert_eq!(built["v"], 1, "{built}");
    assert_eq!(built["provision"]["compatible"], COMPATIBLE, "{built}");
    assert_eq!(built["provision"]["status_file"], "flipslot/status.json");
    let files: Vec<&str> = built["provision"]["data_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["flipslot/etc/keys/release.pub", "flipslot/etc/system.toml"],
        "{built}"
    );
    let info = cmd::run_text(
        Command::new(&tool.0)
            .args(["provision-info", "--json", "--keyring"])
            .arg(&keys.public)
            .arg(&desc),
    )
    .unwrap();
    let info: Value = serde_json::from_str(info.trim()).unwrap();
    assert_eq!(info["valid"], true, "{info}");
    assert_eq!(info["esp_image_check"], "ok", "{info}");
    assert_eq!(info["provision"], built["provision"], "{info}");
    let esp_bytes = std::fs::read(&esp_img).unwrap();
    assert_eq!(
        built["provision"]["esp"]["size"],
        esp_bytes.len() as u64,
        "{built}"
    );
    lap("flipslot-image provision, provision-info");

    // 3. A blank loop device, provisioned.
    let disk = match LoopDevice::create(&w.join("disk.img"), DISK_SIZE) {
        Ok(d) => d,
        Err(e) => {
            skip(TEST, &format!("no loop device: {e:#}"));
            return;
        }
    };
    let before_first = now();
    let (outcome, progress) =
        last_json(&mut provision(&agent, &disk.device, &desc, &bundle, &keys));
    lap("flipslot provision");
    assert_eq!(outcome["event"], "done", "{outcome}");
    assert_eq!(outcome["nothing_to_do"], false, "{outcome}");
    assert_eq!(outcome["wiped"], false, "{outcome}");
    assert_eq!(outcome["disk"], disk.device.to_str().unwrap(), "{outcome}");
    assert_eq!(outcome["disk_size"], DISK_SIZE, "{outcome}");
    assert_eq!(outcome["compatible"], COMPATIBLE, "{outcome}");
    assert_eq!(outcome["version"], VERSION, "{outcome}");
    assert_eq!(outcome["slots_written"], serde_json::json!(["rootfs.0"]));
    for step in [
        "inspect",
        "clear",
        "esp",
        "slot rootfs-a",
        "data",
        "partition-table",
        "done",
    ] {
        assert!(
            progress.contains(&format!("\"step\":\"{step}\"")),
            "no {step} step in:\n{progress}"
        );
    }
    let labels: Vec<&str> = outcome["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["esp", "rootfs-a", "rootfs-b", "data"], "{outcome}");
    let esp = partition(&outcome, "esp");
    let a = partition(&outcome, "rootfs-a");
    let b = partition(&outcome, "rootfs-b");
    let data = partition(&outcome, "data");
    assert_eq!(esp["size"], 32 * MIB, "{outcome}");
    for (p, slot, bootname, written) in [(a, "rootfs.0", "A", true), (b, "rootfs.1", "B", false)] {
        assert_eq!(p["size"], 16 * MIB, "{p}");
        assert_eq!(p["slot"], slot, "{p}");
        assert_eq!(p["bootname"], bootname, "{p}");
        assert_eq!(p["written"], written, "{p}");
    }
    let (data_off, data_len) = offset_size(data);
    // The data partition ends at most 1 MiB of alignment before the backup GPT.
    assert!(
        data_off + data_len <= DISK_SIZE - 33 * 512 && data_off + data_len + 2 * MIB > DISK_SIZE,
        "the data partition takes the rest of the disk: {data}"
    );

    // 4. The result, read by other tools.
    check_gpt(&disk.device, &outcome);
    let backing = &disk.backing;
    let (esp_off, _) = offset_size(esp);
    assert!(
        read_range(backing, esp_off, esp_bytes.len() as u64) == esp_bytes,
        "the ESP partition holds esp.img"
    );
    assert_eq!(
        fat_listing(backing, esp_off),
        strings(&[
            "::/EFI/",
            "::/EFI/BOOT/",
            "::/EFI/BOOT/BOOTX64.EFI",
            "::/EFI/BOOT/grub.cfg",
            "::/EFI/BOOT/grubenv",
        ])
    );
    let efi = inspect::read_fat_file(backing, esp_off, "/EFI/BOOT/BOOTX64.EFI").unwrap();
    assert_eq!(&efi[..2], b"MZ", "BOOTX64.EFI is a PE image");
    let grub_cfg = inspect::read_fat_file(backing, esp_off, "/EFI/BOOT/grub.cfg").unwrap();
    let grub_cfg = String::from_utf8(grub_cfg).unwrap();
    // grub.cfg was written by the packer before any table existed: its partition numbers
    // must be those of the table the agent wrote.
    for (p, bn) in [(a, "A"), (b, "B")] {
        let n = p["number"].as_u64().unwrap();
        let label = p["label"].as_str().unwrap();
        let line = format!(
            "linux (${{flipslot_disk}},gpt{n})/boot/vmlinuz root=PARTLABEL={label} flipslot.slot={bn}"
        );
        assert!(
            grub_cfg.contains(&line),
            "grub.cfg lacks {line:?}:\n{grub_cfg}"
        );
    }
    let grubenv = inspect::read_fat_file(backing, esp_off, inspect::ESP_GRUBENV).unwrap();
    assert_eq!(grubenv.len(), 1024, "a grubenv block is 1024 bytes");
    let vars = inspect::parse_grubenv(&grubenv).unwrap();
    let grubenv_file = w.join("grubenv");
    std::fs::write(&grubenv_file, &grubenv).unwrap();
    let listed =
        cmd::run_text(Command::new("grub-editenv").arg(&grubenv_file).arg("list")).unwrap();
    let listed: Vec<&str> = listed.lines().collect();
    assert_eq!(
        listed,
        ["ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"],
        "grub-editenv list; parsed: {vars:?}"
    );
    assert_eq!(vars.len(), listed.len(), "{vars:?}");

    let (a_off, a_len) = offset_size(a);
    let (b_off, _) = offset_size(b);
    let n = image_bytes.len() as u64;
    assert!(n <= a_len);
    assert!(
        read_range(backing, a_off, n) == image_bytes,
        "slot A holds the bundle's image (sha256 {image_sha256})"
    );
    assert!(
        read_range(backing, b_off, n).iter().all(|&x| x == 0),
        "slot B was not written"
    );

    let data_img = w.join("data.img");
    copy_range(backing, data_off, data_len, &data_img);
    cmd::run(Command::new("e2fsck").arg("-fn").arg(&data_img)).unwrap();
    let super_block = cmd::run_text(Command::new("dumpe2fs").arg("-h").arg(&data_img)).unwrap();
    assert!(
        super_block
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Filesystem", "volume", "name:", "data"]),
        "the data filesystem is labelled data:\n{super_block}"
    );
    lap("sgdisk, mtools, grub-editenv, e2fsck");

    // 5. A root assembled from the disk, and the agent's status of it.
    let root = w.join("root");
    std::fs::create_dir_all(root.join("data")).unwrap();
    cmd::run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", root.join("data").display()))
            .arg(&data_img),
    )
    .unwrap();
    assert_eq!(
        tree(&root.join("data")),
        strings(&[
            "flipslot/",
            "flipslot/etc/",
            "flipslot/etc/keys/",
            "flipslot/etc/keys/release.pub",
            "flipslot/etc/system.toml",
            "flipslot/status.json",
            "lost+found/",
        ]),
        "the data partition holds the data directory's files and the status record"
    );
    let on_disk = root.join("data/flipslot/etc");
    assert_eq!(
        std::fs::read_to_string(on_disk.join("system.toml")).unwrap(),
        config
    );
    assert_eq!(
        std::fs::read(on_disk.join("keys/release.pub")).unwrap(),
        public_key
    );
    for rel in ["system.toml", "keys/release.pub"] {
        let mode = std::fs::metadata(on_disk.join(rel))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644, "mode of {rel}");
    }
    std::fs::create_dir_all(root.join("etc/flipslot")).unwrap();
    std::fs::copy(
        on_disk.join("system.toml"),
        root.join("etc/flipslot/system.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("boot/efi/EFI/BOOT")).unwrap();
    std::fs::write(root.join("boot/efi/EFI/BOOT/grubenv"), &grubenv).unwrap();
    let by_label = root.join("dev/disk/by-partlabel");
    std::fs::create_dir_all(&by_label).unwrap();
    for label in ["rootfs-a", "rootfs-b"] {
        std::fs::write(by_label.join(label), b"").unwrap();
    }
    // The default places under --root (/etc/flipslot/system.toml, /proc/cmdline): the
    // command line GRUB passes slot A.
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(
        root.join("proc/cmdline"),
        "root=PARTLABEL=rootfs-a flipslot.slot=A rauc.slot=A console=ttyS0 panic=-1\n",
    )
    .unwrap();
    let status = cmd::run_text(Command::new(&agent).arg("--root").arg(&root).args([
        "status",
        "--json",
        "--no-daemon",
    ]))
    .unwrap();
    let status: Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["compatible"], COMPATIBLE, "{status}");
    assert_eq!(status["bootloader"], "grub", "{status}");
    assert_eq!(status["booted"], "rootfs.0", "{status}");
    assert_eq!(status["primary"], "rootfs.0", "{status}");
    assert_eq!(status["last_rollback"], Value::Null, "{status}");
    assert_eq!(status["config_notices"], serde_json::json!([]), "{status}");
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{status}");
    let (sa, sb) = (&slots[0], &slots[1]);
    assert_eq!(sa["name"], "rootfs.0", "{status}");
    assert_eq!(sa["bootname"], "A", "{status}");
    assert_eq!(sa["state"], "booted", "{status}");
    assert_eq!(sa["boot_status"], "good", "{status}");
    assert_eq!(sa["primary"], true, "{status}");
    assert_eq!(sa["device_exists"], true, "{status}");
    let rec = &sa["installed"];
    assert_eq!(rec["result"], "ok", "{status}");
    assert_eq!(rec["bundle_version"], VERSION, "{status}");
    assert_eq!(rec["compatible"], COMPATIBLE, "{status}");
    assert_eq!(
        rec["manifest_sha256"], outcome["manifest_sha256"],
        "{status}"
    );
    assert_eq!(rec["image_sha256"], image_sha256.as_str(), "{status}");
    assert!(
        rec["message"].as_str().unwrap().contains("factory install"),
        "{status}"
    );
    let installed_at = rec["installed_at"].as_u64().unwrap();
    assert!(
        (before_first..=now()).contains(&installed_at),
        "the factory record is stamped with the provisioning time: {status}"
    );
    assert_eq!(
        rec["trial"]["committed_at"], installed_at,
        "the factory slot is committed: {status}"
    );
    assert_eq!(sb["name"], "rootfs.1", "{status}");
    assert_eq!(sb["bootname"], "B", "{status}");
    assert_eq!(sb["state"], "inactive", "{status}");
    assert_eq!(sb["boot_status"], "bad", "{status}");
    assert_eq!(sb["primary"], false, "{status}");
    assert_eq!(sb["installed"], Value::Null, "{status}");
    lap("debugfs rdump, flipslot status --root");

    // 6. Again on the same disk: nothing to do, nothing written.
    let sha_before = sha256_file(backing);
    let (again, progress) = last_json(&mut provision(&agent, &disk.device, &desc, &bundle, &keys));
    assert_eq!(again["nothing_to_do"], true, "{again}");
    assert_eq!(again["disk_guid"], outcome["disk_guid"], "{again}");
    assert_eq!(again["partitions"], outcome["partitions"], "{again}");
    assert!(
        progress.contains("\"step\":\"nothing-to-do\""),
        "{progress}"
    );
    assert!(!progress.contains("\"step\":\"clear\""), "{progress}");
    assert_eq!(
        sha256_file(backing),
        sha_before,
        "the second run wrote to the disk"
    );
    lap("second flipslot provision");

    // 7. A loop device holding ext4: refused, with and without --wipe (the description
    // does not allow wiping), and left as it was.
    let other = match LoopDevice::create(&w.join("other.img"), DISK_SIZE) {
        Ok(d) => d,
        Err(e) => panic!("a second loop device: {e:#}"),
    };
    cmd::run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "precious"])
            .arg(&other.device),
    )
    .unwrap();
    let sha_other = sha256_file(&other.backing);
    for (wipe, says) in [(false, "holds data"), (true, "does not allow wiping")] {
        let mut c = provision(&agent, &other.device, &desc, &bundle, &keys);
        if wipe {
            c.arg("--wipe");
        }
        let out = output(&mut c);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "wipe={wipe}: provisioned a disk holding ext4:\n{stdout}"
        );
        assert!(
            stderr.contains(says) && stderr.contains("ext"),
            "wipe={wipe}: expected {says:?} naming the filesystem:\n{stderr}"
        );
        assert!(!stdout.contains("\"event\":\"done\""), "{stdout}");
        assert!(!stdout.contains("\"step\":\"clear\""), "{stdout}");
    }
    assert_eq!(
        sha256_file(&other.backing),
        sha_other,
        "the disk holding ext4 was written"
    );
    drop(other);
    drop(disk);
    lap("a disk holding ext4 refused");
    eprintln!("{TEST}: {:.1} s in all", started.elapsed().as_secs_f64());
}
