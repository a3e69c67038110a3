//! ext4 images: a scan of the source tree (inode count, default size, paths), `mke2fs -d`,
//! then a `debugfs` pass that pins the inode times mke2fs copied from the host and the mode
//! of the root directory. The flags and the reasons for them are in the parent module's
//! documentation.
//!
//! With a [`TreeAttrs`], the same pass first sets `uid`, `gid` and `mode` of every path it
//! names (`set_inode_field`) and adds its extended attributes with `ea_set -f VALUE-FILE`,
//! each distinct value written once into a scratch directory next to the image.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::attrs::{debugfs_safe_xattr_name, TreeAttrs};
use super::{
    format_uuid, remove_if_exists, scratch_path, MkfsError, MkfsOptions, EXT4_BLOCK,
    SOURCE_DATE_EPOCH,
};
use flipslot_os::process::Cmd;

/// Bytes per ext4 inode (mke2fs default for ext4).
const EXT4_INODE_SIZE: u64 = 256;
/// Smallest default ext4 image.
const EXT4_MIN_SIZE: u64 = 16 << 20;
/// Longest path debugfs reads in a command-file line without splitting it.
const MAX_DEBUGFS_PATH: usize = 4096;
/// Inode time fields pinned by debugfs.
const TIME_FIELDS: [&str; 4] = ["atime", "mtime", "ctime", "crtime"];

pub(super) fn build_ext4(
    src: &Path,
    src_meta: &fs::Metadata,
    out: &Path,
    opts: &MkfsOptions,
    attrs: Option<&TreeAttrs>,
) -> Result<(), MkfsError> {
    let scan = scan_tree(src)?;
    let (root_uid, root_gid, root_mode) = match attrs.and_then(|a| a.get(b"")) {
        Some(a) => (a.uid, a.gid, S_IFDIR | (a.mode & 0o7777)),
        None => (src_meta.uid(), src_meta.gid(), src_meta.mode()),
    };
    let size = opts.ext4_size.unwrap_or_else(|| default_ext4_size(&scan));
    let file = fs::File::create(out).map_err(|source| MkfsError::Output {
        action: "create",
        path: out.to_path_buf(),
        source,
    })?;
    file.set_len(size).map_err(|source| MkfsError::Output {
        action: "set the size of",
        path: out.to_path_buf(),
        source,
    })?;
    drop(file);

    let t = opts.timestamp.to_string();
    let uuid = format_uuid(&opts.uuid);
    let extended = format!(
        "hash_seed={uuid},root_owner={root_uid}:{root_gid},lazy_itable_init=0,lazy_journal_init=0,nodiscard"
    );
    let mut mke2fs = Cmd::new("mke2fs")
        .args(["-t", "ext4", "-b", "4096", "-F", "-q"])
        .args(["-U", &uuid, "-E", &extended])
        .args(["-N", &ext4_inode_count(&scan).to_string()])
        .env("E2FSPROGS_FAKE_TIME", &t)
        .env_remove(SOURCE_DATE_EPOCH);
    if let Some(label) = &opts.label {
        mke2fs = mke2fs.arg("-L").arg(label);
    }
    mke2fs
        .arg("-d")
        .arg(src)
        .arg(out)
        .arg(format!("{}k", size / 1024))
        .run()?;

    let Some(attrs) = attrs else {
        let script = debugfs_script(&scan, root_mode, opts.timestamp);
        return pin_inode_times(out, &script, &t);
    };
    let values_dir = scratch_path(out, "xattrs");
    let result = (|| {
        let mut values = XattrValues::create(&values_dir)?;
        let mut script = attrs_script(src, &scan, attrs, &mut values)?;
        script.extend(debugfs_script(&scan, root_mode, opts.timestamp));
        pin_inode_times(out, &script, &t)
    })();
    if let Err(e) = fs::remove_dir_all(&values_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("cannot remove {}: {e}", values_dir.display());
        }
    }
    result
}

/// The file type bits of a directory.
const S_IFDIR: u32 = 0o040000;
/// The file type bits of a mode.
const S_IFMT: u32 = 0o170000;

/// Extended attribute values written once each into a scratch directory, for `ea_set -f`.
#[derive(Debug)]
struct XattrValues {
    dir: PathBuf,
    files: std::collections::HashMap<Vec<u8>, PathBuf>,
}

impl XattrValues {
    /// Creates the directory, which must not exist yet (a stale one is removed).
    fn create(dir: &Path) -> Result<Self, MkfsError> {
        check_debugfs_path(dir, dir.as_os_str().as_bytes())?;
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|source| MkfsError::Output {
                action: "remove stale attribute directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        fs::create_dir(dir).map_err(|source| MkfsError::Output {
            action: "create attribute directory",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files: Default::default(),
        })
    }

    /// The file holding `value`, written on first use.
    fn file_for(&mut self, value: &[u8]) -> Result<&Path, MkfsError> {
        if !self.files.contains_key(value) {
            let path = self.dir.join(self.files.len().to_string());
            fs::write(&path, value).map_err(|source| MkfsError::Output {
                action: "write attribute value",
                path: path.clone(),
                source,
            })?;
            self.files.insert(value.to_vec(), path);
        }
        Ok(&self.files[value])
    }
}

/// The debugfs commands giving every scanned path its owner, mode and extended attributes
/// from `attrs`.
fn attrs_script(
    src: &Path,
    scan: &TreeScan,
    attrs: &TreeAttrs,
    values: &mut XattrValues,
) -> Result<Vec<u8>, MkfsError> {
    let mut script = Vec::new();
    for (path, &kind) in scan.paths.iter().zip(&scan.kinds) {
        let rel = path.strip_prefix(b"/").unwrap_or(path);
        let Some(a) = attrs.get(rel) else {
            continue;
        };
        debugfs_set(&mut script, path, &format!("uid {}", a.uid));
        debugfs_set(&mut script, path, &format!("gid {}", a.gid));
        debugfs_set(
            &mut script,
            path,
            &format!("mode 0{:o}", kind | (a.mode & 0o7777)),
        );
        for (name, value) in &a.xattrs {
            if !debugfs_safe_xattr_name(name) {
                return Err(MkfsError::UnsupportedXattrName {
                    path: super::attrs::host_path(src, rel),
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            let file = values.file_for(value)?;
            script.extend_from_slice(b"ea_set -f \"");
            script.extend_from_slice(file.as_os_str().as_bytes());
            script.extend_from_slice(b"\" \"");
            script.extend_from_slice(path);
            script.extend_from_slice(b"\" ");
            script.extend_from_slice(name);
            script.push(b'\n');
        }
    }
    Ok(script)
}

/// What [`scan_tree`] learnt about a source tree.
#[derive(Debug, Default)]
struct TreeScan {
    /// debugfs paths ("/", "/a", "/a/b", …) of every entry, `/` first, in sorted walk order.
    paths: Vec<Vec<u8>>,
    /// The file type bits (`S_IFMT`) of each of `paths`.
    kinds: Vec<u32>,
    /// Inodes needed (hard links counted once), root included.
    inodes: u64,
    /// Bytes of data blocks the entries need, rounded up to blocks.
    data_bytes: u64,
}

/// Walks `src` without following symlinks, in name order, checking that every path can be
/// written into a debugfs command file.
fn scan_tree(src: &Path) -> Result<TreeScan, MkfsError> {
    let mut scan = TreeScan {
        paths: vec![b"/".to_vec()],
        kinds: vec![S_IFDIR],
        inodes: 1,
        data_bytes: EXT4_BLOCK,
    };
    let mut seen_links: HashSet<(u64, u64)> = HashSet::new();
    // (host directory, its debugfs path)
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(src.to_path_buf(), Vec::new())];
    while let Some((dir, dir_path)) = stack.pop() {
        let read_err = |source| MkfsError::ReadTree {
            path: dir.clone(),
            source,
        };
        let mut entries = fs::read_dir(&dir)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err)?;
        entries.sort();
        let mut dir_bytes = 24; // "." and ".."
        let mut subdirs = Vec::new();
        for name in entries {
            let host = dir.join(&name);
            let name = name.as_bytes();
            dir_bytes += 8 + round_up(name.len() as u64, 4);
            let mut path = dir_path.clone();
            path.push(b'/');
            path.extend_from_slice(name);
            check_debugfs_path(&host, &path)?;
            let meta = fs::symlink_metadata(&host).map_err(|source| MkfsError::ReadTree {
                path: host.clone(),
                source,
            })?;
            let ft = meta.file_type();
            let new_inode =
                ft.is_dir() || meta.nlink() < 2 || seen_links.insert((meta.dev(), meta.ino()));
            if new_inode {
                scan.inodes += 1;
                if ft.is_file() {
                    scan.data_bytes += round_up(meta.len(), EXT4_BLOCK);
                } else if ft.is_symlink() && meta.len() >= 60 {
                    scan.data_bytes += EXT4_BLOCK;
                }
            }
            if ft.is_dir() {
                subdirs.push((host, path.clone()));
            } else if !(ft.is_file()
                || ft.is_symlink()
                || ft.is_fifo()
                || ft.is_socket()
                || ft.is_block_device()
                || ft.is_char_device())
            {
                log::warn!("{}: unknown file type", host.display());
            }
            scan.paths.push(path);
            scan.kinds.push(meta.mode() & S_IFMT);
        }
        // Directory blocks, plus one for an htree index when it spans several blocks.
        let blocks = round_up(dir_bytes, EXT4_BLOCK);
        scan.data_bytes += if blocks > EXT4_BLOCK {
            blocks + EXT4_BLOCK
        } else {
            blocks
        };
        // Reverse so that popping visits subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(scan)
}

fn check_debugfs_path(host: &Path, path: &[u8]) -> Result<(), MkfsError> {
    let reason = if path.contains(&b'"') {
        Some("contains a double quote")
    } else if path.contains(&b'\n') || path.contains(&b'\r') {
        Some("contains a line break")
    } else if path.len() > MAX_DEBUGFS_PATH {
        Some("is longer than 4096 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MkfsError::UnsupportedPath {
            path: host.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to).saturating_mul(to)
}

/// Inodes to ask mke2fs for: the tree, the reserved inodes, lost+found, and an eighth spare.
fn ext4_inode_count(scan: &TreeScan) -> u64 {
    let needed = scan.inodes + 16;
    needed + needed / 8
}

/// Journal blocks mke2fs 1.47 creates for a filesystem of `blocks` 4 KiB blocks
/// (`ext2fs_default_journal_size`).
fn ext4_journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 2048 => 0,
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Default ext4 size: data and inode tables plus a quarter, the 5% reserved for root, 4 MiB of
/// group metadata and the journal; rounded up to a MiB, at least 16 MiB.
fn default_ext4_size(scan: &TreeScan) -> u64 {
    const MIB: u64 = 1 << 20;
    let tables = ext4_inode_count(scan).saturating_mul(EXT4_INODE_SIZE);
    let payload = scan.data_bytes.saturating_add(tables);
    let with_headroom = payload.saturating_add(payload / 4);
    let base = with_headroom
        .saturating_add(with_headroom / 19)
        .saturating_add(4 * MIB);
    let mut size = round_up(base, MIB).max(EXT4_MIN_SIZE);
    // The journal grows with the size; a few rounds reach a size whose journal fits.
    for _ in 0..4 {
        let journal = ext4_journal_blocks(size / EXT4_BLOCK) * EXT4_BLOCK;
        let next = round_up(base.saturating_add(journal), MIB).max(EXT4_MIN_SIZE);
        if next <= size {
            break;
        }
        size = next;
    }
    size
}

/// The debugfs command file pinning the times of every inode copied from the host, and the mode
/// of the root directory (mke2fs 1.47.0 creates it 0755).
fn debugfs_script(scan: &TreeScan, root_mode: u32, timestamp: u64) -> Vec<u8> {
    let mut script = Vec::new();
    let lost_found: &[u8] = b"/lost+found";
    let extra = (!scan.paths.iter().any(|p| p == lost_found)).then_some(lost_found);
    for path in scan.paths.iter().map(Vec::as_slice).chain(extra) {
        for field in TIME_FIELDS {
            debugfs_set(&mut script, path, &format!("{field}_extra 0"));
            debugfs_set(&mut script, path, &format!("{field} @{timestamp}"));
        }
    }
    debugfs_set(&mut script, b"/", &format!("mode 0{root_mode:o}"));
    script
}

fn debugfs_set(script: &mut Vec<u8>, path: &[u8], field_and_value: &str) {
    script.extend_from_slice(b"set_inode_field \"");
    script.extend_from_slice(path);
    script.extend_from_slice(b"\" ");
    script.extend_from_slice(field_and_value.as_bytes());
    script.push(b'\n');
}

/// Runs `script` with `debugfs -w -f` on `image`. debugfs exits 0 even when commands fail, so
/// anything on standard error but its version banner is an error.
fn pin_inode_times(image: &Path, script: &[u8], timestamp: &str) -> Result<(), MkfsError> {
    let script_path = scratch_path(image, "debugfs");
    remove_if_exists(&script_path, "remove stale debugfs command file")?;
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&script_path)
        .and_then(|mut f| f.write_all(script));
    let result = written
        .map_err(|source| MkfsError::Output {
            action: "write debugfs command file",
            path: script_path.clone(),
            source,
        })
        .and_then(|()| {
            let output = Cmd::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script_path)
                .arg(image)
                .env("E2FSPROGS_FAKE_TIME", timestamp)
                .env_remove(SOURCE_DATE_EPOCH)
                .run()?;
            match debugfs_errors(&output.stderr) {
                Some(errors) => Err(MkfsError::Debugfs {
                    image: image.to_path_buf(),
                    errors,
                }),
                None => Ok(()),
            }
        });
    if let Err(e) = remove_if_exists(&script_path, "remove debugfs command file") {
        log::warn!("{}", flipslot_cli_support::source_chain(&e));
    }
    result
}

/// The error lines of debugfs' standard error (its first line is a version banner), at most 20.
fn debugfs_errors(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, line)| !(line.trim().is_empty() || (*i == 0 && line.starts_with("debugfs "))))
        .map(|(_, line)| line)
        .take(20)
        .collect();
    (!errors.is_empty()).then(|| errors.join("\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn debugfs_stderr_banner_is_not_an_error() {
        assert_eq!(debugfs_errors(b"debugfs 1.47.0 (5-Feb-2023)\n"), None);
        assert_eq!(
            debugfs_errors(b"debugfs 1.47.0 (5-Feb-2023)\n/nope: File not found by ext2_lookup \n")
                .unwrap(),
            "/nope: File not found by ext2_lookup "
        );
    }

    #[test]
    fn script_quotes_paths_and_covers_lost_found() {
        let scan = TreeScan {
            paths: vec![b"/".to_vec(), b"/with space".to_vec()],
            kinds: vec![S_IFDIR, 0o100000],
            inodes: 2,
            data_bytes: 0,
        };
        let script = String::from_utf8(debugfs_script(&scan, 0o40755, 7)).unwrap();
        assert!(script.contains("set_inode_field \"/with space\" mtime_extra 0\n"));
        assert!(script.contains("set_inode_field \"/with space\" crtime @7\n"));
        assert!(script.contains("set_inode_field \"/lost+found\" ctime @7\n"));
        assert!(script.ends_with("set_inode_field \"/\" mode 040755\n"));
        // The nanosecond field is cleared before the seconds are set (setting seconds beyond
        // 2038 writes epoch bits into the extra field).
        let extra = script.find("\"/\" atime_extra 0").unwrap();
        let secs = script.find("\"/\" atime @7").unwrap();
        assert!(extra < secs);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [&b"/a\"b"[..], b"/a\nb", b"/a\rb"] {
            let err = check_debugfs_path(Path::new("x"), bad).unwrap_err();
            assert!(matches!(err, MkfsError::UnsupportedPath { .. }));
        }
        assert!(check_debugfs_path(Path::new("x"), b"/a b\t#c\\d").is_ok());
    }

    #[test]
    fn journal_sizes_follow_mke2fs() {
        assert_eq!(ext4_journal_blocks(2047), 0);
        assert_eq!(ext4_journal_blocks(4096), 1024);
        assert_eq!(ext4_journal_blocks(300_000), 8192);
    }

    #[test]
    fn default_size_has_room() {
        let scan = TreeScan {
            paths: vec![],
            kinds: vec![],
            inodes: 10_000,
            data_bytes: 200 << 20,
        };
        let size = default_ext4_size(&scan);
        assert_eq!(size % (1 << 20), 0);
        assert!(size > (200 << 20) + (10_000 * 256) + (16 << 20), "{size}");
        assert_eq!(default_ext4_size(&TreeScan::default()), EXT4_MIN_SIZE);
    }
}
