//! The provisioning initramfs: what goes where, written as a `newc` cpio through
//! [`super::cpio::CpioWriter`].
//!
//! | path | what |
//! |---|---|
//! | `/dev/console`, `/dev/null` | device nodes (5:1 and 1:3), so `/init` has a console before devtmpfs |
//! | `/proc`, `/sys`, `/tmp`, `/run`, `/etc` | mount points and a writable `/etc` |
//! | `/init` | [`INIT_SCRIPT`] (`init.sh`) |
//! | `/<host path of mke2fs>` and its libraries | the host's `mke2fs` and what `ldd` lists, at their host paths |
//! | `/etc/mke2fs.conf` | the host's, when it has one |
//! | `/bin/busybox`, `/bin/<applet>` | busybox-static, a symbolic link per applet (except names a carried program has) |
//! | `/usr/share/flipslot/udhcpc.script` | [`UDHCPC_SCRIPT`] (`udhcpc.sh`) |
//! | `/usr/bin/flipslot` | the agent |
//! | `/etc/flipslot/provision-keys/*.pub` | the keyring |
//! | `/lib/modules/<release>/...ko` | the modules, uncompressed |
//! | `/etc/netboot-modules` | their absolute paths in load order, one a line |
//!
//! Entries are written in the order of this table, so the same inputs give the same bytes.

use std::io::Write;

use super::cpio::CpioWriter;
use super::libs::{archive_path, HostProgram};
use super::modules::{read_module, ModuleFile};
use super::{io_err, NetbootError};

/// `/init`: mounts, modules, network, then `flipslot provision` (see the script's header).
pub const INIT_SCRIPT: &str = include_str!("init.sh");
/// The udhcpc script that applies a lease (address, default route, resolv.conf).
pub const UDHCPC_SCRIPT: &str = include_str!("udhcpc.sh");

/// Where the agent goes.
pub const AGENT_PATH: &str = "usr/bin/flipslot";
/// Where the keyring's `*.pub` files go.
pub const KEYRING_DIR: &str = "etc/flipslot/provision-keys";
/// The list of module files, in load order.
pub const MODULE_LIST: &str = "etc/netboot-modules";
/// Where the udhcpc script goes.
pub const UDHCPC_PATH: &str = "usr/share/flipslot/udhcpc.script";
/// Where busybox goes; its applet links are beside it.
pub const BUSYBOX_PATH: &str = "bin/busybox";
/// Where the host's mke2fs configuration goes.
pub const MKE2FS_CONF_PATH: &str = "etc/mke2fs.conf";

/// Directories made first, with their modes.
const DIRS: [(&str, u32); 10] = [
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("etc", 0o755),
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
];

/// Everything that goes into the initramfs besides the fixed scripts.
#[derive(Debug, Clone, Copy)]
pub struct InitramfsInputs<'a> {
    /// The static busybox binary.
    pub busybox: &'a [u8],
    /// Its applet names (`busybox --list`).
    pub applets: &'a [String],
    /// The agent binary.
    pub agent: &'a [u8],
    /// The keyring: file name (ending in `.pub`) and contents, in order.
    pub keys: &'a [(String, Vec<u8>)],
    /// Host programs carried with their libraries (`mke2fs`).
    pub programs: &'a [HostProgram],
    /// The host's `/etc/mke2fs.conf`, if any.
    pub mke2fs_conf: Option<&'a [u8]>,
    /// The module files in load order.
    pub modules: &'a [ModuleFile],
}

/// Writes the initramfs of `inputs` to `out` with every mtime `mtime`; returns `out`.
pub fn write_initramfs<W: Write>(
    out: W,
    inputs: &InitramfsInputs<'_>,
    mtime: u64,
) -> Result<W, NetbootError> {
    let mut a = CpioWriter::new(out, mtime)?;
    for (dir, mode) in DIRS {
        a.dir(dir, mode)?;
    }
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.char_dev("dev/null", 0o666, 1, 3)?;
    a.file("init", 0o755, INIT_SCRIPT.as_bytes())?;

    let mut program_names = Vec::new();
    for program in inputs.programs {
        for path in std::iter::once(&program.path).chain(&program.libraries) {
            let inside = archive_path(path)?;
            if a.contains(&inside) {
                continue;
            }
            let data = std::fs::read(path).map_err(io_err("read", path))?;
            a.file(&inside, 0o755, &data)?;
        }
        if let Some(name) = program.path.file_name().and_then(|n| n.to_str()) {
            program_names.push(name.to_string());
        }
    }
    if let Some(conf) = inputs.mke2fs_conf {
        a.file(MKE2FS_CONF_PATH, 0o644, conf)?;
    }

    a.file(BUSYBOX_PATH, 0o755, inputs.busybox)?;
    let bin_dir = BUSYBOX_PATH.rsplit_once('/').map_or("", |(dir, _)| dir);
    for applet in inputs.applets {
        let link = format!("{bin_dir}/{applet}");
        let shadowed = program_names.contains(applet) || a.contains(&link);
        if applet == "busybox" || applet.contains('/') || applet.is_empty() || shadowed {
            continue;
        }
        a.symlink(&link, "busybox")?;
    }
    a.file(UDHCPC_PATH, 0o755, UDHCPC_SCRIPT.as_bytes())?;
    a.file(AGENT_PATH, 0o755, inputs.agent)?;
    for (name, contents) in inputs.keys {
        a.file(&format!("{KEYRING_DIR}/{name}"), 0o644, contents)?;
    }

    let mut list = String::new();
    for module in inputs.modules {
        let data = read_module(module)?;
        a.file(&module.archive_path, 0o644, &data)?;
        list.push('/');
        list.push_str(&module.archive_path);
        list.push('\n');
    }
    a.file(MODULE_LIST, 0o644, list.as_bytes())?;
    Ok(a.finish()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_paths_they_use() {
        // The init script and this module must agree on every path.
        for path in [AGENT_PATH, KEYRING_DIR, MODULE_LIST, UDHCPC_PATH] {
            assert!(
                INIT_SCRIPT.contains(&format!("=/{path}\n")),
                "init.sh does not name /{path}"
            );
        }
        for marker in [
            "FLIPSLOT-NETBOOT: starting provision",
            "FLIPSLOT-NETBOOT: provision rc=$rc",
            "FLIPSLOT-NETBOOT-FAIL: ",
            "udhcpc -i \"$nic\" -s \"$UDHCPC_SCRIPT\" -q -n -t 10",
            "mount -t devtmpfs",
        ] {
            assert!(INIT_SCRIPT.contains(marker), "{marker}");
        }
    }

    #[test]
    fn applets_do_not_shadow_carried_programs() {
        let applets: Vec<String> = ["sh", "mke2fs", "busybox", "ip"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let keys = vec![("release.pub".to_string(), b"key".to_vec())];
        let dir = tempfile::tempdir().unwrap();
        let mke2fs = dir.path().join("mke2fs");
        std::fs::write(&mke2fs, b"mke2fs").unwrap();
        let programs = [HostProgram {
            path: mke2fs.clone(),
            libraries: Vec::new(),
        }];
        let inputs = InitramfsInputs {
            busybox: b"bb",
            applets: &applets,
            agent: b"agent",
            keys: &keys,
            programs: &programs,
            mke2fs_conf: None,
            modules: &[],
        };
        let bytes = write_initramfs(Vec::new(), &inputs, 0).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/sh\0") && text.contains("bin/ip\0"));
        assert!(!text.contains("bin/mke2fs\0"), "the applet shadows mke2fs");
        assert!(text.contains(&format!("{}\0", archive_path(&mke2fs).unwrap())));
        assert!(text.contains("etc/flipslot/provision-keys/release.pub\0"));

        // A program that cannot be read: the error names it.
        std::fs::remove_file(&mke2fs).unwrap();
        let err = write_initramfs(Vec::new(), &inputs, 0).unwrap_err();
        assert!(err.to_string().contains("mke2fs"), "{err}");
    }
}
