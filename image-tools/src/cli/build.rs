//! `flipslot-image build`: collects image files (building filesystems from directories
//! and container images first), then writes and signs the bundle with
//! [`flipslot_format::builder::build`].

mod oci;

use super::{parse_chunk_size, parse_class_path, parse_size, ClassPath};
use crate::mkfs::{self, FsType, MkfsOptions};
use anyhow::Context as _;
use clap::ArgMatches;
use flipslot_cli_support::progress::{format_bytes, ProgressMode, Reporter};
use flipslot_format::builder::{self, BuildOptions, ImageInput};
use flipslot_format::keys;
use flipslot_format::manifest::{ChunkHash, Compression};
use std::path::{Path, PathBuf};

/// Chunk compression, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CompressionArg {
    /// Chunks stored as they are
    None,
    /// Each chunk compressed on its own with zstd
    Zstd,
}

/// The chunk hash, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ChunkHashArg {
    /// BLAKE3 (manifest format 2): several times faster to verify on the device
    Blake3,
    /// SHA-256 (manifest format 1): installable by every flipslot release
    Sha256,
}

/// Filesystem type for `--dir`, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FsArg {
    /// squashfs, with mksquashfs (squashfs-tools)
    Squashfs,
    /// EROFS, with mkfs.erofs (erofs-utils)
    Erofs,
    /// ext4, with mke2fs and debugfs (e2fsprogs)
    Ext4,
}

impl From<FsArg> for FsType {
    fn from(f: FsArg) -> FsType {
        match f {
            FsArg::Squashfs => FsType::Squashfs,
            FsArg::Erofs => FsType::Erofs,
            FsArg::Ext4 => FsType::Ext4,
        }
    }
}

/// The long help of `build`.
pub(super) const LONG_ABOUT: &str = "Build a bundle.\n\n\
    Each image is given as --image CLASS=FILE (a ready filesystem image), as \
    --dir CLASS=DIR with --fs (the filesystem is built from the directory first, in a \
    temporary file next to --out), or as --oci CLASS=ARCHIVE[:REF] with --fs (the filesystem \
    is built from a container image). Images are stored in the order given. CLASS is the slot \
    class the device writes the image to, e.g. rootfs.\n\n\
    --oci takes an OCI image layout (a directory, or a tar archive of one) or `docker save` \
    output (legacy or OCI-shaped, uncompressed). ARCHIVE is the whole value when that path \
    exists, else its shortest part before a ':' that names an existing path, and REF the rest: \
    it picks one image of several by its org.opencontainers.image.ref.name or \
    io.containerd.image.name annotation, or by its docker tag (acme/app:1 also matches \
    docker.io/acme/app:1). Without REF the archive must hold one image.\n\n\
    Every manifest, config and layer of --oci is checked against its sha256 before use. The \
    layers are unpacked in order into a temporary directory next to --out: whiteouts and \
    opaque directories are applied; owners, modes (setuid, setgid, sticky), extended \
    attributes (e.g. security.capability) and hard links are kept; times become the build \
    time. squashfs and ext4 need no root (the owners reach mksquashfs and debugfs as a \
    description), except that squashfs needs root for extended attributes outside user.; \
    erofs needs root. A member with '..' or an absolute path, one that goes through a \
    symlink, or a hard link to anything but a file of the image fails the build. Device \
    nodes and FIFOs are not created; a warning names them. See docs/oci.md. Example:\n\n  \
    docker save acme/app:1 -o app.tar\n  \
    flipslot-image build --compatible acme-box --version 1.2.0 --key release.key \\\n      \
    --oci rootfs=app.tar:acme/app:1 --fs squashfs --out app-1.2.0.fsb\n\n\
    The output is reproducible: the same inputs, options, keys and build time give a \
    byte-identical bundle. The build time is SOURCE_DATE_EPOCH when set, otherwise the latest \
    `created` time of the --oci images, otherwise now; it is also the time of every inode of \
    filesystems built from --dir and --oci, whose UUID is derived from the compatible \
    string, the version and the class.\n\n\
    Without --key the bundle is unsigned (a warning is printed); sign it later with \
    `flipslot-image sign`. The bundle is written to a temporary file and renamed to --out \
    when complete.\n\n\
    With --json, standard output carries JSON lines: progress events \
    {\"v\":1,\"event\":\"progress\",\"phase\":\"scan\"|\"write\",\"done\":N,\"total\":N} and a final \
    {\"v\":1,\"event\":\"done\",\"bundle\":PATH,\"compatible\":S,\"version\":S,\"build_time\":N,\
    \"manifest_sha256\":HEX,\"manifest_format\":N,\"chunk_hash\":\"blake3\"|\"sha256\",\"size\":N,\"signatures\":[HEX],\"images\":[IMAGE]} where IMAGE is \
    {\"index\",\"class\",\"size\",\"sha256\",\"chunk_size\",\"chunks\",\"compression\",\
    \"stored_size\",\"block_index\"} as in `info --json`.";

/// Arguments of `build`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("trees").args(["dirs", "ocis"]).multiple(true)))]
pub struct BuildArgs {
    /// The system kind the bundle is for; devices accept only their own compatible string
    #[arg(long, value_name = "STR")]
    compatible: String,
    /// Release version (semantic version, e.g. 1.2.0)
    #[arg(long, value_name = "SEMVER")]
    version: semver::Version,
    /// Free text shown by `info` (at most 4096 bytes)
    #[arg(long, value_name = "STR")]
    description: Option<String>,
    /// Secret key to sign with (PKCS#8 PEM); repeat for several signatures
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
    /// Where to write the bundle
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Uncompressed chunk size: a multiple of 4K between 4K and 64M (suffixes K, M)
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_chunk_size)]
    chunk_size: u32,
    /// How chunks are stored
    #[arg(long, value_enum, value_name = "KIND", default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// The hash every chunk is checked with on the device: blake3 (manifest format 2) or
    /// sha256 (format 1, for devices running a flipslot release older than format 2)
    #[arg(long, value_enum, value_name = "ALG", default_value_t = ChunkHashArg::Blake3)]
    chunk_hash: ChunkHashArg,
    /// zstd compression level (with --compression zstd)
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: i32,
    /// Add an index of the SHA-256 of every 4 KiB block of each image (for delta updates)
    #[arg(long)]
    block_index: bool,
    /// A filesystem image file for slot class CLASS; repeatable
    #[arg(long = "image", value_name = "CLASS=FILE", value_parser = parse_class_path,
          required_unless_present = "trees")]
    images: Vec<ClassPath>,
    /// A directory to build a filesystem image from (see --fs) for slot class CLASS; repeatable
    #[arg(long = "dir", value_name = "CLASS=DIR", value_parser = parse_class_path,
          requires = "fs")]
    dirs: Vec<ClassPath>,
    /// A container image to build a filesystem image from (see --fs) for slot class CLASS:
    /// an OCI image layout directory or tar archive, or `docker save` output; REF picks one
    /// image of several (a ref.name annotation or docker tag); repeatable
    #[arg(long = "oci", value_name = "CLASS=ARCHIVE[:REF]", value_parser = parse_class_path,
          requires = "fs")]
    ocis: Vec<ClassPath>,
    /// Filesystem type built from each --dir and --oci
    #[arg(long, value_enum, value_name = "TYPE")]
    fs: Option<FsArg>,
    /// Size of ext4 images built from --dir or --oci (suffixes K, M, G; default: from the tree
    /// size)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "trees")]
    ext4_size: Option<u64>,
    /// Volume label of filesystems built from --dir or --oci (ext4, erofs)
    #[arg(long, value_name = "L", requires = "trees")]
    label: Option<String>,
    /// Print progress and the result as JSON lines on standard output
    #[arg(long)]
    json: bool,
}

/// One image to put in the bundle, in command line order.
#[derive(Debug)]
enum Source<'a> {
    File(&'a ClassPath),
    Dir(&'a ClassPath),
    /// The `n`th `--oci` value.
    Oci(&'a ClassPath, usize),
}

impl Source<'_> {
    fn class(&self) -> &str {
        match self {
            Source::File(c) | Source::Dir(c) | Source::Oci(c, _) => &c.class,
        }
    }
}

/// Removes the temporary filesystem images when the build ends, however it ends.
#[derive(Debug, Default)]
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            if let Err(e) = std::fs::remove_file(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot remove temporary file {}: {e}", p.display());
                }
            }
        }
    }
}

/// Runs `build`. `matches` are the subcommand's matches, used to keep `--image` and
/// `--dir` in command line order.
pub fn run(args: &BuildArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let out = &args.out;
    let sources = ordered_sources(args, matches);
    check_classes(&sources)?;
    let images = oci::open_all(&args.ocis)?;
    let build_time = match (mkfs::source_date_epoch()?, oci::build_time(&images)) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => super::now_secs()?,
    };
    let mut signing_keys = Vec::new();
    for k in &args.keys {
        signing_keys.push(keys::load_secret_key(k)?);
    }
    if signing_keys.is_empty() {
        eprintln!(
            "warning: no --key given: {} will be unsigned and devices will refuse it until it is signed with `flipslot-image sign`",
            out.display()
        );
    }
    let mut temps = TempFiles::default();
    let mut inputs = Vec::new();
    for src in &sources {
        match src {
            Source::File(cp) => inputs.push(ImageInput {
                class: cp.class.clone(),
                path: cp.path.clone(),
            }),
            Source::Dir(cp) => {
                let path = build_filesystem(args, cp, build_time, &mut temps)?;
                inputs.push(ImageInput {
                    class: cp.class.clone(),
                    path,
                });
            }
            Source::Oci(cp, n) => {
                let path = oci::build_filesystem(args, cp, &images[*n], build_time, &mut temps)?;
                inputs.push(ImageInput {
                    class: cp.class.clone(),
                    path,
                });
            }
        }
    }
    let mut total = 0u64;
    for input in &inputs {
        total += std::fs::metadata(&input.path)
            .with_context(|| input.path.display().to_string())?
            .len();
    }
    let opts = BuildOptions {
        compatible: args.compatible.clone(),
        version: args.version.clone(),
        build_time,
        description: args.description.clone(),
        chunk_size: args.chunk_size,
        compression: match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Zstd => Compression::Zstd,
        },
        zstd_level: args.zstd_level,
        block_index: args.block_index,
        chunk_hash: match args.chunk_hash {
            ChunkHashArg::Blake3 => ChunkHash::Blake3,
            ChunkHashArg::Sha256 => ChunkHash::Sha256,
        },
    };
    let mut reporter = Reporter::new(if args.json {
        ProgressMode::Json
    } else {
        ProgressMode::Auto
    });
    let mut acc = Accumulate::new(total);
    let summary = super::write_atomically(out, |w| {
        Ok(builder::build(
            &inputs,
            &opts,
            &signing_keys,
            w,
            &mut |phase, done, size| {
                let (phase, done, total) = acc.add(phase, done, size);
                reporter.update(&phase, done, total);
            },
        )?)
    });
    reporter.finish();
    let summary = summary.with_context(|| format!("cannot build {}", out.display()))?;
    drop(temps);
    let key_ids: Vec<flipslot_format::KeyId> = signing_keys
        .iter()
        .map(|k| keys::key_id(&k.verifying_key()))
        .collect();
    let m = &summary.manifest;
    if reporter.is_json() {
        let images = super::images_json(&m.images);
        reporter.event(
            "done",
            serde_json::json!({
                "bundle": out.display().to_string(),
                "compatible": m.compatible,
                "version": m.version.to_string(),
                "build_time": m.build_time,
                "manifest_sha256": summary.manifest_sha256.to_hex(),
                "manifest_format": summary.manifest.format,
                "chunk_hash": summary.manifest.chunk_hash().name(),
                "size": summary.bundle_len,
                "signatures": key_ids.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "images": images,
            }),
        );
    } else {
        let images: Vec<String> = m
            .images
            .iter()
            .map(|i| format!("{} {}", i.class, format_bytes(i.size)))
            .collect();
        let signed = if key_ids.is_empty() {
            "UNSIGNED".to_string()
        } else {
            format!("signed by {}", super::join_ids(&key_ids))
        };
        println!(
            "{}: version {} for {}, {} ({}), {} in all, manifest sha256 {}, {signed}",
            out.display(),
            m.version,
            m.compatible,
            if images.len() == 1 {
                "1 image".to_string()
            } else {
                format!("{} images", images.len())
            },
            images.join(", "),
            format_bytes(summary.bundle_len),
            summary.manifest_sha256,
        );
    }
    Ok(())
}

/// `--image` and `--dir` values in the order they were given.
fn ordered_sources<'a>(args: &'a BuildArgs, matches: &ArgMatches) -> Vec<Source<'a>> {
    let indices = |id: &str| -> Vec<usize> {
        matches
            .indices_of(id)
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let mut v: Vec<(usize, Source<'a>)> = Vec::new();
    let image_idx = indices("images");
    let dir_idx = indices("dirs");
    let oci_idx = indices("ocis");
    for (n, cp) in args.images.iter().enumerate() {
        v.push((image_idx.get(n).copied().unwrap_or(n), Source::File(cp)));
    }
    for (n, cp) in args.dirs.iter().enumerate() {
        v.push((
            dir_idx.get(n).copied().unwrap_or(usize::MAX),
            Source::Dir(cp),
        ));
    }
    for (n, cp) in args.ocis.iter().enumerate() {
        v.push((
            oci_idx.get(n).copied().unwrap_or(usize::MAX),
            Source::Oci(cp, n),
        ));
    }
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, s)| s).collect()
}

/// Each slot class may appear once.
fn check_classes(sources: &[Source<'_>]) -> anyhow::Result<()> {
    for (i, s) in sources.iter().enumerate() {
        if sources[..i].iter().any(|o| o.class() == s.class()) {
            anyhow::bail!("slot class {} is given more than once", s.class());
        }
    }
    Ok(())
}

/// Builds the filesystem of one `--dir` into a temporary file next to `--out`.
fn build_filesystem(
    args: &BuildArgs,
    cp: &ClassPath,
    build_time: u64,
    temps: &mut TempFiles,
) -> anyhow::Result<PathBuf> {
    let opts = mkfs_options(args, &cp.class, build_time)?;
    let fs = opts.fs;
    let tmp = temp_image_path(&args.out, &cp.class);
    temps.0.push(tmp.clone());
    if !args.json {
        eprintln!(
            "building {fs} image for {} from {}",
            cp.class,
            cp.path.display()
        );
    }
    log::info!(
        "building {fs} from {} into {} (uuid {}, time {build_time})",
        cp.path.display(),
        tmp.display(),
        mkfs::format_uuid(&opts.uuid)
    );
    mkfs::build_fs(&cp.path, &tmp, &opts).with_context(|| {
        format!(
            "cannot build the {fs} image of {} from {}",
            cp.class,
            cp.path.display()
        )
    })?;
    Ok(tmp)
}

/// The options of a filesystem built for `class` from `--dir` or `--oci`.
fn mkfs_options(args: &BuildArgs, class: &str, build_time: u64) -> anyhow::Result<MkfsOptions> {
    let fs: FsType = args
        .fs
        .context("--dir and --oci need --fs squashfs|erofs|ext4")?
        .into();
    Ok(MkfsOptions {
        fs,
        timestamp: build_time,
        uuid: mkfs::uuid_from_seed(&uuid_seed(&args.compatible, &args.version, class)),
        ext4_size: args.ext4_size,
        label: args.label.clone(),
    })
}

/// The seed of a filesystem UUID: compatible, version and class, NUL-separated.
fn uuid_seed(compatible: &str, version: &semver::Version, class: &str) -> Vec<u8> {
    format!("{compatible}\0{version}\0{class}").into_bytes()
}

/// `.OUTNAME.CLASS.PID.img` in the directory of `out`.
fn temp_image_path(out: &Path, class: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    out.with_file_name(format!(".{name}.{class}.{}.img", std::process::id()))
}

/// Turns the builder's per-image progress into one progress per phase over all images.
/// The builder reports `done` of each image's `size` and reaches `done == size` at the end
/// of every image.
#[derive(Debug)]
struct Accumulate {
    total: u64,
    phase: String,
    base: u64,
    last: (u64, u64),
}

impl Accumulate {
    fn new(total: u64) -> Accumulate {
        Accumulate {
            total,
            phase: String::new(),
            base: 0,
            last: (0, 0),
        }
    }

    fn add(&mut self, phase: &str, done: u64, size: u64) -> (String, u64, u64) {
        if phase != self.phase {
            self.phase = phase.to_string();
            self.base = 0;
        } else if self.last.0 == self.last.1 && self.last.1 > 0 {
            // The previous image is complete: this is the next one.
            self.base += self.last.1;
        }
        self.last = (done, size);
        let total = self.total.max(self.base + size);
        (self.phase.clone(), self.base + done, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_accumulates_over_images() {
        let mut a = Accumulate::new(300);
        assert_eq!(a.add("scan", 50, 100), ("scan".into(), 50, 300));
        assert_eq!(a.add("scan", 100, 100), ("scan".into(), 100, 300));
        assert_eq!(a.add("scan", 100, 200), ("scan".into(), 200, 300));
        assert_eq!(a.add("scan", 200, 200), ("scan".into(), 300, 300));
        assert_eq!(a.add("write", 100, 100), ("write".into(), 100, 300));
        assert_eq!(a.add("write", 200, 200), ("write".into(), 300, 300));
    }

    #[test]
    fn uuid_seed_separates_fields() {
        let v = semver::Version::new(1, 0, 0);
        assert_ne!(uuid_seed("a", &v, "bc"), uuid_seed("ab", &v, "c"));
        assert_eq!(uuid_seed("acme", &v, "rootfs"), b"acme\x001.0.0\x00rootfs");
    }

    #[test]
    fn temp_images_are_hidden_siblings_of_the_output() {
        let p = temp_image_path(Path::new("out/x.fsb"), "rootfs");
        assert_eq!(p.parent(), Some(Path::new("out")));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".x.fsb.rootfs.") && name.ends_with(".img"),
            "{name}"
        );
    }
}
