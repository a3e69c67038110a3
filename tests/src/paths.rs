//! Where the rig keeps things: the workspace, its target directory, the download and build
//! cache (`target/rig-cache/`) and the serial logs (`target/rig-logs/`).

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `target/rig-cache/<sub>`, created if missing. Kept between runs.
pub fn cache_dir(sub: &str) -> anyhow::Result<PathBuf> {
    ensure_dir(target_dir().join("rig-cache").join(sub))
}

/// `target/rig-logs/`, created if missing: one serial log per VM run.
pub fn logs_dir() -> anyhow::Result<PathBuf> {
    ensure_dir(target_dir().join("rig-logs"))
}

/// A fresh scratch directory under `target/rig-cache/tmp/` (removed when dropped, unless
/// `FLIPSLOT_RIG_KEEP=1` asks to keep disks and trees for debugging), so large disk images
/// stay on the same filesystem as the cache instead of a small `/tmp`.
pub fn scratch_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let parent = cache_dir("tmp")?;
    let keep = std::env::var_os("FLIPSLOT_RIG_KEEP").is_some_and(|v| v == "1");
    tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a scratch directory in {}", parent.display()))
}

fn ensure_dir(dir: PathBuf) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    Ok(dir)
}
