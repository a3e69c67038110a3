//! `flipslot-image provision` and `provision-info` end to end: a layout and a data
//! directory packed into `provision.json` and `esp.img`, verified with the keyring field by
//! field, the ESP read back with mtools, two builds compared byte for byte, and the
//! refusals (a `rest` partition for `disk`, bad data files, a wrong key, tampering).
//!
//! A missing tool skips the tests that need it, except with `CI=true`, where it fails naming
//! the Debian package (dosfstools, mtools, grub-common, grub-efi-amd64-bin).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ed25519_dalek::SigningKey;
use flipslot_format::envelope::EnvelopeError;
use flipslot_format::keys::{self, key_id};
use flipslot_format::provision::{
    verify_provision, DataFile, DiskSelect, PartitionRole, PartitionSpec, Provision,
    ProvisionBootloader, ProvisionError, TargetRule,
};
use flipslot_format::{Keyring, Sha256Digest, VerifyPolicy};
use flipslot_image::disk::{self, DEFAULT_GRUB_DIR, ESP_PROGRAMS};
use flipslot_os::process::{find_program, Cmd};

const MIB: u64 = 1 << 20;
const EPOCH: &str = "1700000000";

const LAYOUT: &str = r#"
bootloader = "grub-efi"
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 panic=-1"

[[partition]]
label = "esp"
role = "esp"
size = "8M"

[[partition]]
label = "rootfs-a"
role = "slot"
class = "rootfs"
bootname = "A"
size = "64M"

[[partition]]
label = "rootfs-b"
role = "slot"
class = "rootfs"
bootname = "B"
size = "64M"

[[partition]]
label = "data"
role = "data"
size = "rest"
from = "dir"
status-file = "flipslot/status.json"
"#;

/// Whether every tool is installed; panics under `CI=true` when one is not.
fn tools_present() -> bool {
    let mut result = disk::check_programs(&ESP_PROGRAMS, Path::new(DEFAULT_GRUB_DIR))
        .err()
        .map(|e| e.to_string());
    if find_program(OsStr::new("mtype")).is_none() {
        let msg = "mtype (Debian package mtools)";
        result = Some(match result {
            Some(r) => format!("{r}, {msg}"),
            None => format!("missing tools: {msg}"),
        });
    }
    match result {
        None => true,
        Some(msg) if std::env::var("CI").as_deref() == Ok("true") => panic!("{msg}"),
        Some(msg) => {
            eprintln!("skipping provisioning test: {msg}");
            false
        }
    }
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn ring(n: u8) -> Keyring {
    let k = key(n).verifying_key();
    Keyring::from_keys([(k, PathBuf::from("release.pub"))])
}

/// A directory with the layout, the data directory and key files `release.key`/`.pub`
/// (key 1) and `other.key`/`.pub` (key 2).
fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("layout.toml"), LAYOUT).unwrap();
    let write = |rel: &str, text: &str, mode: u32| {
        let p = d.join("data").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "flipslot/system.toml",
        "[system]\ncompatible = \"acme-box\"\nbootloader = \"grub\"\n",
        0o644,
    );
    write("etc/hostname", "acme-0001\n", 0o640);
    write("bin/first-boot.sh", "#!/bin/sh\necho \"hi\"\n", 0o755);
    for (name, n) in [("release", 1), ("other", 2)] {
        let k = key(n);
        fs::write(
            d.join(format!("{name}.key")),
            keys::secret_key_pem(&k).unwrap(),
        )
        .unwrap();
        fs::write(
            d.join(format!("{name}.pub")),
            keys::public_key_pem(&k.verifying_key()).unwrap(),
        )
        .unwrap();
    }
    tmp
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("FLIPSLOT_LOG")
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail with exit status 1; returns its standard error.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: expected exit 1\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The arguments of a full `provision` run into `out`.
fn pack_args(out: &str) -> Vec<&str> {
    vec![
        "provision",
        "--layout",
        "layout.toml",
        "--compatible",
        "acme-box",
        "--key",
        "release.key",
        "--data-dir",
        "data",
        "--select",
        "only",
        "--by-id",
        "virtio-*",
        "--serial",
        "SN 0001",
        "--allow-wipe",
        "--write-all-slots",
        "--out-dir",
        out,
    ]
}

/// Reads a file of the FAT image `image` with mtools.
fn mtype(image: &Path, path: &str) -> Vec<u8> {
    Cmd::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLSRC", "/dev/null")
        .arg("-i")
        .arg(image)
        .arg(format!("::{path}"))
        .run()
        .unwrap()
        .stdout
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn pack_then_verify_every_field() {
    if !tools_present() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    let mut args = pack_args("out");
    args.push("--json");
    let json: serde_json::Value = serde_json::from_str(&ok(d, &args)).unwrap();
    let out = d.join("out");
    assert_eq!(listing(&out), ["esp.img", "provision.json"]);

    let bytes = fs::read(out.join("provision.json")).unwrap();
    let p = verify_provision(&bytes, &ring(1), &VerifyPolicy::default()).unwrap();
    let esp = fs::read(out.join("esp.img")).unwrap();
    let slot = |label: &str, bootname: &str| PartitionSpec {
        label: label.into(),
        role: PartitionRole::Slot,
        size: Some(64 * MIB),
        type_guid: None,
        class: Some("rootfs".into()),
        bootname: Some(bootname.into()),
    };
    let expected = Provision {
        format: 1,
        compatible: "acme-box".into(),
        target: TargetRule {
            select: DiskSelect::Only,
            by_id: Some("virtio-*".into()),
            serial: Some("SN 0001".into()),
            allow_wipe: true,
        },
        bootloader: ProvisionBootloader::GrubEfi,
        esp: flipslot_format::provision::EspImage {
            file: "esp.img".into(),
            size: 8 * MIB,
            sha256: Sha256Digest::of(&esp),
        },
        partitions: vec![
            PartitionSpec {
                label: "esp".into(),
                role: PartitionRole::Esp,
                size: Some(8 * MIB),
                type_guid: None,
                class: None,
                bootname: None,
            },
            slot("rootfs-a", "A"),
            slot("rootfs-b", "B"),
            PartitionSpec {
                label: "data".into(),
                role: PartitionRole::Data,
                size: None,
                type_guid: None,
                class: None,
                bootname: None,
            },
        ],
        write_all_slots: true,
        data_files: vec![
            DataFile {
                path: "bin/first-boot.sh".into(),
                mode: 0o755,
                contents: "#!/bin/sh\necho \"hi\"\n".into(),
            },
            DataFile {
                path: "etc/hostname".into(),
                mode: 0o640,
                contents: "acme-0001\n".into(),
            },
            DataFile {
                path: "flipslot/system.toml".into(),
                mode: 0o644,
                contents: "[system]\ncompatible = \"acme-box\"\nbootloader = \"grub\"\n".into(),
            },
        ],
        status_file: Some("flipslot/status.json".into()),
    };
    assert_eq!(p, expected);
    assert_eq!(esp.len() as u64, 8 * MIB);

    // The JSON output: the same description, the signer, the timestamp.
    assert_eq!(json["v"], 1);
    assert_eq!(json["file"], "out/provision.json");
    assert_eq!(json["esp_image"], "out/esp.img");
    assert_eq!(json["timestamp"], 1_700_000_000u64);
    assert_eq!(json["reproducible"], true);
    assert_eq!(
        json["signed_by"],
        serde_json::json!([key_id(&key(1).verifying_key()).to_string()])
    );
    assert_eq!(json["provision"], serde_json::to_value(&expected).unwrap());

    // The ESP: GRUB, the layout's grub.cfg, every slot good (all are written).
    let image = out.join("esp.img");
    let efi = mtype(&image, "/EFI/BOOT/BOOTX64.EFI");
    assert_eq!(&efi[..2], b"MZ");
    let cfg = text(&mtype(&image, "/EFI/BOOT/grub.cfg"));
    assert!(cfg.contains("root=PARTLABEL=rootfs-b"), "{cfg}");
    assert!(cfg.contains("'console=ttyS0'"), "{cfg}");
    let env = text(&mtype(&image, "/EFI/BOOT/grubenv"));
    assert!(
        env.starts_with("# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\n"),
        "{env}"
    );

    // Without --write-all-slots only the first slot is good.
    let mut args = pack_args("first");
    args.retain(|a| *a != "--write-all-slots");
    ok(d, &args);
    let env = text(&mtype(&d.join("first/esp.img"), "/EFI/BOOT/grubenv"));
    assert!(env.contains("A_OK=1\nA_TRY=0\nB_OK=0\n"), "{env}");
    let first = fs::read(d.join("first/provision.json")).unwrap();
    let q = verify_provision(&first, &ring(1), &VerifyPolicy::default()).unwrap();
    assert!(!q.write_all_slots);

    // provision-info verifies and shows it, the ESP image checked.
    let shown = ok(
        d,
        &[
            "provision-info",
            "--keyring",
            "release.pub",
            "out/provision.json",
        ],
    );
    for needle in [
        "compatible:      acme-box",
        "the only disk matching by-id \"virtio-*\" and serial \"SN 0001\"; a disk holding data may be wiped",
        "rest",
        "rootfs image, slot B, fallback",
        "status file flipslot/status.json",
        "0755",
        "out/esp.img matches",
        "verified:        ok",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in\n{shown}");
    }
    let info: serde_json::Value = serde_json::from_str(&ok(
        d,
        &[
            "provision-info",
            "--keyring",
            "release.pub",
            "--json",
            "out/provision.json",
        ],
    ))
    .unwrap();
    assert_eq!(info["valid"], true);
    assert_eq!(info["esp_image_check"], "ok");
    assert_eq!(info["provision"], json["provision"]);
}

#[test]
fn two_builds_are_identical() {
    if !tools_present() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    ok(d, &pack_args("one"));
    ok(d, &pack_args("two"));
    for f in ["esp.img", "provision.json"] {
        assert!(
            fs::read(d.join("one").join(f)).unwrap() == fs::read(d.join("two").join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }
    // Building again over the same directory gives the same bytes too.
    ok(d, &pack_args("one"));
    assert_eq!(
        fs::read(d.join("one/provision.json")).unwrap(),
        fs::read(d.join("two/provision.json")).unwrap()
    );
    assert_eq!(listing(&d.join("one")), ["esp.img", "provision.json"]);
    // The timestamp is what pins the times: another one gives another ESP.
    let out = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
        .current_dir(d)
        .env("SOURCE_DATE_EPOCH", "1800000000")
        .args(pack_args("three"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(
        fs::read(d.join("one/esp.img")).unwrap(),
        fs::read(d.join("three/esp.img")).unwrap()
    );
}

#[test]
fn a_rest_partition_is_for_provisioning_only() {
    let tmp = setup();
    let d = tmp.path();
    let err = fails(
        d,
        &[
            "disk",
            "--layout",
            "layout.toml",
            "--bundle",
            "missing.fsb",
            "--no-verify",
            "--out",
            "disk.img",
        ],
    );
    assert!(
        err.contains("partition 4 (\"data\")")
            && err.contains("size = \"rest\"")
            && err.contains("flipslot-image provision"),
        "{err}"
    );
    assert!(!d.join("disk.img").exists());
    // Not the esp, and not before the last partition.
    let esp_rest = LAYOUT.replace("size = \"8M\"", "size = \"rest\"");
    fs::write(d.join("bad.toml"), esp_rest).unwrap();
    let mut args = pack_args("out");
    args[2] = "bad.toml";
    let err = fails(d, &args);
    assert!(err.contains("only allowed on the last partition"), "{err}");
    assert!(!d.join("out").exists());
    if tools_present() {
        ok(d, &pack_args("out"));
    }
}

#[test]
fn bad_data_files_are_refused_by_name() {
    let tmp = setup();
    let d = tmp.path();
    std::os::unix::fs::symlink("/etc/passwd", d.join("data/etc/passwd")).unwrap();
    let err = fails(d, &pack_args("out"));
    assert!(
        err.contains("data file data/etc/passwd: is a symbolic link"),
        "{err}"
    );
    fs::remove_file(d.join("data/etc/passwd")).unwrap();
    fs::write(d.join("data/etc/blob.bin"), [0u8, 0xff, 0xfe]).unwrap();
    let err = fails(d, &pack_args("out"));
    assert!(
        err.contains("data file data/etc/blob.bin: is not UTF-8 text"),
        "{err}"
    );
    // Nothing was written.
    assert!(!d.join("out/provision.json").exists());
    // --data-dir is required by from = "dir".
    let mut args = pack_args("out");
    let at = args.iter().position(|a| *a == "--data-dir").unwrap();
    args.drain(at..at + 2);
    let err = fails(d, &args);
    assert!(err.contains("give its contents with --data-dir"), "{err}");
}

#[test]
fn a_wrong_key_or_a_changed_byte_is_refused() {
    if !tools_present() {
        return;
    }
    let tmp = setup();
    let d = tmp.path();
    ok(d, &pack_args("out"));
    let bytes = fs::read(d.join("out/provision.json")).unwrap();

    // Verified with another key.
    match verify_provision(&bytes, &ring(2), &VerifyPolicy::default()) {
        Err(ProvisionError::Envelope(EnvelopeError::NotEnoughSignatures {
            trusted: 0,
            untrusted,
            ..
        })) => assert_eq!(untrusted, vec![key_id(&key(1).verifying_key())]),
        other => panic!("{other:?}"),
    }
    let err = fails(
        d,
        &[
            "provision-info",
            "--keyring",
            "other.pub",
            "out/provision.json",
        ],
    );
    assert!(
        err.contains("0 valid signature(s) by trusted keys, 1 required"),
        "{err}"
    );
    let out = run(
        d,
        &[
            "provision-info",
            "--keyring",
            "other.pub",
            "--json",
            "out/provision.json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);

    // The network turns allow_wipe off or on: a bad signature.
    let tampered = text(&bytes).replace("\\\"allow_wipe\\\":true", "\\\"allow_wipe\\\":false");
    assert_ne!(tampered, text(&bytes));
    assert!(matches!(
        verify_provision(tampered.as_bytes(), &ring(1), &VerifyPolicy::default()),
        Err(ProvisionError::Envelope(EnvelopeError::BadSignature { .. }))
    ));
    fs::write(d.join("out/provision.json"), tampered).unwrap();
    let err = fails(
        d,
        &[
            "provision-info",
            "--keyring",
            "release.pub",
            "out/provision.json",
        ],
    );
    assert!(err.contains("does not verify"), "{err}");

    // A changed ESP image next to an authentic description.
    fs::write(d.join("out/provision.json"), &bytes).unwrap();
    let mut esp = fs::read(d.join("out/esp.img")).unwrap();
    esp[3 * 1024 * 1024] ^= 1;
    fs::write(d.join("out/esp.img"), esp).unwrap();
    let err = fails(
        d,
        &[
            "provision-info",
            "--keyring",
            "release.pub",
            "out/provision.json",
        ],
    );
    assert!(err.contains("the ESP image does not match"), "{err}");
    fs::remove_file(d.join("out/esp.img")).unwrap();
    let shown = ok(
        d,
        &[
            "provision-info",
            "--keyring",
            "release.pub",
            "out/provision.json",
        ],
    );
    assert!(shown.contains("not found (not checked)"), "{shown}");
}
