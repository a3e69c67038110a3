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

    /// Exercises the ioctl on any block device this machine lets us open.
    #[test]
    fn block_device_if_available() {
        let Ok(entries) = std::fs::read_dir("/dev") else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(Some((major, _))) = device_numbers(&path) else {
                continue;
            };
            assert!(major > 0 || path.to_string_lossy().contains("ram"));
            let Ok(mut f) = File::open(&path) else {
                continue;
            };
            let size = block_device_size(&f).unwrap();
            // Seeking to the end of a block device also yields its size.
            let end = std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).unwrap();
            assert_eq!(size, end, "{}", path.display());
            eprintln!("{}: {size} bytes", path.display());
            if size > 0 {
                return;
            }
        }
        eprintln!("no readable non-empty block device; ioctl path not fully exercised");
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
pub fn systemd_running(root: &crate::paths::Root) -> bool {
    root.resolve(Path::new(crate::paths::SYSTEMD_RUNTIME_DIR))
        .is_dir()
}

/// Reboots the machine: through systemd when it runs (a clean shutdown), else by syncing
/// the filesystems and calling reboot(2) directly.
pub fn reboot(root: &crate::paths::Root) -> io::Result<()> {
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
