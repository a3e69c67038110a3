//! Installing a bundle from a file or an HTTP(S) URL: picks the format and the trust
//! (keyring or X.509 store) and runs the install pipeline under the install lock.

use super::Agent;
use crate::host::clock::SystemClock;
use crate::install::{self, InstallEnv, InstallOptions, InstallOutcome, Progress};
use crate::net::{HttpOptions, HttpSource};
use crate::slot::device::HostDevices;
use anyhow::{bail, Context, Result};
use flipslot_format::source::{ByteSource, FileSource};
use flipslot_rauc::bundle::BundleKind;
use std::path::Path;

/// Installs a bundle file, holding the install lock. The file is opened first, so that
/// what is not a regular file or block device is refused before the lock is taken.
pub fn install_file(
    agent: &Agent,
    bundle: &Path,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let mut source = FileSource::open(bundle)
        .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
    let _lock = agent.lock()?;
    // A file too short for the magic is left to the flipslot reader, which says how it
    // is truncated.
    let mut head = [0u8; 8];
    let kind = match source.read_exact_at(0, &mut head) {
        Ok(()) => BundleKind::detect(&head, &bundle.to_string_lossy()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => BundleKind::Flipslot,
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot read bundle {}", bundle.display()))
            )
        }
    };
    install_source(agent, source, kind, opts, progress)
}

/// Installs a bundle from an `http://` or `https://` URL, holding the install lock. The
/// bundle is streamed with range requests (see [`crate::net::http`]); nothing is stored.
pub fn install_url(
    agent: &Agent,
    url: &str,
    http: &HttpOptions,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let _lock = agent.lock()?;
    let source = HttpSource::open(url, http).context("cannot open bundle")?;
    // Told apart by name, so the stream is opened once (RAUC bundles are `.raucb`).
    install_source(agent, source, BundleKind::from_name(url), opts, progress)
}

/// The install pipeline over any source; the caller holds the lock.
fn install_source<S: ByteSource + Send>(
    agent: &Agent,
    source: S,
    kind: BundleKind,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let devices = HostDevices {
        root: agent.root.clone(),
        direct: agent.direct_io,
    };
    let mut env = InstallEnv {
        cfg: &agent.cfg,
        booted,
        bootloader: bl.as_mut(),
        devices: &devices,
        clock: &SystemClock,
        status_path: agent.status_path(),
    };
    match kind {
        BundleKind::Rauc => {
            if opts.expected_manifest_sha256.is_some() {
                bail!(
                    "bundle {} is a RAUC bundle; signed channels name flipslot bundles only",
                    source.describe()
                );
            }
            let (store, options) = agent.x509_trust()?;
            let k = &agent.cfg.rauc_bundles;
            let trust = install::RaucTrust {
                store: &store,
                options: &options,
                formats: flipslot_rauc::bundle::AllowedFormats {
                    plain: k.plain,
                    verity: k.verity,
                },
            };
            install::install_rauc(&mut env, &trust, source, opts, progress)
        }
        BundleKind::Flipslot => {
            let keyring = agent.keyring()?;
            install::install(&mut env, &keyring, source, opts, progress)
        }
    }
}
