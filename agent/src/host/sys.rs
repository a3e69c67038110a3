//! The only module of the agent that makes system calls beyond plain file I/O (ioctls,
//! device numbers, locks, reboot). Subprocesses and atomic file replacement live in
//! [`flipslot_os`], the only other place allowed to make system calls.
//!
//! `unsafe` is allowed here and only here, for the `BLKGETSIZE64` ioctl; each use states
//! its invariant.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

// BLKGETSIZE64 is `_IOR(0x12, 114, size_t)` in <linux/fs.h>: the request number encodes
// `sizeof(size_t)` although the kernel always writes a u64.
nix::ioctl_read_bad!(
    blkgetsize64,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()),
    u64
);

// BLKRRPART is `_IO(0x12, 95)` in <linux/fs.h>: re-read the partition table.
nix::ioctl_none_bad!(blkrrpart, nix::request_code_none!(0x12, 95));

/// Asks the kernel to re-read the partition table of the block device at `path` (no-op
/// for a regular file), so the partitions just written get device nodes.
pub fn reread_partitions(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    if !file.metadata()?.file_type().is_block_device() {
        return Ok(());
    }
    // SAFETY: the fd is open for the lifetime of `file`; BLKRRPART takes no argument.
    unsafe { blkrrpart(file.as_raw_fd()) }.map_err(io::Error::from)?;
    Ok(())
}

/// The size in bytes of a block device (via `BLKGETSIZE64`) or of a regular file.
pub fn block_device_size(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    let mut size: u64 = 0;
    // SAFETY: the fd is open for the lifetime of `file`, and BLKGETSIZE64 writes exactly
    // one u64 through the pointer, which points to a live, writable local u64.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// The `(major, minor)` numbers of the block device at `path` (symlinks followed);
/// `None` if it is not a block device.
pub fn device_numbers(path: &Path) -> io::Result<Option<(u64, u64)>> {
    let meta = std::fs::metadata(path)?;
    if !meta.file_type().is_block_device() {
        return Ok(None);
    }
    let rdev = meta.rdev();
    Ok(Some((
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev),
    )))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn regular_file_size_and_numbers() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0u8; 4096 + 7]).unwrap();
        assert_eq!(block_device_size(f.as_file()).unwrap(), 4103);
        assert_eq!(device_numbers(f.path()).unwrap(), None);
        assert!(device_numbers(Path::new("/nonexistent/dev")).is_err());
    }

    /// Without a block device to test on: skips with a message, or fails under `CI=true`
    /// (CI runs as root, with losetup).
    fn no_block_device(why: &str) {
        let msg = format!("block_device_if_available: {why}; the ioctl path is not exercised");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped {msg}");
    }

    /// Checks the size ioctl against seeking to the end; `None` when `path` does not open.
    fn ioctl_size_matches_seek(path: &Path) -> Option<u64> {
        let mut f = File::open(path).ok()?;
        let size = block_device_size(&f).unwrap();
        // Seeking to the end of a block device also yields its size.
        let end = std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).unwrap();
        assert_eq!(size, end, "{}", path.display());
        eprintln!("{}: {size} bytes", path.display());
        Some(size)
    }

    /// A loop device over a temporary file, detached on drop.
    struct LoopDevice {
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl LoopDevice {
        fn attach(len: u64) -> Result<LoopDevice, String> {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let backing = dir.path().join("backing.img");
            File::create(&backing)
                .and_then(|f| f.set_len(len))
                .map_err(|e| format!("cannot create {}: {e}", backing.display()))?;
            let out = std::process::Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&backing)
                .output()
                .map_err(|e| format!("cannot run losetup: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "losetup failed (root needed): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let path = String::from_utf8_lossy(&out.stdout).trim().into();
            Ok(LoopDevice { path, _dir: dir })
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let detached = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&self.path)
                .status();
            if !detached.is_ok_and(|s| s.success()) {
                eprintln!("cannot detach {}", self.path.display());
            }
        }
    }

    /// Exercises the ioctl on a block device: any non-empty one this machine lets us open,
    /// else a loop device made for it.
    #[test]
    fn block_device_if_available() {
        if let Ok(entries) = std::fs::read_dir("/dev") {
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(Some((major, _))) = device_numbers(&path) else {
                    continue;
                };
                assert!(major > 0 || path.to_string_lossy().contains("ram"));
                if ioctl_size_matches_seek(&path).is_some_and(|size| size > 0) {
                    return;
                }
            }
        }
        // None opens here (a container may list devices it may not open).
        match LoopDevice::attach(1 << 20) {
            Ok(dev) => assert_eq!(ioctl_size_matches_seek(&dev.path), Some(1 << 20)),
            Err(why) => no_block_device(&format!("no readable non-empty block device and {why}")),
        }
    }
}

/// Opens a file or block device for reading and writing, with `O_DIRECT` when `direct`.
pub fn open_rw(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// An exclusive advisory lock, held until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _lock: nix::fcntl::Flock<File>,
    path: std::path::PathBuf,
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock on `path` (created if missing) without waiting. When another
/// process holds it the error is [`io::ErrorKind::WouldBlock`] and names the file.
pub fn lock_exclusive(path: &Path) -> io::Result<LockGuard> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(LockGuard {
            _lock: lock,
            path: path.to_path_buf(),
        }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "another flipslot process holds the lock {}: an install or health run is \
                 in progress; try again when it has finished",
                path.display()
            ),
        )),
        Err((_, e)) => Err(io::Error::from(e)),
    }
}

/// Whether systemd is the running init (its runtime directory exists under `root`).
pub fn systemd_running(root: &crate::host::paths::Root) -> bool {
    root.resolve(Path::new(crate::host::paths::SYSTEMD_RUNTIME_DIR))
        .is_dir()
}

/// Reboots the machine: through systemd when it runs (a clean shutdown), else by syncing
/// the filesystems and calling reboot(2) directly.
pub fn reboot(root: &crate::host::paths::Root) -> io::Result<()> {
    if systemd_running(root) {
        match flipslot_os::process::Cmd::new("systemctl")
            .arg("reboot")
            .run()
        {
            Ok(_) => return Ok(()),
            Err(e) => log::warn!("{e}; rebooting directly"),
        }
    }
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Powers the machine off immediately, without syncing: a simulated power cut for
/// failpoints in test VMs.
pub fn power_cut() {
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    eprintln!("flipslot: power cut failed: {e}");
}
