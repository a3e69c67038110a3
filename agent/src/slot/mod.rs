//! Slot logic: which slot is booted, and which slot an install should target.
//!
//! Pure except for [`FsResolver`], the adapter that resolves device symlinks under a
//! [`Root`]; the decisions take a [`DeviceResolver`] and the install history as inputs.

pub mod cmdline;
pub mod device;
pub mod status;

use std::path::{Path, PathBuf};

use crate::config::{Slot, SystemConfig};
use crate::host::paths::{Root, DEV_DISK_BY_PARTLABEL, DEV_DISK_BY_PARTUUID, DEV_DISK_BY_UUID};
use crate::slot::cmdline::BootHint;

/// Errors from slot selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// The kernel command line names a bootname that no slot has.
    #[error("booted bootname {bootname:?} from the kernel command line is not in the config (configured bootnames: {known})")]
    UnknownBootname {
        /// The bootname from the command line.
        bootname: String,
        /// The configured bootnames, comma separated.
        known: String,
    },
    /// No such slot class.
    #[error("no slot class {class:?} in the config (configured classes: {known})")]
    UnknownClass {
        /// The requested class.
        class: String,
        /// The configured classes, comma separated.
        known: String,
    },
    /// Every slot of the class is excluded (booted or read-only).
    #[error("no slot of class {class:?} can be installed to: the others are booted or read-only")]
    NoCandidate {
        /// The requested class.
        class: String,
    },
}

/// Resolves a device path to its canonical form, so `/dev/disk/by-*/x` and `/dev/sda2`
/// compare equal when they are the same device.
pub trait DeviceResolver {
    /// The canonical absolute path of `path`, or `None` if it cannot be resolved.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
}

/// Resolves symlinks in the file system under a [`Root`].
#[derive(Debug, Clone)]
pub struct FsResolver {
    /// The directory standing for `/`.
    pub root: Root,
}

impl DeviceResolver for FsResolver {
    /// Canonicalizes `root.resolve(path)` and strips the (canonical) root back off.
    ///
    /// A link that leads outside the root (possible only in tests, with absolute targets)
    /// resolves to `None`.
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        let canon = std::fs::canonicalize(self.root.resolve(path)).ok()?;
        let root = std::fs::canonicalize(self.root.path()).ok()?;
        let rel = canon.strip_prefix(&root).ok()?;
        Some(Path::new("/").join(rel))
    }
}

/// The device path a `root=` kernel argument refers to, if it names a device this way.
///
/// `PARTLABEL=x`, `PARTUUID=x` (lower-cased, as udev names the link) and `UUID=x` map to
/// the udev `/dev/disk/by-*` links; a `/dev/…` path is returned as is.
pub fn root_device_path(root_spec: &str) -> Option<PathBuf> {
    let under = |dir: &str, name: &str| {
        (!name.is_empty() && !name.contains('/')).then(|| Path::new(dir).join(name))
    };
    if let Some(label) = root_spec.strip_prefix("PARTLABEL=") {
        under(DEV_DISK_BY_PARTLABEL, label)
    } else if let Some(uuid) = root_spec.strip_prefix("PARTUUID=") {
        under(DEV_DISK_BY_PARTUUID, &uuid.to_ascii_lowercase())
    } else if let Some(uuid) = root_spec.strip_prefix("UUID=") {
        under(DEV_DISK_BY_UUID, uuid)
    } else if root_spec.starts_with("/dev/") {
        Some(PathBuf::from(root_spec))
    } else {
        None
    }
}

/// Which configured slot is running.
///
/// A bootname on the command line decides (an unknown one is an error). Otherwise the
/// `root=` device is compared with each slot's device after resolving both (a path that
/// cannot be resolved is compared as written). `Ok(None)` means the system runs from
/// something that is not a slot (rescue system, netboot).
pub fn detect_booted<'c>(
    cfg: &'c SystemConfig,
    hint: &BootHint,
    resolver: &dyn DeviceResolver,
) -> Result<Option<&'c Slot>, SlotError> {
    if let Some(bootname) = &hint.bootname {
        return cfg.slot_by_bootname(bootname).map(Some).ok_or_else(|| {
            SlotError::UnknownBootname {
                bootname: bootname.clone(),
                known: cfg.bootnames().join(", "),
            }
        });
    }
    let Some(root_dev) = hint.root.as_deref().and_then(root_device_path) else {
        return Ok(None);
    };
    let canon = |p: &Path| resolver.canonical(p).unwrap_or_else(|| p.to_path_buf());
    let booted = canon(&root_dev);
    Ok(cfg.slots.iter().find(|s| canon(&s.device) == booted))
}

/// What the status file knows about a slot's last install.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotHistory {
    /// When the last install into the slot finished (unix seconds); `None` if never.
    pub installed_at: Option<u64>,
    /// Whether that install failed.
    pub failed: bool,
}

/// The slot of `class` to install into.
///
/// Never the booted slot. Among the others, a slot never installed or whose last install
/// failed comes first (lowest index); otherwise the one installed longest ago, so the
/// newest known-good fallback survives on A/B/C; ties go to the lower index.
pub fn choose_target<'c>(
    cfg: &'c SystemConfig,
    class: &str,
    booted: Option<&Slot>,
    info: &dyn Fn(&Slot) -> SlotHistory,
) -> Result<&'c Slot, SlotError> {
    let slots = cfg.slots_of_class(class);
    if slots.is_empty() {
        return Err(SlotError::UnknownClass {
            class: class.to_string(),
            known: cfg.classes().join(", "),
        });
    }
    slots
        .into_iter()
        .filter(|s| booted.map_or(true, |b| b.name != s.name))
        .filter(|s| !s.readonly)
        .min_by_key(|s| {
            let h = info(s);
            match h.installed_at {
                Some(at) if !h.failed => (1u8, at, s.index),
                _ => (0u8, 0, s.index),
            }
        })
        .ok_or_else(|| SlotError::NoCandidate {
            class: class.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::slot::cmdline::booted_hint;

    fn cfg(bootnames: &[&str]) -> SystemConfig {
        let mut text = String::from(
            "compatible = \"x\"\nbootloader = \"grub\"\ngrubenv = \"/boot/grubenv\"\n\
             keyring = \"/etc/keys\"\ndata-directory = \"/var/lib/flipslot\"\n",
        );
        for bn in bootnames {
            text.push_str(&format!(
                "[[slot.rootfs]]\ndevice = \"/dev/disk/by-partlabel/rootfs-{}\"\nbootname = \"{bn}\"\n",
                bn.to_lowercase()
            ));
        }
        SystemConfig::parse(&text, Path::new("/etc/flipslot/system.toml")).unwrap()
    }

    /// Maps paths through a fixed table, like udev links would.
    struct MapResolver(BTreeMap<PathBuf, PathBuf>);

    impl DeviceResolver for MapResolver {
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            self.0.get(path).cloned()
        }
    }

    fn links() -> MapResolver {
        MapResolver(
            [
                ("/dev/disk/by-partlabel/rootfs-a", "/dev/sda2"),
                ("/dev/disk/by-partlabel/rootfs-b", "/dev/sda3"),
                ("/dev/disk/by-partuuid/abcd-03", "/dev/sda3"),
                ("/dev/disk/by-uuid/1234", "/dev/sda2"),
                ("/dev/sda2", "/dev/sda2"),
                ("/dev/sda3", "/dev/sda3"),
            ]
            .into_iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect(),
        )
    }

    #[test]
    fn root_specs() {
        let p = |s: &str| root_device_path(s).map(|p| p.display().to_string());
        assert_eq!(
            p("PARTLABEL=rootfs-a").as_deref(),
            Some("/dev/disk/by-partlabel/rootfs-a")
        );
        assert_eq!(
            p("PARTUUID=ABCD-03").as_deref(),
            Some("/dev/disk/by-partuuid/abcd-03")
        );
        assert_eq!(p("UUID=1234").as_deref(), Some("/dev/disk/by-uuid/1234"));
        assert_eq!(p("/dev/sda2").as_deref(), Some("/dev/sda2"));
        assert_eq!(p("/dev/nfs").as_deref(), Some("/dev/nfs"));
        assert_eq!(p("LABEL=root"), None);
        assert_eq!(p("PARTLABEL="), None);
        assert_eq!(p("PARTLABEL=../../etc"), None);
        assert_eq!(p("sda2"), None);
        assert_eq!(p("fe:00"), None);
    }

    #[test]
    fn booted_by_bootname() {
        let cfg = cfg(&["A", "B"]);
        let hint = booted_hint("root=/dev/sda2 rauc.slot=B");
        let s = detect_booted(&cfg, &hint, &links()).unwrap().unwrap();
        assert_eq!(s.name, "rootfs.1");
    }

    #[test]
    fn unknown_bootname_is_an_error() {
        let cfg = cfg(&["A", "B"]);
        let hint = booted_hint("flipslot.slot=C");
        let e = detect_booted(&cfg, &hint, &links())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"C\"") && e.contains("A, B"), "{e}");
    }

    #[test]
    fn booted_by_root_device() {
        let cfg = cfg(&["A", "B"]);
        let r = links();
        let by = |cmd: &str| {
            detect_booted(&cfg, &booted_hint(cmd), &r)
                .unwrap()
                .map(|s| s.name.clone())
        };
        assert_eq!(by("root=/dev/sda2").as_deref(), Some("rootfs.0"));
        assert_eq!(by("root=PARTUUID=ABCD-03").as_deref(), Some("rootfs.1"));
        assert_eq!(by("root=UUID=1234").as_deref(), Some("rootfs.0"));
        assert_eq!(by("root=PARTLABEL=rootfs-b").as_deref(), Some("rootfs.1"));
        // Not a slot: rescue system, NFS root, no root= at all.
        assert_eq!(by("root=/dev/sdb1"), None);
        assert_eq!(by("root=/dev/nfs nfsroot=1.2.3.4:/x"), None);
        assert_eq!(by("quiet"), None);
    }

    #[test]
    fn unresolvable_paths_compare_as_written() {
        let cfg = cfg(&["A", "B"]);
        let none = MapResolver(BTreeMap::new());
        let hint = booted_hint("root=PARTLABEL=rootfs-b");
        let s = detect_booted(&cfg, &hint, &none).unwrap().unwrap();
        assert_eq!(s.bootname, "B");
    }

    #[test]
    fn fs_resolver_follows_links_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let by_label = dir.path().join("dev/disk/by-partlabel");
        std::fs::create_dir_all(&by_label).unwrap();
        std::fs::write(dir.path().join("dev/sda2"), b"").unwrap();
        std::fs::write(dir.path().join("dev/sda3"), b"").unwrap();
        std::os::unix::fs::symlink("../../sda2", by_label.join("rootfs-a")).unwrap();
        std::os::unix::fs::symlink("../../sda3", by_label.join("rootfs-b")).unwrap();
        let r = FsResolver {
            root: Root::new(dir.path()),
        };
        assert_eq!(
            r.canonical(Path::new("/dev/disk/by-partlabel/rootfs-a")),
            Some(PathBuf::from("/dev/sda2"))
        );
        assert_eq!(
            r.canonical(Path::new("/dev/sda3")),
            Some(PathBuf::from("/dev/sda3"))
        );
        assert_eq!(r.canonical(Path::new("/dev/missing")), None);

        let cfg = cfg(&["A", "B"]);
        let s = detect_booted(&cfg, &booted_hint("root=/dev/sda3"), &r)
            .unwrap()
            .unwrap();
        assert_eq!(s.bootname, "B");
    }

    fn hist<'a>(map: &'a [(&'a str, Option<u64>, bool)]) -> impl Fn(&Slot) -> SlotHistory + 'a {
        move |s: &Slot| {
            map.iter()
                .find(|(bn, _, _)| *bn == s.bootname)
                .map(|&(_, installed_at, failed)| SlotHistory {
                    installed_at,
                    failed,
                })
                .unwrap_or_default()
        }
    }

    #[test]
    fn ab_target_is_the_other_slot() {
        let cfg = cfg(&["A", "B"]);
        let a = cfg.slot_by_bootname("A");
        let b = cfg.slot_by_bootname("B");
        let none = hist(&[]);
        assert_eq!(
            choose_target(&cfg, "rootfs", a, &none).unwrap().bootname,
            "B"
        );
        assert_eq!(
            choose_target(&cfg, "rootfs", b, &none).unwrap().bootname,
            "A"
        );
        // Booted from elsewhere: the lowest index among fresh slots.
        assert_eq!(
            choose_target(&cfg, "rootfs", None, &none).unwrap().bootname,
            "A"
        );
        // Booted from elsewhere: the older install is overwritten.
        let h = hist(&[("A", Some(200), false), ("B", Some(100), false)]);
        assert_eq!(
            choose_target(&cfg, "rootfs", None, &h).unwrap().bootname,
            "B"
        );
    }

    #[test]
    fn abc_keeps_newest_fallback() {
        let cfg = cfg(&["A", "B", "C"]);
        let a = cfg.slot_by_bootname("A");
        // Running A; B was installed after C: overwrite C, keep B.
        let h = hist(&[
            ("A", Some(300), false),
            ("B", Some(200), false),
            ("C", Some(100), false),
        ]);
        assert_eq!(choose_target(&cfg, "rootfs", a, &h).unwrap().bootname, "C");
        // A failed install beats age.
        let h = hist(&[("B", Some(50), false), ("C", Some(100), true)]);
        assert_eq!(choose_target(&cfg, "rootfs", a, &h).unwrap().bootname, "C");
        // Never installed beats age.
        let h = hist(&[("B", Some(50), false)]);
        assert_eq!(choose_target(&cfg, "rootfs", a, &h).unwrap().bootname, "C");
        // Both fresh or failed: lower index.
        let h = hist(&[("C", Some(100), true)]);
        assert_eq!(choose_target(&cfg, "rootfs", a, &h).unwrap().bootname, "B");
        // Equal ages: lower index.
        let h = hist(&[("B", Some(100), false), ("C", Some(100), false)]);
        assert_eq!(choose_target(&cfg, "rootfs", a, &h).unwrap().bootname, "B");
    }

    #[test]
    fn target_errors() {
        let cfg = cfg(&["A", "B"]);
        let none = hist(&[]);
        let e = choose_target(&cfg, "appfs", None, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("appfs") && e.contains("rootfs"), "{e}");
    }

    #[test]
    fn no_candidate_when_only_booted_left() {
        // The config requires >= 2 slots per class; build a one-slot class by hand.
        let mut cfg = cfg(&["A", "B"]);
        cfg.slots.truncate(1);
        let a = cfg.slot_by_bootname("A").cloned();
        let none = hist(&[]);
        let e = choose_target(&cfg, "rootfs", a.as_ref(), &none).unwrap_err();
        assert!(matches!(e, SlotError::NoCandidate { .. }), "{e}");
    }
}
