//! RAUC bundle signatures: a throwaway PKI made with the `openssl` CLI signs content with
//! `openssl cms -sign` exactly as `rauc bundle` does (DER, SHA-256, no S/MIME
//! capabilities, signer and intermediate certificates included), and the in-process
//! verifier must accept and refuse what RAUC (OpenSSL's `CMS_verify`) does. Where
//! OpenSSL's own verdict applies, it is checked alongside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use flipslot_rauc::cms::{CmsError, DigestAlg, SignedData};
use flipslot_rauc::x509::{Purpose, TrustStore, VerifyOptions, X509Error};

const CONFIG: &str = r#"
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused

[v3_root]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[v3_int]
basicConstraints = critical,CA:true,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[v3_code_int]
basicConstraints = critical,CA:true,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[smime]
basicConstraints = CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[codesign]
basicConstraints = CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[code_and_smime]
basicConstraints = CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning,emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[anyeku]
basicConstraints = CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = anyExtendedKeyUsage
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[noeku]
basicConstraints = CA:false
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ca]
default_ca = ca_int
[ca_int]
database = index.txt
new_certs_dir = .
certificate = int.pem
private_key = int.key
serial = serial.txt
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
"#;

/// Everything the tests need, read into memory (the temporary directory is gone).
struct Pki {
    /// PEM certificates by name.
    certs: HashMap<&'static str, Vec<u8>>,
    /// DER signatures by name.
    sigs: HashMap<&'static str, Vec<u8>>,
    payload: Vec<u8>,
    manifest: Vec<u8>,
    /// `openssl x509 -hash` of the root.
    root_hash: String,
}

/// The PKI, or `None` (test skipped) when `openssl` is missing outside CI.
fn pki() -> Option<&'static Pki> {
    static PKI: OnceLock<Option<Pki>> = OnceLock::new();
    PKI.get_or_init(|| {
        if flipslot_os::process::find_program("openssl".as_ref()).is_none() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("openssl is not installed, and CI=true requires this test to run");
            }
            eprintln!("skipping: openssl is not installed");
            return None;
        }
        Some(make_pki())
    })
    .as_ref()
}

/// Runs `openssl` with the whitespace-separated `cmdline` followed by `extra` (verbatim,
/// for arguments with spaces); returns standard output.
fn openssl(dir: &Path, cmdline: &str, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(cmdline.split_whitespace())
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {cmdline} {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A key (`rsa`, `p256` or `p384`) and a certificate request for `cn`.
fn key_and_csr(dir: &Path, name: &str, cn: &str, key: &str) {
    let newkey = match key {
        "rsa" => "-newkey rsa:2048",
        "p256" => "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
        "p384" => "-newkey ec -pkeyopt ec_paramgen_curve:P-384",
        _ => unreachable!(),
    };
    let cmd =
        format!("req -new -config openssl.cnf -nodes {newkey} -keyout {name}.key -out {name}.csr");
    openssl(dir, &cmd, &["-subj", &format!("/CN={cn}")]);
}

/// A self-signed root.
fn root(dir: &Path, name: &str, cn: &str) {
    key_and_csr(dir, name, cn, "rsa");
    let cmd = format!(
        "x509 -req -in {name}.csr -signkey {name}.key -days 3650 -set_serial 1 \
         -extfile openssl.cnf -extensions v3_root -out {name}.pem"
    );
    openssl(dir, &cmd, &[]);
}

/// What [`issue`] makes: name, common name, key type, issuer, extension section, days.
type Spec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
);

/// A certificate issued by another one, signed with SHA-384.
fn issue(dir: &Path, (name, cn, key, ca, ext, days): Spec, serial: u32) {
    key_and_csr(dir, name, cn, key);
    let cmd = format!(
        "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -days {days} -sha384 \
         -set_serial {serial} -extfile openssl.cnf -extensions {ext} -out {name}.pem"
    );
    openssl(dir, &cmd, &[]);
}

/// `openssl cms -sign` as `rauc bundle` calls it (`-certfile` for its `--intermediate`),
/// plus `extra` options.
fn sign(dir: &Path, signer: &str, content: &str, extra: &str) -> Vec<u8> {
    let cmd = format!(
        "cms -sign -binary -nosmimecap -outform DER -md sha256 -in {content} \
         -signer {signer}.pem -inkey {signer}.key -out sig.der {extra}"
    );
    openssl(dir, &cmd, &[]);
    std::fs::read(dir.join("sig.der")).unwrap()
}

fn make_pki() -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("openssl.cnf"), CONFIG).unwrap();
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let manifest =
        b"[update]\ncompatible=flipslot-test\nversion=1.0\n\n[bundle]\nformat=verity\n".to_vec();
    std::fs::write(dir.join("payload"), &payload).unwrap();
    std::fs::write(dir.join("manifest"), &manifest).unwrap();

    root(dir, "root", "Test Root CA");
    root(dir, "other", "Other Root CA");
    let specs: [Spec; 11] = [
        ("int", "Test Intermediate CA", "rsa", "root", "v3_int", 3650),
        (
            "ecint",
            "Test EC Intermediate CA",
            "p384",
            "root",
            "v3_int",
            3650,
        ),
        (
            "codeint",
            "Test Code Intermediate CA",
            "rsa",
            "root",
            "v3_code_int",
            3650,
        ),
        ("rsa", "rsa-signer", "rsa", "int", "smime", 365),
        ("ec", "ec-signer", "p256", "ecint", "smime", 365),
        ("code", "code-signer", "rsa", "int", "codesign", 365),
        ("noeku", "plain-signer", "rsa", "int", "noeku", 365),
        ("anyeku", "any-eku-signer", "rsa", "int", "anyeku", 365),
        ("short", "short-signer", "rsa", "int", "smime", 1),
        (
            "under_code",
            "under-code-signer",
            "rsa",
            "codeint",
            "code_and_smime",
            365,
        ),
        ("stranger", "stranger-signer", "rsa", "other", "smime", 365),
    ];
    for (serial, spec) in (2..).zip(specs) {
        issue(dir, spec, serial);
    }

    // An expired signer: `openssl ca` is the 3.0 tool that takes explicit dates.
    key_and_csr(dir, "expired", "expired-signer", "rsa");
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial.txt"), "40\n").unwrap();
    let cmd = "ca -batch -config openssl.cnf -notext -extfile openssl.cnf -extensions smime \
               -startdate 20200101000000Z -enddate 20210101000000Z \
               -in expired.csr -out expired.pem";
    openssl(dir, cmd, &[]);

    let sigs = HashMap::from([
        ("rsa", sign(dir, "rsa", "payload", "-certfile int.pem")),
        (
            "rsa_attached",
            sign(dir, "rsa", "manifest", "-certfile int.pem -nodetach"),
        ),
        ("rsa_no_int", sign(dir, "rsa", "payload", "")),
        (
            "rsa_sha512",
            sign(dir, "rsa", "payload", "-certfile int.pem -md sha512"),
        ),
        (
            "rsa_noattr",
            sign(dir, "rsa", "payload", "-certfile int.pem -noattr"),
        ),
        (
            "rsa_keyid",
            sign(dir, "rsa", "payload", "-certfile int.pem -keyid"),
        ),
        ("ec", sign(dir, "ec", "payload", "-certfile ecint.pem")),
        (
            "ec_attached",
            sign(dir, "ec", "manifest", "-certfile ecint.pem -nodetach"),
        ),
        ("code", sign(dir, "code", "payload", "-certfile int.pem")),
        ("noeku", sign(dir, "noeku", "payload", "-certfile int.pem")),
        (
            "anyeku",
            sign(dir, "anyeku", "payload", "-certfile int.pem"),
        ),
        ("short", sign(dir, "short", "payload", "-certfile int.pem")),
        (
            "expired",
            sign(dir, "expired", "payload", "-certfile int.pem"),
        ),
        (
            "under_code",
            sign(dir, "under_code", "payload", "-certfile codeint.pem"),
        ),
        ("stranger", sign(dir, "stranger", "payload", "")),
    ]);

    let mut certs = HashMap::new();
    for name in ["root", "int", "ecint", "codeint", "rsa", "other"] {
        certs.insert(
            name,
            std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
        );
    }
    let hash = openssl(dir, "x509 -hash -noout -in root.pem", &[]);
    Pki {
        certs,
        sigs,
        payload,
        manifest,
        root_hash: String::from_utf8(hash).unwrap().trim().to_owned(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const DAY: i64 = 86_400;

fn store(pki: &Pki, names: &[&str]) -> TrustStore {
    let pem: Vec<u8> = names.iter().flat_map(|n| pki.certs[n].clone()).collect();
    TrustStore::from_pem(&pem).unwrap()
}

fn opts(purpose: Purpose) -> VerifyOptions {
    VerifyOptions {
        purpose,
        ..VerifyOptions::default()
    }
}

/// Verifies a detached signature over `content` at `at`.
fn verify(
    sig: &[u8],
    content: &[u8],
    store: &TrustStore,
    opts: &VerifyOptions,
    at: i64,
) -> Result<flipslot_rauc::cms::Signer, CmsError> {
    let sd = SignedData::from_der(sig)?;
    let digest = sd.digest_algorithm()?.digest(content);
    sd.verify_detached(&digest, store, opts, at)
}

/// OpenSSL's own verdict (`openssl cms -verify`, purpose smimesign unless `args` say
/// otherwise).
fn openssl_accepts(sig: &[u8], content: Option<&[u8]>, ca_pem: &[u8], args: &[&str]) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("sig.der"), sig).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    let mut all = vec![
        "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.der", "-CAfile", "ca.pem",
        "-out", "out",
    ];
    if let Some(content) = content {
        std::fs::write(dir.join("content"), content).unwrap();
        all.extend_from_slice(&["-content", "content"]);
    }
    all.extend_from_slice(args);
    Command::new("openssl")
        .args(&all)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn rsa_detached_signature_verifies() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let signer = verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &s,
        &opts(Purpose::SmimeSign),
        now(),
    )
    .unwrap();
    assert_eq!(signer.subject, "CN=rsa-signer");
    assert_eq!(
        signer.chain,
        [
            "CN=rsa-signer",
            "CN=Test Intermediate CA",
            "CN=Test Root CA"
        ]
    );
    assert_eq!(signer.certificates.len(), 3);
    assert_eq!(signer.certificates[0].issuer, "CN=Test Intermediate CA");
    assert_eq!(signer.certificates[0].serial, "05");
    assert_eq!(signer.digest, DigestAlg::Sha256);
    let t = signer.signing_time.expect("openssl adds signingTime");
    assert!((t - now()).abs() < DAY, "signing time {t}");
    assert!(openssl_accepts(
        &pki.sigs["rsa"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));

    // Streaming the payload through the hasher gives the same digest.
    let sd = SignedData::from_der(&pki.sigs["rsa"]).unwrap();
    let mut h = sd.digest_algorithm().unwrap().hasher();
    std::io::copy(&mut &pki.payload[..], &mut h).unwrap();
    sd.verify_detached(&h.finalize(), &s, &VerifyOptions::default(), now())
        .unwrap();
}

#[test]
fn attached_signature_returns_the_manifest() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    for name in ["rsa_attached", "ec_attached"] {
        let sd = SignedData::from_der(&pki.sigs[name]).unwrap();
        assert!(!sd.is_detached());
        assert_eq!(sd.content_unverified(), Some(&pki.manifest[..]));
        let (content, signer) = sd
            .verify_attached(&s, &VerifyOptions::default(), now())
            .unwrap();
        assert_eq!(content, pki.manifest, "{name}");
        assert!(signer.chain.last().unwrap().ends_with("Test Root CA"));
        assert!(matches!(
            sd.verify_detached(&[0; 32], &s, &VerifyOptions::default(), now()),
            Err(CmsError::NotDetached)
        ));
    }
    let detached = SignedData::from_der(&pki.sigs["rsa"]).unwrap();
    assert!(matches!(
        detached.verify_attached(&s, &VerifyOptions::default(), now()),
        Err(CmsError::Detached)
    ));
    let err = detached
        .verify_detached(&[0; 20], &s, &VerifyOptions::default(), now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sha256 digest of 20 bytes given, 32 expected"
    );
}

#[test]
fn ecdsa_signer_under_a_p384_intermediate_verifies() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let signer = verify(
        &pki.sigs["ec"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap();
    assert_eq!(
        signer.chain,
        [
            "CN=ec-signer",
            "CN=Test EC Intermediate CA",
            "CN=Test Root CA"
        ]
    );
}

#[test]
fn signature_variants_verify() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let o = VerifyOptions::default();
    let signer = verify(&pki.sigs["rsa_sha512"], &pki.payload, &s, &o, now()).unwrap();
    assert_eq!(signer.digest, DigestAlg::Sha512);
    // Without signed attributes the signature covers the content digest directly.
    let signer = verify(&pki.sigs["rsa_noattr"], &pki.payload, &s, &o, now()).unwrap();
    assert_eq!(signer.signing_time, None);
    let err = verify(&pki.sigs["rsa_noattr"], b"other", &s, &o, now()).unwrap_err();
    assert!(matches!(err, CmsError::BadSignature { .. }), "{err}");
    // The signer named by subject key identifier.
    verify(&pki.sigs["rsa_keyid"], &pki.payload, &s, &o, now()).unwrap();
}

#[test]
fn modified_payload_fails() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let mut payload = pki.payload.clone();
    payload[12_345] ^= 1;
    let err = verify(
        &pki.sigs["rsa"],
        &payload,
        &s,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, CmsError::DigestMismatch { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "payload digest does not match the signature (the bundle was modified)"
    );
}

#[test]
fn modified_signature_fails() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let o = VerifyOptions::default();
    let sig = &pki.sigs["rsa"];
    let check = |bad: &[u8]| verify(bad, &pki.payload, &s, &o, now());
    let check_with = |bad: &[u8], content: &[u8]| verify(bad, content, &s, &o, now()).is_ok();

    // The signature value is the last element.
    let mut bad = sig.clone();
    *bad.last_mut().unwrap() ^= 1;
    let err = check(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature by CN=rsa-signer does not verify (the signature was modified or forged)"
    );

    // The signed messageDigest attribute.
    let digest = DigestAlg::Sha256.digest(&pki.payload);
    let at = sig.windows(32).position(|w| w == digest).unwrap();
    let mut bad = sig.clone();
    bad[at + 5] ^= 1;
    assert!(matches!(check(&bad), Err(CmsError::BadSignature { .. })));

    // The signer certificate's name.
    let at = sig.windows(10).position(|w| w == b"rsa-signer").unwrap();
    let mut bad = sig.clone();
    bad[at] ^= 1;
    assert!(check(&bad).is_err());

    // Across the whole blob, detached and attached: whenever a changed byte still
    // verifies here, OpenSSL accepts it too (it ignores a few unsigned fields, such as
    // the SignedData version).
    // (Every byte of the RSA one; every fifth of the slower P-384/P-256 one.)
    let cases = [
        (&pki.sigs["rsa"], Some(&pki.payload[..]), 1),
        (&pki.sigs["ec_attached"], None, 5),
    ];
    for (sig, content, stride) in cases {
        for i in (0..sig.len()).step_by(stride) {
            let mut bad = sig.clone();
            bad[i] ^= 0x01;
            let accepted = match content {
                Some(content) => check_with(&bad, content),
                None => SignedData::from_der(&bad)
                    .and_then(|sd| sd.verify_attached(&s, &o, now()))
                    .is_ok(),
            };
            if accepted {
                assert!(
                    openssl_accepts(&bad, content, &pki.certs["root"], &[]),
                    "byte {i} changed: accepted here, refused by OpenSSL"
                );
            }
        }
    }
}

#[test]
fn untrusted_signer_fails() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let err = verify(
        &pki.sigs["stranger"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CmsError::Certificate(X509Error::Untrusted { .. })),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "signer CN=stranger-signer does not chain to a trusted certificate: no certificate for \
         issuer CN=Other Root CA of CN=stranger-signer in the signature or the keyring"
    );
    assert!(!openssl_accepts(
        &pki.sigs["stranger"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));
    // Trusting the other root makes it pass.
    verify(
        &pki.sigs["stranger"],
        &pki.payload,
        &store(pki, &["root", "other"]),
        &VerifyOptions::default(),
        now(),
    )
    .unwrap();
}

#[test]
fn intermediate_from_the_keyring() {
    let Some(pki) = pki() else { return };
    let o = VerifyOptions::default();
    let sig = &pki.sigs["rsa_no_int"];
    let err = verify(sig, &pki.payload, &store(pki, &["root"]), &o, now()).unwrap_err();
    assert!(
        err.to_string().ends_with("no certificate for issuer CN=Test Intermediate CA of CN=rsa-signer in the signature or the keyring"),
        "{err}"
    );
    let signer = verify(sig, &pki.payload, &store(pki, &["root", "int"]), &o, now()).unwrap();
    assert_eq!(signer.chain.len(), 3);
}

#[test]
fn expired_signer_fails() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let err = verify(
        &pki.sigs["expired"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CmsError::Certificate(X509Error::Expired { .. })),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "certificate CN=expired-signer expired at 2021-01-01T00:00:00Z (verification time "
        ),
        "{err}"
    );
    assert!(!openssl_accepts(
        &pki.sigs["expired"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));
    // Signed now, so the signing time does not help.
    let with_time = VerifyOptions {
        use_signing_time: true,
        ..VerifyOptions::default()
    };
    assert!(verify(&pki.sigs["expired"], &pki.payload, &s, &with_time, now()).is_err());
    // Before its validity started.
    let err = verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        1_000_000_000,
    )
    .unwrap_err();
    assert!(
        matches!(err, CmsError::Certificate(X509Error::NotYetValid { .. })),
        "{err}"
    );
}

#[test]
fn signing_time_rescues_a_since_expired_signer() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let later = now() + 3 * DAY;
    let err = verify(
        &pki.sigs["short"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        later,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("certificate CN=short-signer expired at "),
        "{err}"
    );
    let with_time = VerifyOptions {
        use_signing_time: true,
        ..VerifyOptions::default()
    };
    let signer = verify(&pki.sigs["short"], &pki.payload, &s, &with_time, later).unwrap();
    assert_eq!(Some(signer.verification_time), signer.signing_time);
    // No signingTime attribute to use.
    let err = verify(&pki.sigs["rsa_noattr"], &pki.payload, &s, &with_time, now()).unwrap_err();
    assert!(matches!(err, CmsError::NoSigningTime), "{err}");
}

#[test]
fn purposes() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let run = |sig: &str, purpose: Purpose| {
        verify(&pki.sigs[sig], &pki.payload, &s, &opts(purpose), now())
    };

    // A code-signing signer: not for S/MIME.
    let err = run("code", Purpose::SmimeSign).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate CN=code-signer is not valid for purpose smimesign: extended key usage lacks emailProtection"
    );
    assert!(!openssl_accepts(
        &pki.sigs["code"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));
    run("code", Purpose::CodeSign).unwrap();
    run("code", Purpose::Any).unwrap();
    assert!(openssl_accepts(
        &pki.sigs["code"],
        Some(&pki.payload),
        &pki.certs["root"],
        &["-purpose", "any"]
    ));

    // An S/MIME signer: not for code signing.
    let err = run("rsa", Purpose::CodeSign).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate CN=rsa-signer is not valid for purpose codesign: extended key usage lacks codeSigning"
    );

    // No extended key usage: fine for S/MIME, not for RAUC's codesign.
    run("noeku", Purpose::SmimeSign).unwrap();
    assert!(openssl_accepts(
        &pki.sigs["noeku"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));
    let err = run("noeku", Purpose::CodeSign).unwrap_err();
    assert!(
        matches!(err, CmsError::Certificate(X509Error::Purpose { .. })),
        "{err}"
    );

    // anyExtendedKeyUsage is not emailProtection for OpenSSL.
    let err = run("anyeku", Purpose::SmimeSign).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("extended key usage lacks emailProtection"),
        "{err}"
    );
    assert!(!openssl_accepts(
        &pki.sigs["anyeku"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));
    run("anyeku", Purpose::Any).unwrap();

    // A CA whose extended key usage is codeSigning only: the S/MIME purpose fails at the
    // CA, as in OpenSSL; codesign passes.
    let err = run("under_code", Purpose::SmimeSign).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate CN=Test Code Intermediate CA is not valid for purpose smimesign: extended key usage of a CA lacks emailProtection"
    );
    assert!(!openssl_accepts(
        &pki.sigs["under_code"],
        Some(&pki.payload),
        &pki.certs["root"],
        &[]
    ));
    run("under_code", Purpose::CodeSign).unwrap();
    run("under_code", Purpose::Any).unwrap();
}

#[test]
fn partial_chain() {
    let Some(pki) = pki() else { return };
    let only_int = store(pki, &["int"]);
    let err = verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &only_int,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "signer CN=rsa-signer does not chain to a trusted certificate: CN=Test Intermediate CA \
         is in the keyring but not self-signed, and allow-partial-chain is off"
    );
    assert!(!openssl_accepts(
        &pki.sigs["rsa"],
        Some(&pki.payload),
        &pki.certs["int"],
        &[]
    ));

    let partial = VerifyOptions {
        allow_partial_chain: true,
        ..VerifyOptions::default()
    };
    let signer = verify(&pki.sigs["rsa"], &pki.payload, &only_int, &partial, now()).unwrap();
    assert_eq!(signer.chain, ["CN=rsa-signer", "CN=Test Intermediate CA"]);
    assert!(openssl_accepts(
        &pki.sigs["rsa"],
        Some(&pki.payload),
        &pki.certs["int"],
        &["-partial_chain"]
    ));

    // With the whole chain in the keyring, the chain still reaches the root.
    let both = store(pki, &["int", "root"]);
    let signer = verify(&pki.sigs["rsa"], &pki.payload, &both, &partial, now()).unwrap();
    assert_eq!(signer.chain.len(), 3);
}

#[test]
fn allowed_signer_cns() {
    let Some(pki) = pki() else { return };
    let s = store(pki, &["root"]);
    let allow = |cns: &[&str]| VerifyOptions {
        allowed_signer_cns: cns.iter().map(|c| c.to_string()).collect(),
        ..VerifyOptions::default()
    };
    verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &s,
        &allow(&["other", "rsa-signer"]),
        now(),
    )
    .unwrap();
    let err = verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &s,
        &allow(&["other", "rsa-signer "]),
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CmsError::Certificate(X509Error::SignerCnNotAllowed { .. })
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "signer CN=rsa-signer has no common name in allowed-signer-cns (other, rsa-signer )"
    );
}

#[test]
fn keyring_file_and_hashed_directory() {
    let Some(pki) = pki() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keyring.pem");
    let mut pem = b"comment before the certificates\n".to_vec();
    pem.extend_from_slice(&pki.certs["other"]);
    pem.extend_from_slice(&pki.certs["root"]);
    std::fs::write(&file, &pem).unwrap();
    let s = TrustStore::load(Some(&file), None).unwrap();
    assert_eq!(s.len(), 2);
    verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap();

    // A directory: only hashed names count.
    let dir = tmp.path().join("certs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("root.pem"), &pki.certs["root"]).unwrap();
    let err = TrustStore::load(None, Some(&dir)).unwrap_err();
    assert!(matches!(err, X509Error::EmptyKeyring { .. }), "{err}");
    std::fs::write(dir.join(format!("{}.0", pki.root_hash)), &pki.certs["root"]).unwrap();
    let s = TrustStore::load(None, Some(&dir)).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.certificates()[0].info().subject, "CN=Test Root CA");
    verify(
        &pki.sigs["rsa"],
        &pki.payload,
        &s,
        &VerifyOptions::default(),
        now(),
    )
    .unwrap();

    // A broken file is named in the error.
    std::fs::write(
        &file,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = TrustStore::load(Some(&file), None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("keyring {}: certificate 1: ", file.display())),
        "{err}"
    );
}

#[test]
fn unverified_introspection() {
    let Some(pki) = pki() else { return };
    let sd = SignedData::from_der(&pki.sigs["rsa"]).unwrap();
    let mut subjects: Vec<String> = sd.certificates().iter().map(|c| c.info().subject).collect();
    subjects.sort();
    assert_eq!(subjects, ["CN=Test Intermediate CA", "CN=rsa-signer"]);
    let info = sd
        .certificates()
        .iter()
        .find(|c| c.subject() == "CN=rsa-signer")
        .unwrap()
        .info();
    assert_eq!(info.issuer, "CN=Test Intermediate CA");
    assert_eq!(info.sha256.len(), 64);
    assert!(info.not_before.ends_with('Z') && info.not_after.ends_with('Z'));
}
