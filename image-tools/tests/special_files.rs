//! `flipslot-image` commands that read a bundle refuse a path that is neither a regular
//! file nor a block device (a FIFO with no writer, a directory) at once. Every run has a
//! deadline, so a command that blocks fails the test instead of hanging it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longer than any refusal takes, short enough to notice a blocked open.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `flipslot-image ARGS` in `dir`, or kills it and panics after [`DEADLINE`].
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
        .current_dir(dir)
        .args(args)
        .env_remove("FLIPSLOT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{args:?} still ran after {DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn fifo_and_directory_bundles_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run(dir, &["keygen", "--out-dir", "keys", "--name", "k"]);
    assert!(out.status.success(), "{out:?}");
    for name in ["b.fsb", "b.raucb"] {
        let st = Command::new("mkfifo").arg(dir.join(name)).status().unwrap();
        assert!(st.success());
    }
    std::fs::create_dir(dir.join("d.fsb")).unwrap();
    for (bundle, kind) in [
        ("b.fsb", "FIFO"),
        ("b.raucb", "FIFO"),
        ("d.fsb", "directory"),
    ] {
        for args in [
            &["info", "--keyring", "keys", bundle][..],
            &["info", "--no-verify", bundle],
            &["verify", "--keyring", "keys", bundle],
            &[
                "extract",
                "--keyring",
                "keys",
                "--image",
                "0",
                "--out",
                "x.img",
                bundle,
            ],
        ] {
            let out = run(dir, args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.contains(&format!(
                    "{bundle} is a {kind}, not a regular file or block device"
                )),
                "{args:?}: {err}"
            );
        }
    }
}
