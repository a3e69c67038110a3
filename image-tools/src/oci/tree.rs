//! The root filesystem being assembled: a private directory that holds the contents
//! (files, directories, symlinks and hard links, all owned by whoever runs the build, files
//! `0600` and directories `0700`), and a table of every path's owner, mode and extended
//! attributes, kind and the layer that last wrote it.
//!
//! Layers are applied member by member with the OCI rules:
//!
//! - a member replaces what its path held, except that a directory over a directory only
//!   takes the new attributes and keeps its children;
//! - `.wh.NAME` deletes `NAME` (and everything under it) if a lower layer made it;
//!   `.wh..wh..opq` deletes everything under its directory that lower layers made; other
//!   `.wh..wh.` names (aufs bookkeeping) are ignored; whiteouts are never created;
//! - a hard link takes the inode, and so the attributes, of its target.
//!
//! **Links are never followed.** The table knows the kind of every path, and a member's
//! parent directories are looked up in it: one that is a symlink refuses the member, so no
//! member is written through a link, wherever it points. A member path with `..` or a
//! leading `/` is refused, and so is a hard link whose target is not a file already in the
//! tree. Everything is created with exclusive flags (`O_EXCL`, `mkdir`, `symlink`,
//! `link`), which also fail rather than follow a link. The directory is private (`0700`),
//! so nothing else changes it meanwhile.
//!
//! Device nodes and FIFOs are not created: they are recorded as skipped (a device's `/dev`
//! is a devtmpfs at run time; a node in a read-only image would be a fixed hole next to
//! it, and making one needs root).

use super::OciError;
use crate::mkfs::{FileAttrs, TreeAttrs};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many skipped paths are kept by name (the rest are only counted).
const MAX_SKIPPED_NAMED: usize = 20;

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MemberKind {
    /// A directory.
    Dir,
    /// A regular file; its data follows.
    File,
    /// A symlink to this target (never followed).
    Symlink(Vec<u8>),
    /// A hard link to this path of the tree.
    HardLink(Vec<u8>),
    /// A device node, FIFO or other special file: skipped (the name says which).
    Special(&'static str),
}

/// What the table remembers of a path's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    attrs: FileAttrs,
    /// The layer that created or last rewrote it (a parent is touched by its children).
    layer: u32,
}

/// A special file that was not created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its path in the image, from the root (`/dev/null`).
    pub path: String,
    /// What it was (`character device`, `block device`, `FIFO`).
    pub kind: &'static str,
}

/// The tree being assembled under a private directory.
#[derive(Debug)]
pub(super) struct Tree {
    root: PathBuf,
    nodes: BTreeMap<Vec<u8>, Node>,
    layer: u32,
    /// The first [`MAX_SKIPPED_NAMED`] special files skipped.
    pub skipped: Vec<Skipped>,
    /// How many were skipped in all.
    pub skipped_count: u64,
}

/// A member path as a relative path of normal components (empty for the root), or why it
/// is refused.
pub(super) fn clean_path(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("an absolute path");
    }
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a path with '..'"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// `(parent, name)` of a non-empty clean path.
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The proper ancestors of a clean path, outermost first (the root left out).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

fn refused(raw: &[u8], reason: String) -> OciError {
    OciError::Refused {
        member: String::from_utf8_lossy(raw).into_owned(),
        reason,
    }
}

fn through_symlink(link: &[u8]) -> String {
    format!(
        "it goes through the symlink {} (links are never followed while unpacking)",
        show(link)
    )
}

impl Tree {
    /// A tree in `root`, an empty private directory. The root directory is `0755`, owned by
    /// 0:0, until a layer says otherwise.
    pub(super) fn new(root: &Path) -> Tree {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            Vec::new(),
            Node {
                kind: Kind::Dir,
                attrs: FileAttrs {
                    mode: 0o755,
                    ..FileAttrs::default()
                },
                layer: 0,
            },
        );
        Tree {
            root: root.to_path_buf(),
            nodes,
            layer: 0,
            skipped: Vec::new(),
            skipped_count: 0,
        }
    }

    /// The next layer begins: whiteouts and opaque directories of its members apply to
    /// what the layers before made.
    pub(super) fn begin_layer(&mut self) {
        self.layer += 1;
    }

    /// The owner, mode and extended attributes of every path.
    pub(super) fn into_attrs(self) -> TreeAttrs {
        self.nodes.into_iter().map(|(k, n)| (k, n.attrs)).collect()
    }

    /// How many paths the tree holds, the root included.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    fn host(&self, path: &[u8]) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(path))
        }
    }

    fn io_err(&self, action: &'static str, path: &[u8]) -> impl FnOnce(io::Error) -> OciError {
        let path = self.host(path);
        move |source| OciError::Io {
            action,
            path,
            source,
        }
    }

    /// Applies one member. `data` is read for a regular file only.
    pub(super) fn add(
        &mut self,
        raw_path: &[u8],
        kind: MemberKind,
        attrs: FileAttrs,
        data: &mut dyn Read,
    ) -> Result<(), OciError> {
        let refuse = |reason: String| refused(raw_path, reason);
        let path = clean_path(raw_path).map_err(|r| refuse(format!("it is {r}")))?;
        if path.is_empty() {
            if kind != MemberKind::Dir {
                return Err(refuse("the root must be a directory".into()));
            }
            self.set_attrs(&path, attrs);
            return Ok(());
        }
        let (parent, name) = split_last(&path);
        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(raw_path, &path, parent, target);
        }
        // A hard link's target is checked before anything is changed.
        let link_source = match &kind {
            MemberKind::HardLink(target) => {
                let target = clean_path(target)
                    .map_err(|r| refuse(format!("its hard link target is {r}")))?;
                match self.nodes.get(&target) {
                    Some(t) if t.kind != Kind::Dir && target != path => {
                        Some((target, t.kind, t.attrs.clone()))
                    }
                    _ => {
                        return Err(refuse(format!(
                            "its hard link target {} is not another file in the image",
                            show(&target)
                        )))
                    }
                }
            }
            _ => None,
        };
        self.make_parents(raw_path, &path)?;
        if let Some(old) = self.nodes.get(&path) {
            if old.kind == Kind::Dir && kind == MemberKind::Dir {
                self.set_attrs(&path, attrs);
                return Ok(());
            }
            self.remove(&path)?;
        }
        let host = self.host(&path);
        let node_kind = match kind {
            MemberKind::Dir => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&host)
                    .map_err(self.io_err("create directory", &path))?;
                Kind::Dir
            }
            MemberKind::File => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&host)
                    .map_err(self.io_err("create", &path))?;
                io::copy(data, &mut f).map_err(self.io_err("write", &path))?;
                Kind::File
            }
            MemberKind::Symlink(target) => {
                if target.is_empty() {
                    return Err(refuse("a symlink to an empty path".into()));
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &host)
                    .map_err(self.io_err("create symlink", &path))?;
                Kind::Symlink
            }
            MemberKind::HardLink(_) => {
                let Some((target, kind, attrs)) = link_source else {
                    return Err(refuse(
                        "internal error: a hard link without a target".into(),
                    ));
                };
                fs::hard_link(self.host(&target), &host).map_err(self.io_err("link", &path))?;
                self.insert(path, kind, attrs);
                return Ok(());
            }
            MemberKind::Special(what) => {
                self.skipped_count += 1;
                if self.skipped.len() < MAX_SKIPPED_NAMED {
                    self.skipped.push(Skipped {
                        path: show(&path),
                        kind: what,
                    });
                }
                return Ok(());
            }
        };
        self.insert(path, node_kind, attrs);
        Ok(())
    }

    fn insert(&mut self, path: Vec<u8>, kind: Kind, attrs: FileAttrs) {
        let layer = self.layer;
        self.nodes.insert(path, Node { kind, attrs, layer });
    }

    fn set_attrs(&mut self, path: &[u8], attrs: FileAttrs) {
        let layer = self.layer;
        if let Some(n) = self.nodes.get_mut(path) {
            n.attrs = attrs;
            n.layer = layer;
        }
    }

    /// Creates the missing parent directories of `path` (`0755`, 0:0) and marks them as
    /// touched by this layer; refuses the member `raw` when a parent is a symlink or a file.
    fn make_parents(&mut self, raw: &[u8], path: &[u8]) -> Result<(), OciError> {
        let layer = self.layer;
        for a in ancestors(path) {
            match self.nodes.get_mut(a) {
                Some(n) if n.kind == Kind::Dir => n.layer = layer,
                Some(n) if n.kind == Kind::Symlink => return Err(refused(raw, through_symlink(a))),
                Some(_) => {
                    return Err(refused(
                        raw,
                        format!("its parent {} is not a directory", show(a)),
                    ))
                }
                None => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(self.host(a))
                        .map_err(self.io_err("create directory", a))?;
                    self.insert(
                        a.to_vec(),
                        Kind::Dir,
                        FileAttrs {
                            mode: 0o755,
                            ..FileAttrs::default()
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Applies the whiteout member `raw` (clean: `member`, in directory `parent`, naming
    /// `target`).
    fn whiteout(
        &mut self,
        raw: &[u8],
        member: &[u8],
        parent: &[u8],
        target: &[u8],
    ) -> Result<(), OciError> {
        // The directory must be reached without a link; if it does not exist there is
        // nothing to hide.
        for a in ancestors(member) {
            match self.nodes.get(a).map(|n| n.kind) {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink) => return Err(refused(raw, through_symlink(a))),
                _ => return Ok(()),
            }
        }
        if target == b".wh..opq" {
            self.opaque(parent)
        } else if target.starts_with(b".wh.") || target.is_empty() {
            log::debug!("ignoring {}", show(member));
            Ok(())
        } else {
            let mut victim = parent.to_vec();
            if !victim.is_empty() {
                victim.push(b'/');
            }
            victim.extend_from_slice(target);
            match self.nodes.get(&victim) {
                Some(n) if n.layer != self.layer => self.remove(&victim),
                _ => Ok(()),
            }
        }
    }

    /// Deletes everything under `dir` that lower layers made.
    fn opaque(&mut self, dir: &[u8]) -> Result<(), OciError> {
        let prefix: Vec<u8> = if dir.is_empty() {
            Vec::new()
        } else {
            let mut p = dir.to_vec();
            p.push(b'/');
            p
        };
        let mut doomed: HashSet<Vec<u8>> = HashSet::new();
        let mut order = Vec::new();
        for (k, n) in self.nodes.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            if k.is_empty() || n.layer == self.layer {
                continue;
            }
            if ancestors(k).any(|a| doomed.contains(a)) {
                continue;
            }
            doomed.insert(k.clone());
            order.push(k.clone());
        }
        for k in order {
            self.remove(&k)?;
        }
        Ok(())
    }

    /// Removes `path` and, for a directory, everything under it.
    fn remove(&mut self, path: &[u8]) -> Result<(), OciError> {
        let Some(node) = self.nodes.remove(path) else {
            return Ok(());
        };
        let host = self.host(path);
        if node.kind == Kind::Dir {
            fs::remove_dir_all(&host).map_err(self.io_err("remove", path))?;
            let mut prefix = path.to_vec();
            prefix.push(b'/');
            let under: Vec<Vec<u8>> = self
                .nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in under {
                self.nodes.remove(&k);
            }
        } else {
            fs::remove_file(&host).map_err(self.io_err("remove", path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests;
