//! `flipslot-image netboot`: the kernel, initramfs and iPXE script a PXE server serves to
//! provision bare machines with `flipslot provision` (see [`crate::netboot`]).

use crate::netboot::{self, BootParams, KernelSource, NetbootOptions, NetbootSummary};
use flipslot_cli_support::progress::{format_bytes, ProgressMode, Reporter};
use std::path::PathBuf;

/// The long help of `netboot`.
pub(super) const LONG_ABOUT: &str =
    "Build the files a PXE server serves to provision bare machines.\n\n\
    Writes into --out-dir: vmlinuz (the kernel), initrd.img (an uncompressed newc cpio), \
    boot.ipxe (the iPXE script) and netboot.json (SHA-256 and size of each file, the kernel \
    release, the command line, the module files in load order). Serve vmlinuz and initrd.img \
    at --base-url and point the DHCP server's boot file (or QEMU's -netdev user,bootfile=) at \
    boot.ipxe.\n\n\
    The initramfs holds busybox-static (one link per applet), /init, a udhcpc script, the \
    agent as /usr/bin/flipslot, the keyring in /etc/flipslot/provision-keys/, the host's \
    mke2fs with the libraries ldd lists and /etc/mke2fs.conf, and the kernel modules \
    (uncompressed, listed in load order in /etc/netboot-modules). /init mounts /proc, /sys, \
    /dev (devtmpfs), /tmp and /run, loads the modules, takes a DHCP lease on the first \
    network interface that gets one, prints \"FLIPSLOT-NETBOOT: starting provision\", runs \
    `flipslot provision --description URL --bundle URL --keyring /etc/flipslot/provision-keys \
    [--disk DEV] [--wipe] [--report-url URL]`, prints \"FLIPSLOT-NETBOOT: provision rc=N\", \
    then reboots (rc 0) or prints \"FLIPSLOT-NETBOOT-FAIL: REASON\" and powers off after 10 s.\n\n\
    The kernel command line in boot.ipxe is: initrd=initrd.img console=ttyS0 panic=-1 \
    flipslot.provision=URL flipslot.bundle=URL [flipslot.disk=DEV] [flipslot.wipe=1] \
    [flipslot.report=URL] [--cmdline words]. URLs and words with white space, quotes, \
    backslashes, $, control characters or non-ASCII characters are refused. \
    --cmdline \"flipslot.noreboot=1\" powers the machine off after a successful provision \
    instead of rebooting.\n\n\
    Kernel modules are resolved with modprobe --show-depends against a private depmod index \
    of the kernel's modules (the input is not written to). The default list is virtio_net \
    virtio_blk virtio_pci nvme ahci sd_mod e1000 e1000e igb: names the kernel lacks are left \
    out with a warning. --module replaces the list, and each name given must exist.\n\n\
    The same inputs give byte-identical files: every archive entry has mtime \
    SOURCE_DATE_EPOCH (0 when unset) and owner 0:0.\n\n\
    With --json, standard output is one line: {\"v\":1,\"event\":\"done\",\"ok\":true,\
    \"out_dir\":PATH, and the fields of netboot.json} or {\"v\":1,\"event\":\"done\",\
    \"ok\":false,\"error\":S}.";

/// Arguments of `netboot`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("kernel_source").required(true)
        .args(["kernel_deb", "kernel_tree", "kernel"])),
    after_help = "Example:\n  \
        flipslot-image netboot --agent flipslot --keyring keys/provision.pub \\\n      \
        --kernel-deb linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb \\\n      \
        --base-url http://10.0.2.2:8080/pxe/ \\\n      \
        --provision-url http://10.0.2.2:8080/provision.json \\\n      \
        --bundle-url http://10.0.2.2:8080/os-1.0.fsb --out-dir pxe"
)]
pub struct NetbootArgs {
    /// The agent: a statically linked flipslot binary, /usr/bin/flipslot in the initramfs (a
    /// dynamically linked one is refused)
    #[arg(long, value_name = "PATH")]
    agent: PathBuf,
    /// Trusted provisioning keys: one PEM public key file, or a directory whose *.pub files
    /// are all copied (to /etc/flipslot/provision-keys/)
    #[arg(long, value_name = "FILE|DIR")]
    keyring: PathBuf,
    /// A Debian linux-image-<release> package (.deb): its vmlinuz and modules
    #[arg(long, value_name = "FILE.deb")]
    kernel_deb: Option<PathBuf>,
    /// An unpacked Debian kernel package: boot/vmlinuz-<release> and lib/modules/<release>/
    #[arg(long, value_name = "DIR")]
    kernel_tree: Option<PathBuf>,
    /// A kernel image (bzImage); needs --modules-dir
    #[arg(long, value_name = "FILE", requires = "modules_dir")]
    kernel: Option<PathBuf>,
    /// The kernel's module directory, lib/modules/<release> (its name is the release)
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules_dir: Option<PathBuf>,
    /// A statically linked busybox
    #[arg(long, value_name = "PATH", default_value = netboot::DEFAULT_BUSYBOX)]
    busybox: PathBuf,
    /// A module to load, with its dependencies (repeat, or separate with commas); replaces
    /// the default list [default: virtio_net virtio_blk virtio_pci nvme ahci sd_mod e1000
    /// e1000e igb, those the kernel has]
    #[arg(long = "module", value_name = "NAME", value_delimiter = ',')]
    modules: Vec<String>,
    /// Where the PXE server serves vmlinuz and initrd.img (http, https or tftp; a final / is
    /// added when missing)
    #[arg(long, value_name = "URL")]
    base_url: String,
    /// The signed provisioning description (flipslot.provision=)
    #[arg(long, value_name = "URL")]
    provision_url: String,
    /// The bundle to install (flipslot.bundle=)
    #[arg(long, value_name = "URL")]
    bundle_url: String,
    /// The disk to provision (flipslot.disk=); else the description's target rule picks it
    #[arg(long, value_name = "DEV")]
    disk: Option<String>,
    /// Allow wiping a disk that holds data (flipslot.wipe=1; honoured only when the
    /// description allows it)
    #[arg(long)]
    wipe: bool,
    /// Where the agent posts a JSON report per step (flipslot.report=)
    #[arg(long, value_name = "URL")]
    report_url: Option<String>,
    /// More kernel command line words, separated by spaces (e.g. "flipslot.noreboot=1")
    #[arg(long, value_name = "WORDS", allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// The output directory (created if missing; existing files of the same names are
    /// replaced)
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Print the result as one JSON object on standard output
    #[arg(long)]
    json: bool,
}

impl NetbootArgs {
    /// The library's options for these arguments, with `timestamp` for the archive.
    fn options(&self, timestamp: u64) -> NetbootOptions {
        let kernel = match (&self.kernel_deb, &self.kernel_tree, &self.kernel) {
            (Some(deb), _, _) => KernelSource::Deb(deb.clone()),
            (None, Some(tree), _) => KernelSource::Tree(tree.clone()),
            (None, None, kernel) => KernelSource::Files {
                // clap requires one of the three, and --modules-dir with --kernel.
                kernel: kernel.clone().unwrap_or_default(),
                modules_dir: self.modules_dir.clone().unwrap_or_default(),
            },
        };
        let boot = BootParams {
            base_url: self.base_url.clone(),
            provision_url: self.provision_url.clone(),
            bundle_url: self.bundle_url.clone(),
            disk: self.disk.clone(),
            wipe: self.wipe,
            report_url: self.report_url.clone(),
            extra: self
                .cmdline
                .as_deref()
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect(),
        };
        let mut opts = NetbootOptions::new(&self.agent, &self.keyring, kernel, boot, &self.out_dir);
        opts.busybox = self.busybox.clone();
        opts.modules = (!self.modules.is_empty()).then(|| self.modules.clone());
        opts.timestamp = timestamp;
        opts
    }
}

/// Runs `netboot`.
pub fn run(args: &NetbootArgs) -> anyhow::Result<()> {
    let mut reporter = Reporter::new(if args.json {
        ProgressMode::Json
    } else {
        ProgressMode::Quiet
    });
    let result = build(args);
    match result {
        Ok(summary) => {
            if reporter.is_json() {
                let mut json = serde_json::to_value(&summary)?;
                if let Some(map) = json.as_object_mut() {
                    map.insert("ok".into(), serde_json::json!(true));
                    map.insert("out_dir".into(), serde_json::json!(args.out_dir));
                }
                reporter.event("done", json);
            } else {
                print!("{}", human_summary(&args.out_dir, &summary));
            }
            Ok(())
        }
        Err(e) => {
            reporter.event(
                "done",
                serde_json::json!({ "ok": false, "error": flipslot_cli_support::error_chain(&e) }),
            );
            Err(e)
        }
    }
}

fn build(args: &NetbootArgs) -> anyhow::Result<NetbootSummary> {
    let timestamp = crate::mkfs::source_date_epoch()?.unwrap_or(0);
    let opts = args.options(timestamp);
    let summary = netboot::build_netboot(&opts).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "cannot build the netboot files in {}",
            args.out_dir.display()
        ))
    })?;
    Ok(summary)
}

/// The summary for people: the files, the kernel, the modules and the command line.
fn human_summary(out_dir: &std::path::Path, s: &NetbootSummary) -> String {
    let mut out = format!(
        "{}: netboot files for kernel {} ({} module files, {} keys)\n",
        out_dir.display(),
        s.kernel_version,
        s.modules.len(),
        s.key_ids.len()
    );
    for f in &s.files {
        out.push_str(&format!(
            "  {:<11} {:>10}  sha256 {}\n",
            f.name,
            format_bytes(f.size),
            f.sha256
        ));
    }
    if !s.modules_missing.is_empty() {
        out.push_str(&format!(
            "  modules not in this kernel: {}\n",
            s.modules_missing.join(" ")
        ));
    }
    out.push_str(&format!("  cmdline: {}\n", s.cmdline));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: NetbootArgs,
    }

    fn parse(extra: &[&str]) -> Result<NetbootArgs, clap::Error> {
        let mut argv = vec![
            "x",
            "--agent",
            "flipslot",
            "--keyring",
            "k.pub",
            "--base-url",
            "http://h/pxe/",
            "--provision-url",
            "http://h/p.json",
            "--bundle-url",
            "http://h/b.fsb",
            "--out-dir",
            "out",
        ];
        argv.extend_from_slice(extra);
        let m = Wrapper::command().try_get_matches_from(argv)?;
        Ok(Wrapper::from_arg_matches(&m)?.args)
    }

    #[test]
    fn exactly_one_kernel_source() {
        Wrapper::command().debug_assert();
        assert!(parse(&[]).is_err());
        let a = parse(&["--kernel-deb", "k.deb"]).unwrap();
        assert_eq!(a.options(0).kernel, KernelSource::Deb("k.deb".into()));
        let a = parse(&["--kernel-tree", "t"]).unwrap();
        assert_eq!(a.options(0).kernel, KernelSource::Tree("t".into()));
        let a = parse(&["--kernel", "vmlinuz", "--modules-dir", "m/6.1"]).unwrap();
        assert_eq!(
            a.options(0).kernel,
            KernelSource::Files {
                kernel: "vmlinuz".into(),
                modules_dir: "m/6.1".into()
            }
        );
        assert!(parse(&["--kernel", "vmlinuz"]).is_err());
        assert!(parse(&["--modules-dir", "m"]).is_err());
        assert!(parse(&["--kernel-deb", "k.deb", "--kernel-tree", "t"]).is_err());
    }

    #[test]
    fn options_carry_modules_and_words() {
        let a = parse(&[
            "--kernel-deb",
            "k.deb",
            "--module",
            "virtio_net,e1000",
            "--module",
            "igb",
            "--cmdline",
            " flipslot.noreboot=1  quiet ",
            "--wipe",
            "--disk",
            "/dev/vda",
        ])
        .unwrap();
        let o = a.options(7);
        assert_eq!(o.modules.unwrap(), ["virtio_net", "e1000", "igb"]);
        assert_eq!(o.boot.extra, ["flipslot.noreboot=1", "quiet"]);
        assert!(o.boot.wipe);
        assert_eq!(o.boot.disk.as_deref(), Some("/dev/vda"));
        assert_eq!(o.timestamp, 7);
        assert!(parse(&["--kernel-deb", "k.deb"])
            .unwrap()
            .options(0)
            .modules
            .is_none());
    }
}
