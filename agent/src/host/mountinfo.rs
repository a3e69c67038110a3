//! Parsing `/proc/self/mountinfo` and finding where a block device is mounted.
//!
//! Pure: callers read the file and pass the text in. Format (proc(5)):
//! `id parent major:minor root mount-point options [optional…] - fstype source super-options`,
//! with space, tab, newline and backslash in paths written as octal escapes (`\040`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// A malformed mountinfo line.
#[derive(Debug, thiserror::Error)]
#[error("malformed mountinfo line {line}: {reason}")]
pub struct MountInfoError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Major number of the mounted device.
    pub major: u64,
    /// Minor number of the mounted device.
    pub minor: u64,
    /// Path within the file system that is mounted (`/` unless a bind mount of a subtree).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type, e.g. `ext4`.
    pub fs_type: String,
    /// Mount source, e.g. `/dev/sda2` (lossily decoded if not UTF-8).
    pub source: String,
}

/// Decodes the `\ooo` octal escapes the kernel writes for awkward bytes.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        if let Some(digits) = digits {
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn unescape_path(field: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Parses one line (without the newline); `line` is the 1-based number for messages.
pub fn parse_line(text: &str, line: usize) -> Result<MountEntry, MountInfoError> {
    let err = |reason| MountInfoError { line, reason };
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or_else(|| err("no \" - \" separator"))?;
    if sep < 6 {
        return Err(err("fewer than 6 fields before the separator"));
    }
    if fields.len() < sep + 3 {
        return Err(err("missing file system type or source"));
    }
    let (major, minor) = fields[2]
        .split_once(':')
        .ok_or_else(|| err("device field is not major:minor"))?;
    let major = major.parse().map_err(|_| err("bad major number"))?;
    let minor = minor.parse().map_err(|_| err("bad minor number"))?;
    Ok(MountEntry {
        major,
        minor,
        root: unescape_path(fields[3]),
        mount_point: unescape_path(fields[4]),
        fs_type: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
    })
}

/// Parses a whole mountinfo file; blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<MountEntry>, MountInfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l, i + 1))
        .collect()
}

/// Where device `major:minor` is mounted: the first mount of its file system root
/// (not a bind mount of a subdirectory) if any, else its first mount.
pub fn mounted_at(entries: &[MountEntry], major: u64, minor: u64) -> Option<&MountEntry> {
    let mut of_device = entries
        .iter()
        .filter(|e| e.major == major && e.minor == minor);
    let first = of_device.clone().next();
    of_device.find(|e| e.root.as_os_str() == "/").or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded on a Debian 12 VM (trimmed), plus a mount point with a space and a tab.
    const FIXTURE: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4011620k,nr_inodes=1002905,mode=755,inode64
28 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
31 28 8:1 / /boot/efi rw,relatime shared:15 - vfat /dev/sda1 rw,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro
45 28 8:2 /srv /mnt/bind\\040point rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
46 28 8:3 / /media/new\\040vol\\011x rw,relatime - ext4 /dev/sda3 rw
50 28 0:45 / /run/user/1000 rw,nosuid,nodev,relatime shared:300 master:12 - tmpfs tmpfs rw,size=803584k,nr_inodes=200896,mode=700,uid=1000,gid=1000,inode64
";

    #[test]
    fn parses_fixture() {
        let entries = parse(FIXTURE).unwrap();
        assert_eq!(entries.len(), 8);
        let efi = &entries[4];
        assert_eq!((efi.major, efi.minor), (8, 1));
        assert_eq!(efi.mount_point, PathBuf::from("/boot/efi"));
        assert_eq!(efi.fs_type, "vfat");
        assert_eq!(efi.source, "/dev/sda1");
        let user = &entries[7];
        assert_eq!(user.mount_point, PathBuf::from("/run/user/1000"));
        assert_eq!(user.source, "tmpfs");
    }

    #[test]
    fn decodes_octal_escapes() {
        let entries = parse(FIXTURE).unwrap();
        assert_eq!(entries[5].mount_point, PathBuf::from("/mnt/bind point"));
        assert_eq!(entries[5].root, PathBuf::from("/srv"));
        assert_eq!(entries[6].mount_point, PathBuf::from("/media/new vol\tx"));
        assert_eq!(unescape("a\\134b"), b"a\\b".to_vec());
        // Not an escape: left alone.
        assert_eq!(unescape("a\\9x\\"), b"a\\9x\\".to_vec());
        assert_eq!(unescape("\\04"), b"\\04".to_vec());
    }

    #[test]
    fn finds_mount_of_device() {
        let entries = parse(FIXTURE).unwrap();
        let root = mounted_at(&entries, 8, 2).unwrap();
        assert_eq!(root.mount_point, PathBuf::from("/"));
        assert_eq!(mounted_at(&entries, 8, 3).unwrap().source, "/dev/sda3");
        assert!(mounted_at(&entries, 8, 4).is_none());
        // Only a bind mount of a subtree: still reported.
        let only_bind = vec![entries[5].clone()];
        assert_eq!(
            mounted_at(&only_bind, 8, 2).unwrap().mount_point,
            PathBuf::from("/mnt/bind point")
        );
    }

    #[test]
    fn malformed_lines_named() {
        let e = parse("28 1 8:2 / / rw\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("\n28 1 x / / rw - ext4 /dev/sda2 rw\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse("28 1 8:2 / / rw -\n").is_err());
    }
}
