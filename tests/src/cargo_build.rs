//! Builds the workspace's binaries the rig puts into images: the agent as a static binary
//! (for the busybox guest) and the `flipslot-image` tool. Each is built at most once per test
//! process; cargo's own caching makes later runs cheap.

use crate::{cmd, paths};
use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The target the static agent is built for.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// `target/x86_64-unknown-linux-gnu/release/flipslot`, built with
/// `RUSTFLAGS=-C target-feature=+crt-static` so it runs in the busybox guest.
pub fn static_agent() -> anyhow::Result<PathBuf> {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    once(&DONE, || {
        cargo_build(
            &["-p", "flipslot", "--target", GUEST_TARGET],
            Some("-C target-feature=+crt-static"),
        )?;
        let bin = paths::target_dir()
            .join(GUEST_TARGET)
            .join("release/flipslot");
        let bytes =
            std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
        if crate::busybox::is_dynamic_elf(&bytes) {
            bail!("{} is not statically linked", bin.display());
        }
        Ok(bin)
    })
}

/// `target/release/flipslot-image`, built with `cargo build --release -p flipslot-image`.
pub fn image_tool() -> anyhow::Result<PathBuf> {
    static DONE: Mutex<Option<PathBuf>> = Mutex::new(None);
    once(&DONE, || {
        cargo_build(&["-p", "flipslot-image"], None)?;
        Ok(paths::target_dir().join("release/flipslot-image"))
    })
}

fn once(
    slot: &Mutex<Option<PathBuf>>,
    make: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let mut guard = slot
        .lock()
        .map_err(|_| anyhow::anyhow!("build lock poisoned"))?;
    if let Some(p) = guard.as_ref() {
        return Ok(p.clone());
    }
    let p = make()?;
    *guard = Some(p.clone());
    Ok(p)
}

/// `cargo build --release ARGS` in the workspace. With `rustflags`, they replace the
/// caller's; with `--target` given they do not reach build scripts, so host artifacts are
/// shared with ordinary builds.
fn cargo_build(args: &[&str], rustflags: Option<&str>) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--release", "--quiet"])
        .args(args)
        .current_dir(paths::workspace_root())
        .env("CARGO_TARGET_DIR", paths::target_dir())
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(flags) = rustflags {
        c.env("RUSTFLAGS", flags);
    }
    cmd::run(&mut c).map(|_| ())
}
