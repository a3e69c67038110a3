//! `flipslot-image sign` and `resign`: add signatures to a bundle, or replace them all,
//! after checking that the payload matches the manifest being signed.

use anyhow::Context as _;
use flipslot_cli_support::progress::{ProgressMode, Reporter};
use flipslot_format::builder;
use flipslot_format::keys;
use flipslot_format::reader::Bundle;
use std::path::PathBuf;

/// The long help of `sign` and `resign`.
pub(super) const LONG_ABOUT: &str =
    "Sign a bundle: `sign` adds signatures (a key that already signed is \
    signed again, not duplicated), `resign` replaces all of them.\n\n\
    Only the signature block changes; the signed manifest and the payload bytes stay \
    identical. Before signing, every chunk of the payload is checked against the manifest, \
    so a corrupted bundle is never signed. The bundle is rewritten through a temporary file \
    and renamed.\n\n\
    With --json, standard output carries JSON lines: progress events and a final \
    {\"v\":1,\"event\":\"done\",\"bundle\":PATH,\"manifest_sha256\":HEX,\"signatures\":[HEX]}.";

/// Arguments of `sign` and `resign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Secret key to sign with (PKCS#8 PEM); repeat for several
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// Print progress and the result as JSON lines on standard output
    #[arg(long)]
    json: bool,
    /// The bundle to sign (rewritten in place)
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
}

/// Runs `sign` (`replace = false`) or `resign` (`replace = true`).
pub fn run(args: &SignArgs, replace: bool) -> anyhow::Result<()> {
    let path = &args.bundle;
    let mut signing_keys = Vec::new();
    for k in &args.keys {
        signing_keys.push(keys::load_secret_key(k)?);
    }
    let mut reporter = Reporter::new(if args.json {
        ProgressMode::Json
    } else {
        ProgressMode::Auto
    });
    let mut bundle = Bundle::open_unverified(super::open_file(path)?)
        .with_context(|| path.display().to_string())?;
    let checked = bundle.verify_payload(&mut |done, total| reporter.update("verify", done, total));
    reporter.finish();
    checked.with_context(|| {
        format!(
            "{}: not signing a bundle whose payload does not match its manifest",
            path.display()
        )
    })?;
    let manifest_sha256 = bundle.manifest_sha256();
    drop(bundle);
    let signatures = super::write_atomically(path, |w| {
        Ok(builder::resign(
            super::open_file(path)?,
            &signing_keys,
            replace,
            w,
        )?)
    })
    .with_context(|| format!("cannot sign {}", path.display()))?;
    let ids: Vec<flipslot_format::KeyId> = signatures.iter().map(|s| s.key_id).collect();
    if reporter.is_json() {
        reporter.event(
            "done",
            serde_json::json!({
                "bundle": path.display().to_string(),
                "manifest_sha256": manifest_sha256.to_hex(),
                "signatures": ids.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            }),
        );
    } else {
        println!("{}: signed by {}", path.display(), super::join_ids(&ids));
    }
    Ok(())
}
