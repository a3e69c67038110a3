//! Real block devices for tests that need root: loop devices over backing files and
//! mounts, each undone on drop. Every external tool runs with an argv (no shell), stdin
//! null, and a failure reports the command, its exit status and its stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `argv`, returning stdout, or an error naming the command, status and stderr.
pub fn run_cmd(argv: &[&str]) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether CI asked for these tests to be mandatory.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Turns a setup failure into a skip (eprintln, `None`) or, under `CI=true`, a panic.
pub fn require<T>(what: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if in_ci() => {
            panic!("{what} is required with CI=true but is not available: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: {what} is not available here: {e}");
            None
        }
    }
}

/// Checks that we are root and that `losetup` exists.
pub fn loop_support() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "loop device tests need root (run as root, or CI=true to make this fatal)".into(),
        );
    }
    run_cmd(&["losetup", "--version"]).map(|_| ())
}

/// A loop device over a backing file, detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// The backing file.
    pub backing: PathBuf,
}

impl LoopDevice {
    /// Creates a sparse backing file of `size` bytes at `backing` and attaches it.
    pub fn create(backing: &Path, size: u64) -> Result<LoopDevice, String> {
        let f = std::fs::File::create(backing)
            .map_err(|e| format!("cannot create {}: {e}", backing.display()))?;
        f.set_len(size)
            .map_err(|e| format!("cannot size {}: {e}", backing.display()))?;
        drop(f);
        Self::attach(backing, false)
    }

    /// Attaches an existing file (`direct_io`: `losetup --direct-io=on`).
    pub fn attach(backing: &Path, direct_io: bool) -> Result<LoopDevice, String> {
        loop_support()?;
        let file = backing.to_str().ok_or("backing path is not UTF-8")?;
        let mut argv = vec!["losetup", "--find", "--show"];
        if direct_io {
            argv.push("--direct-io=on");
        }
        argv.push(file);
        let dev = run_cmd(&argv)?;
        if !dev.starts_with("/dev/") {
            return Err(format!("losetup printed {dev:?}, not a device"));
        }
        Ok(LoopDevice {
            device: PathBuf::from(dev),
            backing: backing.to_path_buf(),
        })
    }

    /// The device path as text.
    pub fn path_str(&self) -> &str {
        self.device.to_str().unwrap_or_default()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = run_cmd(&["losetup", "-d", self.path_str()]) {
            eprintln!("cannot detach {}: {e}", self.device.display());
        }
    }
}

/// A mount, unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    /// The mount point.
    pub target: PathBuf,
}

impl Mount {
    /// `mount [-t FSTYPE] [-o OPTIONS] SOURCE TARGET`.
    pub fn new(
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        options: Option<&str>,
    ) -> Result<Mount, String> {
        let t = target.to_str().ok_or("mount point is not UTF-8")?;
        let mut argv = vec!["mount"];
        if let Some(fs) = fstype {
            argv.extend(["-t", fs]);
        }
        if let Some(o) = options {
            argv.extend(["-o", o]);
        }
        argv.extend([source, t]);
        run_cmd(&argv)?;
        Ok(Mount {
            target: target.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let t = self.target.to_string_lossy().into_owned();
        if let Err(e) = run_cmd(&["umount", &t]) {
            eprintln!("cannot unmount {t}: {e}");
        }
    }
}
