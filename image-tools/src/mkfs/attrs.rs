//! Owners, modes and extended attributes given for a tree instead of those its files have on
//! the host: how a tree unpacked without root (an OCI image, `crate::oci`) gets its
//! ownership into the filesystem.
//!
//! [`TreeAttrs`] maps each path of the tree to its [`FileAttrs`]. How each tool receives them:
//!
//! - **squashfs**: owners and modes as mksquashfs pseudo definitions (`PATH m MODE UID GID`,
//!   one per path, in a file given with `-pf`; the root through `-root-mode`, `-root-uid`,
//!   `-root-gid`). mksquashfs 4.5 has no pseudo definition for extended attributes: it reads
//!   them from the files only, so they are set on the files of the tree first
//!   (`set_xattrs`). Outside the `user.` namespace that needs root (`security.capability`
//!   needs `CAP_SETFCAP`).
//! - **ext4**: the debugfs pass sets `uid`, `gid` and `mode` of every inode and adds the
//!   attributes with `ea_set -f` (see the `ext4` module): no privilege needed at all.
//! - **EROFS**: mkfs.erofs 1.5 takes no description of ownership, so owners, modes and
//!   attributes are applied to the files of the tree (`apply_to_tree`): root only (or
//!   `fakeroot`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::MkfsError;

/// Longest extended attribute value Linux stores (`XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Longest extended attribute name Linux accepts (`XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;

/// Owner, permission bits and extended attributes of one path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileAttrs {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits, setuid, setgid and sticky (`0o7777`); never the file type.
    pub mode: u32,
    /// Extended attributes (name, value), in the order they are set.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The [`FileAttrs`] of every path of a tree, keyed by the path relative to the tree's root
/// (`/`-separated, no leading slash; the root itself is the empty path). A path of the tree
/// without an entry keeps what its file has on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeAttrs {
    map: BTreeMap<Vec<u8>, FileAttrs>,
}

impl TreeAttrs {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the attributes of `path` (relative, `/`-separated; empty for the root).
    pub fn insert(&mut self, path: Vec<u8>, attrs: FileAttrs) {
        self.map.insert(path, attrs);
    }

    /// The attributes of `path`, if given.
    pub fn get(&self, path: &[u8]) -> Option<&FileAttrs> {
        self.map.get(path)
    }

    /// Every path and its attributes, in byte order of the paths (the root first).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &FileAttrs)> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v))
    }

    /// How many paths have attributes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no path has attributes.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl FromIterator<(Vec<u8>, FileAttrs)> for TreeAttrs {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, FileAttrs)>>(iter: I) -> Self {
        Self {
            map: iter.into_iter().collect(),
        }
    }
}

/// The host path of `rel` (a [`TreeAttrs`] key) under `root`.
pub(super) fn host_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// The mksquashfs pseudo file: `PATH m MODE UID GID` for every path but the root (which
/// takes `-root-mode`, `-root-uid` and `-root-gid`). Every byte of a path that mksquashfs
/// would read as a separator or quote is escaped with a backslash; a line break cannot be
/// escaped and is refused.
pub(super) fn squashfs_pseudo(root: &Path, attrs: &TreeAttrs) -> Result<Vec<u8>, MkfsError> {
    let mut out = Vec::new();
    for (path, a) in attrs.iter().filter(|(p, _)| !p.is_empty()) {
        if path.contains(&b'\n') || path.contains(&b'\r') {
            return Err(MkfsError::UnsupportedPath {
                path: host_path(root, path),
                reason: "contains a line break, which a mksquashfs pseudo file cannot express",
            });
        }
        for &b in path {
            if b.is_ascii_whitespace() || b == b'"' || b == b'\\' || b.is_ascii_control() {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(format!(" m {:o} {} {}\n", a.mode & 0o7777, a.uid, a.gid).as_bytes());
    }
    Ok(out)
}

/// Why squashfs extended attributes are set on the files.
const SQUASHFS_WHY: &str = "mksquashfs 4.5 reads extended attributes from the files only, and \
    outside user. setting them needs root: build as root, or build ext4";
/// Why EROFS attributes are set on the files.
const EROFS_WHY: &str = "mkfs.erofs takes owners, modes and extended attributes from the \
    files only, and setting them needs root: build as root, or build squashfs or ext4";

/// Sets the extended attributes of every path on its file under `root`, without following
/// symlinks (for squashfs).
pub(super) fn set_xattrs(root: &Path, attrs: &TreeAttrs) -> Result<(), MkfsError> {
    set_xattrs_because(root, attrs, SQUASHFS_WHY)
}

fn set_xattrs_because(root: &Path, attrs: &TreeAttrs, why: &'static str) -> Result<(), MkfsError> {
    for (path, a) in attrs.iter() {
        let host = host_path(root, path);
        for (name, value) in &a.xattrs {
            xattr::set(&host, OsStr::from_bytes(name), value).map_err(|source| {
                MkfsError::SetAttribute {
                    path: host.clone(),
                    what: format!("extended attribute {}", String::from_utf8_lossy(name)),
                    why,
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Applies owners, then modes (a change of owner clears setuid and setgid), then extended
/// attributes (a change of owner also drops `security.capability`) to the files under
/// `root`, without following symlinks (whose own mode is not changed); for EROFS.
pub(super) fn apply_to_tree(root: &Path, attrs: &TreeAttrs) -> Result<(), MkfsError> {
    for (path, a) in attrs.iter() {
        let host = host_path(root, path);
        let err = |what: String| {
            let host = host.clone();
            move |source: io::Error| MkfsError::SetAttribute {
                path: host,
                what,
                why: EROFS_WHY,
                source,
            }
        };
        std::os::unix::fs::lchown(&host, Some(a.uid), Some(a.gid))
            .map_err(err(format!("owner {}:{}", a.uid, a.gid)))?;
        let meta = fs::symlink_metadata(&host).map_err(|source| MkfsError::ReadTree {
            path: host.clone(),
            source,
        })?;
        if !meta.file_type().is_symlink() {
            fs::set_permissions(&host, fs::Permissions::from_mode(a.mode & 0o7777))
                .map_err(err(format!("mode {:o}", a.mode & 0o7777)))?;
        }
    }
    set_xattrs_because(root, attrs, EROFS_WHY)
}

/// Whether an extended attribute name can be written into a debugfs command file: printable
/// ASCII without spaces or quotes, and not longer than Linux allows.
pub(super) fn debugfs_safe_xattr_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_XATTR_NAME
        && name
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    fn attrs(uid: u32, mode: u32) -> FileAttrs {
        FileAttrs {
            uid,
            gid: uid + 1,
            mode,
            xattrs: vec![],
        }
    }

    #[test]
    fn pseudo_file_escapes_and_skips_the_root() {
        let mut t = TreeAttrs::new();
        t.insert(vec![], attrs(0, 0o755));
        t.insert(b"a b/q\"x\\y\tz".to_vec(), attrs(1000, 0o4755));
        t.insert(b"etc".to_vec(), attrs(0, 0o40755));
        let text = String::from_utf8(squashfs_pseudo(Path::new("/r"), &t).unwrap()).unwrap();
        assert_eq!(
            text,
            "a\\ b/q\\\"x\\\\y\\\tz m 4755 1000 1001\netc m 755 0 1\n"
        );
        t.insert(b"bad\nname".to_vec(), attrs(0, 0o644));
        let err = squashfs_pseudo(Path::new("/r"), &t).unwrap_err();
        assert!(err.to_string().contains("bad\\nname"), "{err}");
    }

    #[test]
    fn xattr_names_for_debugfs() {
        assert!(debugfs_safe_xattr_name(b"security.capability"));
        assert!(debugfs_safe_xattr_name(b"user.a-b_c"));
        for bad in [&b""[..], b"user.a b", b"user.\"", b"user.\\", b"user.\xff"] {
            assert!(!debugfs_safe_xattr_name(bad), "{bad:?}");
        }
        assert!(!debugfs_safe_xattr_name(&[b'a'; 256]));
    }

    #[test]
    fn host_paths() {
        assert_eq!(host_path(Path::new("/r"), b""), Path::new("/r"));
        assert_eq!(host_path(Path::new("/r"), b"a/b"), Path::new("/r/a/b"));
    }
}
