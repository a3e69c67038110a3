//! Update scenarios shared by the VM tests and the demo: releases of the rig guest (good, one
//! that fails its health check, one whose init dies at boot), a [`Kit`] of signed bundles
//! built once, disks with slot A = 1.0.0 and chosen bundles on the data partition, and
//! [`boot`], one boot of a disk: under `-no-reboot` every guest reboot ends QEMU, so a test
//! calls it again for the next boot of the same disk (a real reboot: firmware, GRUB, kernel).

use crate::guest::{self, ExtraFile, GuestSpec};
use crate::images::{self, GuestBundle, ImageTool, KeyPair};
use crate::inspect::DiskInfo;
use crate::paths;
use crate::qemu::{Vm, VmConfig};
use crate::scenario::Scenario;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// The file every good release has and the health check looks for.
pub const READY_MARKER: &str = "/etc/app-ready";
/// The version on the factory disk (slot A).
pub const BASE_VERSION: &str = "1.0.0";
/// What the broken init of [`Release::Panics`] prints before it exits.
pub const PANIC_INIT_LINE: &str = "rig: this release's /sbin/init exits at once";

/// The guest's `system.toml` in every release: the rig's config plus a `[health]` command
/// check `test -e /etc/app-ready`.
pub fn system_toml() -> String {
    guest::system_toml(guest::COMPATIBLE) + &guest::health_section(&["test", "-e", READY_MARKER])
}

/// What kind of release a bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Boots, passes its health check.
    Good,
    /// Boots, but lacks [`READY_MARKER`], so its health check fails.
    FailsHealth,
    /// Its `/sbin/init` exits at once: the kernel panics ("Attempted to kill init") and,
    /// with `panic=-1`, resets.
    Panics,
}

/// The guest tree of a release.
pub fn release_spec(version: &str, kind: Release) -> GuestSpec {
    let mut spec = GuestSpec::new(version);
    spec.system_toml = Some(system_toml());
    if kind != Release::FailsHealth {
        spec.files.push(ExtraFile {
            path: READY_MARKER.into(),
            contents: format!("{version}\n").into_bytes(),
            mode: 0o644,
        });
    }
    if kind == Release::Panics {
        spec.files.push(ExtraFile {
            path: "/sbin/init".into(),
            contents: format!("#!/bin/sh\necho \"{PANIC_INIT_LINE}\"\nexit 1\n").into_bytes(),
            mode: 0o755,
        });
    }
    spec
}

/// Keys, the factory release and named bundles, built once in a scratch directory.
#[derive(Debug)]
pub struct Kit {
    /// The image tool.
    pub tool: ImageTool,
    /// The scratch directory (kept with `FLIPSLOT_RIG_KEEP=1`).
    pub work: tempfile::TempDir,
    /// The release key (trusted by every release).
    pub keys: KeyPair,
    /// The factory release [`BASE_VERSION`] for slot A.
    pub base: GuestBundle,
    /// Bundles by name.
    pub bundles: BTreeMap<String, PathBuf>,
    /// Guest trees by bundle name.
    pub trees: BTreeMap<String, PathBuf>,
    /// Named steps and their durations.
    pub timings: Vec<(String, Duration)>,
}

impl Kit {
    /// Builds the image tool, a release key and the factory release.
    pub fn new(prefix: &str) -> anyhow::Result<Kit> {
        let t = Instant::now();
        let tool = ImageTool::build()?;
        let mut timings = vec![("flipslot-image (cargo)".to_string(), t.elapsed())];
        let work = paths::scratch_dir(&format!("{prefix}-"))?;
        let keys = tool.keygen(&work.path().join("keys"), "release")?;
        let base = images::guest_bundle_spec(
            &tool,
            work.path(),
            &keys,
            release_spec(BASE_VERSION, Release::Good),
            "base",
        )?;
        for (step, d) in &base.timings {
            timings.push((format!("{BASE_VERSION}: {step}"), *d));
        }
        let mut kit = Kit {
            tool,
            keys,
            bundles: BTreeMap::new(),
            trees: BTreeMap::new(),
            timings,
            base,
            work,
        };
        kit.bundles.insert("base".into(), kit.base.bundle.clone());
        kit.trees.insert("base".into(), kit.base.tree.clone());
        Ok(kit)
    }

    /// Builds the bundle `name` of a release of `version`, signed with the release key.
    pub fn add(&mut self, name: &str, version: &str, kind: Release) -> anyhow::Result<PathBuf> {
        let t = Instant::now();
        let b = images::guest_bundle_spec(
            &self.tool,
            self.work.path(),
            &self.keys,
            release_spec(version, kind),
            name,
        )?;
        self.timings
            .push((format!("bundle {name} ({version})"), t.elapsed()));
        self.bundles.insert(name.into(), b.bundle.clone());
        self.trees.insert(name.into(), b.tree);
        Ok(b.bundle)
    }

    /// Builds the bundle `name` from the tree of the bundle `tree_of` again, as `version`
    /// and signed with `key` (e.g. a lower version, or a key the guests do not trust).
    pub fn resign(
        &mut self,
        name: &str,
        tree_of: &str,
        version: &str,
        key: &KeyPair,
    ) -> anyhow::Result<PathBuf> {
        let tree = self
            .trees
            .get(tree_of)
            .with_context(|| format!("no tree for bundle {tree_of}"))?
            .clone();
        let out = self.work.path().join(format!("system-{name}.fsb"));
        let t = Instant::now();
        self.tool
            .bundle(&tree, guest::COMPATIBLE, version, &key.secret, &out)?;
        self.timings
            .push((format!("bundle {name} ({version})"), t.elapsed()));
        self.bundles.insert(name.into(), out.clone());
        Ok(out)
    }

    /// Builds the small bundle `name` of `version` signed with `key`, from a tree holding only
    /// `/etc/flipslot-version`: for bundles that must be refused before anything is written
    /// (a wrong key, an older version), so they take little room on the data partition.
    pub fn small(&mut self, name: &str, version: &str, key: &KeyPair) -> anyhow::Result<PathBuf> {
        let tree = self.work.path().join(format!("rootfs-{name}"));
        let etc = tree.join("etc");
        std::fs::create_dir_all(&etc)
            .with_context(|| format!("cannot create {}", etc.display()))?;
        std::fs::write(etc.join("flipslot-version"), format!("{version}\n"))
            .with_context(|| format!("cannot write into {}", etc.display()))?;
        self.trees.insert(name.into(), tree);
        self.resign(name, name, version, key)
    }

    /// A key pair the guests do not trust.
    pub fn untrusted_key(&self) -> anyhow::Result<KeyPair> {
        self.tool
            .keygen(&self.work.path().join("untrusted-keys"), "untrusted")
    }

    /// Builds `work/<name>/disk.img`: slot A holds the factory release; the data partition
    /// holds `scenario` and the named bundles as `bundles/<bundle name>.fsb`.
    pub fn disk(
        &self,
        name: &str,
        scenario: &Scenario,
        bundles: &[&str],
    ) -> anyhow::Result<(PathBuf, DiskInfo)> {
        let mut scenario = scenario.clone();
        for b in bundles {
            let path = self
                .bundles
                .get(*b)
                .with_context(|| format!("no bundle named {b}"))?;
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            scenario.files.push((format!("bundles/{b}.fsb"), bytes));
        }
        let dir = self.work.path().join(name);
        images::disk_with(&self.tool, &dir, &self.base.bundle, &self.keys, &scenario)
    }
}

/// One boot: its serial log and how QEMU ended.
#[derive(Debug)]
pub struct BootRun {
    /// The whole serial log of this boot.
    pub serial: String,
    /// Where it is kept.
    pub log: PathBuf,
    /// QEMU's exit status.
    pub status: ExitStatus,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Boots `disk` once (`-no-reboot`: a guest reboot, power-off or panic ends QEMU) with
/// the serial log `target/rig-logs/<log_name>.log`; fails when QEMU is still running after
/// `timeout` (and kills it).
pub fn boot(disk: &Path, log_name: &str, timeout: Duration) -> anyhow::Result<BootRun> {
    let mut cfg = VmConfig::new(log_name, disk);
    cfg.hard_timeout = timeout + Duration::from_secs(5);
    let mut vm = Vm::start(&cfg)?;
    let status = vm.wait_exit(timeout)?;
    let serial = vm.serial()?.to_string();
    Ok(BootRun {
        serial,
        log: vm.log_path().to_path_buf(),
        status,
        elapsed: vm.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn releases() {
        let good = release_spec("2.0.0", Release::Good);
        assert!(good.files.iter().any(|f| f.path == READY_MARKER));
        assert!(good.system_toml.as_deref().unwrap().contains("[health]"));
        let bad = release_spec("2.0.0", Release::FailsHealth);
        assert!(bad.files.is_empty());
        let panics = release_spec("2.0.0", Release::Panics);
        assert!(panics.files.iter().any(|f| f.path == "/sbin/init"));
    }
}
