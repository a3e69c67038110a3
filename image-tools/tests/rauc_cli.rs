#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot-image info` and `verify` on RAUC bundles made by the real `rauc bundle` (1.8),
//! signed by a throwaway PKI made with `openssl`: `info` agrees with
//! `rauc info --output-format=json` field by field, and crypt bundles are refused. The
//! library side is in `image-tools/rauc/tests/rauc_bundle.rs`.

#[path = "../rauc/tests/rauc_support/mod.rs"]
mod rauc_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use flipslot_format::source::FileSource;
use flipslot_rauc::bundle::{AllowedFormats, RaucBundle, RaucBundleError};
use flipslot_rauc::x509::{TrustStore, VerifyOptions};
use rauc_support::{flipped, pseudo_random, rauc_bundle, BundleSpec, Pki};

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    work: PathBuf,
    image: PathBuf,
}

fn setup() -> Option<Setup> {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki"))?;
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let image = work.join("rootfs.img");
    // Not a multiple of the squashfs block size, so the tail lands in a fragment.
    std::fs::write(&image, pseudo_random((3 << 20) + 4321, 7)).unwrap();
    Some(Setup {
        _dir: dir,
        pki,
        work,
        image,
    })
}

impl Setup {
    fn bundle(&self, name: &str, spec: &BundleSpec<'_>) -> Option<PathBuf> {
        let out = self.work.join(name);
        rauc_bundle(&self.pki, spec, &self.image, &out)?;
        Some(out)
    }

    fn store(&self) -> TrustStore {
        TrustStore::load(Some(&self.pki.keyring()), None).unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn open_with(
    path: &Path,
    store: &TrustStore,
    opts: &VerifyOptions,
) -> Result<RaucBundle<FileSource>, RaucBundleError> {
    RaucBundle::open(
        FileSource::open(path).unwrap(),
        store,
        opts,
        AllowedFormats::default(),
        now(),
        &mut |_, _| {},
    )
}

fn open(s: &Setup, path: &Path) -> Result<RaucBundle<FileSource>, RaucBundleError> {
    open_with(path, &s.store(), &VerifyOptions::default())
}

/// Opens, then reads and checks every image (what an install streams).
fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("no JSON line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn info_agrees_with_rauc_info_field_by_field() {
    let Some(s) = setup() else { return };
    for format in ["plain", "verity"] {
        let spec = BundleSpec {
            format,
            version: "2024.05.1",
            ..Default::default()
        };
        let Some(path) = s.bundle(&format!("{format}.raucb"), &spec) else {
            return;
        };
        let keyring = s.pki.keyring();
        let theirs = json(
            &Command::new("rauc")
                .args(["info", "--output-format=json", "--keyring"])
                .arg(&keyring)
                .arg(&path)
                .output()
                .unwrap(),
        );
        let ours = json(
            &Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
                .args(["info", "--json", "--keyring"])
                .arg(&keyring)
                .arg(&path)
                .output()
                .unwrap(),
        );
        let theirs = theirs.as_object().unwrap();
        assert!(theirs.len() >= 6, "{theirs:?}");
        for (k, v) in theirs {
            assert_eq!(&ours[k], v, "{format}: field {k} differs: ours {ours}");
        }
        assert_eq!(ours["format"], format);
        // `verify` reads everything: signature, payload blocks, image hashes.
        let v = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
            .args(["verify", "--keyring"])
            .arg(&keyring)
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(v.status.success() && text.contains(": OK, RAUC"), "{text}");
        let bad = flipped(&path, 2 << 20, &s.work.join(format!("{format}-bad.raucb")));
        let v = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
            .args(["verify", "--keyring"])
            .arg(&keyring)
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!v.status.success(), "a modified bundle verified");
        // And the text form names the signer.
        let text = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
            .args(["info", "--keyring"])
            .arg(&keyring)
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("flipslot test signer") && text.contains(format),
            "{text}"
        );
    }
}

#[test]
fn crypt_bundles_are_refused_as_not_supported_yet() {
    let Some(s) = setup() else { return };
    let Some(crypt) = s.bundle(
        "crypt.raucb",
        &BundleSpec {
            format: "crypt",
            ..Default::default()
        },
    ) else {
        return;
    };
    // As `rauc bundle` leaves it (payload encrypted, manifest signed), then encrypted for
    // a recipient by `rauc encrypt` (the CMS becomes EnvelopedData).
    let encrypted = s.work.join("crypt-encrypted.raucb");
    rauc_support::run(&[
        "rauc",
        "encrypt",
        "--to",
        s.pki.cert("signer").to_str().unwrap(),
        "--keyring",
        s.pki.keyring().to_str().unwrap(),
        crypt.to_str().unwrap(),
        encrypted.to_str().unwrap(),
    ])
    .unwrap();
    for b in [&crypt, &encrypted] {
        let err = open(&s, b).unwrap_err().to_string();
        assert!(
            err.contains("crypt bundle") && err.contains("not install crypt bundles yet"),
            "{}: {err}",
            b.display()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_flipslot-image"))
            .args(["info", "--keyring"])
            .arg(s.pki.keyring())
            .arg(b)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("crypt bundle"), "{e}");
    }
}
