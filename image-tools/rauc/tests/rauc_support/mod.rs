//! RAUC test material made with the real tools: a throwaway PKI (`openssl`, through
//! `tests/rauc/make-pki.sh`) and bundles built by the real `rauc bundle`. Shared by the
//! image-tools and agent tests (`#[path]`). A missing tool skips, or panics with `CI=true`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether CI asked for every prerequisite to be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Turns a missing prerequisite into a skip, or a panic under `CI=true`.
pub fn require<T>(what: &str, r: Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if in_ci() => panic!("{what} is required with CI=true but is not available: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {what} is not available here: {e}");
            None
        }
    }
}

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(argv: &[&str]) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The throwaway PKI (see `tests/rauc/make-pki.sh` for what it holds).
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Creates it in `dir` (needs `openssl`).
    pub fn create(dir: &Path) -> Option<Pki> {
        // The workspace's `tests/rauc/make-pki.sh`, found from whichever crate includes
        // this file (agent, image-tools, image-tools/rauc).
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|d| d.join("tests/rauc/make-pki.sh"))
            .find(|p| p.is_file())
            .expect("tests/rauc/make-pki.sh in the workspace");
        require(
            "openssl (to make a test PKI)",
            run(&["sh", script.to_str().unwrap(), dir.to_str().unwrap()]),
        )?;
        Some(Pki {
            dir: dir.to_path_buf(),
        })
    }

    /// `<name>.pem`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `<name>.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// The keyring: the root CA.
    pub fn keyring(&self) -> PathBuf {
        self.cert("ca")
    }
}

/// What goes into a test bundle.
#[derive(Debug, Clone)]
pub struct BundleSpec<'a> {
    /// `plain` or `verity`.
    pub format: &'a str,
    pub compatible: &'a str,
    pub version: &'a str,
    /// The slot class of the single image.
    pub class: &'a str,
    /// The signer in the PKI (`signer`, `codesign`, `expired`, `rogue`).
    pub signer: &'a str,
}

impl Default for BundleSpec<'_> {
    fn default() -> Self {
        BundleSpec {
            format: "verity",
            compatible: "flipslot-test",
            version: "2.0.0",
            class: "rootfs",
            signer: "signer",
        }
    }
}

/// Builds `out` with the real `rauc bundle` from one image. `None` when rauc is missing.
pub fn rauc_bundle(pki: &Pki, spec: &BundleSpec<'_>, image: &Path, out: &Path) -> Option<()> {
    let content = out.with_extension("content");
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(&content).unwrap();
    let name = image.file_name().unwrap().to_str().unwrap();
    std::fs::copy(image, content.join(name)).unwrap();
    std::fs::write(
        content.join("manifest.raucm"),
        format!(
            "[update]\ncompatible={}\nversion={}\ndescription=flipslot test bundle\nbuild=20260101\n\n\
             [bundle]\nformat={}\n\n[image.{}]\nfilename={name}\n",
            spec.compatible, spec.version, spec.format, spec.class
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(out);
    require(
        "rauc (the real `rauc bundle`)",
        run(&[
            "rauc",
            "bundle",
            "--cert",
            pki.cert(spec.signer).to_str().unwrap(),
            "--key",
            pki.key(spec.signer).to_str().unwrap(),
            content.to_str().unwrap(),
            out.to_str().unwrap(),
        ]),
    )?;
    std::fs::remove_dir_all(&content).unwrap();
    Some(())
}

/// A copy of `bundle` at `out` with the byte at `offset` (negative: from the end) flipped.
pub fn flipped(bundle: &Path, offset: i64, out: &Path) -> PathBuf {
    let mut b = std::fs::read(bundle).unwrap();
    let i = if offset < 0 {
        b.len() - offset.unsigned_abs() as usize
    } else {
        offset as usize
    };
    b[i] ^= 0x01;
    std::fs::write(out, b).unwrap();
    out.to_path_buf()
}

/// The CMS size from a bundle's trailer.
pub fn cms_size(bundle: &Path) -> u64 {
    let b = std::fs::read(bundle).unwrap();
    u64::from_be_bytes(b[b.len() - 8..].try_into().unwrap())
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
