//! Bare-metal provisioning in the rig: a VM with a blank disk netboots through QEMU's iPXE
//! ROM, fetches the kernel and initramfs `flipslot-image netboot` built from an HTTP server
//! on the host's loopback, and provisions its own disk with `flipslot provision` from the
//! signed set `flipslot-image provision` built.
//!
//! [`PxeKit`] builds everything once: keys, the factory release (1.0.0) and an update
//! (2.0.0), both with networking and with `/etc/flipslot` linked to the data partition
//! (the agent config and keyring come from the provisioning description), the provisioning
//! set and the netboot files, all under one web root. [`pxe_vm`] is the machine: OVMF with
//! its own variable store, the blank virtio disk first in the boot order and the NIC second,
//! `-no-reboot` (every reboot ends QEMU; the test starts the next boot on the same disk).

use crate::images::{self, GuestBundle, ImageTool, KeyPair};
use crate::kernel::{self, Kernel};
use crate::network::{self, UPDATE_VERSION};
use crate::qemu::{Firmware, VmConfig, OVMF_CODE, OVMF_VARS};
use crate::scenario::Scenario;
use crate::{cargo_build, cmd, paths, updates};
use anyhow::Context as _;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The layout a bare machine is provisioned with: the rig's ([`images::RIG_LAYOUT`]),
/// with the data partition taking the rest of the disk.
pub fn provision_layout() -> String {
    images::RIG_LAYOUT.replace("size = \"64M\"\nfs = \"ext4\"\n", "size = \"rest\"\n")
}

/// Size of the blank disk.
pub const DISK_SIZE: u64 = 384 << 20;
/// Where the ESP starts on a provisioned disk (the planner's first 1 MiB boundary).
pub const ESP_OFFSET: u64 = 1 << 20;
/// Web paths under the server's root.
pub const PXE_DIR: &str = "pxe";
/// The factory bundle's web path.
pub const BASE_BUNDLE: &str = "bundles/system-1.0.0.fsb";
/// The update's web path.
pub const UPDATE_BUNDLE: &str = "bundles/system-2.0.0.fsb";
/// SeaBIOS, for a legacy BIOS machine (Debian `seabios`, a dependency of QEMU).
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// The NIC's MAC address.
pub const MAC: &str = "52:54:00:f1:15:01";

/// Keys, both releases and the tools, built once per test.
#[derive(Debug)]
pub struct PxeKit {
    /// The image tool.
    pub tool: ImageTool,
    /// The scratch directory.
    pub work: tempfile::TempDir,
    /// The release key: signs bundles and the description; the initramfs trusts it.
    pub keys: KeyPair,
    /// The static agent.
    pub agent: PathBuf,
    /// The guest kernel.
    pub kernel: Kernel,
    /// 1.0.0.
    pub base: GuestBundle,
    /// 2.0.0.
    pub update: GuestBundle,
    /// Named steps and their durations.
    pub timings: Vec<(String, Duration)>,
}

impl PxeKit {
    /// Builds keys, the agent and both releases.
    pub fn new(prefix: &str) -> anyhow::Result<PxeKit> {
        let t = Instant::now();
        let tool = ImageTool::build()?;
        let mut timings = vec![("flipslot-image (cargo)".to_string(), t.elapsed())];
        let work = paths::scratch_dir(&format!("{prefix}-"))?;
        let keys = tool.keygen(&work.path().join("keys"), "release")?;
        let agent = cargo_build::static_agent()?;
        let kernel = kernel::debian_kernel()?;
        let net = network::guest_files(&kernel)?;
        let mut build = |version: &str, name: &str| -> anyhow::Result<GuestBundle> {
            let mut spec = updates::release_spec(version, updates::Release::Good);
            spec.config_from_data = true;
            spec.files.extend(net.iter().cloned());
            let b = images::guest_bundle_spec(&tool, work.path(), &keys, spec, name)?;
            for (step, d) in &b.timings {
                timings.push((format!("{version}: {step}"), *d));
            }
            Ok(b)
        };
        let base = build(updates::BASE_VERSION, "base")?;
        let update = build(UPDATE_VERSION, "update")?;
        Ok(PxeKit {
            tool,
            work,
            keys,
            agent,
            kernel,
            base,
            update,
            timings,
        })
    }

    /// The files of the data partition: the agent config and keyring (the guest's
    /// `/etc/flipslot` links here) and the rig's scenario files.
    pub fn data_dir(&self, scenario: &Scenario) -> anyhow::Result<PathBuf> {
        let dir = self.work.path().join("data");
        let mut s = scenario.clone();
        s.files.push((
            "flipslot/etc/system.toml".into(),
            updates::system_toml().into_bytes(),
        ));
        let key = std::fs::read(&self.keys.public)
            .with_context(|| format!("cannot read {}", self.keys.public.display()))?;
        s.files.push(("flipslot/etc/keys/release.pub".into(), key));
        s.write_to(&dir)?;
        Ok(dir)
    }

    /// `flipslot-image provision` into `www/pxe` (the layout [`provision_layout`]).
    pub fn provision_set(&self, data: &Path, www: &Path) -> anyhow::Result<()> {
        let layout = self.work.path().join("provision-layout.toml");
        let text = provision_layout();
        anyhow::ensure!(
            text.contains("size = \"rest\""),
            "the rig layout changed shape"
        );
        std::fs::write(&layout, text)
            .with_context(|| format!("cannot write {}", layout.display()))?;
        cmd::run(
            Command::new(&self.tool.0)
                .arg("provision")
                .arg("--layout")
                .arg(&layout)
                .args(["--compatible", crate::guest::COMPATIBLE, "--key"])
                .arg(&self.keys.secret)
                .arg("--data-dir")
                .arg(data)
                .arg("--out-dir")
                .arg(www.join(PXE_DIR)),
        )
        .map(|_| ())
    }

    /// `flipslot-image netboot` into `www/pxe`, for a server reached as
    /// `http://10.0.2.2:<port>/`, reporting to `report_url`.
    pub fn netboot(&self, www: &Path, port: u16, report_url: &str) -> anyhow::Result<String> {
        let base = network::guest_url(port, &format!("{PXE_DIR}/"));
        cmd::run_text(
            Command::new(&self.tool.0)
                .arg("netboot")
                .arg("--agent")
                .arg(&self.agent)
                .arg("--keyring")
                .arg(&self.keys.public)
                .arg("--kernel-tree")
                .arg(&self.kernel.tree)
                .args(["--module", "virtio_net,virtio_blk,virtio_pci"])
                .args(["--base-url", &base])
                .args([
                    "--provision-url",
                    &network::guest_url(port, &format!("{PXE_DIR}/provision.json")),
                ])
                .args(["--bundle-url", &network::guest_url(port, BASE_BUNDLE)])
                .args(["--report-url", report_url])
                .arg("--out-dir")
                .arg(www.join(PXE_DIR))
                .arg("--json"),
        )
    }

    /// Publishes both bundles under `www/bundles`.
    pub fn publish_bundles(&self, www: &Path) -> anyhow::Result<()> {
        for (from, to) in [
            (&self.base.bundle, BASE_BUNDLE),
            (&self.update.bundle, UPDATE_BUNDLE),
        ] {
            let dest = www.join(to);
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
            }
            std::fs::copy(from, &dest)
                .with_context(|| format!("cannot copy {} to {}", from.display(), dest.display()))?;
        }
        Ok(())
    }

    /// A new blank (all zero, sparse) disk `name`.
    pub fn blank_disk(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.path().join(name);
        let f = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.set_len(DISK_SIZE)
            .with_context(|| format!("cannot size {}", path.display()))?;
        Ok(path)
    }
}

/// The machine: OVMF (its own variable store), `disk` first in the boot order, the NIC
/// second with QEMU's iPXE ROM and `bootfile`, OVMF's own PXE stacks off (they would wait
/// about a minute each before iPXE gets its turn).
pub fn pxe_vm(name: &str, disk: &Path, bootfile: &str, timeout: Duration) -> VmConfig {
    let mut cfg = VmConfig::new(name, disk);
    cfg.disks.clear();
    cfg.firmware = Firmware::Pflash {
        code: PathBuf::from(OVMF_CODE),
        vars: PathBuf::from(OVMF_VARS),
    };
    cfg.hard_timeout = timeout + Duration::from_secs(5);
    let mut drive = OsString::from("format=raw,if=none,id=d0,file=");
    drive.push(disk.to_string_lossy().replace(',', ",,"));
    let args: Vec<OsString> = vec![
        "-drive".into(),
        drive,
        "-device".into(),
        "virtio-blk-pci,drive=d0,bootindex=1".into(),
        "-netdev".into(),
        format!("user,id=n0,bootfile={bootfile}").into(),
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,bootindex=2,mac={MAC}").into(),
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv4PXESupport,string=no".into(),
        "-fw_cfg".into(),
        "name=opt/org.tianocore/IPv6PXESupport,string=no".into(),
    ];
    cfg.extra_args.extend(args);
    cfg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_provisioning_layout_is_the_rig_layout_with_a_rest_data_partition() {
        let l = provision_layout();
        assert_eq!(l.matches("size = \"rest\"").count(), 1, "{l}");
        assert!(!l.contains("fs = \"ext4\""), "{l}");
        assert!(l.contains("status-file = \"flipslot/status.json\""), "{l}");
        assert_eq!(l.matches("[[partition]]").count(), 4);
    }
}
