//! What the systemd guest needs from the host: the prerequisites (programs, root) with the
//! skip-or-fail decision, and the base root made by `mmdebstrap`, cached under
//! `target/rig-cache/systemd-root/<key>/` (`root/`, `packages.txt`, `recipe.txt`) and keyed by
//! a hash of the recipe.

use super::write;
use crate::{cmd, host, paths};
use anyhow::Context as _;
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Debian suite of the base root.
pub const SUITE: &str = "bookworm";
/// The packages on top of `minbase`.
pub const PACKAGES: &[&str] = &["systemd", "systemd-sysv", "udev"];
/// dpkg options that keep documentation, man pages and translations out of the root.
pub const DPKG_OPTIONS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
];
/// Bumped whenever the recipe changes in a way the argument list does not show.
pub const RECIPE_REVISION: u32 = 1;

/// What the systemd guest needs beyond [`host::VM_NEEDS`].
pub const NEEDS: &[host::Need] = &[host::Need {
    what: "mmdebstrap",
    package: "mmdebstrap",
}];

/// Why the systemd guest cannot be built here, if it cannot: missing programs (with their
/// Debian packages), or not running as root (mmdebstrap's root mode, and a slot tree whose
/// files keep their owners, need it).
pub fn missing_prerequisites() -> Option<String> {
    let mut needs = host::VM_NEEDS.to_vec();
    needs.extend_from_slice(NEEDS);
    let gone = host::missing(&needs);
    let mut why = Vec::new();
    if !gone.is_empty() {
        let what: Vec<&str> = gone.iter().map(|n| n.what).collect();
        why.push(format!(
            "missing {}; install the Debian packages: apt-get install {}",
            what.join(", "),
            host::packages(&gone).join(" ")
        ));
    }
    if !running_as_root() {
        why.push("not running as root (mmdebstrap and the slot tree need it)".to_string());
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Skips (prints why, returns `false`) or, under `CI=true`, fails loudly, when `problem`.
pub fn skip_or_fail(test: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    let msg = format!("{test}: {problem}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("skipped {msg}");
    false
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `mmdebstrap` arguments before the target directory.
pub fn mmdebstrap_args() -> Vec<String> {
    let mut a = vec![
        "--variant=minbase".to_string(),
        format!("--include={}", PACKAGES.join(",")),
    ];
    a.extend(DPKG_OPTIONS.iter().map(|o| format!("--dpkgopt={o}")));
    a.push(SUITE.to_string());
    a
}

/// The cache key: FNV-1a (64 bit, stable across Rust versions) of the recipe.
pub fn cache_key() -> String {
    let recipe = format!(
        "revision {RECIPE_REVISION}\nmmdebstrap {}\n",
        mmdebstrap_args().join(" ")
    );
    format!("{:016x}", fnv1a(recipe.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A base root in the cache.
#[derive(Debug, Clone)]
pub struct BaseRoot {
    /// `target/rig-cache/systemd-root/<key>/root`.
    pub dir: PathBuf,
    /// The cache key.
    pub key: String,
    /// `Some(duration)` when this call ran mmdebstrap, `None` when the cache had it.
    pub built_in: Option<Duration>,
}

/// Why [`base_root`] failed.
#[derive(Debug)]
pub enum BaseRootError {
    /// mmdebstrap could not fetch from the Debian mirror (its `apt-get update` failed).
    MirrorUnreachable(String),
    /// Anything else.
    Failed(anyhow::Error),
}

impl fmt::Display for BaseRootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseRootError::MirrorUnreachable(e) => {
                write!(f, "the Debian mirror is not reachable: {e}")
            }
            BaseRootError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BaseRootError {}

impl From<anyhow::Error> for BaseRootError {
    fn from(e: anyhow::Error) -> Self {
        BaseRootError::Failed(e)
    }
}

/// Whether a failed mmdebstrap run failed at fetching the package lists.
pub fn is_mirror_failure(message: &str) -> bool {
    message.contains("E: apt-get update") && message.contains("failed")
}

/// The cached base root, built with `mmdebstrap` first when missing. Built in a private
/// directory and renamed into place, so a crash or a concurrent build never leaves a
/// half-made root under the key.
pub fn base_root() -> Result<BaseRoot, BaseRootError> {
    static ONCE: Mutex<()> = Mutex::new(());
    let _one = ONCE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = paths::cache_dir("systemd-root")?;
    let key = cache_key();
    let entry = cache.join(&key);
    let dir = entry.join("root");
    if dir.join("usr/lib/systemd/systemd").is_file() {
        return Ok(BaseRoot {
            dir,
            key,
            built_in: None,
        });
    }
    let partial = cache.join(format!("{key}.partial-{}", std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("cannot remove {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let started = Instant::now();
    let mut c = Command::new("mmdebstrap");
    c.args(mmdebstrap_args()).arg(partial.join("root"));
    if let Err(e) = cmd::run(&mut c) {
        let msg = format!("{e:#}");
        // The partial tree is left for inspection (mmdebstrap cleaned up its mounts).
        return Err(if is_mirror_failure(&msg) {
            BaseRootError::MirrorUnreachable(msg)
        } else {
            BaseRootError::Failed(e.context(format!(
                "mmdebstrap failed; its partial root is in {}",
                partial.display()
            )))
        });
    }
    let built_in = started.elapsed();
    let packages = cmd::run_text(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                partial.join("root/var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package} ${Version}\\n"]),
    )?;
    write(&partial.join("packages.txt"), packages.as_bytes(), 0o644)?;
    write(
        &partial.join("recipe.txt"),
        format!(
            "revision {RECIPE_REVISION}\nmmdebstrap {} ROOT\nbuilt in {:.1} s\n",
            mmdebstrap_args().join(" "),
            built_in.as_secs_f64()
        )
        .as_bytes(),
        0o644,
    )?;
    match std::fs::rename(&partial, &entry) {
        Ok(()) => {}
        // Another process finished first: use its tree, drop ours.
        Err(_) if dir.join("usr/lib/systemd/systemd").is_file() => {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("cannot remove {}", partial.display()))?;
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!(
                    "cannot rename {} to {}",
                    partial.display(),
                    entry.display()
                ))
                .into())
        }
    }
    Ok(BaseRoot {
        dir,
        key,
        built_in: Some(built_in),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cache_key_is_stable_and_follows_the_recipe() {
        assert_eq!(cache_key(), cache_key());
        assert_eq!(cache_key().len(), 16);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let args = mmdebstrap_args();
        assert_eq!(args.first().map(String::as_str), Some("--variant=minbase"));
        assert!(args.contains(&"--include=systemd,systemd-sysv,udev".to_string()));
        assert_eq!(args.last().map(String::as_str), Some(SUITE));
    }

    #[test]
    fn mirror_failures_are_recognised() {
        assert!(is_mirror_failure(
            "E: Failed to fetch http://x/InRelease\nE: apt-get update --error-on=any -oAPT::Status-Fd=<$fd> failed\n"
        ));
        assert!(!is_mirror_failure("E: Unable to locate package systemdd"));
    }
}
