#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot install` into real block devices: loop devices over backing files. Needs root
//! and util-linux; without them each test prints a skip message, or panics when `CI=true`.

mod support;

use std::path::{Path, PathBuf};

use flipslot::slot::status::InstallResult;
use support::loopdev::{require, run_cmd, LoopDevice, Mount};
use support::{expect_failure, expect_success, pseudo_random, sha256_hex, Fixture};

/// A loop device over a new sparse backing file `name` in `dir`.
fn loop_dev(dir: &Path, name: &str, size: u64) -> Option<LoopDevice> {
    require(
        "a loop device (root and losetup)",
        LoopDevice::create(&dir.join(name), size),
    )
}

/// A/B on two loop devices, booted from A.
fn ab_fixture(a: &LoopDevice, b: &LoopDevice) -> Fixture {
    Fixture::with_devices(&[(a.device.clone(), "A"), (b.device.clone(), "B")])
}

/// Writes `img` to a file and checks with `cmp` that `dev` starts with it.
fn cmp_prefix(f: &Fixture, dev: &Path, img: &[u8]) {
    let file = f.path().join("expected.raw");
    std::fs::write(&file, img).unwrap();
    let n = img.len().to_string();
    let r = run_cmd(&[
        "cmp",
        "-n",
        &n,
        dev.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(r.is_ok(), "{} differs from the image: {r:?}", dev.display());
}

fn scratch() -> tempfile::TempDir {
    // Backing files under the target dir, not /tmp, so they are on a disk file system
    // (a tmpfs backing file cannot do direct I/O).
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tempfile::tempdir_in(base).unwrap()
}

#[test]
fn installs_into_loop_device_slot() {
    let d = scratch();
    let Some(a) = loop_dev(d.path(), "a.img", 16 << 20) else {
        return;
    };
    let Some(b) = loop_dev(d.path(), "b.img", 16 << 20) else {
        return;
    };
    let f = ab_fixture(&a, &b);
    let img = pseudo_random((5 << 20) + 1234, 101);
    let bundle = f.bundle("1.0.0", &img);
    let before = f.snapshot();
    let out = f.install(&bundle, &["--json"]);
    expect_success(&out);
    let done: serde_json::Value =
        serde_json::from_str(support::stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(done["read_back"], true, "{done}");
    assert_eq!(done["images"][0]["sha256"], sha256_hex(&img), "{done}");
    assert_eq!(done["images"][0]["io"], "direct", "{done}");
    cmp_prefix(&f, &b.device, &img);
    f.assert_booted_intact(&before);
    assert_eq!(f.primary().as_deref(), Some("B"));
    let rec = f.record("B").unwrap();
    assert_eq!(rec.result, InstallResult::Ok);
    assert_eq!(
        rec.image_sha256.map(|d| d.to_hex()).as_deref(),
        Some(sha256_hex(&img).as_str())
    );
}

#[test]
fn mounted_target_is_refused() {
    let d = scratch();
    let Some(a) = loop_dev(d.path(), "a.img", 16 << 20) else {
        return;
    };
    let Some(b) = loop_dev(d.path(), "b.img", 16 << 20) else {
        return;
    };
    if require(
        "mkfs.ext4",
        run_cmd(&["mkfs.ext4", "-q", "-F", b.path_str()]),
    )
    .is_none()
    {
        return;
    }
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(mount) = require(
        "mounting ext4 on a loop device (this kernel may lack ext4 or forbid mounts here)",
        Mount::new(b.path_str(), &mnt, Some("ext4"), None),
    ) else {
        return;
    };
    let f = ab_fixture(&a, &b);
    let bundle = f.bundle("1.0.0", &pseudo_random(1 << 20, 102));
    let head = |dev: &Path| {
        let mut buf = vec![0u8; 4096];
        std::io::Read::read_exact(&mut std::fs::File::open(dev).unwrap(), &mut buf).unwrap();
        buf
    };
    let b_head = head(&b.device);
    assert_eq!(
        &b_head[1024 + 56..1024 + 58],
        &[0x53, 0xef],
        "no ext4 magic"
    );
    let before = f.snapshot();
    let err = expect_failure(&f.install(&bundle, &[]), "is mounted at");
    eprintln!("{err}");
    assert!(err.contains(&mnt.display().to_string()), "{err}");
    // The mounted file system may write to B by itself (journal, lazy init), so B is
    // compared by its first block; everything else must be byte-identical.
    f.assert_untouched(&before);
    let now = f.snapshot();
    assert_eq!(now.slot_sha256["A"], before.slot_sha256["A"]);
    assert!(
        now.grubenv_raw == before.grubenv_raw,
        "grubenv was modified"
    );
    assert_eq!(
        now.status_raw, before.status_raw,
        "status.json was modified"
    );
    assert_eq!(
        &head(&b.device)[..1024],
        &b_head[..1024],
        "B's first block changed"
    );
    assert!(f.record("B").is_none());
    drop(mount);
}

#[test]
fn disk_full_while_writing_marks_target_bad() {
    let d = scratch();
    let Some(a) = loop_dev(d.path(), "a.img", 16 << 20) else {
        return;
    };
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let Some(tmpfs) = require(
        "a 4 MiB tmpfs mount",
        Mount::new("tmpfs", &small, Some("tmpfs"), Some("size=4m")),
    ) else {
        return;
    };
    // 16 MiB sparse on a 4 MiB file system: writing 8 MiB runs out of space.
    let Some(b) = loop_dev(&small, "b.img", 16 << 20) else {
        return;
    };
    let f = ab_fixture(&a, &b);
    let img = pseudo_random(8 << 20, 103);
    let bundle = f.bundle("1.0.0", &img);
    let before = f.snapshot();
    let err = expect_failure(&f.install(&bundle, &[]), "offset");
    eprintln!("{err}");
    assert!(err.contains(b.path_str()), "{err}");
    assert!(
        err.to_lowercase().contains("input/output error")
            || err.to_lowercase().contains("no space"),
        "{err}"
    );
    f.assert_untouched(&before);
    assert_eq!(f.primary().as_deref(), Some("A"));
    assert_eq!(f.var("B_OK").as_deref(), Some("0"));
    let rec = f.record("B").unwrap();
    assert_eq!(rec.result, InstallResult::Failed, "{rec:?}");
    drop(b);
    drop(tmpfs);
}

/// A 64 MiB image with a size that is not a multiple of 4096, through direct I/O, into a
/// loop device that itself uses direct I/O on its backing file; once with room for the
/// padded last block and once with the device ending right after the image's last
/// 512-byte sector.
#[test]
fn unaligned_64mib_image_with_direct_io() {
    let d = scratch();
    let len = (64 << 20) + 1000;
    let img = pseudo_random(len, 104);
    for (name, size) in [
        ("roomy", 80u64 << 20),
        ("tight", (len as u64).div_ceil(512) * 512),
    ] {
        let Some(a) = loop_dev(d.path(), &format!("{name}-a.img"), size) else {
            return;
        };
        let backing = d.path().join(format!("{name}-b.img"));
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(size)
            .unwrap();
        let Some(b) = require(
            "a loop device with --direct-io=on",
            LoopDevice::attach(&backing, true),
        ) else {
            return;
        };
        let f = ab_fixture(&a, &b);
        let bundle = f.bundle("1.0.0", &img);
        let before = f.snapshot();
        let out = f.install(&bundle, &["--json"]);
        expect_success(&out);
        // The agent falls back to the page cache where O_DIRECT is refused; it says which
        // it used.
        let done: serde_json::Value =
            serde_json::from_str(support::stdout(&out).lines().last().unwrap()).unwrap();
        assert_eq!(done["images"][0]["slot"], "rootfs.1", "{name}: {done}");
        assert_eq!(done["images"][0]["io"], "direct", "{name}: {done}");
        assert!(
            !support::stderr(&out).contains("direct I/O refused"),
            "{name}: {}",
            support::stderr(&out)
        );
        cmp_prefix(&f, &b.device, &img);
        f.assert_booted_intact(&before);
        let rec = f.record("B").unwrap();
        assert_eq!(
            rec.image_sha256.map(|d| d.to_hex()).as_deref(),
            Some(sha256_hex(&img).as_str()),
            "{name}"
        );
    }
}
