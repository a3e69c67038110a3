//! A writer for the `newc` cpio format (the format of a Linux initramfs), so the rig needs no
//! `cpio` tool and no root: device nodes such as `/dev/console` are just header fields.
//!
//! Layout of each entry: the 6-byte magic `070701`, then 13 fields of 8 upper-case hex
//! digits (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
//! rdevminor, namesize including the NUL, check = 0), the NUL-terminated name padded to a
//! multiple of 4 bytes (counting the 110-byte header), then the data padded to 4. The
//! archive ends with an entry named `TRAILER!!!`. Everything is owned by root, with mtime 0,
//! so the same inputs give the same bytes.

use anyhow::{bail, ensure};
use std::collections::BTreeSet;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A cpio archive being built in memory. Parent directories are added automatically.
#[derive(Debug, Default)]
pub struct Archive {
    buf: Vec<u8>,
    next_ino: u32,
    names: BTreeSet<String>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (`path` relative, e.g. `lib/modules`). Adding one twice is a no-op.
    pub fn dir(&mut self, path: &str, perm: u32) -> anyhow::Result<()> {
        let path = clean(path)?;
        if self.names.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.entry(&path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> anyhow::Result<()> {
        let path = self.new_name(path)?;
        self.entry(&path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        let path = self.new_name(path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> anyhow::Result<()> {
        let path = self.new_name(path)?;
        self.entry(&path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Whether an entry of that path has been added.
    pub fn contains(&self, path: &str) -> bool {
        clean(path).is_ok_and(|p| self.names.contains(&p))
    }

    /// Appends the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, 1, 0, (0, 0));
        self.pad();
        self.buf
    }

    fn new_name(&mut self, path: &str) -> anyhow::Result<String> {
        let path = clean(path)?;
        if self.names.contains(&path) {
            bail!("cpio entry {path} added twice");
        }
        self.parents(&path)?;
        Ok(path)
    }

    fn parents(&mut self, path: &str) -> anyhow::Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.names.contains(&prefix) {
                let dir = prefix.clone();
                self.entry(&dir, S_IFDIR | 0o755, 2, (0, 0), &[])?;
            }
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
    ) -> anyhow::Result<()> {
        let Ok(size) = u32::try_from(data.len()) else {
            bail!("cpio entry {path} is larger than 4 GiB");
        };
        self.next_ino += 1;
        let ino = self.next_ino;
        self.header(path, ino, mode, nlink, size, rdev);
        self.buf.extend_from_slice(data);
        self.pad();
        self.names.insert(path.to_string());
        Ok(())
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, size: u32, rdev: (u32, u32)) {
        // Name lengths are checked by `clean` (at most 4096 bytes), so this cannot truncate.
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}

/// Strips leading `/` and rejects empty, `.`/`..` components and over-long names.
fn clean(path: &str) -> anyhow::Result<String> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    ensure!(!trimmed.is_empty(), "empty cpio path {path:?}");
    ensure!(trimmed.len() <= 4096, "cpio path {path:?} is too long");
    for part in trimmed.split('/') {
        ensure!(
            !part.is_empty() && part != "." && part != ".." && !part.contains('\0'),
            "bad cpio path {path:?}"
        );
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn header_layout_and_padding() {
        let mut a = Archive::new();
        a.file("x", 0o644, b"abc").unwrap();
        let bytes = a.finish();
        assert_eq!(&bytes[..6], b"070701");
        // ino 1, mode 0100644, namesize 2
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000081A4");
        assert_eq!(&bytes[54..62], b"00000003");
        assert_eq!(&bytes[94..102], b"00000002");
        // 110 + 2 = 112 (aligned), then 3 bytes of data padded to 4
        assert_eq!(&bytes[110..112], b"x\0");
        assert_eq!(&bytes[112..116], b"abc\0");
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn parents_are_added_once() {
        let mut a = Archive::new();
        a.file("/lib/modules/a.ko", 0o644, b"").unwrap();
        a.file("lib/modules/b.ko", 0o644, b"").unwrap();
        a.dir("lib", 0o755).unwrap();
        assert!(a.contains("lib") && a.contains("/lib/modules"));
        assert!(a.file("lib/modules/a.ko", 0o644, b"").is_err());
        assert!(a.file("../x", 0o644, b"").is_err());
    }

    #[test]
    fn cpio_tool_reads_it() {
        let cpio = crate::host::Need {
            what: "cpio",
            package: "cpio",
        };
        if !crate::host::can_run("cpio_tool_reads_it", &[cpio]) {
            return;
        }
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        a.symlink("bin/sh", "busybox").unwrap();
        a.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let out = crate::cmd::run_with_input(
            std::process::Command::new("cpio").args(["-t", "-v", "--quiet"]),
            Some(&a.finish()),
        )
        .unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("init"), "{listing}");
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
        assert!(listing.contains("crw-------"), "{listing}");
        assert!(listing.contains("5,"), "{listing}");
    }
}
