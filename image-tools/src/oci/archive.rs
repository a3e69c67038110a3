//! Where the files of an image come from: a directory (an OCI image layout, or an unpacked
//! `docker save`), or a tar archive of either, read in place. A tar archive is walked once
//! for an index of its members (name → offset and size, symlinks and hard links by name);
//! members are then read at their offsets, never extracted.
//!
//! Member names are relative paths of normal components (`./` prefixes dropped); a name
//! with `..` or a leading `/` is never looked up. Links inside an archive (`docker save`
//! links a layer it saved twice) are followed within the archive only, at most
//! [`MAX_LINK_HOPS`] deep.

use super::meter::{Meter, MAX_MEMBER_HEADERS};
use super::OciError;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Most members an archive may have (an image has a few per layer).
pub(super) const MAX_MEMBERS: usize = 100_000;
/// Most links followed to reach one member.
pub(super) const MAX_LINK_HOPS: usize = 16;

/// A member of a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Member {
    /// A regular file: where its data starts and how long it is.
    File { offset: u64, size: u64 },
    /// A symlink, its target resolved to a member name (`None`: it leaves the archive).
    Symlink(Option<String>),
    /// A hard link to another member.
    HardLink(Option<String>),
}

/// The files of an image.
#[derive(Debug)]
pub(super) enum Store {
    /// A directory.
    Dir(PathBuf),
    /// A tar archive and the index of its members.
    Tar {
        path: PathBuf,
        file: File,
        members: HashMap<String, Member>,
    },
}

/// The compression an archive (not a layer) starts with, by its magic number.
fn compression_magic(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

impl Store {
    /// Opens a directory, or indexes a tar archive.
    pub(super) fn open(path: &Path) -> Result<Store, OciError> {
        let io_err = |action: &'static str| {
            move |source| OciError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let meta = std::fs::metadata(path).map_err(io_err("open"))?;
        if meta.is_dir() {
            return Ok(Store::Dir(path.to_path_buf()));
        }
        if !meta.is_file() {
            return Err(OciError::NotAnImage {
                archive: path.to_path_buf(),
                reason: "it is neither a directory nor a regular file".into(),
            });
        }
        let file = File::open(path).map_err(io_err("open"))?;
        let mut head = [0u8; 6];
        let n = file.read_at(&mut head, 0).map_err(io_err("read"))?;
        if let Some(kind) = compression_magic(&head[..n]) {
            return Err(OciError::NotAnImage {
                archive: path.to_path_buf(),
                reason: format!(
                    "it is {kind}-compressed: decompress it first (the tar archive is read in place)"
                ),
            });
        }
        let members = index_tar(path, &file)?;
        Ok(Store::Tar {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    /// The directory or archive.
    pub(super) fn path(&self) -> &Path {
        match self {
            Store::Dir(p) | Store::Tar { path: p, .. } => p,
        }
    }

    /// Whether `name` is a regular file of the store (links followed within it).
    pub(super) fn exists(&self, name: &str) -> bool {
        match self {
            Store::Dir(dir) => {
                normalize(name).is_some_and(|n| dir.join(n).metadata().is_ok_and(|m| m.is_file()))
            }
            Store::Tar { members, .. } => resolve(members, name).is_some(),
        }
    }

    /// Opens `name` for reading; also returns its size.
    pub(super) fn open_member(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64), OciError> {
        let missing = || OciError::MissingMember {
            archive: self.path().to_path_buf(),
            member: name.to_string(),
        };
        match self {
            Store::Dir(dir) => {
                let path = dir.join(normalize(name).ok_or_else(missing)?);
                // Checked before opening, so a FIFO is refused rather than waited on.
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => return Err(missing()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(source) => {
                        return Err(OciError::Io {
                            action: "open",
                            path,
                            source,
                        })
                    }
                }
                let file = File::open(&path).map_err(|source| OciError::Io {
                    action: "open",
                    path: path.clone(),
                    source,
                })?;
                let size = file
                    .metadata()
                    .map_err(|source| OciError::Io {
                        action: "read",
                        path,
                        source,
                    })?
                    .len();
                Ok((Box::new(io::BufReader::new(file).take(size)), size))
            }
            Store::Tar { file, members, .. } => {
                let (offset, size) = resolve(members, name).ok_or_else(missing)?;
                let section = Section {
                    file,
                    pos: offset,
                    end: offset.saturating_add(size),
                };
                Ok((
                    Box::new(io::BufReader::with_capacity(1 << 16, section)),
                    size,
                ))
            }
        }
    }

    /// Reads all of `name`, which may be at most `limit` bytes long.
    pub(super) fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, OciError> {
        let (mut r, size) = self.open_member(name)?;
        if size > limit {
            return Err(OciError::TooLarge {
                what: format!("{name} in {}", self.path().display()),
                size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        r.read_to_end(&mut data).map_err(|source| OciError::Io {
            action: "read",
            path: self.path().join(name),
            source,
        })?;
        Ok(data)
    }
}

/// A byte range of a file, read with positional reads.
#[derive(Debug)]
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A member name as a relative path of normal components, or `None` when it has `..` or
/// starts with `/` (or names nothing).
pub(super) fn normalize(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `target` of a symlink at `member`, as a member name; `None` when it leaves the archive.
fn link_target(member: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = member.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Offset and size of the regular file `name` names, following links.
fn resolve(members: &HashMap<String, Member>, name: &str) -> Option<(u64, u64)> {
    let mut name = normalize(name)?;
    for _ in 0..=MAX_LINK_HOPS {
        match members.get(&name)? {
            Member::File { offset, size } => return Some((*offset, *size)),
            Member::Symlink(t) | Member::HardLink(t) => name = t.clone()?,
        }
    }
    None
}

/// Walks the archive once and indexes its regular files and links. Directories and
/// anything else are left out; a later member of the same name replaces an earlier one, as
/// tar does.
fn index_tar(path: &Path, file: &File) -> Result<HashMap<String, Member>, OciError> {
    let tar_err = |source: io::Error, meter: &Meter| {
        if meter.exceeded() {
            OciError::TooLarge {
                what: format!("the headers of a member of {}", path.display()),
                size: MAX_MEMBER_HEADERS + 1,
                limit: MAX_MEMBER_HEADERS,
            }
        } else {
            OciError::Tar {
                what: path.display().to_string(),
                source,
            }
        }
    };
    let meter = Meter::default();
    let mut archive = tar::Archive::new(meter.wrap(file));
    let mut entries = archive
        .entries_with_seek()
        .map_err(|e| tar_err(e, &meter))?;
    let mut members = HashMap::new();
    loop {
        meter.limit(MAX_MEMBER_HEADERS);
        let entry = match entries.next() {
            None => break,
            Some(e) => e.map_err(|e| tar_err(e, &meter))?,
        };
        meter.unlimit();
        let raw = entry.path_bytes();
        let Some(name) = std::str::from_utf8(&raw).ok().and_then(normalize) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let link = || {
            entry
                .link_name_bytes()
                .and_then(|l| String::from_utf8(l.into_owned()).ok())
        };
        let member = if kind.is_file() || kind.is_contiguous() {
            Member::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            }
        } else if kind.is_symlink() {
            Member::Symlink(link().and_then(|t| link_target(&name, &t)))
        } else if kind.is_hard_link() {
            Member::HardLink(link().as_deref().and_then(normalize))
        } else {
            continue;
        };
        members.insert(name, member);
        if members.len() > MAX_MEMBERS {
            return Err(OciError::TooLarge {
                what: format!("the member count of {}", path.display()),
                size: members.len() as u64,
                limit: MAX_MEMBERS as u64,
            });
        }
    }
    Ok(members)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("./index.json").as_deref(), Some("index.json"));
        assert_eq!(
            normalize("blobs//sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(normalize("../x"), None);
        assert_eq!(normalize("a/../x"), None);
        assert_eq!(normalize("/etc/passwd"), None);
        assert_eq!(normalize("./"), None);
    }

    #[test]
    fn links_stay_inside() {
        assert_eq!(
            link_target("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(link_target("abc/layer.tar", "../../etc/passwd"), None);
        assert_eq!(link_target("abc/layer.tar", "/etc/passwd"), None);
        let mut m = HashMap::new();
        m.insert(
            "a".to_string(),
            Member::File {
                offset: 512,
                size: 3,
            },
        );
        m.insert("b".into(), Member::Symlink(Some("a".into())));
        m.insert("c".into(), Member::HardLink(Some("b".into())));
        m.insert("loop".into(), Member::Symlink(Some("loop".into())));
        m.insert("out".into(), Member::Symlink(None));
        assert_eq!(resolve(&m, "./c"), Some((512, 3)));
        assert_eq!(resolve(&m, "loop"), None);
        assert_eq!(resolve(&m, "out"), None);
        assert_eq!(resolve(&m, "nope"), None);
    }

    #[test]
    fn compressed_archives_are_recognised() {
        assert_eq!(compression_magic(&[0x1f, 0x8b, 8]), Some("gzip"));
        assert_eq!(compression_magic(b"\x28\xb5\x2f\xfd"), Some("zstd"));
        assert_eq!(compression_magic(b"index."), None);
    }
}
