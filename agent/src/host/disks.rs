//! The machine's whole disks as provisioning sees them, read from sysfs and `/dev` under a
//! root: size, logical sector size, removable and read-only flags, serial, the
//! `/dev/disk/by-id` names pointing at each, and whether the running system uses it (a
//! mounted filesystem, active swap, or a holder such as md or device-mapper on one of its
//! partitions). Reading is plain file I/O; deciding which disk to write is
//! `provision::select`.

use crate::host::mountinfo;
use crate::host::paths::{Root, PROC_MOUNTINFO};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `/sys/block`: one directory per whole disk.
pub const SYS_BLOCK: &str = "/sys/block";
/// `/sys/dev/block`: `MAJOR:MINOR` links to every block device.
pub const SYS_DEV_BLOCK: &str = "/sys/dev/block";
/// `/dev/disk/by-id`: udev's stable names (absent in a bare initramfs).
pub const DEV_DISK_BY_ID: &str = "/dev/disk/by-id";
/// Active swap areas.
pub const PROC_SWAPS: &str = "/proc/swaps";

/// Kernel names of devices that are never provisioning candidates by themselves.
const NOT_DISKS: &[&str] = &["loop", "ram", "zram", "sr", "fd", "nbd", "dm-"];

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// Kernel name (`vda`, `nvme0n1`, `md0`).
    pub name: String,
    /// Device node (`/dev/vda`).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size in bytes.
    pub sector_size: u64,
    /// The kernel says the medium is removable (USB sticks, card readers).
    pub removable: bool,
    /// The device is read-only.
    pub read_only: bool,
    /// The serial number, when the driver exposes one.
    pub serial: Option<String>,
    /// Names in `/dev/disk/by-id` that point at the disk.
    pub by_id: Vec<String>,
    /// What of the running system lives on it (empty: nothing).
    pub in_use: Vec<String>,
    /// A kind of device that is only written when named explicitly (loop, ram, ...).
    pub virtual_only: bool,
}

/// Every whole disk under `root` (`/sys/block`), by name.
pub fn list(root: &Root) -> Result<Vec<DiskFacts>> {
    let sys_block = root.resolve(Path::new(SYS_BLOCK));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&sys_block)
        .with_context(|| format!("cannot list disks in {}", sys_block.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", sys_block.display()))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    let in_use = running_system(root)?;
    let by_id = by_id_names(root);
    names
        .into_iter()
        .map(|name| facts(root, &name, &in_use, &by_id))
        .collect()
}

/// The facts of the disk whose kernel name is `name`.
fn facts(
    root: &Root,
    name: &str,
    in_use: &[(String, String)],
    by_id: &[(String, String)],
) -> Result<DiskFacts> {
    let dir = root.resolve(Path::new(SYS_BLOCK)).join(name);
    let read = |file: &str| -> Option<String> {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let sectors: u64 = read("size")
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot read the size of disk {name} ({})", dir.display()))?;
    let sector_size = read("queue/logical_block_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let serial = read("serial").or_else(|| read("device/serial"));
    let mut uses: Vec<String> = in_use
        .iter()
        .filter(|(disk, _)| disk == name)
        .map(|(_, what)| what.clone())
        .collect();
    uses.sort();
    uses.dedup();
    Ok(DiskFacts {
        name: name.to_string(),
        path: PathBuf::from("/dev").join(name),
        // /sys/block/*/size counts 512-byte sectors whatever the logical sector size.
        size: sectors.saturating_mul(512),
        sector_size,
        removable: read("removable").as_deref() == Some("1"),
        read_only: read("ro").as_deref() == Some("1"),
        serial,
        by_id: by_id
            .iter()
            .filter(|(_, disk)| disk == name)
            .map(|(id, _)| id.clone())
            .collect(),
        in_use: uses,
        virtual_only: NOT_DISKS.iter().any(|p| name.starts_with(p)),
    })
}

/// The whole disk (kernel name) a block device `MAJOR:MINOR` belongs to: itself, the
/// disk of a partition, and, through `slaves`, the disks under md or device-mapper.
fn disks_of(root: &Root, major: u64, minor: u64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let link = root
        .resolve(Path::new(SYS_DEV_BLOCK))
        .join(format!("{major}:{minor}"));
    let Ok(dir) = std::fs::canonicalize(&link) else {
        return out;
    };
    collect_disks(&dir, &mut out, 0);
    out
}

fn collect_disks(dev_dir: &Path, out: &mut BTreeSet<String>, depth: u32) {
    if depth > 8 {
        return;
    }
    // A partition's directory sits inside its disk's and has a `partition` file.
    let disk_dir = if dev_dir.join("partition").exists() {
        dev_dir.parent().map(Path::to_path_buf)
    } else {
        Some(dev_dir.to_path_buf())
    };
    let Some(disk_dir) = disk_dir else { return };
    if let Some(name) = disk_dir.file_name().and_then(|n| n.to_str()) {
        out.insert(name.to_string());
    }
    for dir in [dev_dir.join("slaves"), disk_dir.join("slaves")] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(p) = std::fs::canonicalize(e.path()) {
                collect_disks(&p, out, depth + 1);
            }
        }
    }
}

/// `(disk, what)` for every disk the running system uses: mounted filesystems and swap.
fn running_system(root: &Root) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mi = root.resolve(Path::new(PROC_MOUNTINFO));
    if let Ok(text) = std::fs::read_to_string(&mi) {
        let entries =
            mountinfo::parse(&text).with_context(|| format!("cannot parse {}", mi.display()))?;
        for e in entries {
            if e.major == 0 {
                continue;
            }
            for disk in disks_of(root, e.major, e.minor) {
                out.push((disk, format!("mounted at {}", e.mount_point.display())));
            }
        }
    }
    let swaps = root.resolve(Path::new(PROC_SWAPS));
    if let Ok(text) = std::fs::read_to_string(&swaps) {
        for line in text.lines().skip(1) {
            let Some(dev) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(Some((major, minor))) =
                crate::host::sys::device_numbers(&root.resolve(Path::new(dev)))
            {
                for disk in disks_of(root, major, minor) {
                    out.push((disk, format!("swap on {dev}")));
                }
            }
        }
    }
    Ok(out)
}

/// `(by-id name, disk)` for every link in `/dev/disk/by-id` that names a whole disk.
fn by_id_names(root: &Root) -> Vec<(String, String)> {
    let dir = root.resolve(Path::new(DEV_DISK_BY_ID));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(id) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if let Some(disk) = target.file_name().and_then(|n| n.to_str()) {
            out.push((id, disk.to_string()));
        }
    }
    out.sort();
    out
}

/// The kernel name of the disk at `path` (`/dev/vda`, a by-id link, a loop device; a path
/// of the caller's, not under `root`), read from its device numbers; `None` when it is not
/// a block device (a disk image file).
pub fn kernel_name(root: &Root, path: &Path) -> Result<Option<String>> {
    let Some((major, minor)) = crate::host::sys::device_numbers(path)
        .with_context(|| format!("cannot read {}", path.display()))?
    else {
        return Ok(None);
    };
    let link = root
        .resolve(Path::new(SYS_DEV_BLOCK))
        .join(format!("{major}:{minor}"));
    let dir = std::fs::canonicalize(&link)
        .with_context(|| format!("{} ({major}:{minor}) is not in sysfs", path.display()))?;
    if dir.join("partition").exists() {
        anyhow::bail!(
            "{} is a partition; provisioning writes a whole disk",
            path.display()
        );
    }
    Ok(dir.file_name().and_then(|n| n.to_str()).map(str::to_string))
}

/// The facts of the disk at an explicit `path` (the caller's path, not under `root`):
/// from sysfs for a block device, or a disk image file's own size (512-byte sectors, not removable, not in use).
pub fn explicit(root: &Root, path: &Path) -> Result<DiskFacts> {
    match kernel_name(root, path)? {
        Some(name) => {
            let in_use = running_system(root)?;
            let by_id = by_id_names(root);
            let mut f = facts(root, &name, &in_use, &by_id)?;
            f.path = path.to_path_buf();
            Ok(f)
        }
        None => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !meta.is_file() {
                anyhow::bail!(
                    "{} is neither a block device nor a disk image file",
                    path.display()
                );
            }
            Ok(DiskFacts {
                name: path.display().to_string(),
                path: path.to_path_buf(),
                size: meta.len(),
                sector_size: 512,
                removable: false,
                read_only: false,
                serial: None,
                by_id: Vec::new(),
                in_use: Vec::new(),
                virtual_only: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn lists_disks_with_their_facts_and_uses() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        // Real sysfs: /sys/block/X links into /sys/devices; a plain tree is enough here.
        write(r, "/sys/devices/vda/size", "2097152\n");
        write(r, "/sys/devices/vda/removable", "0\n");
        write(r, "/sys/devices/vda/ro", "0\n");
        write(r, "/sys/devices/vda/serial", "SER-1\n");
        write(r, "/sys/devices/vda/queue/logical_block_size", "512\n");
        write(r, "/sys/devices/vda/vda1/partition", "1\n");
        write(r, "/sys/devices/sda/size", "4194304\n");
        write(r, "/sys/devices/sda/removable", "1\n");
        write(r, "/sys/devices/loop0/size", "100\n");
        std::fs::create_dir_all(r.join("sys/block")).unwrap();
        std::fs::create_dir_all(r.join("sys/dev/block")).unwrap();
        for d in ["vda", "sda", "loop0"] {
            std::os::unix::fs::symlink(r.join("sys/devices").join(d), r.join("sys/block").join(d))
                .unwrap();
        }
        std::os::unix::fs::symlink(
            r.join("sys/devices/vda/vda1"),
            r.join("sys/dev/block/254:1"),
        )
        .unwrap();
        write(
            r,
            "/proc/self/mountinfo",
            "22 1 254:1 / /boot rw,relatime - vfat /dev/vda1 rw\n\
             23 1 0:21 / /run rw - tmpfs tmpfs rw\n",
        );
        std::fs::create_dir_all(r.join("dev/disk/by-id")).unwrap();
        std::os::unix::fs::symlink("../../vda", r.join("dev/disk/by-id/virtio-SER-1")).unwrap();

        let disks = list(&Root::new(r)).unwrap();
        assert_eq!(disks.len(), 3);
        let loop0 = &disks[0];
        assert_eq!(loop0.name, "loop0");
        assert!(loop0.virtual_only);
        let sda = &disks[1];
        assert!(sda.removable);
        assert_eq!(sda.size, 4194304 * 512);
        let vda = &disks[2];
        assert_eq!(vda.path, PathBuf::from("/dev/vda"));
        assert_eq!(vda.size, 1 << 30);
        assert_eq!(vda.serial.as_deref(), Some("SER-1"));
        assert_eq!(vda.by_id, vec!["virtio-SER-1".to_string()]);
        assert_eq!(vda.in_use, vec!["mounted at /boot".to_string()]);
        assert!(!vda.removable && !vda.virtual_only);
    }

    #[test]
    fn an_image_file_is_an_explicit_disk() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 8192]).unwrap();
        let f = explicit(&Root::host(), &img).unwrap();
        assert_eq!(f.size, 8192);
        assert!(f.in_use.is_empty());
        let dir = explicit(&Root::host(), t.path()).unwrap_err();
        assert!(format!("{dir:#}").contains("neither a block device"));
    }
}
