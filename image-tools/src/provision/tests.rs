//! Tests of the provisioning set's pure parts and of the data directory walk; the whole
//! build (with mkfs.vfat, mtools and grub-mkimage) is tested in `tests/provision.rs`.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use super::*;
use crate::disk::layout::LayoutKind;
use flipslot_format::provision::{
    DiskSelect, ESP_TYPE_GUID, LINUX_TYPE_GUID, MAX_DATA_FILES, MAX_PROVISION_LEN,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

const LAYOUT: &str = r#"
bootloader = "grub-efi"
kernel = "/boot/vmlinuz"

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

fn layout(text: &str) -> Layout {
    Layout::parse_for(text, "l.toml", LayoutKind::Provisioning).unwrap()
}

fn target() -> TargetRule {
    TargetRule {
        select: DiskSelect::Only,
        by_id: None,
        serial: None,
        allow_wipe: true,
    }
}

#[test]
fn the_description_follows_the_layout() {
    let l = layout(LAYOUT);
    let mut opts = PackOptions::new("out", "acme-box", target());
    opts.write_all_slots = true;
    let p = description(&l, &opts, Vec::new(), Sha256Digest::of(b"x"));
    assert!(p.validate().is_ok(), "{:?}", p.validate());
    assert_eq!(p.compatible, "acme-box");
    assert_eq!(p.target, target());
    assert!(p.write_all_slots);
    assert_eq!(p.esp.file, "esp.img");
    assert_eq!(p.esp.size, 8 << 20);
    assert_eq!(p.status_file.as_deref(), Some("flipslot/status.json"));
    let parts: Vec<(&str, PartitionRole, Option<u64>, &str)> = p
        .partitions
        .iter()
        .map(|s| (s.label.as_str(), s.role, s.size, s.type_guid()))
        .collect();
    assert_eq!(
        parts,
        [
            ("esp", PartitionRole::Esp, Some(8 << 20), ESP_TYPE_GUID),
            (
                "rootfs-a",
                PartitionRole::Slot,
                Some(64 << 20),
                LINUX_TYPE_GUID
            ),
            (
                "rootfs-b",
                PartitionRole::Slot,
                Some(64 << 20),
                LINUX_TYPE_GUID
            ),
            ("data", PartitionRole::Data, None, LINUX_TYPE_GUID),
        ]
    );
    assert_eq!(p.partitions[2].bootname.as_deref(), Some("B"));
    assert_eq!(p.partitions[2].class.as_deref(), Some("rootfs"));
}

#[test]
fn data_partitions_must_be_ext4() {
    let text = LAYOUT
        .replace("from = \"dir\"\n", "fs = \"none\"\n")
        .replace("status-file = \"flipslot/status.json\"\n", "");
    let err = check_data_partitions(&layout(&text)).unwrap_err();
    assert!(err.to_string().contains("fs = \"none\""), "{err}");
    assert!(check_data_partitions(&layout(LAYOUT)).is_ok());
}

#[test]
fn the_grubenv_marks_written_slots_good() {
    let l = layout(LAYOUT);
    let vars = |all| {
        grub::initial_env_for(&l, all)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(vars(false), "ORDER=A B A_OK=1 A_TRY=0 B_OK=0 B_TRY=0");
    assert_eq!(vars(true), "ORDER=A B A_OK=1 A_TRY=0 B_OK=1 B_TRY=0");
    assert_eq!(grub::initial_env(&l), grub::initial_env_for(&l, false));
}

#[test]
fn volume_ids_follow_the_contents() {
    let l = layout(LAYOUT);
    let a = volume_id(&l, &grub::initial_env_for(&l, false)).unwrap();
    assert_eq!(a, volume_id(&l, &grub::initial_env_for(&l, false)).unwrap());
    assert_ne!(a, volume_id(&l, &grub::initial_env_for(&l, true)).unwrap());
}

fn write(path: &Path, text: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn data_files_are_sorted_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("flipslot/system.toml"), b"[system]\n", 0o644);
    write(&d.join("etc/secret"), b"s3cret", 0o600);
    write(&d.join("a.sh"), b"#!/bin/sh\n", 0o4755);
    std::fs::create_dir(d.join("empty")).unwrap();
    let files = data::collect_data_files(d).unwrap();
    let got: Vec<(&str, u32, &str)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.contents.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a.sh", 0o4755, "#!/bin/sh\n"),
            ("etc/secret", 0o600, "s3cret"),
            ("flipslot/system.toml", 0o644, "[system]\n"),
        ]
    );
}

#[test]
fn bad_data_files_are_refused_by_name() {
    let check = |setup: &dyn Fn(&Path), culprit: &OsStr, reason: &str| {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("ok.txt"), b"fine", 0o644);
        setup(dir.path());
        let err = data::collect_data_files(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, PackError::DataFile { path, .. } if path == &dir.path().join(culprit)),
            "{culprit:?}: {err:?}"
        );
        assert!(text.contains(reason), "{culprit:?}: {text}");
    };
    check(
        &|d| std::os::unix::fs::symlink("ok.txt", d.join("link")).unwrap(),
        OsStr::new("link"),
        "symbolic link",
    );
    check(
        &|d| write(&d.join("bin/blob"), &[0xff, 0xfe, 0], 0o644),
        OsStr::new("bin/blob"),
        "not UTF-8 text",
    );
    check(
        &|d| write(&d.join("has space"), b"x", 0o644),
        OsStr::new("has space"),
        "must be components",
    );
    check(
        &|d| {
            let fifo = d.join("fifo");
            flipslot_os::process::Cmd::new("mkfifo")
                .arg(&fifo)
                .run()
                .unwrap();
        },
        OsStr::new("fifo"),
        "not a regular file",
    );
    check(
        &|d| {
            for i in 0..MAX_DATA_FILES {
                write(&d.join(format!("many/f{i:03}")), b"x", 0o644);
            }
        },
        OsStr::new("ok.txt"),
        "more than 256 files",
    );
    check(
        &|d| write(&d.join("big"), &vec![b'x'; MAX_PROVISION_LEN], 0o644),
        OsStr::new("ok.txt"),
        "add up to more than",
    );
    check(
        &|d| write(&d.join(OsStr::from_bytes(b"n\xffme")), b"x", 0o644),
        OsStr::from_bytes(b"n\xffme"),
        "the name is not UTF-8",
    );
}

#[test]
fn bad_options_fail_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write(&data.join("flipslot/system.toml"), b"x", 0o644);
    let out = dir.path().join("out");
    let l = layout(LAYOUT);
    let mut opts = PackOptions::new(&out, "acme-box", target());
    opts.data_dir = Some(data);
    let err = build_provision(&l, &[], &opts).unwrap_err();
    assert!(err.to_string().contains("no signing key given"), "{err}");
    let key = SigningKey::from_bytes(&[1; 32]);
    opts.target.by_id = Some("a/b".into());
    let err = build_provision(&l, &[key], &opts).unwrap_err();
    assert!(
        matches!(&err, PackError::Description(ProvisionError::Invalid(m)) if m.contains("target.by_id")),
        "{err:?}"
    );
    assert!(!out.exists());
}
