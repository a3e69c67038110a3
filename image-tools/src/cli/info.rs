//! `flipslot-image info`: what a bundle contains and who signed it, for people or as one
//! stable JSON object.

use anyhow::Context as _;
use flipslot_cli_support::progress::format_bytes;
use flipslot_format::reader::Bundle;
use flipslot_format::source::FileSource;
use std::path::PathBuf;

/// The long help of `info`.
pub(super) const LONG_ABOUT: &str =
    "Show a bundle's header and manifest: compatible, version, build time, \
    description, manifest SHA-256, signatures and images.\n\n\
    With --keyring the signatures are verified first (as `verify` does, at least \
    --min-signatures) and each is shown as trusted or untrusted; with --no-verify they are \
    not checked and shown as unverified (a warning is printed). The payload is not read: \
    use `verify` to check every chunk.\n\n\
    With --json, prints one JSON object: {\"v\":1, \"bundle\":PATH, \"verified\":BOOL, \
    \"compatible\":S, \"version\":S, \"build_time\":SECONDS, \"build_time_rfc3339\":S, \
    \"description\":S|null, \"manifest_sha256\":HEX, \"manifest_format\":1|2, \
    \"chunk_hash\":\"blake3\"|\"sha256\", \"manifest_size\":N, \
    \"payload_offset\":N, \"payload_size\":N, \"size\":N, \
    \"signatures\":[{\"key_id\":HEX, \"status\":\"trusted\"|\"untrusted\"|\"unverified\"}], \
    \"images\":[{\"index\":N, \"class\":S, \"size\":N, \"sha256\":HEX, \"chunk_size\":N, \
    \"chunks\":N, \"compression\":\"none\"|\"zstd\", \"stored_size\":N, \"block_index\":BOOL}]}. \
    Fields may be added in later versions; none will change meaning without a new \"v\".\n\n\
    RAUC bundles (.raucb, plain or verity) are recognised by their squashfs magic. Their \
    CMS signature is verified against --keyring, a PEM file of CA certificates or a \
    directory of them (as `rauc info --keyring`), with --check-purpose and \
    --allow-partial-chain as in RAUC's [keyring]. With --json the object is the one \
    `rauc info --output-format=json` prints (compatible, version, description, build, \
    hooks, images as [{CLASS:{variant, filename, checksum, size, hooks, adaptive}}]) plus \
    bundle, format, signer and manifest_sha256.";

/// Arguments of `info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Trusted public keys: one PEM public key file, or a directory of *.pub files
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "no_verify",
        conflicts_with = "no_verify"
    )]
    keyring: Option<PathBuf>,
    /// With --keyring: valid signatures by distinct trusted keys required
    #[arg(long, value_name = "N", default_value_t = 1, requires = "keyring",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(flipslot_format::format::MAX_SIGNATURES)))]
    min_signatures: u32,
    /// RAUC bundles: the purpose the signer certificate must have (smimesign, codesign, any)
    #[arg(long, value_name = "PURPOSE", default_value = "smimesign")]
    check_purpose: flipslot_rauc::x509::Purpose,
    /// RAUC bundles: accept a chain that ends at an intermediate in the keyring
    #[arg(long)]
    allow_partial_chain: bool,
    /// Do not check the signatures (inspect a bundle you have no key for)
    #[arg(long)]
    no_verify: bool,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// The bundle to inspect
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
}

/// Runs `info`.
pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let path = &args.bundle;
    if super::is_rauc_bundle(path)? {
        let keyring = args.keyring.as_deref().with_context(|| {
            format!(
                "{} is a RAUC bundle: its CMS signature is always verified; give --keyring \
                 with the CA certificate(s)",
                path.display()
            )
        })?;
        let trust = super::rauc_info::RaucTrustArgs {
            keyring,
            purpose: args.check_purpose,
            allow_partial_chain: args.allow_partial_chain,
        };
        let bundle = super::rauc_info::open(path, &trust)?;
        super::rauc_info::print(path, &bundle, args.json);
        return Ok(());
    }
    let bundle: Bundle<FileSource> = match &args.keyring {
        Some(keyring) => {
            let trust = super::TrustArgs {
                keyring: keyring.clone(),
                min_signatures: args.min_signatures,
            };
            super::open_verified(path, &trust)?.0
        }
        None => {
            eprintln!(
                "warning: --no-verify: the signatures of {} were NOT checked; nothing shown here is authenticated",
                path.display()
            );
            Bundle::open_unverified(super::open_file(path)?)
                .with_context(|| path.display().to_string())?
        }
    };
    if args.json {
        super::print_json(to_json(path, &bundle));
    } else {
        print!("{}", to_text(path, &bundle));
    }
    Ok(())
}

/// The signature entries with their status: trusted, untrusted or unverified.
fn signature_statuses(bundle: &Bundle<FileSource>) -> Vec<(String, &'static str)> {
    let report = bundle.signature_report();
    bundle
        .signatures()
        .iter()
        .map(|s| {
            let status = if !bundle.is_verified() {
                "unverified"
            } else if report.trusted.contains(&s.key_id) {
                "trusted"
            } else {
                "untrusted"
            };
            (s.key_id.to_string(), status)
        })
        .collect()
}

fn to_json(path: &std::path::Path, bundle: &Bundle<FileSource>) -> serde_json::Value {
    let m = bundle.manifest();
    let signatures: Vec<serde_json::Value> = signature_statuses(bundle)
        .into_iter()
        .map(|(id, status)| serde_json::json!({ "key_id": id, "status": status }))
        .collect();
    let images = super::images_json(&m.images);
    serde_json::json!({
        "bundle": path.display().to_string(),
        "verified": bundle.is_verified(),
        "compatible": m.compatible,
        "version": m.version.to_string(),
        "build_time": m.build_time,
        "build_time_rfc3339": flipslot_format::timefmt::rfc3339(m.build_time),
        "description": m.description,
        "manifest_sha256": bundle.manifest_sha256().to_hex(),
        "manifest_format": bundle.manifest().format,
        "chunk_hash": bundle.manifest().chunk_hash().name(),
        "manifest_size": bundle.manifest_bytes().len(),
        "payload_offset": bundle.payload_offset(),
        "payload_size": m.payload_size,
        "size": bundle.total_len(),
        "signatures": signatures,
        "images": images,
    })
}

fn to_text(path: &std::path::Path, bundle: &Bundle<FileSource>) -> String {
    let m = bundle.manifest();
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<16} {v}\n"));
    line("bundle:", path.display().to_string());
    line("compatible:", m.compatible.clone());
    line("version:", m.version.to_string());
    line(
        "build time:",
        flipslot_format::timefmt::rfc3339(m.build_time),
    );
    if let Some(d) = &m.description {
        line("description:", d.clone());
    }
    line("manifest sha256:", bundle.manifest_sha256().to_hex());
    line(
        "chunk hash:",
        format!("{} (manifest format {})", m.chunk_hash(), m.format),
    );
    line(
        "size:",
        format!(
            "{} bytes ({})",
            bundle.total_len(),
            format_bytes(bundle.total_len())
        ),
    );
    let sigs = signature_statuses(bundle);
    if sigs.is_empty() {
        line("signatures:", "none (unsigned)".into());
    }
    for (n, (id, status)) in sigs.iter().enumerate() {
        line(
            if n == 0 { "signatures:" } else { "" },
            format!("{id} {status}"),
        );
    }
    line("images:", m.images.len().to_string());
    for (i, img) in m.images.iter().enumerate() {
        line(&format!("  [{i}] class:"), img.class.clone());
        line(
            "    size:",
            format!("{} bytes ({})", img.size, format_bytes(img.size)),
        );
        line("    sha256:", img.sha256.to_hex());
        line(
            "    chunks:",
            format!(
                "{} of {}",
                img.chunks.len(),
                format_bytes(u64::from(img.chunk_size))
            ),
        );
        let stored = super::stored_size(img);
        line(
            "    compression:",
            format!(
                "{} (stored {} bytes, {})",
                match img.compression {
                    flipslot_format::Compression::None => "none",
                    flipslot_format::Compression::Zstd => "zstd",
                },
                stored,
                format_bytes(stored)
            ),
        );
        line(
            "    block index:",
            if img.block_index.is_some() {
                "yes"
            } else {
                "no"
            }
            .into(),
        );
    }
    s
}
