#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot mark-good|mark-bad|mark-active` and `rauc status mark-*` on file-backed
//! slots: what they refuse, and that a refusal leaves the bootloader alone.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{expect_failure, expect_success, Fixture};

/// A `rauc` symlink to the flipslot binary inside the fixture.
fn rauc_dropin(f: &Fixture) -> PathBuf {
    let link = f.path().join("rauc");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flipslot"), &link).unwrap();
    }
    link
}

/// Runs `rauc --conf … --cmdline-file … ARGS` against the fixture.
fn rauc(f: &Fixture, dropin: &Path, args: &[&str]) -> Output {
    Command::new(dropin)
        .arg("--conf")
        .arg(f.config_path())
        .arg("--cmdline-file")
        .arg(f.cmdline_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn marks_are_refused_while_the_install_lock_is_held() {
    let f = Fixture::new();
    let dropin = rauc_dropin(&f);
    let before = f.snapshot();
    let lock_file = f.lock_path().display().to_string();
    // What an install or `flipslot health` holds while it runs.
    let lock = flipslot::host::sys::lock_exclusive(&f.lock_path()).unwrap();
    for args in [
        ["mark-active", "B"],
        ["mark-good", "booted"],
        ["mark-bad", "other"],
    ] {
        let err = expect_failure(&f.run(args), "is in progress");
        assert!(err.contains(&lock_file), "{args:?}: {err}");
        f.assert_nothing_written(&before);
    }
    for action in ["mark-active", "mark-good", "mark-bad"] {
        let out = rauc(&f, &dropin, &["status", action, "rootfs.1"]);
        let err = expect_failure(&out, "is in progress");
        assert!(err.contains(&lock_file), "{action}: {err}");
        f.assert_nothing_written(&before);
    }
    drop(lock);
    expect_success(&f.run(["mark-active", "B"]));
    assert_eq!(f.primary().as_deref(), Some("B"));
    expect_success(&rauc(&f, &dropin, &["status", "mark-active", "rootfs.0"]));
    assert_eq!(f.primary().as_deref(), Some("A"));
}

#[test]
fn mark_active_refuses_a_slot_whose_device_is_missing() {
    let mut f = Fixture::new();
    let missing = f.path().join("missing.img");
    f.slots[1].device = missing.clone();
    f.write_config();
    let dropin = rauc_dropin(&f);
    let before = f.snapshot();
    let err = expect_failure(&f.run(["mark-active", "B"]), "does not exist");
    assert!(
        err.contains("rootfs.1") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    f.assert_nothing_written(&before);
    let out = rauc(&f, &dropin, &["status", "mark-active", "other"]);
    let err = expect_failure(&out, "does not exist");
    assert!(
        err.contains("rootfs.1") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    f.assert_nothing_written(&before);
    assert!(!missing.exists(), "the missing device was created");
}

#[test]
fn status_warns_about_a_slot_whose_device_is_missing() {
    let mut f = Fixture::new();
    let missing = f.path().join("missing.img");
    f.slots[1].device = missing.clone();
    f.write_config();
    let v = f.status_json();
    assert_eq!(v["slots"][0]["device_exists"], true, "{v}");
    assert_eq!(v["slots"][1]["device_exists"], false, "{v}");
    let out = f.run(["status"]);
    expect_success(&out);
    let text = support::stdout(&out);
    assert!(
        text.contains(&format!(
            "warning:    slot rootfs.1 (B): device {} does not exist",
            missing.display()
        )),
        "{text}"
    );
    assert_eq!(text.matches("warning:").count(), 1, "{text}");
}
