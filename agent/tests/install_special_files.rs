#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A bundle path that is neither a regular file nor a block device (a FIFO with no
//! writer, a directory) is refused at once by `flipslot install` and `rauc install`,
//! before the install lock is taken. Every run has a deadline, so a command that blocks
//! fails the test instead of hanging it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{expect_failure, Fixture};

/// Longer than any refusal takes, short enough to notice a blocked open.
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion, or kills it and panics after [`DEADLINE`].
fn run_with_deadline(mut cmd: Command) -> Output {
    let mut child = cmd
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
                "{cmd:?} still ran after {DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

fn flipslot_install(f: &Fixture, bundle: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flipslot"));
    cmd.arg("--config")
        .arg(f.config_path())
        .arg("--cmdline-file")
        .arg(f.cmdline_path())
        .args(["install", "--no-daemon"])
        .arg(bundle);
    run_with_deadline(cmd)
}

fn rauc_install(f: &Fixture, bundle: &Path) -> Output {
    let link = f.path().join("rauc");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flipslot"), &link).unwrap();
    }
    let mut cmd = Command::new(link);
    cmd.arg("--conf")
        .arg(f.config_path())
        .arg("--cmdline-file")
        .arg(f.cmdline_path())
        .arg("install")
        .arg(bundle);
    run_with_deadline(cmd)
}

fn assert_refused(out: &Output, path: &Path, kind: &str) {
    let err = expect_failure(out, "not a regular file or block device");
    assert!(
        err.contains(&format!("{} is a {kind}", path.display())),
        "{err}"
    );
}

#[test]
fn fifo_and_directory_bundles_are_refused_without_blocking() {
    let f = Fixture::new();
    let fifo: PathBuf = f.path().join("bundle.fsb");
    mkfifo(&fifo);
    let raucb = f.path().join("bundle.raucb");
    mkfifo(&raucb);
    let dir = f.path().join("dir.fsb");
    std::fs::create_dir(&dir).unwrap();
    let before = f.snapshot();

    // Refused before the lock is taken: the answer is about the file, not the lock.
    let lock = flipslot::host::sys::lock_exclusive(&f.lock_path()).unwrap();
    let out = flipslot_install(&f, &fifo);
    assert_refused(&out, &fifo, "FIFO");
    assert!(!support::stderr(&out).contains("holds the lock"), "{out:?}");
    drop(lock);

    assert_refused(&flipslot_install(&f, &fifo), &fifo, "FIFO");
    assert_refused(&flipslot_install(&f, &dir), &dir, "directory");
    assert_refused(&rauc_install(&f, &raucb), &raucb, "FIFO");
    assert_refused(&rauc_install(&f, &fifo), &fifo, "FIFO");
    f.assert_nothing_written(&before);
    // Nothing holds the lock afterwards.
    drop(flipslot::host::sys::lock_exclusive(&f.lock_path()).unwrap());
}
