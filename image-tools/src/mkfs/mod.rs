//! Builds read-only root filesystem images (squashfs, EROFS, ext4) from a directory, reproducibly.
//!
//! The same tree (same names, contents, modes, owners, xattrs) built with the same
//! [`MkfsOptions`] and the same tool versions gives a byte-identical image, whatever the times
//! of the files on the host and whenever the build runs. Debian's standard tools do the work;
//! every subprocess goes through [`flipslot_os::process::Cmd`]. The tools receive the timestamp only
//! through their flags: `SOURCE_DATE_EPOCH` is removed from their environment (mksquashfs
//! refuses it together with `-mkfs-time`, and mkfs.erofs 1.5 lets it override `-T`). Callers
//! read it with [`source_date_epoch`] and pass it as [`MkfsOptions::timestamp`].
//!
//! This module holds the options, the errors, the squashfs and EROFS builds and the dispatch;
//! the ext4 build (tree scan, default size, mke2fs and the debugfs pass) lives in the `ext4`
//! submodule, and the owners, modes and extended attributes given for a tree instead of its
//! files' own ([`build_fs_with_attrs`]) in [`attrs`].
//!
//! # Flags per filesystem, and why
//!
//! - **squashfs** (squashfs-tools): `mksquashfs SRC OUT -noappend -no-progress -quiet
//!   -reproducible -mkfs-time T -all-time T`. `-reproducible` is the default of Debian's build
//!   but is a compile-time choice, so it is asked for explicitly (it orders the output of the
//!   parallel compressors). `-mkfs-time` pins the superblock time and `-all-time` every inode
//!   time. squashfs has no UUID and no label; a label is refused.
//! - **erofs** (erofs-utils): `mkfs.erofs --quiet -T<T> -U<UUID> [-L LABEL] OUT SRC`. `-T` pins the
//!   build time and, unless `--preserve-mtime` is given, every inode time; `-U` pins the UUID
//!   (random otherwise). erofs-utils 1.5 (bookworm) has no `-L`: a label is then refused with an
//!   error naming the tool.
//! - **ext4** (e2fsprogs): the output file is created at its size, then `mke2fs -t ext4 -b 4096
//!   -F -q -U UUID -E hash_seed=UUID,root_owner=UID:GID,lazy_itable_init=0,lazy_journal_init=0,
//!   nodiscard -N INODES [-L LABEL] -d SRC OUT SIZEk` runs with `E2FSPROGS_FAKE_TIME=T` (pins
//!   the superblock times and the times of the inodes mke2fs creates itself). `-U` and
//!   `hash_seed` replace random values (the checksum seed derives from the UUID); `root_owner`
//!   gives the root directory the owner of `SRC` (mke2fs 1.47.0 otherwise uses the caller's
//!   uid); the `lazy_*` and `nodiscard` options make every table be written the same way,
//!   whatever the host kernel and the filesystem holding the output support; `-N` sizes the
//!   inode table from the tree. mke2fs copies the host's atime, mtime and ctime into the inodes
//!   (the ctime of a host file cannot be set), so a second pass runs `debugfs -w -f CMDFILE OUT`
//!   with `set_inode_field "PATH" FIELD_extra 0` and `set_inode_field "PATH" FIELD @T` for
//!   atime, mtime, ctime and crtime of every path, `/` and `lost+found` included, and sets the
//!   mode of `/` to the mode of `SRC`. debugfs leaves the superblock times alone. Paths are
//!   double-quoted in the command file; a path containing a double quote, a newline or a
//!   carriage return cannot be expressed and is refused.
//!
//! # Ownership
//!
//! Files keep their uid and gid (and mode and xattrs). To build a root-owned tree as an
//! unprivileged user, run the build under `fakeroot`, as Debian does, or describe the
//! ownership with a [`TreeAttrs`] and [`build_fs_with_attrs`] (squashfs and ext4 then need no
//! root; see [`attrs`]).

pub mod attrs;
mod ext4;

pub use attrs::{FileAttrs, TreeAttrs};

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use flipslot_os::process::{Cmd, CommandError};

/// Name of the environment variable read by [`source_date_epoch`].
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// ext4 block size used for every image.
const EXT4_BLOCK: u64 = 4096;
/// Longest volume label of ext4 and EROFS, in bytes.
const MAX_LABEL_BYTES: usize = 16;

/// A filesystem type [`build_fs`] can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    /// squashfs, built by `mksquashfs` (squashfs-tools).
    Squashfs,
    /// EROFS, built by `mkfs.erofs` (erofs-utils).
    Erofs,
    /// ext4, built by `mke2fs` and `debugfs` (e2fsprogs).
    Ext4,
}

impl FsType {
    /// All types, in a stable order.
    pub const ALL: [FsType; 3] = [FsType::Squashfs, FsType::Erofs, FsType::Ext4];

    /// The name used on the command line and in [`fmt::Display`].
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Squashfs => "squashfs",
            FsType::Erofs => "erofs",
            FsType::Ext4 => "ext4",
        }
    }

    /// The programs [`build_fs`] runs for this type.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            FsType::Squashfs => &["mksquashfs"],
            FsType::Erofs => &["mkfs.erofs"],
            FsType::Ext4 => &["mke2fs", "debugfs"],
        }
    }

    /// The Debian package shipping [`FsType::programs`].
    pub fn debian_package(self) -> &'static str {
        match self {
            FsType::Squashfs => "squashfs-tools",
            FsType::Erofs => "erofs-utils",
            FsType::Ext4 => "e2fsprogs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsType {
    type Err = MkfsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FsType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| MkfsError::UnknownFsType {
                value: s.to_string(),
            })
    }
}

/// What to build and the values that make the build reproducible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsOptions {
    /// Filesystem type.
    pub fs: FsType,
    /// Every time stored in the image, in seconds since 1970 (from `SOURCE_DATE_EPOCH`, read by
    /// the caller with [`source_date_epoch`]). squashfs and ext4 need it to fit in 32 bits.
    pub timestamp: u64,
    /// Filesystem UUID (erofs, ext4; also the ext4 directory hash seed). Derive it
    /// deterministically, e.g. with [`uuid_from_seed`].
    pub uuid: [u8; 16],
    /// ext4 image size in bytes, a multiple of 4096; `None` computes it from the tree size with
    /// headroom.
    pub ext4_size: Option<u64>,
    /// Volume label, at most 16 bytes (ext4; erofs when the installed mkfs.erofs supports it).
    pub label: Option<String>,
}

impl MkfsOptions {
    /// Options without a label and with the default ext4 size.
    pub fn new(fs: FsType, timestamp: u64, uuid: [u8; 16]) -> Self {
        Self {
            fs,
            timestamp,
            uuid,
            ext4_size: None,
            label: None,
        }
    }
}

/// Why building a filesystem image failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MkfsError {
    /// A filesystem type name that is not `squashfs`, `erofs` or `ext4`.
    #[error("unknown filesystem type {value:?} (expected squashfs, erofs or ext4)")]
    UnknownFsType {
        /// The name given.
        value: String,
    },
    /// `SOURCE_DATE_EPOCH` is set but is not a decimal number of seconds.
    #[error("environment variable SOURCE_DATE_EPOCH has invalid value {value:?}: expected decimal seconds since 1970")]
    InvalidSourceDateEpoch {
        /// The value found, lossily decoded.
        value: String,
    },
    /// The source is not a directory.
    #[error("source {path} is not a directory")]
    NotADirectory {
        /// The source given.
        path: PathBuf,
    },
    /// The timestamp does not fit the filesystem's time fields.
    #[error("timestamp {timestamp} does not fit the 32-bit times of {fs}")]
    TimestampOutOfRange {
        /// The filesystem type.
        fs: FsType,
        /// The timestamp given.
        timestamp: u64,
    },
    /// The label is longer than the filesystem allows.
    #[error("label {label:?} is longer than the {max} bytes {fs} allows")]
    LabelTooLong {
        /// The filesystem type.
        fs: FsType,
        /// The label given.
        label: String,
        /// The longest label allowed, in bytes.
        max: usize,
    },
    /// The filesystem or the installed tool cannot store a label.
    #[error("cannot set label {label:?}: {reason}")]
    LabelUnsupported {
        /// The label given.
        label: String,
        /// Which filesystem or tool lacks support.
        reason: String,
    },
    /// The requested ext4 size is not a positive multiple of the block size.
    #[error("ext4 image size {size} is not a positive multiple of 4096 bytes")]
    InvalidExt4Size {
        /// The size given, in bytes.
        size: u64,
    },
    /// A path in the tree cannot be written into a debugfs command file.
    #[error("cannot pin the times of {path:?} in the ext4 image: debugfs cannot express a path that {reason}")]
    UnsupportedPath {
        /// The path on the host.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading the source tree failed.
    #[error("cannot read {path}")]
    ReadTree {
        /// The file or directory being read.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// Removing an old output, creating the output or writing a scratch file failed.
    #[error("cannot {action} {path}")]
    Output {
        /// What was being done (e.g. "remove old output").
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The error from the operating system.
        source: io::Error,
    },
    /// debugfs ran but reported errors (it exits with status 0 even then).
    #[error("debugfs could not pin inode times in {image}: {errors}")]
    Debugfs {
        /// The image being edited.
        image: PathBuf,
        /// What debugfs wrote to standard error.
        errors: String,
    },
    /// Setting an owner, a mode or an extended attribute on a file of the tree failed.
    #[error("cannot set the {what} of {path} ({why})")]
    SetAttribute {
        /// The file on the host.
        path: PathBuf,
        /// What was being set (e.g. "extended attribute security.capability").
        what: String,
        /// Why it is set on the file at all, and what to do without root.
        why: &'static str,
        /// The error from the operating system (`EPERM` without root).
        source: io::Error,
    },
    /// An extended attribute name the debugfs pass cannot express.
    #[error("cannot store extended attribute {name:?} of {path} in an ext4 image: debugfs cannot express a name that is not printable ASCII without spaces or quotes")]
    UnsupportedXattrName {
        /// The file on the host.
        path: PathBuf,
        /// The name, lossily decoded.
        name: String,
    },
    /// A tool was missing, could not be started or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// Derives an RFC 4122 version 4 UUID from `seed`: the first 16 bytes of SHA-256(seed), with the
/// version and variant bits set.
pub fn uuid_from_seed(seed: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(seed);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// Formats a UUID as the tools expect it: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let h = hex::encode(uuid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads `SOURCE_DATE_EPOCH`: `None` when unset, an error naming the variable when it is set to
/// anything but decimal digits (an empty value included).
pub fn source_date_epoch() -> Result<Option<u64>, MkfsError> {
    std::env::var_os(SOURCE_DATE_EPOCH)
        .map(|v| parse_source_date_epoch(&v))
        .transpose()
}

/// Parses a `SOURCE_DATE_EPOCH` value: decimal digits only, fitting in 64 bits.
pub fn parse_source_date_epoch(value: &OsStr) -> Result<u64, MkfsError> {
    let invalid = || MkfsError::InvalidSourceDateEpoch {
        value: value.to_string_lossy().into_owned(),
    };
    let text = value.to_str().ok_or_else(invalid)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    text.parse().map_err(|_| invalid())
}

/// Builds a filesystem image of type `opts.fs` at `out` holding the contents of `src_dir`.
///
/// An existing `out` is removed first; on failure, a partial `out` is removed.
pub fn build_fs(src_dir: &Path, out: &Path, opts: &MkfsOptions) -> Result<(), MkfsError> {
    build(src_dir, out, opts, None)
}

/// Like [`build_fs`], but every path of `attrs` gets the owner, mode and extended attributes
/// given there instead of those of its file under `src_dir`. squashfs and ext4 need no root
/// for it, except that squashfs needs root for extended attributes outside `user.`; EROFS
/// needs root (see [`attrs`]). For squashfs the extended attributes, and for EROFS all of
/// the attributes, are set on the files under `src_dir` first.
pub fn build_fs_with_attrs(
    src_dir: &Path,
    out: &Path,
    opts: &MkfsOptions,
    attrs: &TreeAttrs,
) -> Result<(), MkfsError> {
    build(src_dir, out, opts, Some(attrs))
}

fn build(
    src_dir: &Path,
    out: &Path,
    opts: &MkfsOptions,
    attrs: Option<&TreeAttrs>,
) -> Result<(), MkfsError> {
    let meta = fs::metadata(src_dir).map_err(|source| MkfsError::ReadTree {
        path: src_dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(MkfsError::NotADirectory {
            path: src_dir.to_path_buf(),
        });
    }
    check_options(opts)?;
    remove_if_exists(out, "remove old output")?;
    log::info!(
        "building {} image {} from {}",
        opts.fs,
        out.display(),
        src_dir.display()
    );
    let result = match opts.fs {
        FsType::Squashfs => build_squashfs(src_dir, out, opts, attrs),
        FsType::Erofs => {
            if let Some(attrs) = attrs {
                attrs::apply_to_tree(src_dir, attrs)?;
            }
            build_erofs(src_dir, out, opts)
        }
        FsType::Ext4 => ext4::build_ext4(src_dir, &meta, out, opts, attrs),
    };
    if result.is_err() {
        if let Err(e) = remove_if_exists(out, "remove partial output") {
            log::warn!("{}", flipslot_cli_support::source_chain(&e));
        }
    }
    result
}

fn check_options(opts: &MkfsOptions) -> Result<(), MkfsError> {
    if matches!(opts.fs, FsType::Squashfs | FsType::Ext4) && opts.timestamp > u64::from(u32::MAX) {
        return Err(MkfsError::TimestampOutOfRange {
            fs: opts.fs,
            timestamp: opts.timestamp,
        });
    }
    if let Some(label) = &opts.label {
        if opts.fs == FsType::Squashfs {
            return Err(MkfsError::LabelUnsupported {
                label: label.clone(),
                reason: "squashfs has no volume label".to_string(),
            });
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(MkfsError::LabelTooLong {
                fs: opts.fs,
                label: label.clone(),
                max: MAX_LABEL_BYTES,
            });
        }
    }
    if let Some(size) = opts.ext4_size {
        if size == 0 || size % EXT4_BLOCK != 0 {
            return Err(MkfsError::InvalidExt4Size { size });
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path, action: &'static str) -> Result<(), MkfsError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(MkfsError::Output {
            action,
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn build_squashfs(
    src: &Path,
    out: &Path,
    opts: &MkfsOptions,
    attrs: Option<&TreeAttrs>,
) -> Result<(), MkfsError> {
    let t = opts.timestamp.to_string();
    let mut cmd = Cmd::new("mksquashfs")
        .arg(src)
        .arg(out)
        .args(["-noappend", "-no-progress", "-quiet", "-reproducible"])
        .args(["-mkfs-time", &t, "-all-time", &t])
        .env_remove(SOURCE_DATE_EPOCH);
    let Some(attrs) = attrs else {
        cmd.run()?;
        return Ok(());
    };
    attrs::set_xattrs(src, attrs)?;
    if let Some(root) = attrs.get(b"") {
        cmd = cmd
            .arg("-root-mode")
            .arg(format!("{:o}", root.mode & 0o7777))
            .args(["-root-uid", &root.uid.to_string()])
            .args(["-root-gid", &root.gid.to_string()]);
    }
    let pseudo = scratch_path(out, "pseudo");
    remove_if_exists(&pseudo, "remove stale pseudo file")?;
    let result = attrs::squashfs_pseudo(src, attrs).and_then(|text| {
        fs::write(&pseudo, text).map_err(|source| MkfsError::Output {
            action: "write pseudo file",
            path: pseudo.clone(),
            source,
        })?;
        cmd.arg("-pf").arg(&pseudo).run()?;
        Ok(())
    });
    if let Err(e) = remove_if_exists(&pseudo, "remove pseudo file") {
        log::warn!("{}", flipslot_cli_support::source_chain(&e));
    }
    result
}

/// A scratch file next to `image`: `.<name>.<what>-<pid>`.
fn scratch_path(image: &Path, what: &str) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(image.file_name().unwrap_or(OsStr::new("image")));
    name.push(format!(".{what}-{}", std::process::id()));
    image.with_file_name(name)
}

fn build_erofs(src: &Path, out: &Path, opts: &MkfsOptions) -> Result<(), MkfsError> {
    let mut cmd = Cmd::new("mkfs.erofs")
        .arg("--quiet")
        .arg(format!("-T{}", opts.timestamp))
        .arg(format!("-U{}", format_uuid(&opts.uuid)))
        .env_remove(SOURCE_DATE_EPOCH);
    if let Some(label) = &opts.label {
        if !erofs_supports_label()? {
            return Err(MkfsError::LabelUnsupported {
                label: label.clone(),
                reason: "the installed mkfs.erofs has no -L option (erofs-utils 1.5 lacks it)"
                    .to_string(),
            });
        }
        cmd = cmd.arg("-L").arg(label);
    }
    cmd.arg(out).arg(src).run()?;
    Ok(())
}

/// Whether `mkfs.erofs --help` lists `-L` (erofs-utils 1.5 does not).
fn erofs_supports_label() -> Result<bool, MkfsError> {
    let help = Cmd::new("mkfs.erofs").arg("--help").run()?;
    Ok(help_lists_option(&help.stdout, "-L") || help_lists_option(&help.stderr, "-L"))
}

/// Whether a usage text has a line whose first word starts with `option`.
fn help_lists_option(help: &[u8], option: &str) -> bool {
    String::from_utf8_lossy(help)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|word| word.starts_with(option))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn fs_type_round_trips() {
        for t in FsType::ALL {
            assert_eq!(t.to_string().parse::<FsType>().unwrap(), t);
        }
        let err = "btrfs".parse::<FsType>().unwrap_err();
        assert!(err.to_string().contains("btrfs"), "{err}");
    }

    #[test]
    fn uuid_is_v4_and_deterministic() {
        let a = uuid_from_seed(b"rootfs-1.2.3");
        assert_eq!(a, uuid_from_seed(b"rootfs-1.2.3"));
        assert_ne!(a, uuid_from_seed(b"rootfs-1.2.4"));
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] & 0xc0, 0x80);
        let s = format_uuid(&a);
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_eq!(
            format_uuid(&[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ]),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
    }

    #[test]
    fn source_date_epoch_parsing() {
        assert_eq!(
            parse_source_date_epoch(OsStr::new("1700000000")).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_source_date_epoch(OsStr::new("0")).unwrap(), 0);
        for bad in [
            "",
            " 1",
            "+1",
            "-1",
            "1.5",
            "abc",
            "99999999999999999999999",
        ] {
            let err = parse_source_date_epoch(OsStr::new(bad)).unwrap_err();
            assert!(err.to_string().contains("SOURCE_DATE_EPOCH"), "{err}");
        }
    }

    #[test]
    fn options_are_checked() {
        let mut opts = MkfsOptions::new(FsType::Squashfs, u64::from(u32::MAX) + 1, [0; 16]);
        assert!(matches!(
            check_options(&opts),
            Err(MkfsError::TimestampOutOfRange { .. })
        ));
        opts.fs = FsType::Erofs;
        assert!(check_options(&opts).is_ok());
        opts.label = Some("x".repeat(17));
        assert!(matches!(
            check_options(&opts),
            Err(MkfsError::LabelTooLong { .. })
        ));
        opts.fs = FsType::Squashfs;
        opts.timestamp = 0;
        assert!(matches!(
            check_options(&opts),
            Err(MkfsError::LabelUnsupported { .. })
        ));
        opts.fs = FsType::Ext4;
        opts.label = None;
        opts.ext4_size = Some(4097);
        assert!(matches!(
            check_options(&opts),
            Err(MkfsError::InvalidExt4Size { .. })
        ));
    }

    #[test]
    fn help_option_detection() {
        let help = b"usage: [options] FILE DIRECTORY\n -T#   set time\n -UX   uuid\n";
        assert!(help_lists_option(help, "-U"));
        assert!(!help_lists_option(help, "-L"));
        assert!(help_lists_option(b" -L volume-name  set label\n", "-L"));
    }
}
