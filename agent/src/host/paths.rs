//! Well-known host paths and the [`Root`] every one of them is resolved against.
//!
//! This module is the only place that spells out fixed host paths. Everything the agent
//! touches goes through [`Root::resolve`], so tests run against a temporary directory
//! that stands in for `/`.

use std::path::{Component, Path, PathBuf};

/// Default location of the system configuration.
pub const DEFAULT_CONFIG: &str = "/etc/flipslot/system.toml";
/// Where RAUC looks for its `system.conf`, in order; used when no flipslot config exists.
pub const RAUC_SYSTEM_CONFS: [&str; 3] = [
    "/etc/rauc/system.conf",
    "/run/rauc/system.conf",
    "/usr/lib/rauc/system.conf",
];
/// The U-Boot environment description read by `fw_printenv` and by the U-Boot backend.
pub const FW_ENV_CONFIG: &str = "/etc/fw_env.config";
/// The lock `fw_printenv`/`fw_setenv` (libubootenv) take; the U-Boot backend takes it too.
pub const FW_ENV_LOCK: &str = "/var/lock/fw_printenv.lock";
/// U-Boot's default environment as text, used when no stored copy is valid (as libubootenv does).
pub const UBOOT_INITIAL_ENV: &str = "/etc/u-boot-initial-env";
/// The kernel command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";
/// The mount table of the calling process.
pub const PROC_MOUNTINFO: &str = "/proc/self/mountinfo";
/// Exists while systemd is the running init.
pub const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";
/// udev's symlinks by GPT partition label.
pub const DEV_DISK_BY_PARTLABEL: &str = "/dev/disk/by-partlabel";
/// udev's symlinks by partition UUID (lower-case).
pub const DEV_DISK_BY_PARTUUID: &str = "/dev/disk/by-partuuid";
/// udev's symlinks by file system UUID.
pub const DEV_DISK_BY_UUID: &str = "/dev/disk/by-uuid";
/// Name of the status file inside the configured data directory.
pub const STATUS_FILE_NAME: &str = "status.json";
/// Name of the install lock file inside the configured data directory.
pub const LOCK_FILE_NAME: &str = "install.lock";
/// The daemon's runtime directory (systemd's `RuntimeDirectory=flipslot`).
pub const RUN_DIR: &str = "/run/flipslot";
/// The daemon's local API socket.
pub const DAEMON_SOCKET: &str = "/run/flipslot/flipslot.sock";
/// Name of an inhibit file (in [`RUN_DIR`] and in the data directory by default): while
/// one exists the daemon starts no install and no reboot.
pub const INHIBIT_FILE_NAME: &str = "inhibit";
/// Name of the daemon's state file inside the configured data directory.
pub const DAEMON_STATE_FILE_NAME: &str = "daemon.json";
/// Name of the directory of queued reports inside the configured data directory.
pub const REPORTS_DIR_NAME: &str = "reports";
/// The machine ID (systemd's `machine-id(5)`).
pub const MACHINE_ID: &str = "/etc/machine-id";

/// The directory that stands for `/`: the real root on a host, a temp dir in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// A root at `dir` (used by tests and by tools working on a mounted image).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// The real root directory of the running system.
    pub fn host() -> Self {
        Root(PathBuf::from("/"))
    }

    /// The directory this root stands for.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Whether this is the real `/`.
    pub fn is_host(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// Maps an absolute host path to the corresponding path under this root.
    ///
    /// Leading `/` (and any prefix) are stripped and the rest is joined onto the root;
    /// nothing is rejected and `..` is kept as written. A relative path is simply joined.
    pub fn resolve(&self, abs: &Path) -> PathBuf {
        let rel: PathBuf = abs
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.0.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_root_resolves_to_itself() {
        let root = Root::host();
        assert!(root.is_host());
        assert_eq!(
            root.resolve(Path::new(PROC_CMDLINE)),
            PathBuf::from("/proc/cmdline")
        );
    }

    #[test]
    fn resolves_under_a_directory() {
        let root = Root::new("/tmp/x");
        assert_eq!(
            root.resolve(Path::new(DEFAULT_CONFIG)),
            PathBuf::from("/tmp/x/etc/flipslot/system.toml")
        );
        assert_eq!(
            root.resolve(Path::new("//dev//sda")),
            PathBuf::from("/tmp/x/dev/sda")
        );
        assert_eq!(root.resolve(Path::new("/")), PathBuf::from("/tmp/x"));
        assert_eq!(
            root.resolve(Path::new("rel/a")),
            PathBuf::from("/tmp/x/rel/a")
        );
        assert!(!root.is_host());
    }
}
