//! A reproducible writer of `newc` cpio archives, the format of a Linux initramfs.
//!
//! Each entry is the 6-byte magic `070701`, then 13 fields of 8 upper-case hex digits (ino,
//! mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
//! namesize counting the NUL, check = 0), the NUL-terminated name padded with zeros to a
//! multiple of 4 bytes (counting the 110-byte header), then the data padded to 4. The archive
//! ends with an entry named `TRAILER!!!`.
//!
//! Reproducible by construction: entries are written in the order they are added, every
//! entry is owned by 0:0 and carries the one mtime given to [`CpioWriter::new`], inode
//! numbers count up from 1, and nothing is read from the host. Device nodes (`/dev/console`)
//! are header fields only, so no root is needed. Parent directories are added (mode 0755)
//! before the first entry inside them.
//!
//! Writes go to any [`std::io::Write`]; the writer does no I/O of its own.

use std::collections::BTreeMap;
use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The magic of a `newc` header.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The size of a `newc` header.
pub const HEADER_LEN: usize = 110;
/// The name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The longest entry name accepted, in bytes (Linux's `PATH_MAX` less the NUL).
pub const MAX_NAME_LEN: usize = 4095;

/// Why an entry cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpioError {
    /// The path is empty, too long, has an empty, `.` or `..` component or a NUL.
    #[error("cpio path {path:?} is not valid: {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An entry of that path was added before.
    #[error("cpio entry {path} added twice")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// A parent of the path is an entry that is not a directory.
    #[error("cpio entry {path} is inside {parent}, which is not a directory")]
    ParentNotDir {
        /// The path.
        path: String,
        /// The parent that is not a directory.
        parent: String,
    },
    /// The data does not fit the 32-bit size field.
    #[error("cpio entry {path} is {size} bytes, more than the format's 4 GiB")]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The mtime does not fit the 32-bit field (after February 2106).
    #[error("cpio mtime {0} does not fit 32 bits")]
    Mtime(u64),
    /// Writing to the underlying writer failed.
    #[error("cannot write the cpio archive")]
    Io(#[from] io::Error),
}

/// A `newc` archive being written to `W`.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    /// Bytes written so far (for padding).
    pos: u64,
    next_ino: u32,
    mtime: u32,
    /// Every entry so far, and whether it is a directory.
    names: BTreeMap<String, bool>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`; every entry gets `mtime` (seconds since 1970).
    pub fn new(out: W, mtime: u64) -> Result<CpioWriter<W>, CpioError> {
        let mtime = u32::try_from(mtime).map_err(|_| CpioError::Mtime(mtime))?;
        Ok(CpioWriter {
            out,
            pos: 0,
            next_ino: 0,
            mtime,
            names: BTreeMap::new(),
        })
    }

    /// Adds a directory (`path` relative or absolute: `lib/modules` and `/lib/modules` are
    /// the same entry). Adding an existing directory again does nothing.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let path = clean(path)?;
        match self.names.get(&path) {
            Some(true) => return Ok(()),
            Some(false) => return Err(CpioError::Duplicate { path }),
            None => {}
        }
        self.parents(&path)?;
        self.entry(&path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let path = self.new_name(path)?;
        self.entry(&path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link pointing to `target` (stored as the entry's data).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path = self.new_name(path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node `major:minor`.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let path = self.new_name(path)?;
        self.entry(&path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Whether an entry of that path has been added (explicitly or as a parent).
    pub fn contains(&self, path: &str) -> bool {
        clean(path).is_ok_and(|p| self.names.contains_key(&p))
    }

    /// Writes the trailer and returns the writer (not flushed).
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.header(TRAILER, 0, 0, 1, 0, (0, 0), 0)?;
        self.pad()?;
        Ok(self.out)
    }

    fn new_name(&mut self, path: &str) -> Result<String, CpioError> {
        let path = clean(path)?;
        if self.names.contains_key(&path) {
            return Err(CpioError::Duplicate { path });
        }
        self.parents(&path)?;
        Ok(path)
    }

    /// Adds the missing parent directories of `path`, outermost first.
    fn parents(&mut self, path: &str) -> Result<(), CpioError> {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            let parent = &path[..end];
            match self.names.get(parent) {
                Some(true) => {}
                Some(false) => {
                    return Err(CpioError::ParentNotDir {
                        path: path.to_string(),
                        parent: parent.to_string(),
                    })
                }
                None => self.entry(parent, S_IFDIR | 0o755, 2, (0, 0), &[])?,
            }
            end += 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), CpioError> {
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: path.to_string(),
            size: data.len() as u64,
        })?;
        self.next_ino += 1;
        let (ino, mtime) = (self.next_ino, self.mtime);
        self.header(path, ino, mode, nlink, size, rdev, mtime)?;
        self.write(data)?;
        self.pad()?;
        self.names
            .insert(path.to_string(), mode & S_IFDIR == S_IFDIR);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the header's own fields
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
        mtime: u32,
    ) -> Result<(), CpioError> {
        // `clean` bounds names at MAX_NAME_LEN bytes, so this cannot saturate.
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut head = Vec::with_capacity(HEADER_LEN + name.len() + 1);
        head.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            head.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        self.write(&head)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let n = (4 - self.pos % 4) % 4;
        self.write(&[0u8; 3][..n as usize])
    }
}

/// The archive name of `path`: leading and trailing `/` removed; empty, `.` or `..`
/// components, NULs and names longer than [`MAX_NAME_LEN`] refused.
fn clean(path: &str) -> Result<String, CpioError> {
    let bad = |reason| CpioError::BadPath {
        path: path.to_string(),
        reason,
    };
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(bad("too long"));
    }
    if trimmed.contains('\0') {
        return Err(bad("contains a NUL"));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("has an empty, . or .. component"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut CpioWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new(), 1_700_000_000).unwrap();
        build(&mut w);
        w.finish().unwrap()
    }

    /// Field `i` (0 = ino) of the header at `at`.
    fn field(bytes: &[u8], at: usize, i: usize) -> u32 {
        let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn header_layout_and_padding() {
        let bytes = archive(|w| w.file("x", 0o644, b"abc").unwrap());
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6..14], b"00000001"); // ino
        assert_eq!(&bytes[14..22], b"000081A4"); // mode 0100644
        assert_eq!(field(&bytes, 0, 5), 1_700_000_000); // mtime
        assert_eq!(&bytes[54..62], b"00000003"); // filesize
        assert_eq!(&bytes[94..102], b"00000002"); // namesize
        assert_eq!(&bytes[110..112], b"x\0"); // 110 + 2: aligned
        assert_eq!(&bytes[112..116], b"abc\0"); // data padded to 4
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(&bytes[116 + 110..116 + 121], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn parents_come_first_and_once() {
        let bytes = archive(|w| {
            w.file("/lib/modules/a.ko", 0o644, b"").unwrap();
            w.file("lib/modules/b.ko", 0o644, b"").unwrap();
            w.dir("lib", 0o700).unwrap();
            assert!(w.contains("lib") && w.contains("/lib/modules/"));
        });
        let text = String::from_utf8_lossy(&bytes);
        let order: Vec<usize> = ["lib\0", "lib/modules\0", "a.ko\0", "b.ko\0", "TRAILER"]
            .iter()
            .map(|n| text.find(n).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(text.matches("lib/modules\0").count(), 1);
    }

    #[test]
    fn bad_paths_and_duplicates_are_refused() {
        let mut w = CpioWriter::new(Vec::new(), 0).unwrap();
        w.file("bin/sh", 0o755, b"").unwrap();
        assert!(matches!(
            w.file("bin/sh", 0o755, b""),
            Err(CpioError::Duplicate { .. })
        ));
        assert!(matches!(
            w.dir("bin/sh", 0o755),
            Err(CpioError::Duplicate { .. })
        ));
        assert!(matches!(
            w.file("bin/sh/x", 0o644, b""),
            Err(CpioError::ParentNotDir { .. })
        ));
        for bad in ["", "/", "a//b", "../x", "a/./b", "a\0b"] {
            assert!(
                matches!(w.file(bad, 0o644, b""), Err(CpioError::BadPath { .. })),
                "{bad:?}"
            );
        }
        assert!(w.file(&"a".repeat(MAX_NAME_LEN + 1), 0o644, b"").is_err());
        assert!(matches!(
            CpioWriter::new(Vec::new(), 1 << 32),
            Err(CpioError::Mtime(_))
        ));
    }

    #[test]
    fn device_nodes_and_symlinks() {
        let bytes = archive(|w| {
            w.char_dev("dev/console", 0o600, 5, 1).unwrap();
            w.symlink("bin/sh", "busybox").unwrap();
        });
        // Entries: dev (dir), dev/console, bin (dir), bin/sh.
        let at = bytes
            .windows(12)
            .position(|w| w == b"dev/console\0")
            .unwrap()
            - HEADER_LEN;
        assert_eq!(field(&bytes, at, 1), 0o020_600);
        assert_eq!((field(&bytes, at, 9), field(&bytes, at, 10)), (5, 1));
        let link = bytes.windows(7).position(|w| w == b"bin/sh\0").unwrap() - HEADER_LEN;
        assert_eq!(field(&bytes, link, 1), 0o120_777);
        assert_eq!(field(&bytes, link, 6), 7);
        assert_eq!(field(&bytes, link, 0), 4); // inodes count up in order
    }
}
