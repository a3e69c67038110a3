//! The systemd guest (scenario 6): a minimal Debian root made by `mmdebstrap`, booted by the
//! rig's kernel and initramfs, where the shipped `systemd/flipslot-health.service` and the
//! `systemd/flipslot.conf` tmpfiles snippet run for real.
//!
//! [`base_root`] runs `mmdebstrap --variant=minbase --include=systemd,systemd-sysv,udev`
//! (docs, man pages and locales excluded through dpkg path filters) once and caches the tree
//! under `target/rig-cache/systemd-root/<key>/root`, keyed by a hash of the recipe (suite,
//! packages, options, [`RECIPE_REVISION`]). [`build_tree`] copies it and adds the static agent,
//! the kernel and initramfs, `system.toml` with a `[health]` section, keys, an `/etc/fstab`, the
//! shipped units (enabled as their `[Install]` section says) and the rig's own units:
//!
//! - `flipslot-test-app.service`: the application the health check watches (`sleep infinity`);
//! - `flipslot-rig-report.service`: after `boot-complete.target` (wanted, not required, so it
//!   also runs after a failed assessment) it prints marker lines to the console
//!   ([`reports`] parses them), installs `/data/update.fsb` and reboots when it exists, and
//!   otherwise powers off (`scripts/systemd-report.sh`);
//! - `flipslot-rig-fail@.service` and `flipslot-rig-deadline.timer`: when the report fails, or
//!   the boot is not done [`SystemdGuestSpec::deadline`] after the kernel started, print
//!   `FLIPSLOT-RIG-FAIL: <reason>` with the failed units, jobs and journal tail, and power off
//!   (`scripts/systemd-fail.sh`).
//!
//! The root is a read-only squashfs and the busybox initramfs cannot set up
//! `systemd.volatile=overlay` (that is done by systemd-volatile-root in a systemd initrd), so the
//! writable places are mounts in `/etc/fstab`: tmpfs on `/var` and `/tmp`, the ESP on
//! `/boot/efi`, the data partition on `/data` (the agent's data directory, so its status file
//! survives reboots). `/etc/machine-id` is empty: systemd mounts a transient one over it.
//! Units that would write `/etc` or wait for input on the console are masked ([`MASKED`]).

mod base;
mod report;
mod turns;

pub use base::{
    base_root, cache_key, is_mirror_failure, missing_prerequisites, mmdebstrap_args, skip_or_fail,
    BaseRoot, BaseRootError, DPKG_OPTIONS, NEEDS, PACKAGES, RECIPE_REVISION, SUITE,
};
pub use report::{failures, lines_with, reports, BootReport};
pub use turns::{foreign_qemus, wait_for_other_qemu};

use crate::guest::{copy, write, ExtraFile, COMPATIBLE, DATA_DIRECTORY};
use crate::images::{ImageTool, KeyPair};
use crate::inspect::DiskInfo;
use crate::kernel::Kernel;
use crate::scenario::Scenario;
use crate::{cmd, guest, initramfs};
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shipped boot assessment unit.
pub const HEALTH_UNIT: &str = include_str!("../../systemd/flipslot-health.service");
/// The shipped tmpfiles snippet.
pub const TMPFILES_SNIPPET: &str = include_str!("../../systemd/flipslot.conf");
/// The data directory the shipped tmpfiles snippet names (replaced by [`DATA_DIRECTORY`]).
const SHIPPED_DATA_DIRECTORY: &str = "/var/lib/flipslot";
/// `/usr/libexec/flipslot-rig/report`.
pub const REPORT_SCRIPT: &str = include_str!("scripts/systemd-report.sh");
/// `/usr/libexec/flipslot-rig/fail`.
pub const FAIL_SCRIPT: &str = include_str!("scripts/systemd-fail.sh");

/// The application the health check requires to be active.
pub const TEST_APP_UNIT: &str = "\
[Unit]
Description=flipslot rig: the application the health check watches

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
";

/// Prints the boot's markers after the assessment, then updates, reboots or powers off.
pub const REPORT_UNIT: &str = "\
[Unit]
Description=flipslot rig: report the boot on the console, then update or power off
# After the assessment whatever its result: Wants=, not Requires=, on boot-complete.target.
# After=multi-user.target keeps multi-user.target from being ordered after this unit.
After=multi-user.target boot-complete.target flipslot-health.service
Wants=boot-complete.target
OnFailure=flipslot-rig-fail@report.service

[Service]
Type=oneshot
ExecStart=/usr/libexec/flipslot-rig/report
TimeoutStartSec=infinity
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
";

/// Reports a failure and powers off; the instance names the reason.
pub const FAIL_UNIT: &str = "\
[Unit]
Description=flipslot rig: report a failed boot (%i) and power off
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/usr/libexec/flipslot-rig/fail %i
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
";

/// The units masked in the slot tree, and why.
pub const MASKED: &[(&str, &str)] = &[
    (
        "systemd-firstboot.service",
        "an empty machine-id is a first boot; it could prompt on the console",
    ),
    (
        "systemd-machine-id-commit.service",
        "cannot write the read-only /etc; the machine-id stays transient",
    ),
    ("getty.target", "no login prompts on the serial console"),
    ("apt-daily.timer", "no apt in a slot image"),
    ("apt-daily-upgrade.timer", "no apt in a slot image"),
    (
        "dpkg-db-backup.timer",
        "the dpkg database is hidden by /var",
    ),
    ("e2scrub_all.timer", "no LVM"),
    ("e2scrub_reap.service", "no LVM"),
    ("fstrim.timer", "nothing to trim"),
];

/// The disk layout of the systemd guest: like [`crate::images::RIG_LAYOUT`] with slots that
/// hold the larger root and a data partition that holds an update bundle; the data partition
/// carries the agent's status file recording the factory image in slot A.
pub const LAYOUT: &str = r#"bootloader = "grub-efi"
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 panic=-1"

[[partition]]
label = "esp"
role = "esp"
size = "32M"

[[partition]]
label = "rootfs-a"
role = "slot"
class = "rootfs"
bootname = "A"
size = "128M"

[[partition]]
label = "rootfs-b"
role = "slot"
class = "rootfs"
bootname = "B"
size = "128M"

[[partition]]
label = "data"
role = "data"
size = "192M"
fs = "ext4"
from = "dir"
status-file = "flipslot/status.json"
"#;

/// The unit the application check names.
pub const TEST_APP: &str = "flipslot-test-app.service";

// ---------------------------------------------------------------------------------------------
// The slot tree

/// What the systemd slot tree holds.
#[derive(Debug, Clone)]
pub struct SystemdGuestSpec {
    /// `/etc/flipslot-version`.
    pub version: String,
    /// The compatible string of `system.toml`.
    pub compatible: String,
    /// Public key files copied into `/etc/flipslot/keys/`.
    pub public_keys: Vec<PathBuf>,
    /// The static agent, copied to `/usr/bin/flipslot`.
    pub agent: PathBuf,
    /// The `[health]` section of `system.toml`.
    pub health_toml: String,
    /// When (since the kernel started) the deadline timer reports a failure and powers off.
    pub deadline: Duration,
    /// More files (written last).
    pub files: Vec<ExtraFile>,
}

impl SystemdGuestSpec {
    /// A guest of `version` with `agent`, the rig's compatible string, a health check of
    /// [`TEST_APP`], a 400 s deadline and no keys.
    pub fn new(version: &str, agent: &Path) -> SystemdGuestSpec {
        SystemdGuestSpec {
            version: version.to_string(),
            compatible: COMPATIBLE.to_string(),
            public_keys: Vec::new(),
            agent: agent.to_path_buf(),
            health_toml: format!("[health]\ndeadline-seconds = 120\nunits = [\"{TEST_APP}\"]\n"),
            deadline: Duration::from_secs(400),
            files: Vec::new(),
        }
    }
}

/// The data partition and ESP (by partition label, which udev links) and tmpfs where the
/// read-only root must be writable.
pub fn fstab() -> String {
    format!(
        "# flipslot rig, systemd guest: the root is a read-only squashfs slot\n\
         PARTLABEL=esp   /boot/efi  vfat   defaults,noatime                  0 0\n\
         PARTLABEL=data  /data      ext4   defaults,noatime                  0 0\n\
         tmpfs           /var       tmpfs  mode=0755,size=64m                0 0\n\
         tmpfs           /tmp       tmpfs  mode=1777,nosuid,nodev,size=64m   0 0\n\
         # the agent's data directory is {DATA_DIRECTORY}, on the data partition\n"
    )
}

/// The shipped tmpfiles snippet with its data directory replaced by the guest's.
pub fn tmpfiles_snippet() -> anyhow::Result<String> {
    if !TMPFILES_SNIPPET.contains(SHIPPED_DATA_DIRECTORY) {
        bail!("systemd/flipslot.conf no longer names {SHIPPED_DATA_DIRECTORY}; update the rig");
    }
    Ok(TMPFILES_SNIPPET.replace(SHIPPED_DATA_DIRECTORY, DATA_DIRECTORY))
}

/// The deadline timer for `deadline`.
pub fn deadline_timer(deadline: Duration) -> String {
    format!(
        "[Unit]\n\
         Description=flipslot rig: power off when the boot is not done in time\n\
         DefaultDependencies=no\n\
         \n\
         [Timer]\n\
         OnBootSec={}s\n\
         AccuracySec=1s\n\
         Unit=flipslot-rig-fail@deadline.service\n",
        deadline.as_secs()
    )
}

/// The `.wants`/`.requires` directories an `[Install]` section asks for: `(directory,
/// target)` pairs such as `("multi-user.target.wants", …)`.
pub fn install_links(unit_text: &str) -> Vec<String> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in unit_text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let suffix = match key.trim() {
            "WantedBy" => "wants",
            "RequiredBy" => "requires",
            _ => continue,
        };
        for target in value.split_whitespace() {
            out.push(format!("{target}.{suffix}"));
        }
    }
    out
}

/// What [`build_tree`] made.
#[derive(Debug, Clone)]
pub struct TreeInfo {
    /// The kernel release in `/boot`.
    pub kernel_release: String,
    /// Bytes in the tree (regular files).
    pub bytes: u64,
    /// How long the copy of the base root took.
    pub copy_time: Duration,
}

/// Where units go in the guest.
const SYSTEM_UNITS: &str = "usr/lib/systemd/system";
const ETC_UNITS: &str = "etc/systemd/system";

/// Fills the missing or empty directory `dest` with a copy of `base` and the flipslot parts.
pub fn build_tree(
    spec: &SystemdGuestSpec,
    base: &BaseRoot,
    kernel: &Kernel,
    dest: &Path,
) -> anyhow::Result<TreeInfo> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .with_context(|| format!("cannot list {}", dest.display()))?
            .next()
            .is_some()
    {
        bail!("systemd guest tree {} is not empty", dest.display());
    }
    mkdir(dest)?;
    let t = Instant::now();
    let mut src = base.dir.clone().into_os_string();
    src.push("/.");
    cmd::run(Command::new("cp").arg("-a").arg(&src).arg(dest))?;
    let copy_time = t.elapsed();

    for d in [
        "data",
        "boot/efi",
        "etc/flipslot/keys",
        "usr/libexec/flipslot-rig",
    ] {
        mkdir(&dest.join(d))?;
    }
    copy(&spec.agent, &dest.join("usr/bin/flipslot"), 0o755)?;
    copy(&kernel.vmlinuz(), &dest.join("boot/vmlinuz"), 0o644)?;
    let initrd = initramfs::build(kernel)?;
    write(&dest.join("boot/initrd.img"), &initrd.bytes, 0o644)?;

    let toml = format!(
        "{}\n{}",
        guest::system_toml(&spec.compatible),
        spec.health_toml
    );
    guest::write_flipslot_files(dest, &toml, &spec.public_keys, &spec.version.to_string())?;
    write(&dest.join("etc/fstab"), fstab().as_bytes(), 0o644)?;
    // Debian's /sbin/init is an absolute symlink (/lib/systemd/systemd); the rig's initramfs
    // tests `-x /newroot/sbin/init` before switch_root, which resolves an absolute link in the
    // initramfs and fails. A relative link names the same file either way.
    symlink(
        Path::new("../lib/systemd/systemd"),
        &dest.join("usr/sbin/init"),
    )?;
    // Empty: systemd mounts a transient machine-id over it (the root is read-only).
    write(&dest.join("etc/machine-id"), b"", 0o444)?;

    // The shipped parts, installed as a package would install them.
    write(
        &dest.join(SYSTEM_UNITS).join("flipslot-health.service"),
        HEALTH_UNIT.as_bytes(),
        0o644,
    )?;
    enable(dest, "flipslot-health.service", HEALTH_UNIT, SYSTEM_UNITS)?;
    write(
        &dest.join("usr/lib/tmpfiles.d/flipslot.conf"),
        tmpfiles_snippet()?.as_bytes(),
        0o644,
    )?;

    // The rig's units.
    write(
        &dest.join("usr/libexec/flipslot-rig/report"),
        REPORT_SCRIPT.as_bytes(),
        0o755,
    )?;
    write(
        &dest.join("usr/libexec/flipslot-rig/fail"),
        FAIL_SCRIPT.as_bytes(),
        0o755,
    )?;
    for (name, text) in [
        (TEST_APP, TEST_APP_UNIT),
        ("flipslot-rig-report.service", REPORT_UNIT),
        ("flipslot-rig-fail@.service", FAIL_UNIT),
    ] {
        write(&dest.join(ETC_UNITS).join(name), text.as_bytes(), 0o644)?;
        enable(dest, name, text, ETC_UNITS)?;
    }
    let timer = deadline_timer(spec.deadline);
    write(
        &dest.join(ETC_UNITS).join("flipslot-rig-deadline.timer"),
        timer.as_bytes(),
        0o644,
    )?;
    link_unit(
        dest,
        "sysinit.target.wants",
        "flipslot-rig-deadline.timer",
        ETC_UNITS,
    )?;
    for (unit, _why) in MASKED {
        symlink(Path::new("/dev/null"), &dest.join(ETC_UNITS).join(unit))?;
    }
    symlink(
        Path::new("/usr/lib/systemd/system/multi-user.target"),
        &dest.join(ETC_UNITS).join("default.target"),
    )?;

    for f in &spec.files {
        let rel = f.path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            bail!("bad guest file path {:?}", f.path);
        }
        let path = dest.join(rel);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        write(&path, &f.contents, f.mode)?;
    }
    Ok(TreeInfo {
        kernel_release: kernel.release.clone(),
        bytes: tree_bytes(dest)?,
        copy_time,
    })
}

/// Enables `unit` (installed in the guest directory `unit_dir`) as its `[Install]` says.
fn enable(tree: &Path, unit: &str, text: &str, unit_dir: &str) -> anyhow::Result<()> {
    for dir in install_links(text) {
        link_unit(tree, &dir, unit, unit_dir)?;
    }
    Ok(())
}

/// `/etc/systemd/system/<dir>/<unit>` → `/<unit_dir>/<unit>`.
fn link_unit(tree: &Path, dir: &str, unit: &str, unit_dir: &str) -> anyhow::Result<()> {
    let d = tree.join(ETC_UNITS).join(dir);
    mkdir(&d)?;
    symlink(&Path::new("/").join(unit_dir).join(unit), &d.join(unit))
}

fn tree_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e.with_context(|| format!("cannot list {}", d.display()))?;
            let t = e
                .file_type()
                .with_context(|| format!("cannot stat {}", e.path().display()))?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e
                    .metadata()
                    .with_context(|| format!("cannot stat {}", e.path().display()))?
                    .len();
            }
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Bundles and disks

/// A bundle of a systemd slot tree.
#[derive(Debug)]
pub struct SystemdBundle {
    /// The bundle file.
    pub bundle: PathBuf,
    /// The tree it was built from.
    pub tree: PathBuf,
    /// What went into the tree.
    pub info: TreeInfo,
    /// Named steps and their durations.
    pub timings: Vec<(String, Duration)>,
}

/// Builds the tree `work/rootfs-<version>` of `spec` from `base` and its bundle
/// `work/system-<version>.fsb`, signed with `keys.secret` (the tree trusts `keys.public`
/// besides the keys `spec` names).
pub fn bundle(
    tool: &ImageTool,
    base: &BaseRoot,
    kernel: &Kernel,
    work: &Path,
    keys: &KeyPair,
    spec: &SystemdGuestSpec,
) -> anyhow::Result<SystemdBundle> {
    let mut spec = spec.clone();
    spec.public_keys.push(keys.public.clone());
    let version = spec.version.as_str();
    let tree = work.join(format!("rootfs-{version}"));
    let t = Instant::now();
    let info = build_tree(&spec, base, kernel, &tree)?;
    let mut timings = vec![(format!("tree {version}"), t.elapsed())];
    let out = work.join(format!("system-{version}.fsb"));
    let t = Instant::now();
    tool.bundle(&tree, &spec.compatible, version, &keys.secret, &out)?;
    timings.push((format!("bundle {version} (mksquashfs)"), t.elapsed()));
    Ok(SystemdBundle {
        bundle: out,
        tree,
        info,
        timings,
    })
}

/// Writes `scenario` to `work/data`, [`LAYOUT`] to `work/layout.toml`, and builds
/// `work/disk.img` with `bundle` in slot A.
pub fn disk(
    tool: &ImageTool,
    work: &Path,
    bundle: &Path,
    keys: &KeyPair,
    scenario: &Scenario,
) -> anyhow::Result<(PathBuf, DiskInfo)> {
    let data = work.join("data");
    scenario.write_to(&data)?;
    let layout = work.join("layout.toml");
    write(&layout, LAYOUT.as_bytes(), 0o644)?;
    let disk = work.join("disk.img");
    let info = tool.disk(&layout, bundle, &keys.public, Some(&data), &disk)?;
    Ok((disk, info))
}

// ---------------------------------------------------------------------------------------------
// Files

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link).with_context(|| {
        format!(
            "cannot create symlink {} -> {}",
            link.display(),
            target.display()
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn scripts_are_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("report", REPORT_SCRIPT), ("fail", FAIL_SCRIPT)] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            cmd::run(Command::new("sh").arg("-n").arg(&path)).unwrap();
        }
        assert!(REPORT_SCRIPT.contains("FLIPSLOT-BOOT-COMPLETE"));
        assert!(FAIL_SCRIPT.contains("FLIPSLOT-RIG-FAIL:"));
    }

    #[test]
    fn shipped_health_unit_installs_into_both_targets() {
        let mut links = install_links(HEALTH_UNIT);
        links.sort();
        assert_eq!(
            links,
            ["boot-complete.target.requires", "multi-user.target.wants"]
        );
        assert_eq!(install_links(REPORT_UNIT), ["multi-user.target.wants"]);
        assert!(install_links(FAIL_UNIT).is_empty());
        assert_eq!(
            install_links(
                "[Install]\nWantedBy=a.target b.target\n# RequiredBy=x\n[Unit]\nWantedBy=c\n"
            ),
            ["a.target.wants", "b.target.wants"]
        );
    }

    #[test]
    fn tmpfiles_snippet_points_at_the_data_partition() {
        let s = tmpfiles_snippet().unwrap();
        assert!(
            s.contains(&format!("d {DATA_DIRECTORY} 0700 root root -")),
            "{s}"
        );
        assert!(!s.contains(SHIPPED_DATA_DIRECTORY));
    }

    #[test]
    fn layout_fits_the_slot_tree() {
        assert!(LAYOUT.contains("size = \"128M\""));
        assert!(fstab().contains("PARTLABEL=data  /data"));
        assert!(deadline_timer(Duration::from_secs(90)).contains("OnBootSec=90s"));
    }
}
