//! Builds each filesystem type twice from trees created at different times and checks that the
//! images are byte-identical, and that different contents give different images.
//!
//! A missing tool skips the test, except with `CI=true`, where it fails naming the Debian package.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use flipslot_image::mkfs::{build_fs, uuid_from_seed, FsType, MkfsError, MkfsOptions};
use flipslot_os::process::{find_program, Cmd};

const TIMESTAMP: u64 = 1_700_000_000;

/// Whether the tools for `fs` are installed; panics under `CI=true` when they are not.
fn tools_present(fs: FsType) -> bool {
    let missing: Vec<&str> = fs
        .programs()
        .iter()
        .copied()
        .filter(|p| find_program(OsStr::new(p)).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{} not found: install the Debian package {}",
        missing.join(", "),
        fs.debian_package()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping {fs} test: {msg}");
    false
}

/// Writes a small tree; `reverse` creates the entries in the opposite order (different inode
/// numbers and directory order on the host).
fn make_tree(root: &Path, reverse: bool, extra: &str) {
    let mut steps: Vec<Box<dyn Fn() + '_>> = vec![
        Box::new(|| fs::create_dir_all(root.join("etc/sub dir")).unwrap()),
        Box::new(|| fs::create_dir_all(root.join("usr/lib/deep/er")).unwrap()),
        Box::new(|| fs::write(root.join("etc/hostname"), b"flipslot\n").unwrap()),
        Box::new(|| fs::write(root.join("etc/sub dir/with space.conf"), b"a = 1\n").unwrap()),
        Box::new(|| fs::write(root.join("empty"), b"").unwrap()),
        Box::new(move || {
            let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
            fs::write(root.join("usr/lib/deep/er/blob.bin"), big).unwrap();
            fs::write(root.join("usr/lib/extra"), extra).unwrap();
        }),
        Box::new(|| std::os::unix::fs::symlink("../etc/hostname", root.join("usr/link")).unwrap()),
    ];
    if reverse {
        // Parents first, then the rest backwards.
        let rest = steps.split_off(2);
        steps.extend(rest.into_iter().rev());
    }
    fs::create_dir_all(root).unwrap();
    for step in steps {
        step();
    }
}

fn build(fs_type: FsType, src: &Path, out: &Path) -> Result<(), MkfsError> {
    let mut opts = MkfsOptions::new(fs_type, TIMESTAMP, uuid_from_seed(b"flipslot test"));
    if fs_type == FsType::Ext4 {
        opts.label = Some("rootfs".to_string());
    }
    build_fs(src, out, &opts)
}

fn check_reproducible(fs_type: FsType) {
    if !tools_present(fs_type) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let (img_a, img_b, img_c) = (
        tmp.path().join("a.img"),
        tmp.path().join("b.img"),
        tmp.path().join("c.img"),
    );

    make_tree(&a, false, "one");
    build(fs_type, &a, &img_a).unwrap();
    // A fresh copy made later: every atime, mtime, ctime, crtime and inode number differs.
    sleep(Duration::from_millis(1100));
    make_tree(&b, true, "one");
    // Let the output pre-exist: build_fs must replace it.
    fs::write(&img_b, b"stale").unwrap();
    build(fs_type, &b, &img_b).unwrap();
    let (bytes_a, bytes_b) = (fs::read(&img_a).unwrap(), fs::read(&img_b).unwrap());
    assert!(
        bytes_a.len() > 4096,
        "{fs_type} image is suspiciously small"
    );
    assert!(
        bytes_a == bytes_b,
        "{fs_type} images of the same tree differ (see `cmp -l {} {}`)",
        img_a.display(),
        img_b.display()
    );

    // Rebuilding the first tree after touching it gives the same bytes again.
    sleep(Duration::from_millis(1100));
    fs::write(a.join("empty"), b"").unwrap();
    build(fs_type, &a, &img_a).unwrap();
    assert!(
        fs::read(&img_a).unwrap() == bytes_b,
        "{fs_type} rebuild differs"
    );

    // Different contents give different bytes.
    make_tree(&c, false, "two");
    build(fs_type, &c, &img_c).unwrap();
    assert!(
        fs::read(&img_c).unwrap() != bytes_a,
        "{fs_type} images of different trees are identical"
    );

    if fs_type == FsType::Ext4 {
        if find_program(OsStr::new("e2fsck")).is_some() {
            Cmd::new("e2fsck").arg("-fn").arg(&img_a).run().unwrap();
        }
        let stat = Cmd::new("debugfs")
            .args(["-R", "stat \"/etc/sub dir/with space.conf\""])
            .arg(&img_a)
            .run_stdout()
            .unwrap();
        for field in ["ctime", "atime", "mtime", "crtime"] {
            let line = stat
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{field}:")))
                .unwrap();
            assert!(line.contains("0x6553f100:00000000"), "{line}");
        }
    }
}

#[test]
fn squashfs_is_reproducible() {
    check_reproducible(FsType::Squashfs);
}

#[test]
fn erofs_is_reproducible() {
    check_reproducible(FsType::Erofs);
}

#[test]
fn ext4_is_reproducible() {
    check_reproducible(FsType::Ext4);
}

#[test]
fn ext4_refuses_path_with_double_quote() {
    if !tools_present(FsType::Ext4) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("say \"hi\""), b"x").unwrap();
    let out = tmp.path().join("out.img");
    let err = build(FsType::Ext4, &src, &out).unwrap_err();
    assert!(matches!(err, MkfsError::UnsupportedPath { .. }), "{err}");
    assert!(err.to_string().contains("say \\\"hi\\\""), "{err}");
    assert!(!out.exists(), "partial output left behind");
}

#[test]
fn ext4_explicit_size_is_used() {
    if !tools_present(FsType::Ext4) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, false, "one");
    let out = tmp.path().join("out.img");
    let mut opts = MkfsOptions::new(FsType::Ext4, TIMESTAMP, [7; 16]);
    opts.ext4_size = Some(32 << 20);
    build_fs(&src, &out, &opts).unwrap();
    assert_eq!(fs::metadata(&out).unwrap().len(), 32 << 20);
}

#[test]
fn missing_source_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let opts = MkfsOptions::new(FsType::Squashfs, TIMESTAMP, [0; 16]);
    let err = build_fs(&missing, &tmp.path().join("out"), &opts).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
