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
//!   ([`report`] parses them), installs `/data/update.fsb` and reboots when it exists, and
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

use crate::guest::{ExtraFile, COMPATIBLE, DATA_DIRECTORY};
use crate::images::{ImageTool, KeyPair};
use crate::inspect::DiskInfo;
use crate::kernel::Kernel;
use crate::scenario::Scenario;
use crate::{cmd, guest, host, initramfs, paths};
use anyhow::{bail, Context as _};
use std::fmt;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
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
/// hold the larger root and a data partition that holds an update bundle.
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
"#;

/// The unit the application check names.
pub const TEST_APP: &str = "flipslot-test-app.service";

// ---------------------------------------------------------------------------------------------
// Prerequisites

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

// ---------------------------------------------------------------------------------------------
// The cached base root

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
    write(
        &dest.join("etc/flipslot/system.toml"),
        toml.as_bytes(),
        0o644,
    )?;
    for key in &spec.public_keys {
        let name = key
            .file_name()
            .with_context(|| format!("key path {} has no file name", key.display()))?;
        copy(key, &dest.join("etc/flipslot/keys").join(name), 0o644)?;
    }
    write(
        &dest.join("etc/flipslot-version"),
        format!("{}\n", spec.version).as_bytes(),
        0o644,
    )?;
    write(&dest.join("etc/hostname"), b"flipslot-guest\n", 0o644)?;
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
// The report

/// One boot as the report service saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootReport {
    /// `slot=` of `FLIPSLOT-SYSTEMD-BOOTED`.
    pub slot: String,
    /// `version=`.
    pub version: String,
    /// `boot=`.
    pub boot: u32,
    /// Whether `FLIPSLOT-BOOT-COMPLETE` followed.
    pub boot_complete: bool,
    /// `systemctl is-active flipslot-health.service`.
    pub health_active: String,
    /// `Result` of flipslot-health.service.
    pub health_result: String,
    /// `ExecMainStatus` of flipslot-health.service.
    pub health_status: String,
    /// Seconds since the kernel started when the report ran.
    pub uptime: Option<f64>,
    /// Seconds since the kernel started when systemd (PID 1 of the root) started.
    pub userspace_at: Option<f64>,
    /// … when `multi-user.target` was reached.
    pub multi_user_at: Option<f64>,
    /// … when flipslot-health.service became active.
    pub health_at: Option<f64>,
    /// … when `boot-complete.target` was reached.
    pub boot_complete_at: Option<f64>,
    /// Units in the failed state.
    pub failed_units: Vec<String>,
    /// `flipslot status --json`, when it parsed.
    pub status: Option<serde_json::Value>,
    /// The exit status of `flipslot status`.
    pub status_rc: Option<i32>,
    /// The exit status of `flipslot install`, when an update was installed.
    pub install_rc: Option<i32>,
    /// `FLIPSLOT-RIG-ACTION`.
    pub action: Option<String>,
}

/// Every boot's report in a serial log, in order.
pub fn reports(serial: &str) -> Vec<BootReport> {
    let mut out: Vec<BootReport> = Vec::new();
    let mut json: Option<String> = None;
    for raw in serial.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(buf) = json.as_mut() {
            if let Some(rest) = after(line, "FLIPSLOT-STATUS-END rc=") {
                let text = json.take().unwrap_or_default();
                if let Some(r) = out.last_mut() {
                    r.status = serde_json::from_str(&text).ok();
                    r.status_rc = rest.trim().parse().ok();
                }
            } else {
                buf.push_str(line);
                buf.push('\n');
            }
            continue;
        }
        if let Some(rest) = after(line, "FLIPSLOT-SYSTEMD-BOOTED ") {
            let w = words(rest);
            out.push(BootReport {
                slot: w.get("slot").cloned().unwrap_or_default(),
                version: w.get("version").cloned().unwrap_or_default(),
                boot: w.get("boot").and_then(|b| b.parse().ok()).unwrap_or(0),
                ..BootReport::default()
            });
            continue;
        }
        let Some(r) = out.last_mut() else { continue };
        if line.contains("FLIPSLOT-BOOT-COMPLETE") {
            r.boot_complete = true;
        } else if let Some(rest) = after(line, "FLIPSLOT-HEALTH ") {
            let w = words(rest);
            r.health_active = w.get("active").cloned().unwrap_or_default();
            r.health_result = w.get("result").cloned().unwrap_or_default();
            r.health_status = w.get("status").cloned().unwrap_or_default();
        } else if let Some(rest) = after(line, "FLIPSLOT-TIMES ") {
            let w = words(rest);
            let us = |k: &str| {
                w.get(k)
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v > 0)
                    .map(|v| v as f64 / 1e6)
            };
            r.uptime = w.get("uptime").and_then(|v| v.parse().ok());
            r.userspace_at = us("userspace_us");
            r.multi_user_at = us("multi_user_us");
            r.health_at = us("health_us");
            r.boot_complete_at = us("boot_complete_us");
        } else if let Some(rest) = after(line, "FLIPSLOT-FAILED-UNITS") {
            r.failed_units = rest.split_whitespace().map(str::to_string).collect();
        } else if line.contains("FLIPSLOT-STATUS-BEGIN") {
            json = Some(String::new());
        } else if let Some(rest) = after(line, "FLIPSLOT-INSTALL-END rc=") {
            r.install_rc = rest.trim().parse().ok();
        } else if let Some(rest) = after(line, "FLIPSLOT-RIG-ACTION ") {
            r.action = Some(rest.trim().to_string());
        }
    }
    out
}

/// The reasons of `FLIPSLOT-RIG-FAIL:` and `FLIPSLOT-INITRAMFS-FAIL:` lines.
pub fn failures(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            ["FLIPSLOT-RIG-FAIL:", "FLIPSLOT-INITRAMFS-FAIL:"]
                .iter()
                .find_map(|m| line.find(m).map(|i| line[i..].trim().to_string()))
        })
        .collect()
}

/// Lines of the serial log that mention `needle` (for failure messages and the report).
pub fn lines_with<'a>(serial: &'a str, needle: &str) -> Vec<&'a str> {
    serial
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.trim_end_matches('\r'))
        .collect()
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

fn words(rest: &str) -> std::collections::BTreeMap<String, String> {
    rest.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sharing the machine

/// QEMU processes on this host that this process did not start (the comm name is cut to
/// 15 bytes: `qemu-system-x86`).
pub fn foreign_qemus() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() != "qemu-system-x86" {
                return false;
            }
            // Field 4 of /proc/PID/stat (after the parenthesised comm) is the parent.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid != Some(me)
        })
        .collect()
}

/// Waits (up to `max`) while another process's QEMU runs: the machine has two cores and TCG
/// is CPU-bound, so VM tests of different test processes take turns. Returns the time waited.
pub fn wait_for_other_qemu(test: &str, max: Duration) -> Duration {
    let started = Instant::now();
    let mut said = false;
    loop {
        let others = foreign_qemus();
        if others.is_empty() || started.elapsed() >= max {
            if !others.is_empty() {
                eprintln!("{test}: QEMU {others:?} still running after {max:?}; starting anyway");
            }
            return started.elapsed();
        }
        if !said {
            eprintln!("{test}: waiting for QEMU {others:?} of another process to finish");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Files

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    chmod(to, mode)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    // Replace, never write through: the base root's files may be symlinks or read-only.
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    chmod(path, mode)
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
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

    #[test]
    fn parses_reports() {
        let log = "[  OK  ] Reached target multi-user.target\r\n\
            FLIPSLOT-SYSTEMD-BOOTED slot=A version=1.0.0 boot=1\r\n\
            FLIPSLOT-BOOT-COMPLETE\r\n\
            FLIPSLOT-HEALTH active=active result=success status=0\r\n\
            FLIPSLOT-TIMES uptime=31.50 userspace_us=4000000 multi_user_us=20500000 health_us=22000000 boot_complete_us=22100000\r\n\
            FLIPSLOT-FAILED-UNITS systemd-logind.service\r\n\
            FLIPSLOT-STATUS-BEGIN\r\n{\r\n  \"booted\": \"rootfs.0\",\r\n  \"slots\": []\r\n}\r\n\
            FLIPSLOT-STATUS-END rc=0\r\n\
            FLIPSLOT-INSTALL-END rc=0\r\n\
            FLIPSLOT-RIG-ACTION reboot\r\n\
            FLIPSLOT-SYSTEMD-BOOTED slot=B version=2.0.0 boot=2\r\n\
            FLIPSLOT-BOOT-INCOMPLETE state=inactive\r\n\
            FLIPSLOT-TIMES uptime=1 userspace_us=0 multi_user_us=0 health_us=0 boot_complete_us=0\r\n\
            FLIPSLOT-FAILED-UNITS\r\n\
            FLIPSLOT-RIG-FAIL: report\r\n";
        let r = reports(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].slot.as_str(), r[0].version.as_str(), r[0].boot),
            ("A", "1.0.0", 1)
        );
        assert!(r[0].boot_complete);
        assert_eq!(r[0].health_result, "success");
        assert_eq!(r[0].boot_complete_at, Some(22.1));
        assert_eq!(r[0].failed_units, ["systemd-logind.service"]);
        assert_eq!(r[0].status.as_ref().unwrap()["booted"], "rootfs.0");
        assert_eq!(r[0].status_rc, Some(0));
        assert_eq!(r[0].install_rc, Some(0));
        assert_eq!(r[0].action.as_deref(), Some("reboot"));
        assert!(!r[1].boot_complete);
        assert_eq!(r[1].boot_complete_at, None);
        assert!(r[1].failed_units.is_empty());
        assert_eq!(failures(log), ["FLIPSLOT-RIG-FAIL: report"]);
    }

    #[test]
    fn layout_fits_the_slot_tree() {
        assert!(LAYOUT.contains("size = \"128M\""));
        assert!(fstab().contains("PARTLABEL=data  /data"));
        assert!(deadline_timer(Duration::from_secs(90)).contains("OnBootSec=90s"));
    }
}
