//! Driving `flipslot-image` (built from the workspace) to make what a VM boots: keys, a bundle
//! of a guest tree, and a GPT disk with the bundle in slot A and a scenario on the data
//! partition. [`system_disk`] does all of it in one call.

use crate::guest::{self, GuestSpec, TreeInfo};
use crate::inspect::DiskInfo;
use crate::scenario::Scenario;
use crate::{cargo_build, cmd, kernel};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The rig's disk layout: ESP, slots A and B, an ext4 data partition filled from `--data-dir`.
pub const RIG_LAYOUT: &str = r#"bootloader = "grub-efi"
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
size = "96M"

[[partition]]
label = "rootfs-b"
role = "slot"
class = "rootfs"
bootname = "B"
size = "96M"

[[partition]]
label = "data"
role = "data"
size = "64M"
fs = "ext4"
from = "dir"
# The agent's data-directory is /data/flipslot: the factory slot A gets its record.
status-file = "flipslot/status.json"
"#;

/// A signing key pair made by `flipslot-image keygen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// `NAME.key`.
    pub secret: PathBuf,
    /// `NAME.pub`.
    pub public: PathBuf,
}

/// The `flipslot-image` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTool(pub PathBuf);

impl ImageTool {
    /// `target/release/flipslot-image`, built first.
    pub fn build() -> anyhow::Result<ImageTool> {
        cargo_build::image_tool().map(ImageTool)
    }

    /// Whether this build has the `disk` subcommand.
    pub fn has_disk(&self) -> bool {
        Command::new(&self.0)
            .args(["disk", "--help"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `keygen --out-dir DIR --name NAME`.
    pub fn keygen(&self, dir: &Path, name: &str) -> anyhow::Result<KeyPair> {
        cmd::run(
            Command::new(&self.0)
                .args(["keygen", "--out-dir"])
                .arg(dir)
                .args(["--name", name]),
        )?;
        Ok(KeyPair {
            secret: dir.join(format!("{name}.key")),
            public: dir.join(format!("{name}.pub")),
        })
    }

    /// `build --dir rootfs=TREE --fs squashfs --compatible C --version V --key K --out OUT`.
    pub fn bundle(
        &self,
        tree: &Path,
        compatible: &str,
        version: &str,
        key: &Path,
        out: &Path,
    ) -> anyhow::Result<()> {
        let mut dir = std::ffi::OsString::from("rootfs=");
        dir.push(tree);
        cmd::run(
            Command::new(&self.0)
                .arg("build")
                .arg("--dir")
                .arg(dir)
                .args([
                    "--fs",
                    "squashfs",
                    "--compatible",
                    compatible,
                    "--version",
                    version,
                ])
                .arg("--key")
                .arg(key)
                .arg("--out")
                .arg(out),
        )
        .map(|_| ())
    }

    /// `disk --json --layout L --bundle B --keyring K [--data-dir D] --out OUT`; returns the
    /// partitions it reports.
    pub fn disk(
        &self,
        layout: &Path,
        bundle: &Path,
        keyring: &Path,
        data_dir: Option<&Path>,
        out: &Path,
    ) -> anyhow::Result<DiskInfo> {
        let mut c = Command::new(&self.0);
        c.args(["disk", "--json"])
            .arg("--layout")
            .arg(layout)
            .arg("--bundle")
            .arg(bundle)
            .arg("--keyring")
            .arg(keyring);
        if let Some(d) = data_dir {
            c.arg("--data-dir").arg(d);
        }
        c.arg("--out").arg(out);
        DiskInfo::from_json_lines(&cmd::run_text(&mut c)?)
    }
}

/// Everything [`system_disk`] made, and how long each step took.
#[derive(Debug)]
pub struct SystemDisk {
    /// The disk image.
    pub disk: PathBuf,
    /// Its partitions.
    pub layout: DiskInfo,
    /// The bundle in slot A.
    pub bundle: PathBuf,
    /// The key pair that signed it (its public key is in the guest's keyring).
    pub keys: KeyPair,
    /// The guest tree the bundle was built from.
    pub tree: PathBuf,
    /// What went into the tree.
    pub info: TreeInfo,
    /// The kernel package used.
    pub kernel_package: String,
    /// Named steps and their durations, in order.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Builds, in `work`: a key pair, a guest tree of `version` (static agent included), its
/// bundle, and a disk of [`RIG_LAYOUT`] whose data partition holds `scenario`.
pub fn system_disk(
    tool: &ImageTool,
    work: &Path,
    version: &str,
    scenario: &Scenario,
) -> anyhow::Result<SystemDisk> {
    let t = Instant::now();
    let keys = tool.keygen(&work.join("keys"), "release")?;
    let mut timings = vec![("keygen", t.elapsed())];
    let built = guest_bundle(tool, work, &keys, version)?;
    timings.extend(built.timings.iter().copied());
    let t = Instant::now();
    let (disk, layout) = disk_with(tool, work, &built.bundle, &keys, scenario)?;
    timings.push(("disk (flipslot-image disk)", t.elapsed()));
    Ok(SystemDisk {
        disk,
        layout,
        bundle: built.bundle,
        keys,
        tree: built.tree,
        info: built.info,
        kernel_package: built.kernel_package,
        timings,
    })
}

/// A bundle of a guest tree, and how it was made.
#[derive(Debug)]
pub struct GuestBundle {
    /// The bundle.
    pub bundle: PathBuf,
    /// The tree it was built from.
    pub tree: PathBuf,
    /// What went into the tree.
    pub info: TreeInfo,
    /// The kernel package used.
    pub kernel_package: String,
    /// Named steps and their durations, in order.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Builds the guest tree `work/rootfs-<version>` (trusting `keys.public`, with the static
/// agent) and its bundle `work/system-<version>.fsb`, signed with `keys.secret`.
pub fn guest_bundle(
    tool: &ImageTool,
    work: &Path,
    keys: &KeyPair,
    version: &str,
) -> anyhow::Result<GuestBundle> {
    guest_bundle_spec(tool, work, keys, GuestSpec::new(version), version)
}

/// Like [`guest_bundle`] for any `spec` (its agent is replaced by the static agent and
/// `keys.public` is added to its keyring): builds the tree `work/rootfs-<name>` and the
/// bundle `work/system-<name>.fsb` of version `spec.version`, signed with `keys.secret`.
pub fn guest_bundle_spec(
    tool: &ImageTool,
    work: &Path,
    keys: &KeyPair,
    mut spec: GuestSpec,
    name: &str,
) -> anyhow::Result<GuestBundle> {
    let mut timings = Vec::new();
    let mut t = Instant::now();
    let mut lap = |step: &'static str, timings: &mut Vec<(&'static str, Duration)>| {
        timings.push((step, t.elapsed()));
        t = Instant::now();
    };
    let kernel = kernel::debian_kernel()?;
    lap("kernel (download or cache)", &mut timings);
    let agent = cargo_build::static_agent()?;
    lap("static agent (cargo)", &mut timings);

    let tree = work.join(format!("rootfs-{name}"));
    spec.public_keys.push(keys.public.clone());
    spec.agent = guest::Agent::Binary(agent);
    let info = guest::build_tree(&spec, &kernel, &tree)?;
    lap("guest tree + initramfs", &mut timings);

    let bundle = work.join(format!("system-{name}.fsb"));
    tool.bundle(
        &tree,
        &spec.compatible,
        &spec.version,
        &keys.secret,
        &bundle,
    )?;
    lap("bundle (flipslot-image build)", &mut timings);
    Ok(GuestBundle {
        bundle,
        tree,
        info,
        kernel_package: format!("{} {}", kernel.package, kernel.package_version),
        timings,
    })
}

/// Writes `scenario` to `work/data`, the layout to `work/layout.toml`, and builds
/// `work/disk.img` with `bundle` in slot A (verified against `keys.public`).
pub fn disk_with(
    tool: &ImageTool,
    work: &Path,
    bundle: &Path,
    keys: &KeyPair,
    scenario: &Scenario,
) -> anyhow::Result<(PathBuf, DiskInfo)> {
    let data = work.join("data");
    scenario.write_to(&data)?;
    let layout = work.join("layout.toml");
    std::fs::write(&layout, RIG_LAYOUT)
        .with_context(|| format!("cannot write {}", layout.display()))?;
    let disk = work.join("disk.img");
    let info = tool.disk(&layout, bundle, &keys.public, Some(&data), &disk)?;
    Ok((disk, info))
}
