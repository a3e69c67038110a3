//! `flipslot-image info` for RAUC bundles (`.raucb`): the signature is verified against
//! an X.509 keyring first (as `rauc info --keyring` does), then the manifest is shown.
//! `--json` prints RAUC 1.8's `rauc info --output-format=json` object with flipslot's
//! extra fields (`format`, `signer`, `manifest_sha256`, `bundle`) added.

use std::path::Path;

use anyhow::Context as _;

use flipslot_format::source::FileSource;
use flipslot_rauc::bundle::{info_json, AllowedFormats, RaucBundle};
use flipslot_rauc::x509::{Purpose, TrustStore, VerifyOptions};

/// Options for verifying a RAUC bundle from the command line.
#[derive(Debug, Clone)]
pub(super) struct RaucTrustArgs<'a> {
    /// A PEM file of CA certificates or a directory of them.
    pub keyring: &'a Path,
    /// `smimesign`, `codesign` or `any`.
    pub purpose: Purpose,
    /// Accept chains ending at an intermediate in the keyring.
    pub allow_partial_chain: bool,
}

/// Opens and verifies a RAUC bundle file.
pub(super) fn open(
    path: &Path,
    trust: &RaucTrustArgs<'_>,
) -> anyhow::Result<RaucBundle<FileSource>> {
    let store = if trust.keyring.is_dir() {
        TrustStore::load(None, Some(trust.keyring))
    } else {
        TrustStore::load(Some(trust.keyring), None)
    }
    .with_context(|| format!("cannot load keyring {}", trust.keyring.display()))?;
    let opts = VerifyOptions {
        purpose: trust.purpose,
        allow_partial_chain: trust.allow_partial_chain,
        ..VerifyOptions::default()
    };
    let source = super::open_file(path)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    RaucBundle::open(
        source,
        &store,
        &opts,
        AllowedFormats::default(),
        now,
        &mut |_, _| {},
    )
    .map_err(anyhow::Error::from)
}

/// Prints what `info` shows for a verified RAUC bundle.
pub(super) fn print(path: &Path, bundle: &RaucBundle<FileSource>, json: bool) {
    let m = bundle.manifest();
    if json {
        let mut v = info_json(m);
        if let Some(o) = v.as_object_mut() {
            o.insert("bundle".into(), path.display().to_string().into());
            o.insert("format".into(), m.format.as_str().into());
            o.insert("signer".into(), bundle.signer().subject.clone().into());
            o.insert(
                "manifest_sha256".into(),
                bundle.manifest_sha256().to_hex().into(),
            );
        }
        super::print_json(v);
        return;
    }
    let (size, cms) = bundle.sizes();
    println!("RAUC bundle  {}", path.display());
    println!("format       {}", m.format.as_str());
    println!("signed by    {}", bundle.signer().subject);
    println!("compatible   {}", m.compatible);
    println!("version      {}", m.version.as_deref().unwrap_or("-"));
    println!("description  {}", m.description.as_deref().unwrap_or("-"));
    println!("build        {}", m.build.as_deref().unwrap_or("-"));
    println!("size         {size} bytes ({cms}-byte signature)");
    println!("manifest     sha256 {}", bundle.manifest_sha256().to_hex());
    for img in &m.images {
        println!(
            "image        {}: {} ({} bytes, sha256 {})",
            img.class,
            img.filename,
            img.size,
            img.sha256.to_hex()
        );
    }
}
