//! Kernel modules of the initramfs: each requested name resolved with the real
//! `modprobe -d TREE -S RELEASE --show-depends NAME` against the private tree of
//! [`super::kernel`], giving the module files in load order (dependencies first); and each
//! file read for the archive, decompressed when the kernel package ships `.ko.xz`,
//! `.ko.zst` or `.ko.gz` (busybox `insmod` loads plain `.ko` files).
//!
//! Names are resolved one at a time, so a name the kernel does not have is reported on its
//! own: a default name is left out with a warning, a name asked for is an error. A name
//! built into the kernel needs no file. A file needed by several names is loaded once, at
//! its first place.

use std::path::{Path, PathBuf};

use flipslot_os::process::{stderr_tail, Cmd, CommandError, STDERR_TAIL_LINES};

use super::kernel::PreparedKernel;
use super::{io_err, NetbootError};

/// The modules loaded when none are named: the virtio devices of a VM, and the NVMe, AHCI
/// and Intel Ethernet drivers of common servers.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_net",
    "virtio_blk",
    "virtio_pci",
    "nvme",
    "ahci",
    "sd_mod",
    "e1000",
    "e1000e",
    "igb",
];

/// Compressed module suffixes and the program that decompresses each to standard output.
const COMPRESSED: [(&str, &str, &[&str]); 3] = [
    (".ko.xz", "xz", &["-d", "-c", "-q"]),
    (".ko.zst", "zstd", &["-d", "-c", "-q"]),
    (".ko.gz", "gzip", &["-d", "-c", "-q"]),
];

/// One module file to put into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// The file in the private tree.
    pub source: PathBuf,
    /// Its path in the initramfs: `lib/modules/<release>/...` ending in `.ko`.
    pub archive_path: String,
}

/// The modules resolved for a list of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedModules {
    /// The files in load order.
    pub files: Vec<ModuleFile>,
    /// Names built into the kernel.
    pub builtin: Vec<String>,
    /// Names the kernel does not have (left out).
    pub missing: Vec<String>,
}

/// What `modprobe --show-depends` printed for one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShowDepends {
    /// The `insmod` files, in order, without duplicates.
    pub files: Vec<PathBuf>,
    /// Whether a `builtin` line named the module.
    pub builtin: bool,
}

/// Resolves `names` against `kernel`. A name the kernel lacks is an error when `required`,
/// else it is listed in [`ResolvedModules::missing`] and warned about.
pub fn resolve(
    kernel: &PreparedKernel,
    names: &[String],
    required: bool,
) -> Result<ResolvedModules, NetbootError> {
    let mut out = ResolvedModules::default();
    let base = kernel.modules_dir();
    for name in names {
        let cmd = Cmd::new("modprobe").arg("-d").arg(&kernel.root).args([
            "-S",
            &kernel.release,
            "--show-depends",
            "--",
            name,
        ]);
        let output = cmd.output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("not found") {
                if required {
                    return Err(NetbootError::ModuleMissing {
                        name: name.clone(),
                        release: kernel.release.clone(),
                    });
                }
                log::warn!(
                    "kernel {} has no module {name}; leaving it out",
                    kernel.release
                );
                out.missing.push(name.clone());
                continue;
            }
            return Err(CommandError::Failed {
                program: "modprobe".into(),
                args: cmd
                    .get_args()
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                status: output.status,
                stderr_tail: stderr_tail(&output.stderr, STDERR_TAIL_LINES),
            }
            .into());
        }
        let shown = parse_show_depends(&String::from_utf8_lossy(&output.stdout));
        if shown.files.is_empty() && shown.builtin {
            out.builtin.push(name.clone());
        }
        for file in shown.files {
            if out.files.iter().any(|f| f.source == file) {
                continue;
            }
            let archive_path = archive_path(&file, &kernel.root, &base)?;
            out.files.push(ModuleFile {
                source: file,
                archive_path,
            });
        }
    }
    Ok(out)
}

/// The files and `builtin` lines of `modprobe --show-depends` output.
pub fn parse_show_depends(text: &str) -> ShowDepends {
    let mut out = ShowDepends::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("insmod"), Some(path)) => {
                let path = PathBuf::from(path);
                if !out.files.contains(&path) {
                    out.files.push(path);
                }
            }
            (Some("builtin"), Some(_)) => out.builtin = true,
            _ => {}
        }
    }
    out
}

/// The initramfs path of `file`: relative to `root`, inside `base`, `.ko` at the end.
fn archive_path(file: &Path, root: &Path, base: &Path) -> Result<String, NetbootError> {
    let outside = || NetbootError::Kernel {
        reason: format!(
            "modprobe named {}, which is not a module file in {}",
            file.display(),
            base.display()
        ),
    };
    if !file.starts_with(base) {
        return Err(outside());
    }
    let rel = file
        .strip_prefix(root)
        .ok()
        .and_then(|r| r.to_str())
        .ok_or_else(outside)?;
    for (suffix, _, _) in COMPRESSED {
        if let Some(stem) = rel.strip_suffix(suffix) {
            return Ok(format!("{stem}.ko"));
        }
    }
    if rel.ends_with(".ko") {
        Ok(rel.to_string())
    } else {
        Err(outside())
    }
}

/// The bytes of a module, decompressed when its file is compressed.
pub fn read_module(module: &ModuleFile) -> Result<Vec<u8>, NetbootError> {
    let name = module.source.to_string_lossy();
    for (suffix, program, args) in COMPRESSED {
        if name.ends_with(suffix) {
            let output = Cmd::new(program)
                .args(args)
                .arg("--")
                .arg(&module.source)
                .run()?;
            return Ok(output.stdout);
        }
    }
    std::fs::read(&module.source).map_err(io_err("read module", &module.source))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn show_depends_in_order_without_duplicates() {
        // Recorded with Debian's 6.1.0-57-amd64 (`modprobe --show-depends virtio_net`), plus
        // a repeated line, options and a built-in module.
        let m = "/t/lib/modules/6.1.0-57-amd64/kernel";
        let text = format!(
            "insmod {m}/drivers/virtio/virtio_ring.ko \n\
             insmod {m}/drivers/virtio/virtio.ko \n\
             insmod {m}/net/core/failover.ko \n\
             insmod {m}/drivers/virtio/virtio_ring.ko \n\
             insmod {m}/drivers/net/net_failover.ko \n\
             insmod {m}/drivers/net/virtio_net.ko napi_tx=1\n"
        );
        let shown = parse_show_depends(&text);
        let names: Vec<_> = shown
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "virtio_ring.ko",
                "virtio.ko",
                "failover.ko",
                "net_failover.ko",
                "virtio_net.ko"
            ]
        );
        assert!(!shown.builtin);
        let builtin = parse_show_depends("builtin crc32c\n");
        assert!(builtin.builtin && builtin.files.is_empty());
    }

    #[test]
    fn archive_paths_are_inside_the_tree_and_plain() {
        let root = Path::new("/s/modtree");
        let base = root.join("lib/modules/6.1");
        let path = |p: &str| archive_path(&root.join(p), root, &base);
        assert_eq!(
            path("lib/modules/6.1/kernel/a.ko").unwrap(),
            "lib/modules/6.1/kernel/a.ko"
        );
        assert_eq!(
            path("lib/modules/6.1/kernel/b.ko.xz").unwrap(),
            "lib/modules/6.1/kernel/b.ko"
        );
        assert_eq!(
            path("lib/modules/6.1/kernel/c.ko.zst").unwrap(),
            "lib/modules/6.1/kernel/c.ko"
        );
        assert!(path("lib/modules/6.2/kernel/a.ko").is_err());
        assert!(path("lib/modules/6.1/kernel/a.txt").is_err());
        assert!(archive_path(Path::new("/elsewhere/a.ko"), root, &base).is_err());
    }
}
