//! `flipslot-image verify`: the complete check a device makes before installing: signatures
//! against a keyring, the manifest rules, the bundle length and every chunk hash.

use super::TrustArgs;
use flipslot_cli_support::progress::{ProgressMode, Reporter};
use std::path::PathBuf;

/// The long help of `verify`.
pub(super) const LONG_ABOUT: &str =
    "Verify a bundle completely, as a device does before installing it: \
    the header, the signatures against the keyring (at least --min-signatures valid ones by \
    distinct trusted keys; a signature by a trusted key that does not verify is an error), the \
    manifest, the bundle length, then every chunk, image and block-index hash.\n\n\
    Prints `BUNDLE: OK, ...` and exits 0, or prints the error and exits 1.\n\n\
    With --json, standard output carries JSON lines: progress events \
    {\"v\":1,\"event\":\"progress\",\"phase\":\"verify\",\"done\":N,\"total\":N} and a final \
    {\"v\":1,\"event\":\"done\",\"ok\":true,\"bundle\":PATH,\"compatible\":S,\"version\":S,\
    \"manifest_sha256\":HEX,\"trusted\":[HEX],\"untrusted\":[HEX]} or \
    {\"v\":1,\"event\":\"done\",\"ok\":false,\"bundle\":PATH,\"error\":S}.\n\n\
    A RAUC bundle (.raucb) is verified against --keyring as a PEM file or directory of CA \
    certificates (smimesign purpose): its CMS signature and chain, for verity bundles every \
    block against the hash tree, then each image's size and SHA-256 against the manifest.";

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    trust: TrustArgs,
    /// Print progress and the result as JSON lines on standard output
    #[arg(long)]
    json: bool,
    /// The bundle to verify
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
}

/// Runs `verify`.
pub fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let mut reporter = Reporter::new(if args.json {
        ProgressMode::Json
    } else {
        ProgressMode::Auto
    });
    let path = &args.bundle;
    let result = check(args, &mut reporter);
    reporter.finish();
    match result {
        Ok((summary, json)) => {
            if reporter.is_json() {
                reporter.event("done", json);
            } else {
                println!("{summary}");
            }
            Ok(())
        }
        Err(e) => {
            reporter.event(
                "done",
                serde_json::json!({
                    "ok": false,
                    "bundle": path.display().to_string(),
                    "error": flipslot_cli_support::error_chain(&e),
                }),
            );
            Err(e)
        }
    }
}

/// Verifies the bundle; returns the human summary line and the JSON result.
fn check(
    args: &VerifyArgs,
    reporter: &mut Reporter,
) -> anyhow::Result<(String, serde_json::Value)> {
    use anyhow::Context as _;
    let path = &args.bundle;
    if super::is_rauc_bundle(path)? {
        return check_rauc(args, reporter);
    }
    let (mut bundle, keyring) = super::open_verified(path, &args.trust)?;
    bundle
        .verify_payload(&mut |done, total| reporter.update("verify", done, total))
        .with_context(|| path.display().to_string())?;
    let m = bundle.manifest();
    let report = bundle.signature_report();
    let signers: Vec<String> = report
        .trusted
        .iter()
        .map(|k| match keyring.origin(k) {
            Some(p) => format!("{k} ({})", p.display()),
            None => k.to_string(),
        })
        .collect();
    let mut summary = format!(
        "{}: OK, version {} for {}, signed by {}",
        path.display(),
        m.version,
        m.compatible,
        signers.join(", ")
    );
    if !report.untrusted.is_empty() {
        summary.push_str(&format!(
            "; also signed by untrusted key(s) {}",
            super::join_ids(&report.untrusted)
        ));
    }
    let json = serde_json::json!({
        "ok": true,
        "bundle": path.display().to_string(),
        "compatible": m.compatible,
        "version": m.version.to_string(),
        "manifest_sha256": bundle.manifest_sha256().to_hex(),
        "trusted": report.trusted.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        "untrusted": report.untrusted.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
    });
    Ok((summary, json))
}

/// Verifies a RAUC bundle completely: signature, payload, images.
fn check_rauc(
    args: &VerifyArgs,
    reporter: &mut Reporter,
) -> anyhow::Result<(String, serde_json::Value)> {
    let path = &args.bundle;
    let trust = super::rauc_info::RaucTrustArgs {
        keyring: &args.trust.keyring,
        purpose: flipslot_rauc::x509::Purpose::default(),
        allow_partial_chain: false,
    };
    let mut bundle = super::rauc_info::open(path, &trust)?;
    bundle.verify_payload(&mut |done, total| reporter.update("verify payload", done, total))?;
    bundle.verify_images(&mut |done, total| reporter.update("verify images", done, total))?;
    let m = bundle.manifest();
    let summary = format!(
        "{}: OK, RAUC {} bundle, compatible {}, version {}, signed by {}, {} image(s)",
        path.display(),
        m.format.as_str(),
        m.compatible,
        m.version.as_deref().unwrap_or("-"),
        bundle.signer().subject,
        m.images.len()
    );
    let json = serde_json::json!({
        "ok": true,
        "bundle": path.display().to_string(),
        "format": m.format.as_str(),
        "compatible": m.compatible,
        "version": m.version,
        "manifest_sha256": bundle.manifest_sha256().to_hex(),
        "signer": bundle.signer().subject,
    });
    Ok((summary, json))
}
