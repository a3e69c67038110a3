//! The files a PXE server serves to provision bare machines: a kernel, an initramfs that runs
//! `flipslot provision`, and the iPXE script that boots them.
//!
//! [`build_netboot`] writes into the output directory:
//!
//! - `vmlinuz`: the kernel image, copied from a Debian `linux-image-<release>` package, an
//!   unpacked one, or a file ([`KernelSource`]);
//! - `initrd.img`: an uncompressed `newc` cpio ([`cpio`]) holding busybox-static, `/init`,
//!   the udhcpc script, the agent as `/usr/bin/flipslot`, the keyring in
//!   `/etc/flipslot/provision-keys/`, the host's `mke2fs` with its shared libraries, and the
//!   kernel modules the NICs and disks need ([`initramfs`] has the table);
//! - `boot.ipxe`: `kernel`, `initrd` and `boot` with the command line of [`ipxe`];
//! - `netboot.json`: what was built ([`NetbootSummary`]): the SHA-256 and size of each file,
//!   the kernel release, the kernel command line and the module files in load order.
//!
//! # The boot
//!
//! The machine's firmware loads iPXE (or is iPXE), which runs `boot.ipxe`, fetches `vmlinuz`
//! and `initrd.img` from the base URL and starts the kernel. `/init` mounts `/proc`, `/sys`,
//! `/dev` (devtmpfs), `/tmp` and `/run`, loads the modules of `/etc/netboot-modules` with
//! `insmod`, takes a DHCP lease with busybox `udhcpc` on the first interface that gets one,
//! and runs `flipslot provision --description <flipslot.provision> --bundle
//! <flipslot.bundle> --keyring /etc/flipslot/provision-keys [--disk ..] [--wipe]
//! [--report-url ..]`. On success it reboots (the written disk boots next); on failure it
//! powers off after 10 s. It prints `FLIPSLOT-NETBOOT: starting provision`,
//! `FLIPSLOT-NETBOOT: provision rc=<rc>` and, on any failure, `FLIPSLOT-NETBOOT-FAIL:
//! <reason>` on the console.
//!
//! # Modules
//!
//! Module names ([`modules::DEFAULT_MODULES`] unless named) are resolved with the host's
//! `modprobe --show-depends` against a private copy of the kernel's module index made with
//! `depmod -b` ([`kernel`]); the input tree is never written to. Default names the kernel
//! lacks are left out with a warning; names given explicitly must exist.
//!
//! # Reproducibility
//!
//! The same inputs give byte-identical `vmlinuz`, `initrd.img`, `boot.ipxe` and
//! `netboot.json`: archive entries go in a fixed order, owned by 0:0, with inode numbers
//! counting up and one mtime ([`NetbootOptions::timestamp`], from `SOURCE_DATE_EPOCH`, else
//! 0); nothing records the build's time or its temporary paths.
//!
//! Subprocesses (`dpkg-deb`, `depmod`, `modprobe`, `busybox --list`, `ldd`, and `xz`/`zstd`/
//! `gzip` for compressed modules) run through [`flipslot_os::process::Cmd`]; output files
//! are replaced atomically ([`flipslot_os::fs::AtomicFile`]).

pub mod cpio;
pub mod elf;
pub mod initramfs;
pub mod ipxe;
pub mod kernel;
pub mod libs;
pub mod modules;

mod build;
mod keys;

pub use build::build_netboot;
pub use ipxe::BootParams;
pub use kernel::KernelSource;

use std::io;
use std::path::{Path, PathBuf};

use flipslot_format::error::BundleError;
use flipslot_os::fs::AtomicWriteError;
use flipslot_os::process::CommandError;

/// Where Debian's `busybox-static` installs busybox.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// Where the host's mke2fs configuration is read from.
pub const DEFAULT_MKE2FS_CONF: &str = "/etc/mke2fs.conf";
/// The name of the description of what was built.
pub const SUMMARY_NAME: &str = "netboot.json";
/// The `format` of `netboot.json`.
pub const SUMMARY_FORMAT: u32 = 1;

/// Why building the netboot files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetbootError {
    /// A URL, device or command line word that would not reach the agent unchanged.
    #[error("{what} {value:?} {reason}")]
    BootParam {
        /// The option, e.g. `--bundle-url`.
        what: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An input file is not what it must be (a dynamically linked busybox, say).
    #[error("{what}: {reason}")]
    Input {
        /// The option and file concerned.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The kernel or its modules cannot be found or used.
    #[error("kernel: {reason}")]
    Kernel {
        /// What is wrong.
        reason: String,
    },
    /// A module asked for by name is not in the kernel.
    #[error("kernel {release} has no module {name}")]
    ModuleMissing {
        /// The module name.
        name: String,
        /// The kernel release.
        release: String,
    },
    /// The keyring cannot be loaded (no `*.pub`, or a file that is not an ed25519 key).
    #[error("keyring")]
    Keyring(#[source] BundleError),
    /// A file operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: String,
        /// The file concerned.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// An external program was missing, could not be started or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The archive could not be written.
    #[error(transparent)]
    Cpio(#[from] cpio::CpioError),
    /// An output file could not be replaced.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// Makes a [`NetbootError::Io`] naming `action` and `path`.
pub(crate) fn io_err(action: &str, path: &Path) -> impl FnOnce(io::Error) -> NetbootError {
    let action = action.to_string();
    let path = path.to_path_buf();
    move |source| NetbootError::Io {
        action,
        path,
        source,
    }
}

/// What [`build_netboot`] builds from.
#[derive(Debug, Clone)]
pub struct NetbootOptions {
    /// The agent: a static `flipslot` binary (a dynamically linked one is refused).
    pub agent: PathBuf,
    /// The keyring: one public key file, or a directory of `*.pub`.
    pub keyring: PathBuf,
    /// The kernel and its modules.
    pub kernel: KernelSource,
    /// A statically linked busybox.
    pub busybox: PathBuf,
    /// Module names to load (with their dependencies), each required; `None` loads
    /// [`modules::DEFAULT_MODULES`], leaving out those the kernel lacks.
    pub modules: Option<Vec<String>>,
    /// The URLs and words of the kernel command line.
    pub boot: BootParams,
    /// The output directory (created if missing).
    pub out_dir: PathBuf,
    /// The mtime of every archive entry (seconds since 1970): `SOURCE_DATE_EPOCH` or 0.
    pub timestamp: u64,
    /// The mke2fs to carry (a bare name is looked up as [`flipslot_os::process::Cmd`] does).
    pub mke2fs: String,
    /// The mke2fs configuration to carry when the file exists.
    pub mke2fs_conf: PathBuf,
}

impl NetbootOptions {
    /// Options with the default busybox, modules, mke2fs, and timestamp 0.
    pub fn new(
        agent: impl Into<PathBuf>,
        keyring: impl Into<PathBuf>,
        kernel: KernelSource,
        boot: BootParams,
        out_dir: impl Into<PathBuf>,
    ) -> NetbootOptions {
        NetbootOptions {
            agent: agent.into(),
            keyring: keyring.into(),
            kernel,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            modules: None,
            boot,
            out_dir: out_dir.into(),
            timestamp: 0,
            mke2fs: "mke2fs".into(),
            mke2fs_conf: PathBuf::from(DEFAULT_MKE2FS_CONF),
        }
    }
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputFile {
    /// Its name in the output directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

/// What was built: the contents of `netboot.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetbootSummary {
    /// [`SUMMARY_FORMAT`].
    pub format: u32,
    /// The kernel release (`uname -r`).
    pub kernel_version: String,
    /// `vmlinuz`, `initrd.img` and `boot.ipxe`.
    pub files: Vec<OutputFile>,
    /// The kernel command line `boot.ipxe` sets.
    pub cmdline: String,
    /// The module files in the initramfs, in load order (`lib/modules/...`).
    pub modules: Vec<String>,
    /// The module names asked for (or the defaults).
    pub modules_requested: Vec<String>,
    /// Names built into the kernel (no file needed).
    pub modules_builtin: Vec<String>,
    /// Default names the kernel does not have, left out.
    pub modules_missing: Vec<String>,
    /// The SHA-256 of the agent binary.
    pub agent_sha256: String,
    /// The SHA-256 of the busybox binary.
    pub busybox_sha256: String,
    /// The key ids of the keyring.
    pub key_ids: Vec<String>,
    /// Host programs and libraries carried, at their paths in the initramfs.
    pub host_files: Vec<String>,
    /// The mtime of the archive entries.
    pub timestamp: u64,
}
