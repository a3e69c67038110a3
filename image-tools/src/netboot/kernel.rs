//! The kernel of the provisioning boot: found in a Debian `linux-image-*` package, in an
//! unpacked one, or given as a file and a module directory; and a private module tree
//! indexed with `depmod`, for [`super::modules`] to resolve module names against.
//!
//! A package is unpacked with `dpkg-deb -x` into the scratch directory. The private tree is
//! `SCRATCH/modtree/lib/modules/<release>/`: a symbolic link to each entry of the kernel's
//! module directory except the `modules.*` indexes, copies of `modules.order`,
//! `modules.builtin` and `modules.builtin.modinfo` (depmod's inputs), and the indexes
//! `depmod -b SCRATCH/modtree <release>` writes. Debian's packages ship no `modules.dep`,
//! and the input is never written to.

use std::fs;
use std::path::{Path, PathBuf};

use flipslot_os::process::Cmd;

use super::{io_err, NetbootError};

/// The `lib/modules/<release>` indexes depmod reads, copied into the private tree.
const DEPMOD_INPUTS: [&str; 3] = [
    "modules.order",
    "modules.builtin",
    "modules.builtin.modinfo",
];

/// Where the kernel and its modules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A Debian `linux-image-<release>` package file (`.deb`).
    Deb(PathBuf),
    /// An unpacked Debian kernel package: `boot/vmlinuz-<release>` and
    /// `lib/modules/<release>/` (or `usr/lib/modules/<release>/`).
    Tree(PathBuf),
    /// A kernel image and its module directory (`.../lib/modules/<release>`, whose name is
    /// the release).
    Files {
        /// The kernel image (bzImage).
        kernel: PathBuf,
        /// The module directory.
        modules_dir: PathBuf,
    },
}

/// A kernel ready for module resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedKernel {
    /// The kernel image to serve as `vmlinuz`.
    pub image: PathBuf,
    /// The kernel release (`uname -r`), e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The private tree's root (`modprobe -d`), holding `lib/modules/<release>/modules.dep`.
    pub root: PathBuf,
}

impl PreparedKernel {
    /// `lib/modules/<release>` in the private tree.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// Finds the kernel of `source`, links its modules into a private tree under `scratch` and
/// runs `depmod` there.
pub fn prepare(source: &KernelSource, scratch: &Path) -> Result<PreparedKernel, NetbootError> {
    let (image, modules_dir, release) = match source {
        KernelSource::Deb(deb) => {
            let unpacked = scratch.join("deb");
            Cmd::new("dpkg-deb")
                .arg("-x")
                .arg(deb)
                .arg(&unpacked)
                .run()?;
            find_in_tree(&unpacked).map_err(|e| match e {
                NetbootError::Kernel { reason } => NetbootError::Kernel {
                    reason: format!("package {}: {reason}", deb.display()),
                },
                other => other,
            })?
        }
        KernelSource::Tree(tree) => find_in_tree(tree)?,
        KernelSource::Files {
            kernel,
            modules_dir,
        } => {
            let release = modules_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            check_release(&release).map_err(|reason| NetbootError::Kernel {
                reason: format!(
                    "--modules-dir {}: its name is the kernel release, and {reason}",
                    modules_dir.display()
                ),
            })?;
            (kernel.clone(), modules_dir.clone(), release)
        }
    };
    let meta = fs::metadata(&image).map_err(io_err("read kernel image", &image))?;
    if !meta.is_file() || meta.len() == 0 {
        return Err(NetbootError::Kernel {
            reason: format!("{} is not a kernel image file", image.display()),
        });
    }
    let root = scratch.join("modtree");
    link_tree(&modules_dir, &root, &release)?;
    Cmd::new("depmod")
        .arg("-b")
        .arg(&root)
        .arg(&release)
        .run()?;
    Ok(PreparedKernel {
        image,
        release,
        root,
    })
}

/// The kernel image, module directory and release of an unpacked package.
fn find_in_tree(tree: &Path) -> Result<(PathBuf, PathBuf, String), NetbootError> {
    let images = names_with_prefix(&tree.join("boot"), "vmlinuz-")?;
    let mut module_dirs = Vec::new();
    for sub in ["lib/modules", "usr/lib/modules"] {
        for release in names_with_prefix(&tree.join(sub), "")? {
            module_dirs.push((release.clone(), tree.join(sub).join(release)));
        }
    }
    let releases: Vec<String> = module_dirs.iter().map(|(r, _)| r.clone()).collect();
    let release = pick_release(&images, &releases).map_err(|reason| NetbootError::Kernel {
        reason: format!("{}: {reason}", tree.display()),
    })?;
    let modules_dir = module_dirs
        .into_iter()
        .find(|(r, p)| *r == release && p.is_dir())
        .map(|(_, p)| p)
        .ok_or_else(|| NetbootError::Kernel {
            reason: format!(
                "{}: lib/modules/{release} is not a directory",
                tree.display()
            ),
        })?;
    let image = tree.join("boot").join(format!("vmlinuz-{release}"));
    Ok((image, modules_dir, release))
}

/// The one release that has both a `vmlinuz-<release>` and a module directory.
pub fn pick_release(images: &[String], module_dirs: &[String]) -> Result<String, String> {
    let mut both: Vec<&String> = images.iter().filter(|r| module_dirs.contains(r)).collect();
    both.sort();
    both.dedup();
    match both.as_slice() {
        [one] => {
            check_release(one)?;
            Ok((*one).clone())
        }
        [] if images.is_empty() => Err(
            "no boot/vmlinuz-* (a meta package such as linux-image-amd64? use the versioned \
             linux-image-<release> package it depends on)"
                .into(),
        ),
        [] => Err(format!(
            "no lib/modules/ directory for {}",
            images
                .iter()
                .map(|r| format!("vmlinuz-{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        many => Err(format!(
            "more than one kernel ({}); use --kernel and --modules-dir to choose",
            many.iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Checks a kernel release: 1 to 64 characters of `A-Z a-z 0-9 . _ + -`, not `.` or `..`.
pub fn check_release(release: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&release.len())
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        && release != "."
        && release != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{release:?} is not a kernel release (1 to 64 of A-Z a-z 0-9 . _ + -)"
        ))
    }
}

/// The names in `dir` starting with `prefix`, the prefix removed, sorted; none when `dir`
/// does not exist.
fn names_with_prefix(dir: &Path, prefix: &str) -> Result<Vec<String>, NetbootError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(rest) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
        {
            if !rest.is_empty() {
                out.push(rest.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Builds the private tree `root/lib/modules/<release>` over `modules_dir` (see the module
/// doc), plus `root/usr/lib/modules` pointing at it for kmod builds that look there.
fn link_tree(modules_dir: &Path, root: &Path, release: &str) -> Result<(), NetbootError> {
    let source =
        fs::canonicalize(modules_dir).map_err(io_err("open module directory", modules_dir))?;
    if !source.is_dir() {
        return Err(NetbootError::Kernel {
            reason: format!("{} is not a directory", modules_dir.display()),
        });
    }
    let target = root.join("lib/modules").join(release);
    fs::create_dir_all(&target).map_err(io_err("create", &target))?;
    let usr = root.join("usr/lib");
    fs::create_dir_all(&usr).map_err(io_err("create", &usr))?;
    let link = usr.join("modules");
    std::os::unix::fs::symlink("../../lib/modules", &link).map_err(io_err("create", &link))?;
    let entries = fs::read_dir(&source).map_err(io_err("list", &source))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", &source))?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else {
            continue;
        };
        let dest = target.join(&name);
        if DEPMOD_INPUTS.contains(&text) {
            fs::copy(entry.path(), &dest).map_err(io_err("copy", &entry.path()))?;
        } else if !text.starts_with("modules.") {
            std::os::unix::fs::symlink(entry.path(), &dest).map_err(io_err("create", &dest))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_release_with_both_parts() {
        assert_eq!(
            pick_release(&v(&["6.1.0-57-amd64"]), &v(&["6.1.0-57-amd64"])),
            Ok("6.1.0-57-amd64".into())
        );
        assert_eq!(
            pick_release(&v(&["6.1.0-57-amd64", "old"]), &v(&["6.1.0-57-amd64"])),
            Ok("6.1.0-57-amd64".into())
        );
        let meta = pick_release(&[], &[]).unwrap_err();
        assert!(meta.contains("meta package"), "{meta}");
        let two = pick_release(&v(&["a", "b"]), &v(&["a", "b"])).unwrap_err();
        assert!(two.contains("a, b"), "{two}");
        assert!(pick_release(&v(&["a"]), &v(&["b"]))
            .unwrap_err()
            .contains("vmlinuz-a"));
    }

    #[test]
    fn releases_are_plain_names() {
        assert!(check_release("6.1.0-57-amd64").is_ok());
        assert!(check_release("6.12.1+deb13-amd64").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_release(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tree_layout_is_found_and_linked() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let m = tree.join("usr/lib/modules/6.12.1-amd64");
        fs::create_dir_all(m.join("kernel/drivers")).unwrap();
        fs::write(m.join("modules.order"), "").unwrap();
        fs::write(m.join("modules.dep"), "stale").unwrap();
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::write(tree.join("boot/vmlinuz-6.12.1-amd64"), b"kernel").unwrap();
        let (image, modules_dir, release) = find_in_tree(&tree).unwrap();
        assert_eq!(release, "6.12.1-amd64");
        assert_eq!(image, tree.join("boot/vmlinuz-6.12.1-amd64"));
        assert_eq!(modules_dir, m);

        let root = dir.path().join("modtree");
        link_tree(&modules_dir, &root, &release).unwrap();
        let linked = root.join("lib/modules/6.12.1-amd64");
        assert!(fs::symlink_metadata(linked.join("kernel"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(linked.join("modules.order").is_file());
        assert!(!linked.join("modules.dep").exists());
        assert!(root
            .join("usr/lib/modules/6.12.1-amd64/kernel/drivers")
            .is_dir());
    }
}
