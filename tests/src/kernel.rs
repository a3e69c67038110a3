//! The guest kernel: Debian's current `linux-image-*-amd64`, downloaded with `apt-get download`,
//! unpacked with `dpkg -x` (no install, no root needed) and indexed with `depmod -b`, cached in
//! `target/rig-cache/kernel/<package>_<version>/` so only the first run pays for it (~10 s).
//!
//! The versioned package name is resolved at run time from `apt-cache depends
//! linux-image-amd64`, because the ABI number changes with point releases. Without apt (or
//! offline) a kernel already in the cache is used.

use crate::cmd;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The meta package that depends on the current versioned kernel package.
pub const META_PACKAGE: &str = "linux-image-amd64";

/// The modules a busybox guest needs to reach a virtio disk with squashfs, ext4 and vfat
/// filesystems, as names for [`Kernel::module_load_order`].
pub const GUEST_MODULES: &[&str] = &[
    "virtio_blk",
    "virtio_pci",
    "ext4",
    "squashfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
];

/// Marks a completely unpacked and indexed cache entry.
const COMPLETE_MARK: &str = ".rig-complete";

/// An unpacked Debian kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The binary package, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// Its Debian version, e.g. `6.1.192-2`.
    pub package_version: String,
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The unpacked package (holds `boot/` and `lib/modules/`).
    pub tree: PathBuf,
}

impl Kernel {
    /// The compressed kernel image (`boot/vmlinuz-<release>`).
    pub fn vmlinuz(&self) -> PathBuf {
        self.tree
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// `lib/modules/<release>` of the unpacked tree (with `modules.dep`).
    pub fn modules_dir(&self) -> PathBuf {
        self.tree.join("lib/modules").join(&self.release)
    }

    /// The module files to `insmod`, in order, so that each module in `names` is loaded
    /// after its dependencies (from `modprobe -d TREE -S RELEASE -a --show-depends`). Modules
    /// built into the kernel are left out; duplicates are dropped.
    pub fn module_load_order(&self, names: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
        let text = cmd::run_text(
            Command::new("modprobe")
                .arg("-d")
                .arg(&self.tree)
                .args(["-S", &self.release, "-a", "--show-depends"])
                .args(names),
        )?;
        let files = parse_show_depends(&text);
        let dir = self.modules_dir();
        for f in &files {
            if !f.starts_with(&dir) {
                bail!(
                    "modprobe named {} outside the kernel tree {}",
                    f.display(),
                    dir.display()
                );
            }
        }
        Ok(files)
    }
}

/// The cached Debian kernel, downloaded and unpacked on first use.
pub fn debian_kernel() -> anyhow::Result<Kernel> {
    static LOCK: Mutex<Option<Kernel>> = Mutex::new(None);
    let mut cached = LOCK
        .lock()
        .map_err(|_| anyhow::anyhow!("kernel cache lock poisoned"))?;
    if let Some(k) = cached.as_ref() {
        return Ok(k.clone());
    }
    let cache = crate::paths::cache_dir("kernel")?;
    let kernel = match resolve_package() {
        Ok((package, version)) => fetch(&cache, &package, &version)?,
        Err(e) => match newest_cached(&cache)? {
            Some(k) => {
                eprintln!(
                    "rig: cannot resolve {META_PACKAGE} ({e:#}); using cached {} {}",
                    k.package, k.package_version
                );
                k
            }
            None => return Err(e.context(format!("cannot resolve {META_PACKAGE}"))),
        },
    };
    *cached = Some(kernel.clone());
    Ok(kernel)
}

/// The versioned kernel package and its candidate version, from apt's cache.
fn resolve_package() -> anyhow::Result<(String, String)> {
    let deps = cmd::run_text(Command::new("apt-cache").args(["depends", META_PACKAGE]))?;
    let package = parse_depends(&deps).with_context(|| {
        format!("apt-cache depends {META_PACKAGE} names no linux-image package")
    })?;
    let show =
        cmd::run_text(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))?;
    let version = parse_field(&show, "Version")
        .with_context(|| format!("apt-cache show {package} gives no Version"))?;
    Ok((package, version))
}

/// Downloads, unpacks and indexes `package` `version` into `cache` unless already there.
fn fetch(cache: &Path, package: &str, version: &str) -> anyhow::Result<Kernel> {
    let final_dir = cache.join(format!("{package}_{version}"));
    if final_dir.join(COMPLETE_MARK).exists() {
        return from_tree(&final_dir, package, version);
    }
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache)
        .with_context(|| format!("cannot create a temporary directory in {}", cache.display()))?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", &format!("{package}={version}")])
            .current_dir(work.path()),
    )?;
    let deb = find_deb(work.path())?;
    let tree = work.path().join("tree");
    cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    std::fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    let release = single_release(&tree)?;
    decompress_modules(&tree.join("lib/modules").join(&release))?;
    cmd::run(Command::new("depmod").arg("-b").arg(&tree).arg(&release))?;
    std::fs::write(tree.join(COMPLETE_MARK), format!("{package} {version}\n"))
        .with_context(|| format!("cannot write the cache mark in {}", tree.display()))?;
    match std::fs::rename(&tree, &final_dir) {
        Ok(()) => {}
        // Another process finished first: use its copy.
        Err(_) if final_dir.join(COMPLETE_MARK).exists() => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot move {} to {}", tree.display(), final_dir.display())
            })
        }
    }
    from_tree(&final_dir, package, version)
}

fn from_tree(tree: &Path, package: &str, version: &str) -> anyhow::Result<Kernel> {
    let kernel = Kernel {
        package: package.to_string(),
        package_version: version.to_string(),
        release: single_release(tree)?,
        tree: tree.to_path_buf(),
    };
    let vmlinuz = kernel.vmlinuz();
    if !vmlinuz.is_file() {
        bail!("{} is missing", vmlinuz.display());
    }
    Ok(kernel)
}

/// The most recently written complete cache entry, if any.
fn newest_cached(cache: &Path) -> anyhow::Result<Option<Kernel>> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let entries =
        std::fs::read_dir(cache).with_context(|| format!("cannot list {}", cache.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", cache.display()))?;
        let mark = entry.path().join(COMPLETE_MARK);
        if let Ok(meta) = mark.metadata() {
            let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().map_or(true, |(t, _)| when > *t) {
                best = Some((when, entry.path()));
            }
        }
    }
    let Some((_, dir)) = best else {
        return Ok(None);
    };
    let mark = std::fs::read_to_string(dir.join(COMPLETE_MARK))
        .with_context(|| format!("cannot read the cache mark in {}", dir.display()))?;
    let mut words = mark.split_whitespace();
    let (Some(package), Some(version)) = (words.next(), words.next()) else {
        bail!("bad cache mark in {}", dir.display());
    };
    from_tree(&dir, package, version).map(Some)
}

fn find_deb(dir: &Path) -> anyhow::Result<PathBuf> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "deb") {
            return Ok(path);
        }
    }
    bail!("apt-get download left no .deb in {}", dir.display())
}

/// The one directory under `lib/modules/` of an unpacked kernel package.
fn single_release(tree: &Path) -> anyhow::Result<String> {
    let dir = tree.join("lib/modules");
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.path().is_dir() {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// Decompresses `*.ko.xz` / `*.ko.zst` / `*.ko.gz` modules in place (Debian bookworm ships
/// them uncompressed, later releases may not), so that busybox `insmod` can load them.
fn decompress_modules(dir: &Path) -> anyhow::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot list {}", d.display()))?
                .path();
            let name = path.to_string_lossy();
            if path.is_dir() {
                stack.push(path.clone());
            } else if name.ends_with(".ko.xz") {
                cmd::run(Command::new("xz").args(["-d", "-q"]).arg(&path))?;
            } else if name.ends_with(".ko.zst") {
                cmd::run(Command::new("zstd").args(["-d", "-q", "--rm"]).arg(&path))?;
            } else if name.ends_with(".ko.gz") {
                cmd::run(Command::new("gzip").args(["-d", "-q"]).arg(&path))?;
            }
        }
    }
    Ok(())
}

/// The versioned `linux-image-*` package named in `apt-cache depends` output.
pub fn parse_depends(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?;
        let name = rest.trim();
        (name.starts_with("linux-image-") && !name.starts_with('<')).then(|| name.to_string())
    })
}

/// The value of `Field: value` in deb822 text (the first paragraph that has it).
pub fn parse_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim().to_string())
    })
}

/// The module files of `modprobe --show-depends` output, in order, without duplicates
/// (`builtin` lines are skipped).
pub fn parse_show_depends(text: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("insmod") {
            continue;
        }
        if let Some(path) = words.next() {
            let path = PathBuf::from(path);
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn depends_of_the_meta_package() {
        // Recorded on Debian 12, November 2026.
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            parse_depends("linux-image-amd64\n  Depends: <linux-image-x>\n"),
            None
        );
    }

    #[test]
    fn version_field() {
        let text = "Package: linux-image-6.1.0-56-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\n";
        assert_eq!(parse_field(text, "Version").as_deref(), Some("6.1.192-2"));
        assert_eq!(parse_field(text, "Missing"), None);
    }

    #[test]
    fn show_depends_order_without_duplicates() {
        let m = "/k/lib/modules/6.1.0-56-amd64/kernel";
        let text = format!(
            "insmod {m}/drivers/virtio/virtio_ring.ko \ninsmod {m}/drivers/virtio/virtio.ko \n\
             insmod {m}/drivers/block/virtio_blk.ko \ninsmod {m}/drivers/virtio/virtio_ring.ko \n\
             builtin crc32c\ninsmod {m}/fs/ext4/ext4.ko opt=1\n"
        );
        let files = parse_show_depends(&text);
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["virtio_ring.ko", "virtio.ko", "virtio_blk.ko", "ext4.ko"]
        );
    }
}
