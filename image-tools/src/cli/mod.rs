//! The `flipslot-image` command line: argument definitions (clap derive) and one module per
//! subcommand, each a thin layer over the library (builder, reader, keys, mkfs).
//!
//! Exit status: 0 on success, 1 on any error (the binary prints `error: ` and the error
//! chain, which names the bundle or file concerned), 2 for a command line clap rejects.

mod build;
mod channel;
mod channel_diff;
mod disk;
mod extract;
mod info;
mod keygen;
mod netboot;
mod provision;
mod rauc_info;
mod sign;
mod verify;

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use flipslot_format::keys::Keyring;
use flipslot_format::manifest::{valid_class, Image, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use flipslot_format::reader::{Bundle, VerifyPolicy};
use flipslot_format::source::FileSource;
use std::path::{Path, PathBuf};

/// Build, sign, inspect and verify flipslot update bundles.
#[derive(Debug, Parser)]
#[command(
    name = "flipslot-image",
    version,
    about = "Build, sign, inspect and verify flipslot A/B update bundles (.fsb)",
    long_about = "Build, sign, inspect and verify flipslot A/B update bundles (.fsb).\n\n\
        A bundle holds one or more filesystem images, each cut into chunks whose SHA-256 \
        hashes are listed in a manifest signed with ed25519 keys. Devices install a bundle \
        only if enough of its signatures are by keys in their keyring.\n\n\
        Exit status: 0 on success, 1 on error, 2 on a command line error.\n\
        Logging: set FLIPSLOT_LOG to error, warn (default), info, debug or trace.",
    after_help = "A typical flow:\n  \
        flipslot-image keygen --out-dir keys --name release\n  \
        flipslot-image build --compatible acme-box --version 1.2.0 --key keys/release.key \\\n      \
        --image rootfs=rootfs.img --out update.fsb\n  \
        flipslot-image verify --keyring keys/release.pub update.fsb"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an ed25519 signing key pair (NAME.key and NAME.pub)
    #[command(long_about = keygen::LONG_ABOUT)]
    Keygen(keygen::KeygenArgs),
    /// Build a bundle from filesystem images or directories
    #[command(long_about = build::LONG_ABOUT)]
    Build(build::BuildArgs),
    /// Add signatures to a bundle (existing signatures are kept)
    #[command(long_about = sign::LONG_ABOUT)]
    Sign(sign::SignArgs),
    /// Replace all signatures of a bundle
    #[command(long_about = sign::LONG_ABOUT)]
    Resign(sign::SignArgs),
    /// Verify a bundle completely: signatures, manifest and every payload byte
    #[command(long_about = verify::LONG_ABOUT)]
    Verify(verify::VerifyArgs),
    /// Show what a bundle contains and who signed it
    #[command(long_about = info::LONG_ABOUT)]
    Info(info::InfoArgs),
    /// Write one image of a verified bundle to a file
    #[command(long_about = extract::LONG_ABOUT)]
    Extract(extract::ExtractArgs),
    /// Write a signed update channel file pointing at a bundle
    #[command(long_about = channel::LONG_ABOUT)]
    Channel(channel::ChannelArgs),
    /// Verify a channel file as a device would
    #[command(long_about = channel::LONG_ABOUT_VERIFY)]
    ChannelVerify(channel::ChannelVerifyArgs),
    /// Show what replacing channel OLD by NEW does to the fleet (a plan)
    #[command(long_about = channel_diff::LONG_ABOUT)]
    ChannelDiff(channel_diff::ChannelDiffArgs),
    /// Build a bootable A/B GPT disk image (x86_64 UEFI, GRUB) from a layout and a bundle
    Disk(disk::DiskArgs),
    /// Build the signed provisioning set (provision.json, esp.img) for `flipslot provision`
    #[command(long_about = provision::LONG_ABOUT)]
    Provision(provision::ProvisionArgs),
    /// Verify a provisioning description as a machine would and show it
    #[command(long_about = provision::LONG_ABOUT_INFO)]
    ProvisionInfo(provision::ProvisionInfoArgs),
    /// Build the kernel, initramfs and iPXE script that provision bare machines over PXE
    #[command(long_about = netboot::LONG_ABOUT)]
    Netboot(netboot::NetbootArgs),
}

/// The command line definition: what [`run`] parses, and what the man pages and shell
/// completions of the package are generated from.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses the process's arguments and runs the subcommand. `--help`, `--version` and
/// command line errors are handled by clap (which exits the process).
pub fn run() -> anyhow::Result<()> {
    run_matches(&command().get_matches())
}

/// Parses `args` (the first item is the program name) and runs the subcommand.
pub fn run_from<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    run_matches(&matches)
}

fn run_matches(matches: &ArgMatches) -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(matches)?;
    match cli.command {
        Command::Keygen(a) => keygen::run(&a),
        Command::Build(a) => {
            let sub = matches
                .subcommand_matches("build")
                .context("internal error: no matches for the build subcommand")?;
            build::run(&a, sub)
        }
        Command::Sign(a) => sign::run(&a, false),
        Command::Resign(a) => sign::run(&a, true),
        Command::Verify(a) => verify::run(&a),
        Command::Info(a) => info::run(&a),
        Command::Extract(a) => extract::run(&a),
        Command::Disk(a) => disk::run(a),
        Command::Netboot(a) => netboot::run(&a),
        Command::Channel(a) => channel::run(&a),
        Command::ChannelVerify(a) => channel::run_verify(&a),
        Command::ChannelDiff(a) => channel_diff::run(&a),
        Command::Provision(a) => provision::run(&a),
        Command::ProvisionInfo(a) => provision::run_info(&a),
    }
}

/// Trust options shared by the commands that open a bundle with verification.
#[derive(Debug, clap::Args)]
struct TrustArgs {
    /// Trusted public keys: one PEM public key file, or a directory whose *.pub files are
    /// all trusted
    #[arg(long, value_name = "PATH")]
    keyring: PathBuf,
    /// How many valid signatures by distinct trusted keys the bundle needs
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(flipslot_format::format::MAX_SIGNATURES)))]
    min_signatures: u32,
}

/// Opens `path` and verifies its signatures against the keyring of `trust`.
fn open_verified(path: &Path, trust: &TrustArgs) -> anyhow::Result<(Bundle<FileSource>, Keyring)> {
    let keyring = Keyring::load(&trust.keyring)?;
    let policy = VerifyPolicy {
        min_signatures: trust.min_signatures,
    };
    let bundle = Bundle::open(open_file(path)?, &keyring, &policy)
        .with_context(|| path.display().to_string())?;
    Ok((bundle, keyring))
}

/// Opens a bundle file.
/// Whether the file at `path` starts like a RAUC bundle (a squashfs).
fn is_rauc_bundle(path: &Path) -> anyhow::Result<bool> {
    use flipslot_format::source::ByteSource as _;
    let mut head = [0u8; 8];
    // Refuses a FIFO or directory before opening it in a way that could block.
    let mut f =
        FileSource::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
    let n = match f.read_exact_at(0, &mut head) {
        Ok(()) => head.len(),
        // Shorter than the magic: a file, whose size is then known exactly.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            let n = f.size().unwrap_or(0).min(head.len() as u64) as usize;
            f.read_exact_at(0, &mut head[..n])
                .with_context(|| format!("cannot read bundle {}", path.display()))?;
            n
        }
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot read bundle {}", path.display()))
            )
        }
    };
    Ok(
        flipslot_rauc::bundle::BundleKind::detect(&head[..n], &path.to_string_lossy())
            == flipslot_rauc::bundle::BundleKind::Rauc,
    )
}

fn open_file(path: &Path) -> anyhow::Result<FileSource> {
    FileSource::open(path).with_context(|| path.display().to_string())
}

/// A `CLASS=PATH` command line value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClassPath {
    class: String,
    path: PathBuf,
}

/// Parses `CLASS=PATH`; the class must be a valid slot class.
/// Writes `out` atomically ([`flipslot_os::fs::AtomicFile`]) through a 1 MiB buffer:
/// `write` fills it, and the file replaces `out` only when `write` succeeded; after a
/// failure nothing is left beside `out`.
fn write_atomically<T>(
    out: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use std::io::Write as _;
    let mut file = flipslot_os::fs::AtomicFile::create(out)?;
    let tmp = file.temp_path().display().to_string();
    let value = {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        let value = write(&mut w)?;
        w.flush().with_context(|| format!("cannot write {tmp}"))?;
        value
    };
    file.commit()?;
    Ok(value)
}

fn parse_class_path(s: &str) -> Result<ClassPath, String> {
    let (class, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not CLASS=PATH"))?;
    if !valid_class(class) {
        return Err(format!(
            "class {class:?} must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -"
        ));
    }
    if path.is_empty() {
        return Err(format!("{s:?} names no path after ="));
    }
    Ok(ClassPath {
        class: class.to_string(),
        path: PathBuf::from(path),
    })
}

use flipslot_format::units::parse_size;

/// Parses a chunk size: a size that is a multiple of 4 KiB between 4 KiB and 64 MiB.
fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if n < u64::from(MIN_CHUNK_SIZE)
        || n > u64::from(MAX_CHUNK_SIZE)
        || n % u64::from(MIN_CHUNK_SIZE) != 0
    {
        return Err(format!(
            "chunk size {s} must be a multiple of 4K between 4K and 64M"
        ));
    }
    u32::try_from(n).map_err(|_| format!("chunk size {s} is too large"))
}

/// Seconds since the Unix epoch now.
fn now_secs() -> anyhow::Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}

/// Total stored bytes of an image's chunks (without its block index).
fn stored_size(img: &Image) -> u64 {
    img.chunks.iter().map(|c| c.stored_size).sum()
}

/// The JSON descriptions of a manifest's images, shared by `build --json` and
/// `info --json`.
fn images_json(images: &[Image]) -> Vec<serde_json::Value> {
    images
        .iter()
        .enumerate()
        .map(|(i, img)| image_json(i, img))
        .collect()
}

/// The JSON description of one image.
fn image_json(index: usize, img: &Image) -> serde_json::Value {
    serde_json::json!({
        "index": index,
        "class": img.class,
        "size": img.size,
        "sha256": img.sha256.to_hex(),
        "chunk_size": img.chunk_size,
        "chunks": img.chunks.len(),
        "compression": img.compression,
        "stored_size": stored_size(img),
        "block_index": img.block_index.is_some(),
    })
}

/// Prints one JSON object on standard output, with the schema version added.
fn print_json(mut value: serde_json::Value) {
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "v".into(),
            serde_json::json!(flipslot_cli_support::progress::JSON_SCHEMA_VERSION),
        );
    }
    println!("{value}");
}

/// Key ids joined for humans: `0123abcd..., 4567ef01...` or `none`.
fn join_ids<'a>(ids: impl IntoIterator<Item = &'a flipslot_format::format::KeyId>) -> String {
    let v: Vec<String> = ids.into_iter().map(|k| k.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4mib"), Ok(4 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("16777216T").is_err());
        assert_eq!(parse_chunk_size("4M"), Ok(4 << 20));
        assert!(parse_chunk_size("1000").is_err());
        assert!(parse_chunk_size("128M").is_err());
        assert!(parse_chunk_size("0").is_err());
    }

    #[test]
    fn class_paths_parse() {
        assert_eq!(
            parse_class_path("rootfs=a/b=c.img"),
            Ok(ClassPath {
                class: "rootfs".into(),
                path: "a/b=c.img".into()
            })
        );
        assert!(parse_class_path("rootfs").is_err());
        assert!(parse_class_path("root fs=x").is_err());
        assert!(parse_class_path("=x").is_err());
        assert!(parse_class_path("rootfs=").is_err());
    }
}
