//! `flipslot-image extract`: writes one verified image of a bundle to a regular file,
//! through a temporary file renamed into place once every chunk and the image hash checked.

use super::TrustArgs;
use anyhow::Context as _;
use flipslot_cli_support::progress::{format_bytes, ProgressMode, Reporter};
use flipslot_format::error::BundleError;
use std::path::PathBuf;

/// The long help of `extract`.
pub(super) const LONG_ABOUT: &str = "Write one image of a bundle to a file.\n\n\
    The bundle's signatures are verified first, then every chunk is checked against the \
    signed manifest as it is read, and the whole image against its SHA-256. The data goes to \
    a temporary file next to --out, renamed to --out only when everything matched. --out \
    must be a regular file (or not exist); this command never writes to a device.\n\n\
    With --json, standard output carries JSON lines: progress events (phase \"extract\") and a \
    final {\"v\":1,\"event\":\"done\",\"bundle\":PATH,\"out\":PATH,\"index\":N,\"class\":S,\
    \"size\":N,\"sha256\":HEX}.";

/// Arguments of `extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    trust: TrustArgs,
    /// The image to extract: its slot class, or its index (0 is the first image)
    #[arg(long, value_name = "CLASS|INDEX")]
    image: String,
    /// The file to write
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print progress and the result as JSON lines on standard output
    #[arg(long)]
    json: bool,
    /// The bundle to read
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
}

/// Runs `extract`.
pub fn run(args: &ExtractArgs) -> anyhow::Result<()> {
    let path = &args.bundle;
    let out = &args.out;
    if let Ok(meta) = out.symlink_metadata() {
        if !meta.is_file() {
            anyhow::bail!(
                "{} exists and is not a regular file, refusing to replace it",
                out.display()
            );
        }
    }
    let (mut bundle, _) = super::open_verified(path, &args.trust)?;
    let m = bundle.manifest();
    let index = select_image(m, &args.image).with_context(|| path.display().to_string())?;
    let img = &m.images[index];
    let (class, size, sha256) = (img.class.clone(), img.size, img.sha256);
    let mut reporter = Reporter::new(if args.json {
        ProgressMode::Json
    } else {
        ProgressMode::Auto
    });
    let result = super::write_atomically(out, |w| {
        bundle
            .stream_image(index, &mut |offset, data| {
                w.write_all(data).map_err(|e| {
                    BundleError::io(format!("{}: offset {offset}", out.display()), e)
                })?;
                reporter.update("extract", offset + data.len() as u64, size);
                Ok(())
            })
            .with_context(|| path.display().to_string())
    });
    reporter.finish();
    result?;
    if reporter.is_json() {
        reporter.event(
            "done",
            serde_json::json!({
                "bundle": path.display().to_string(),
                "out": out.display().to_string(),
                "index": index,
                "class": class,
                "size": size,
                "sha256": sha256.to_hex(),
            }),
        );
    } else {
        println!(
            "{}: image {index} ({class}), {} bytes ({}), sha256 {sha256}",
            out.display(),
            size,
            format_bytes(size)
        );
    }
    Ok(())
}

/// Finds an image by class, or else by index.
fn select_image(m: &flipslot_format::Manifest, which: &str) -> anyhow::Result<usize> {
    if let Some(i) = m.images.iter().position(|img| img.class == which) {
        return Ok(i);
    }
    if let Ok(i) = which.parse::<usize>() {
        if i < m.images.len() {
            return Ok(i);
        }
    }
    let classes: Vec<&str> = m.images.iter().map(|i| i.class.as_str()).collect();
    anyhow::bail!(
        "no image {which:?}: the bundle holds {} (indices 0 to {})",
        classes.join(", "),
        m.images.len().saturating_sub(1)
    )
}
