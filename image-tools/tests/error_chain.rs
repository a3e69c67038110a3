//! Errors print each cause once: the line `flipslot-image` prints on failure (the error
//! chain, as `flipslot_cli_support::error_chain` and anyhow's `{:#}` format it) names the
//! file and shows the operating system's or the parser's message exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::io;
use std::path::Path;

use flipslot_cli_support::{error_chain, source_chain};
use flipslot_format::error::BundleError;
use flipslot_format::manifest::Manifest;
use flipslot_image::disk::DiskError;
use flipslot_image::mkfs::MkfsError;
use flipslot_rauc::bundle::RaucBundleError;
use flipslot_rauc::manifest::RaucManifest;
use flipslot_rauc::verity::VerityError;
use flipslot_rauc::x509::TrustStore;

const ENOENT: &str = "No such file or directory (os error 2)";

/// Every way an error chain is printed, each checked to hold `needle` exactly once.
fn printed_once(e: anyhow::Error, needle: &str) -> String {
    let chain = error_chain(&e);
    let alternate = format!("{e:#}");
    let std_chain = source_chain(e.as_ref());
    for text in [&chain, &alternate, &std_chain] {
        assert_eq!(text.matches(needle).count(), 1, "{needle:?} in {text:?}");
    }
    assert_eq!(chain, alternate);
    chain
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(2)
}

#[test]
fn bundle_errors_show_their_cause_once() {
    let e = BundleError::io("b.fsb", enoent());
    let line = printed_once(anyhow::Error::new(e).context("open bundle"), ENOENT);
    assert_eq!(line, format!("open bundle: b.fsb: {ENOENT}"));

    let e = Manifest::parse(b"{\"version\": ").unwrap_err();
    assert!(matches!(e, BundleError::ManifestSyntax(_)), "{e:?}");
    let line = printed_once(anyhow::Error::new(e), "EOF while parsing");
    assert!(line.starts_with("manifest cannot be parsed: "), "{line}");
}

#[test]
fn rauc_errors_show_their_cause_once() {
    let missing = Path::new("/nonexistent/keyring.pem");
    let e = TrustStore::load(Some(missing), None).unwrap_err();
    let line = printed_once(anyhow::Error::new(e), ENOENT);
    assert_eq!(
        line,
        format!("cannot read keyring /nonexistent/keyring.pem: {ENOENT}")
    );

    let manifest = RaucManifest::parse("[update\n").unwrap_err();
    let e = RaucBundleError::Manifest {
        what: "b.raucb".into(),
        source: manifest.clone(),
    };
    let line = printed_once(anyhow::Error::new(e), &manifest.to_string());
    assert!(
        line.starts_with("b.raucb: invalid manifest.raucm: line 1: "),
        "{line}"
    );

    let e = RaucBundleError::Io {
        what: "b.raucb".into(),
        part: "the trailer".into(),
        source: enoent(),
    };
    let line = printed_once(anyhow::Error::new(e), ENOENT);
    assert_eq!(line, format!("b.raucb: cannot read the trailer: {ENOENT}"));
}

#[test]
fn a_verity_read_error_is_complete_in_its_message() {
    // It mostly travels inside an io::Error through readers that show it with `{}`.
    let e = VerityError::Io {
        what: "data of b.raucb".into(),
        offset: 4096,
        error: enoent(),
    }
    .into_io();
    assert_eq!(e.to_string().matches(ENOENT).count(), 1, "{e}");
    let e = RaucBundleError::Verity {
        what: "b.raucb".into(),
        source: VerityError::Io {
            what: "data of b.raucb".into(),
            offset: 4096,
            error: enoent(),
        },
    };
    let line = printed_once(anyhow::Error::new(e), ENOENT);
    assert_eq!(
        line,
        format!("b.raucb: verity: reading data of b.raucb at offset 4096: {ENOENT}")
    );
}

#[test]
fn disk_and_mkfs_errors_show_their_cause_once() {
    let e = DiskError::Io {
        action: "open".into(),
        path: "/nonexistent/disk.img".into(),
        source: enoent(),
    };
    let line = printed_once(anyhow::Error::new(e), ENOENT);
    assert_eq!(line, format!("cannot open /nonexistent/disk.img: {ENOENT}"));

    let e = MkfsError::ReadTree {
        path: "/nonexistent/tree".into(),
        source: enoent(),
    };
    let line = printed_once(anyhow::Error::new(e), ENOENT);
    assert_eq!(line, format!("cannot read /nonexistent/tree: {ENOENT}"));
}
