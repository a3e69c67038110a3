#![allow(clippy::unwrap_used, clippy::expect_used)]
//! RAUC bundles made by the real `rauc bundle` (1.8), signed by a throwaway PKI made
//! with `openssl`: flipslot reads and verifies them in-process, agrees with
//! `rauc info --output-format=json` field by field (`image-tools/tests/rauc_cli.rs`), and
//! rejects every tampered variant
//! with an error that says what is wrong.

#[path = "rauc_support/mod.rs"]
mod rauc_support;

use std::path::{Path, PathBuf};

use flipslot_format::source::FileSource;
use flipslot_rauc::bundle::{AllowedFormats, RaucBundle, RaucBundleError};
use flipslot_rauc::manifest::BundleFormat;
use flipslot_rauc::x509::{Purpose, TrustStore, VerifyOptions};
use rauc_support::{flipped, pseudo_random, rauc_bundle, BundleSpec, Pki};

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    work: PathBuf,
    image: PathBuf,
    image_bytes: Vec<u8>,
}

fn setup() -> Option<Setup> {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki"))?;
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let image = work.join("rootfs.img");
    // Not a multiple of the squashfs block size, so the tail lands in a fragment.
    let image_bytes = pseudo_random((3 << 20) + 4321, 7);
    std::fs::write(&image, &image_bytes).unwrap();
    Some(Setup {
        _dir: dir,
        pki,
        work,
        image,
        image_bytes,
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
    open_at(path, store, opts, now())
}

/// Opens with the certificates checked at `time` (Unix seconds).
fn open_at(
    path: &Path,
    store: &TrustStore,
    opts: &VerifyOptions,
    time: i64,
) -> Result<RaucBundle<FileSource>, RaucBundleError> {
    RaucBundle::open(
        FileSource::open(path).unwrap(),
        store,
        opts,
        AllowedFormats::default(),
        time,
        &mut |_, _| {},
    )
}

fn open(s: &Setup, path: &Path) -> Result<RaucBundle<FileSource>, RaucBundleError> {
    open_with(path, &s.store(), &VerifyOptions::default())
}

/// Opens, then reads and checks every image (what an install streams).
fn open_and_read(s: &Setup, path: &Path) -> Result<(), String> {
    let mut b = open(s, path).map_err(|e| chain(&e))?;
    b.verify_payload(&mut |_, _| {}).map_err(|e| chain(&e))?;
    b.verify_images(&mut |_, _| {}).map_err(|e| chain(&e))
}

/// An error and its causes as the binaries print them: `a: b: c`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[test]
fn plain_and_verity_bundles_open_and_stream_their_image() {
    let Some(s) = setup() else { return };
    for format in ["plain", "verity"] {
        let spec = BundleSpec {
            format,
            ..Default::default()
        };
        let Some(path) = s.bundle(&format!("{format}.raucb"), &spec) else {
            return;
        };
        let mut b = open(&s, &path).unwrap();
        let m = b.manifest().clone();
        assert_eq!(m.compatible, "flipslot-test");
        assert_eq!(m.version.as_deref(), Some("2.0.0"));
        let want = if format == "plain" {
            BundleFormat::Plain
        } else {
            BundleFormat::Verity
        };
        assert_eq!(m.format, want);
        assert_eq!(m.images.len(), 1);
        assert_eq!(m.images[0].size, s.image_bytes.len() as u64);
        assert!(
            b.signer().subject.contains("flipslot test signer"),
            "{:?}",
            b.signer().subject
        );
        let mut got = Vec::new();
        b.with_image_reader(0, |r| {
            r.read_to_end(&mut got).map_err(|e| e.to_string())?;
            Ok(())
        })
        .unwrap();
        assert!(got == s.image_bytes, "{format}: the streamed image differs");
        b.verify_payload(&mut |_, _| {}).unwrap();
        b.verify_images(&mut |_, _| {}).unwrap();
    }
}

#[test]
fn tampered_bundles_are_rejected() {
    let Some(s) = setup() else { return };
    for format in ["plain", "verity"] {
        let spec = BundleSpec {
            format,
            ..Default::default()
        };
        let Some(path) = s.bundle(&format!("{format}.raucb"), &spec) else {
            return;
        };
        let len = std::fs::metadata(&path).unwrap().len() as i64;
        let cms = rauc_support::cms_size(&path) as i64;
        let payload = len - 8 - cms;
        let mut cases: Vec<(&str, i64, &[&str])> = vec![
            // In the image data (squashfs block area), near its middle.
            ("payload", 1 << 20, &["modified", "match"]),
            // The squashfs superblock.
            ("superblock", 40, &["modified", "match"]),
            // Inside the CMS blob (its signature value is near the end).
            ("cms", payload + cms - 20, &["signature"]),
            ("cms-start", payload + 1, &["signature"]),
            // The trailer's low byte: the CMS size no longer matches.
            ("trailer", -1, &["signature"]),
        ];
        if format == "verity" {
            // The last byte of the hash tree (inside its top levels' padding or leaves).
            cases.push(("hash tree", payload - 100, &["hash", "modified"]));
        }
        for (what, off, phrases) in cases {
            let bad = flipped(&path, off, &s.work.join(format!("{format}-{what}.raucb")));
            let err = open_and_read(&s, &bad).expect_err(&format!("{format} {what}: accepted"));
            assert!(
                phrases.iter().any(|p| err.contains(p)),
                "{format} {what}: unclear error: {err}"
            );
            eprintln!("{format} {what}: {err}");
        }
        // Truncated: the trailer now points into the middle.
        let bytes = std::fs::read(&path).unwrap();
        let cut = s.work.join(format!("{format}-truncated.raucb"));
        std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
        let err = open_and_read(&s, &cut).unwrap_err();
        assert!(
            err.contains("signature") || err.contains("trailer"),
            "{err}"
        );
    }
}

#[test]
fn signer_policy_is_enforced() {
    let Some(s) = setup() else { return };
    let build = |name: &str, signer: &str| {
        s.bundle(
            name,
            &BundleSpec {
                signer,
                ..Default::default()
            },
        )
    };
    let Some(rogue) = build("rogue.raucb", "rogue") else {
        return;
    };
    let err = open(&s, &rogue).map_err(|e| chain(&e)).unwrap_err();
    assert!(err.contains("rogue signer"), "untrusted signer: {err}");

    let expired = build("expired.raucb", "expired").unwrap();
    // Checked at a fixed time, so the whole message is known.
    let at = 1_800_000_000;
    let err = open_at(&expired, &s.store(), &VerifyOptions::default(), at)
        .map_err(|e| chain(&e))
        .unwrap_err();
    assert_eq!(
        err,
        format!(
            "{}: signature rejected: certificate CN=flipslot expired signer expired at \
             2021-01-01T00:00:00Z (verification time 2027-01-15T08:00:00Z)",
            expired.display()
        )
    );

    let codesign = build("codesign.raucb", "codesign").unwrap();
    let err = open(&s, &codesign).map_err(|e| chain(&e)).unwrap_err();
    assert!(
        err.contains("purpose") || err.contains("smimesign"),
        "purpose: {err}"
    );
    let opts = VerifyOptions {
        purpose: Purpose::CodeSign,
        ..Default::default()
    };
    open_with(&codesign, &s.store(), &opts).unwrap();
    // The S/MIME signer is not a code signer.
    let ok = build("ok.raucb", "signer").unwrap();
    assert!(open_with(&ok, &s.store(), &opts).is_err());
    let any = VerifyOptions {
        purpose: Purpose::Any,
        ..Default::default()
    };
    open_with(&codesign, &s.store(), &any).unwrap();

    // Allowed signer CNs.
    let only_other = VerifyOptions {
        allowed_signer_cns: vec!["someone else".into()],
        ..Default::default()
    };
    let err = open_with(&ok, &s.store(), &only_other)
        .map_err(|e| chain(&e))
        .unwrap_err();
    assert!(err.contains("flipslot test signer"), "{err}");

    // Formats the caller does not allow.
    for (fmt, allowed) in [
        (
            "verity",
            AllowedFormats {
                plain: true,
                verity: false,
            },
        ),
        (
            "plain",
            AllowedFormats {
                plain: false,
                verity: true,
            },
        ),
    ] {
        let p = s
            .bundle(
                &format!("{fmt}-only.raucb"),
                &BundleSpec {
                    format: fmt,
                    ..Default::default()
                },
            )
            .unwrap();
        let err = RaucBundle::open(
            FileSource::open(&p).unwrap(),
            &s.store(),
            &VerifyOptions::default(),
            allowed,
            now(),
            &mut |_, _| {},
        )
        .map_err(|e| chain(&e))
        .unwrap_err();
        assert!(err.contains("bundle-formats"), "{err}");
    }
}
