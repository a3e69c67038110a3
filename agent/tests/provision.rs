#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot provision` on disk image files (no root needed) and on a loop device (root):
//! a blank disk becomes an A/B disk, checked with the real `sgdisk` and `debugfs`; a second
//! run has nothing to do; a tampered description, a wrong key, a wrong compatible, a disk
//! holding data and an interrupted run are each handled with nothing lost.
//!
//! The ESP image here is opaque bytes: the agent writes and verifies whatever the signed
//! description names. A real GRUB ESP is built and booted by the QEMU rig
//! (`tests/tests/rig_provision.rs`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flipslot::slot::status::{InstallResult, StatusFile};
use flipslot_format::provision::{
    sign_provision, DataFile, DiskSelect, EspImage, PartitionRole, PartitionSpec, Provision,
    ProvisionBootloader, TargetRule,
};
use flipslot_format::Sha256Digest;
use support::loopdev::{in_ci, require, LoopDevice};
use support::{expect_failure, expect_success, pseudo_random, sha256_hex, Fixture, COMPATIBLE};

const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 64 * MIB;

/// Tools these tests run besides the agent.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["mke2fs", "debugfs", "sgdisk"]
        .into_iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing {} (e2fsprogs, gdisk)", missing.join(", "));
    assert!(!in_ci(), "{msg}");
    eprintln!("skipping: {msg}");
    false
}

struct Kit {
    f: Fixture,
    esp: Vec<u8>,
    image: Vec<u8>,
    bundle: PathBuf,
    desc: PathBuf,
}

fn description(esp: &[u8], allow_wipe: bool, write_all: bool) -> Provision {
    use sha2::Digest;
    Provision {
        format: 1,
        compatible: COMPATIBLE.into(),
        target: TargetRule {
            select: DiskSelect::Largest,
            by_id: None,
            serial: None,
            allow_wipe,
        },
        bootloader: ProvisionBootloader::GrubEfi,
        esp: EspImage {
            file: "esp.img".into(),
            size: esp.len() as u64,
            sha256: Sha256Digest(sha2::Sha256::digest(esp).into()),
        },
        partitions: vec![
            spec("esp", PartitionRole::Esp, Some(4 * MIB), None),
            spec("rootfs-a", PartitionRole::Slot, Some(16 * MIB), Some("A")),
            spec("rootfs-b", PartitionRole::Slot, Some(16 * MIB), Some("B")),
            spec("data", PartitionRole::Data, None, None),
        ],
        write_all_slots: write_all,
        data_files: vec![
            DataFile {
                path: "flipslot/system.toml".into(),
                mode: 0o644,
                contents: "compatible = \"test-board\"\n".into(),
            },
            DataFile {
                path: "flipslot/keys/release.pub".into(),
                mode: 0o600,
                contents: "not checked here\n".into(),
            },
        ],
        status_file: Some("flipslot/status.json".into()),
    }
}

fn spec(
    label: &str,
    role: PartitionRole,
    size: Option<u64>,
    bootname: Option<&str>,
) -> PartitionSpec {
    PartitionSpec {
        label: label.into(),
        role,
        size,
        type_guid: None,
        class: bootname.map(|_| "rootfs".to_string()),
        bootname: bootname.map(str::to_string),
    }
}

impl Kit {
    fn new(allow_wipe: bool, write_all: bool) -> Kit {
        let f = Fixture::new();
        let esp = pseudo_random((3 * MIB) as usize + 8192, 7);
        let image = pseudo_random((5 * MIB) as usize + 4321, 8);
        let bundle = f.bundle("1.0.0", &image);
        let dir = f.path().join("pxe");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("esp.img"), &esp).unwrap();
        let desc = dir.join("provision.json");
        let key = flipslot_format::keys::load_secret_key(&f.trusted.secret).unwrap();
        let signed = sign_provision(&description(&esp, allow_wipe, write_all), &[key]).unwrap();
        std::fs::write(&desc, signed).unwrap();
        Kit {
            f,
            esp,
            image,
            bundle,
            desc,
        }
    }

    fn blank_disk(&self, name: &str) -> PathBuf {
        let p = self.f.path().join(name);
        let file = std::fs::File::create(&p).unwrap();
        file.set_len(DISK_SIZE).unwrap();
        p
    }

    fn provision(&self, disk: &Path, extra: &[&str]) -> Output {
        self.provision_with(disk, &self.desc, &self.bundle, extra, &[])
    }

    fn provision_with(
        &self,
        disk: &Path,
        desc: &Path,
        bundle: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flipslot"));
        c.arg("provision")
            .arg("--disk")
            .arg(disk)
            .arg("--description")
            .arg(desc)
            .arg("--bundle")
            .arg(bundle)
            .arg("--keyring")
            .arg(self.f.keyring_dir())
            .args(extra)
            .stdin(Stdio::null())
            .env("FLIPSLOT_LOG", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

fn last_json(out: &Output) -> serde_json::Value {
    serde_json::from_str(support::stdout(out).lines().last().unwrap()).unwrap()
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// `sgdisk -v` finds no problem and `sgdisk -p` lists the four partitions by name.
fn check_gpt(disk: &Path) {
    let v = Command::new("sgdisk").arg("-v").arg(disk).output().unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
    let p = Command::new("sgdisk").arg("-p").arg(disk).output().unwrap();
    let text = String::from_utf8_lossy(&p.stdout).to_string();
    for name in ["esp", "rootfs-a", "rootfs-b", "data"] {
        assert!(text.contains(name), "sgdisk -p lacks {name}: {text}");
    }
    assert!(text.contains("EF00"), "the ESP has the EFI type: {text}");
}

/// A file of the data partition, read with `debugfs` from a copy of the partition.
fn data_file(disk: &Path, part: &serde_json::Value, rel: &str, scratch: &Path) -> String {
    let img = scratch.join("data-part.img");
    let bytes = read_range(
        disk,
        part["offset"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    );
    std::fs::write(&img, bytes).unwrap();
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat /{rel}"))
        .arg(&img)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn partition<'v>(done: &'v serde_json::Value, label: &str) -> &'v serde_json::Value {
    done["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == label)
        .unwrap()
}

/// The checks on a freshly provisioned disk; returns the final JSON line.
fn check_provisioned(k: &Kit, disk: &Path, out: &Output, write_all: bool) -> serde_json::Value {
    expect_success(out);
    let done = last_json(out);
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["nothing_to_do"], false, "{done}");
    assert_eq!(done["version"], "1.0.0");
    check_gpt(disk);
    let esp = partition(&done, "esp");
    assert_eq!(esp["offset"], MIB, "{done}");
    assert_eq!(
        sha256_hex(&read_range(disk, MIB, k.esp.len() as u64)),
        sha256_hex(&k.esp)
    );
    let a = partition(&done, "rootfs-a");
    let a_bytes = read_range(disk, a["offset"].as_u64().unwrap(), k.image.len() as u64);
    assert_eq!(
        sha256_hex(&a_bytes),
        sha256_hex(&k.image),
        "slot A holds the image"
    );
    let b = partition(&done, "rootfs-b");
    let b_bytes = read_range(disk, b["offset"].as_u64().unwrap(), k.image.len() as u64);
    assert_eq!(sha256_hex(&b_bytes) == sha256_hex(&k.image), write_all);
    assert_eq!(b["written"], write_all);

    let data = partition(&done, "data");
    let scratch = tempfile::tempdir().unwrap();
    let cfg = data_file(disk, data, "flipslot/system.toml", scratch.path());
    assert_eq!(cfg, "compatible = \"test-board\"\n");
    let status = data_file(disk, data, "flipslot/status.json", scratch.path());
    let st = StatusFile::parse(&status, Path::new("status.json")).unwrap();
    let rec = st.record("rootfs.0").expect("a record for slot A");
    assert_eq!(rec.result, InstallResult::Ok);
    assert_eq!(rec.bundle_version.as_deref(), Some("1.0.0"));
    assert!(
        rec.trial.committed_at.is_some(),
        "the factory slot is committed"
    );
    assert_eq!(
        rec.image_sha256.map(|d| d.to_hex()),
        Some(sha256_hex(&k.image))
    );
    assert_eq!(st.record("rootfs.1").is_some(), write_all);
    done
}

#[test]
fn provisions_a_blank_disk_image_and_a_second_run_has_nothing_to_do() {
    if !tools_present() {
        return;
    }
    let k = Kit::new(false, false);
    let disk = k.blank_disk("disk.img");
    let out = k.provision(&disk, &["--json"]);
    let done = check_provisioned(&k, &disk, &out, false);
    // JSON lines name every step before the summary.
    let text = support::stdout(&out);
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
            text.contains(&format!("\"step\":\"{step}\"")),
            "no {step} step in {text}"
        );
    }
    let before = sha256_hex(&std::fs::read(&disk).unwrap());
    let again = k.provision(&disk, &["--json"]);
    expect_success(&again);
    let second = last_json(&again);
    assert_eq!(second["nothing_to_do"], true, "{second}");
    assert_eq!(second["disk_guid"], done["disk_guid"]);
    assert_eq!(
        sha256_hex(&std::fs::read(&disk).unwrap()),
        before,
        "nothing was written"
    );
    // Text mode says so in its last line.
    let text = k.provision(&disk, &[]);
    expect_success(&text);
    assert!(
        support::stdout(&text).contains("nothing to do on"),
        "{}",
        support::stdout(&text)
    );
}

#[test]
fn write_all_slots_gives_a_fallback_from_the_first_boot() {
    if !tools_present() {
        return;
    }
    let k = Kit::new(false, true);
    let disk = k.blank_disk("disk.img");
    let out = k.provision(&disk, &["--json"]);
    check_provisioned(&k, &disk, &out, true);
}

#[test]
fn bad_descriptions_and_bundles_are_refused_before_anything_is_written() {
    if !tools_present() {
        return;
    }
    let k = Kit::new(false, false);
    let disk = k.blank_disk("disk.img");
    let zeros = sha256_hex(&std::fs::read(&disk).unwrap());
    let unchanged = |what: &str| {
        assert_eq!(
            sha256_hex(&std::fs::read(&disk).unwrap()),
            zeros,
            "{what}: the disk was written"
        );
    };

    // A flipped byte inside the signed payload.
    let mut bytes = std::fs::read(&k.desc).unwrap();
    let at = bytes.windows(8).position(|w| w == b"rootfs-a").unwrap();
    bytes[at] = b'R';
    let tampered = k.f.path().join("pxe/tampered.json");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = k.provision_with(&disk, &tampered, &k.bundle, &[], &[]);
    let e = expect_failure(&out, "provisioning description");
    assert!(e.contains("signature"), "{e}");
    unchanged("tampered description");

    // Signed by a key the keyring does not hold.
    let stranger = k.f.new_key("stranger");
    let key = flipslot_format::keys::load_secret_key(&stranger.secret).unwrap();
    let other = k.f.path().join("pxe/other.json");
    std::fs::write(
        &other,
        sign_provision(&description(&k.esp, false, false), &[key]).unwrap(),
    )
    .unwrap();
    let out = k.provision_with(&disk, &other, &k.bundle, &[], &[]);
    expect_failure(&out, "provisioning description");
    unchanged("untrusted signer");

    // A bundle for another system.
    let wrong = k.f.build_bundle(
        "1.0.0",
        "other-board",
        &k.image,
        &[&k.f.trusted],
        support::Compression::None,
    );
    let out = k.provision_with(&disk, &k.desc, &wrong, &[], &[]);
    let e = expect_failure(&out, "other-board");
    assert!(e.contains("compatible"), "{e}");
    unchanged("wrong compatible");

    // An ESP image that is not the signed one.
    std::fs::write(
        k.f.path().join("pxe/esp.img"),
        pseudo_random(k.esp.len(), 99),
    )
    .unwrap();
    let out = k.provision(&disk, &[]);
    expect_failure(&out, "sha256");
    std::fs::write(k.f.path().join("pxe/esp.img"), &k.esp).unwrap();
    // The ESP bytes were streamed, but no partition table exists: the disk is still blank
    // to firmware and to the next run, which completes.
    let out = k.provision(&disk, &["--json"]);
    check_provisioned(&k, &disk, &out, false);

    // A disk too small for the layout.
    let small = k.f.path().join("small.img");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let out = k.provision(&small, &[]);
    expect_failure(&out, "needs at least");
}

#[test]
fn a_disk_holding_data_needs_wipe_and_a_description_that_allows_it() {
    if !tools_present() {
        return;
    }
    let k = Kit::new(false, false);
    let disk = k.blank_disk("disk.img");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    let before = sha256_hex(&std::fs::read(&disk).unwrap());
    let out = k.provision(&disk, &[]);
    let e = expect_failure(&out, "holds data");
    assert!(e.contains("ext"), "names what it found: {e}");
    let out = k.provision(&disk, &["--wipe"]);
    expect_failure(&out, "does not allow wiping");
    assert_eq!(sha256_hex(&std::fs::read(&disk).unwrap()), before);

    let k2 = Kit::new(true, false);
    let out = k2.provision(&disk, &[]);
    expect_failure(&out, "holds data");
    let out = k2.provision(&disk, &["--wipe", "--json"]);
    let done = check_provisioned(&k2, &disk, &out, false);
    assert_eq!(done["wiped"], true);
}

#[test]
fn an_interrupted_run_is_completed_by_the_next() {
    if !tools_present() {
        return;
    }
    let k = Kit::new(false, false);
    for point in flipslot::provision::FAILPOINTS {
        let disk = k.blank_disk(&format!("{point}.img"));
        let spec = format!("{point}:abort");
        let out = k.provision_with(
            &disk,
            &k.desc,
            &k.bundle,
            &[],
            &[("FLIPSLOT_FAILPOINT", spec.as_str())],
        );
        assert!(
            !out.status.success(),
            "{point}: the failpoint did not stop the run"
        );
        assert!(support::stderr(&out).contains(&format!("failpoint {point} hit")));
        // Until the protective MBR is written the disk has no usable partition table.
        let mbr = read_range(&disk, 510, 2);
        assert_ne!(
            mbr,
            [0x55, 0xaa],
            "{point}: the MBR was written before the end"
        );
        let out = k.provision(&disk, &["--json"]);
        check_provisioned(&k, &disk, &out, false);
    }
}

#[test]
fn provisions_a_loop_device() {
    if !tools_present() {
        return;
    }
    let k = Kit::new(false, false);
    // Backing files on a disk filesystem, so direct I/O works.
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let d = tempfile::tempdir_in(base).unwrap();
    let Some(dev) = require(
        "a loop device (root and losetup)",
        LoopDevice::create(&d.path().join("disk.img"), DISK_SIZE),
    ) else {
        return;
    };
    let out = k.provision(&dev.device, &["--json"]);
    let done = check_provisioned(&k, &dev.device, &out, false);
    assert_eq!(done["disk"], dev.path_str());
    // A second provisioning of the same disk at the same time is refused.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.device)
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let out = k.provision(&dev.device, &[]);
    expect_failure(&out, "cannot lock disk");
    drop(held);
    let again = k.provision(&dev.device, &["--json"]);
    expect_success(&again);
    assert_eq!(last_json(&again)["nothing_to_do"], true);
}
