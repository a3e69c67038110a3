//! Shared fixture for the install tests: a temporary directory standing in for a device
//! with A/B (or A/B/C) slots, a keyring, a grubenv block and a kernel command line; helpers
//! that build bundles with `flipslot-image`, run the `flipslot` binary against it, and
//! snapshot everything an install must leave alone.
//!
//! Slots are plain files by default; [`Fixture::with_devices`] takes existing paths (loop
//! devices, see [`loopdev`]) instead.
// Each test crate uses a subset of these helpers.
#![allow(dead_code)]

pub mod faultproxy;
pub mod loopdev;
pub mod nginx;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flipslot::bootloader::abstate::{ok_var, try_var, AbState, ORDER_VAR};
use flipslot::slot::status::{SlotRecord, StatusFile};
use flipslot_bootenv::grubenv::{GrubEnv, DEFAULT_BLOCK_SIZE, HEADER};
use flipslot_format::builder::{build, BuildOptions, ImageInput};
pub use flipslot_format::Compression;
use sha2::{Digest, Sha256};

/// The fixture system's compatible string.
pub const COMPATIBLE: &str = "test-board";
/// Size of each file-backed slot.
pub const SLOT_SIZE: usize = 8 << 20;
/// Chunk size of the bundles built here (small, so images have several chunks).
pub const CHUNK_SIZE: u32 = 1 << 20;
/// Slot class of every slot and image.
pub const CLASS: &str = "rootfs";

/// A signing key kept as a PEM file, so tests do not need to name the key type.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// The PKCS#8 secret key file.
    pub secret: PathBuf,
    /// The public key, PEM.
    pub public_pem: String,
    /// A short name (file stem).
    pub name: String,
}

/// One configured slot.
#[derive(Debug, Clone)]
pub struct SlotSpec {
    /// The device or image file (absolute).
    pub device: PathBuf,
    /// The bootname.
    pub bootname: String,
}

/// The byte each file-backed slot is filled with at creation (distinct per slot).
pub fn fill_byte(index: usize) -> u8 {
    0x11u8.wrapping_mul(index as u8 + 1)
}

/// Deterministic incompressible bytes (xorshift64*).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes that zstd compresses well.
pub fn compressible(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 512) % 7) as u8 + b'a').collect()
}

/// SHA-256 hex of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 hex of a whole file or block device (streamed).
pub fn sha256_file(path: &Path) -> String {
    sha256_prefix(path, u64::MAX)
}

/// SHA-256 hex of the first `len` bytes of a file or block device (or all, if shorter).
pub fn sha256_prefix(path: &Path, len: u64) -> String {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut r = f.take(len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A fresh 1024-byte grubenv block with `body` as its variable lines.
pub fn grubenv_block(body: &str) -> Vec<u8> {
    let mut b = format!("{HEADER}{body}").into_bytes();
    b.resize(DEFAULT_BLOCK_SIZE, b'#');
    b
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with both streams unless the command succeeded.
pub fn expect_success(out: &Output) {
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Panics unless the command failed with `phrase` (case-insensitive) on stderr; returns stderr.
pub fn expect_failure(out: &Output, phrase: &str) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure mentioning {phrase:?}, got success\nstdout:\n{}\nstderr:\n{err}",
        stdout(out)
    );
    assert!(
        err.to_lowercase().contains(&phrase.to_lowercase()),
        "stderr does not mention {phrase:?}:\n{err}"
    );
    err
}

/// What an install must not change, captured before it runs.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The booted slot's bootname.
    pub booted_bootname: String,
    /// The booted slot's name (`rootfs.N`).
    pub booted_slot: String,
    /// SHA-256 of every slot device, by bootname.
    pub slot_sha256: BTreeMap<String, String>,
    /// The whole grubenv file.
    pub grubenv_raw: Vec<u8>,
    /// The bootname GRUB boots next.
    pub primary: Option<String>,
    /// `ORDER` as written.
    pub order: Option<String>,
    /// The booted slot's `OK` and `TRY` variables as written.
    pub booted_flags: (Option<String>, Option<String>),
    /// The booted slot's record in status.json.
    pub booted_record: Option<SlotRecord>,
    /// The whole status.json, if present.
    pub status_raw: Option<Vec<u8>>,
}

/// The test system.
#[derive(Debug)]
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The key in the keyring.
    pub trusted: TestKey,
    /// The configured slots (class `rootfs`), in config order.
    pub slots: Vec<SlotSpec>,
    /// The system's compatible.
    pub compatible: String,
    /// `min-signatures`, if set.
    pub min_signatures: Option<u32>,
    /// TOML appended to the config (e.g. a `[health]` section).
    pub extra_config: String,
    booted: String,
    counter: Cell<u32>,
}

impl Fixture {
    /// A/B with file slots, booted from A.
    pub fn new() -> Fixture {
        Fixture::with_bootnames(&["A", "B"])
    }

    /// File slots `<bootname lower-case>.img` of [`SLOT_SIZE`] bytes, booted from the first.
    pub fn with_bootnames(bootnames: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let slots: Vec<SlotSpec> = bootnames
            .iter()
            .enumerate()
            .map(|(i, bn)| {
                let device = dir.path().join(format!("{}.img", bn.to_lowercase()));
                std::fs::write(&device, vec![fill_byte(i); SLOT_SIZE]).unwrap();
                SlotSpec {
                    device,
                    bootname: bn.to_string(),
                }
            })
            .collect();
        Fixture::setup(dir, slots)
    }

    /// Slots on existing devices (e.g. loop devices), `(device, bootname)`, booted from the first.
    pub fn with_devices(devices: &[(PathBuf, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let slots = devices
            .iter()
            .map(|(d, bn)| SlotSpec {
                device: d.clone(),
                bootname: bn.to_string(),
            })
            .collect();
        Fixture::setup(dir, slots)
    }

    fn setup(dir: tempfile::TempDir, slots: Vec<SlotSpec>) -> Fixture {
        let p = dir.path();
        std::fs::create_dir(p.join("keys")).unwrap();
        std::fs::create_dir(p.join("data")).unwrap();
        let trusted = make_key(p, "trusted");
        std::fs::write(p.join("keys/trusted.pub"), &trusted.public_pem).unwrap();
        let mut body = String::from("ORDER=");
        body.push_str(
            &slots
                .iter()
                .map(|s| s.bootname.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        body.push('\n');
        for s in &slots {
            body.push_str(&format!("{0}_OK=1\n{0}_TRY=0\n", s.bootname));
        }
        std::fs::write(p.join("grubenv"), grubenv_block(&body)).unwrap();
        let booted = slots[0].bootname.clone();
        let f = Fixture {
            dir,
            trusted,
            slots,
            compatible: COMPATIBLE.to_string(),
            min_signatures: None,
            extra_config: String::new(),
            booted: String::new(),
            counter: Cell::new(0),
        };
        f.write_config();
        let mut f = f;
        f.set_booted(&booted);
        f
    }

    /// The temp directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `system.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path().join("system.toml")
    }

    /// The file holding the kernel command line.
    pub fn cmdline_path(&self) -> PathBuf {
        self.path().join("cmdline")
    }

    /// The grubenv file.
    pub fn grubenv_path(&self) -> PathBuf {
        self.path().join("grubenv")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `status.json`.
    pub fn status_path(&self) -> PathBuf {
        self.data_dir().join("status.json")
    }

    /// The install lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.data_dir().join("install.lock")
    }

    /// The keyring directory.
    pub fn keyring_dir(&self) -> PathBuf {
        self.path().join("keys")
    }

    /// Rewrites `system.toml` from the fields.
    pub fn write_config(&self) {
        let p = self.path().display();
        let mut cfg = format!(
            "compatible = \"{}\"\nbootloader = \"grub\"\ngrubenv = \"{p}/grubenv\"\n\
             keyring = \"{p}/keys\"\ndata-directory = \"{p}/data\"\n",
            self.compatible
        );
        if let Some(n) = self.min_signatures {
            cfg.push_str(&format!("min-signatures = {n}\n"));
        }
        cfg.push_str(&self.extra_config);
        for s in &self.slots {
            cfg.push_str(&format!(
                "\n[[slot.{CLASS}]]\ndevice = \"{}\"\nbootname = \"{}\"\n",
                s.device.display(),
                s.bootname
            ));
        }
        std::fs::write(self.config_path(), cfg).unwrap();
    }

    /// Makes the kernel command line say the system booted from `bootname`.
    pub fn set_booted(&mut self, bootname: &str) {
        std::fs::write(
            self.cmdline_path(),
            format!("BOOT_IMAGE=/vmlinuz ro quiet flipslot.slot={bootname}\n"),
        )
        .unwrap();
        self.booted = bootname.to_string();
    }

    /// One boot by the reference boot script's rules: the first slot in ORDER with OK=1
    /// and TRY=0 boots and gets TRY=1 (saved). A model for tests on files; the QEMU rig
    /// runs the real GRUB. Returns the bootname booted, if any.
    pub fn grub_boot(&mut self) -> Option<String> {
        let path = self.grubenv_path();
        let block = std::fs::read(&path).unwrap();
        let mut env = GrubEnv::parse(&block).unwrap();
        let order: Vec<String> = env
            .get("ORDER")
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        let chosen = order.into_iter().find(|bn| {
            env.get(&format!("{bn}_OK")) == Some("1") && env.get(&format!("{bn}_TRY")) == Some("0")
        })?;
        env.set(&format!("{chosen}_TRY"), "1").unwrap();
        std::fs::write(&path, env.encode(block.len()).unwrap()).unwrap();
        self.set_booted(&chosen);
        Some(chosen)
    }

    /// The booted bootname.
    pub fn booted(&self) -> &str {
        &self.booted
    }

    fn index_of(&self, bootname: &str) -> usize {
        self.slots
            .iter()
            .position(|s| s.bootname == bootname)
            .unwrap_or_else(|| panic!("no slot with bootname {bootname}"))
    }

    /// The slot name (`rootfs.N`) of a bootname.
    pub fn slot_name(&self, bootname: &str) -> String {
        format!("{CLASS}.{}", self.index_of(bootname))
    }

    /// The device of a bootname.
    pub fn device(&self, bootname: &str) -> PathBuf {
        self.slots[self.index_of(bootname)].device.clone()
    }

    /// The bytes of a slot (whole device).
    pub fn slot_bytes(&self, bootname: &str) -> Vec<u8> {
        std::fs::read(self.device(bootname)).unwrap()
    }

    /// A new key pair, not in the keyring.
    pub fn new_key(&self, name: &str) -> TestKey {
        make_key(self.path(), name)
    }

    /// Puts a key into the keyring.
    pub fn trust(&self, key: &TestKey) {
        std::fs::write(
            self.keyring_dir().join(format!("{}.pub", key.name)),
            &key.public_pem,
        )
        .unwrap();
    }

    fn next_id(&self) -> u32 {
        let n = self.counter.get();
        self.counter.set(n + 1);
        n
    }

    /// Builds a one-image bundle of class `rootfs` signed by `keys` (none: unsigned),
    /// with BLAKE3 chunk hashes (the default).
    pub fn build_bundle(
        &self,
        version: &str,
        compatible: &str,
        image: &[u8],
        keys: &[&TestKey],
        compression: Compression,
    ) -> PathBuf {
        self.build_bundle_with(
            version,
            compatible,
            image,
            keys,
            compression,
            flipslot_format::ChunkHash::Blake3,
        )
    }

    /// A bundle for this system signed by the trusted key, uncompressed, with SHA-256
    /// chunk hashes: a format 1 bundle, as releases before BLAKE3 chunk hashes built.
    pub fn bundle_sha256(&self, version: &str, image: &[u8]) -> PathBuf {
        self.build_bundle_with(
            version,
            COMPATIBLE,
            image,
            &[&self.trusted],
            Compression::None,
            flipslot_format::ChunkHash::Sha256,
        )
    }

    /// [`Fixture::build_bundle`] with the chunk hash given.
    pub fn build_bundle_with(
        &self,
        version: &str,
        compatible: &str,
        image: &[u8],
        keys: &[&TestKey],
        compression: Compression,
        chunk_hash: flipslot_format::ChunkHash,
    ) -> PathBuf {
        let id = self.next_id();
        let img = self.path().join(format!("image-{id}.raw"));
        std::fs::write(&img, image).unwrap();
        let out = self.path().join(format!("bundle-{id}.fsb"));
        let keys: Vec<_> = keys
            .iter()
            .map(|k| flipslot_format::keys::load_secret_key(&k.secret).unwrap())
            .collect();
        let opts = BuildOptions {
            compatible: compatible.into(),
            version: semver::Version::parse(version).unwrap(),
            build_time: 1_700_000_000,
            description: Some(format!("test bundle {id}")),
            chunk_size: CHUNK_SIZE,
            compression,
            zstd_level: 3,
            block_index: false,
            chunk_hash,
        };
        build(
            &[ImageInput {
                class: CLASS.into(),
                path: img.clone(),
            }],
            &opts,
            &keys,
            &mut std::fs::File::create(&out).unwrap(),
            &mut |_, _, _| {},
        )
        .unwrap();
        std::fs::remove_file(img).unwrap();
        out
    }

    /// A bundle for this system signed by the trusted key, uncompressed.
    pub fn bundle(&self, version: &str, image: &[u8]) -> PathBuf {
        self.build_bundle(
            version,
            COMPATIBLE,
            image,
            &[&self.trusted],
            Compression::None,
        )
    }

    /// Runs `flipslot --config … --cmdline-file … ARGS`.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(env!("CARGO_BIN_EXE_flipslot"))
            .arg("--config")
            .arg(self.config_path())
            .arg("--cmdline-file")
            .arg(self.cmdline_path())
            .args(args)
            .stdin(Stdio::null())
            .env("FLIPSLOT_LOG", "info")
            .output()
            .unwrap()
    }

    /// Runs `flipslot install EXTRA… BUNDLE`.
    pub fn install(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<&OsStr> = vec![OsStr::new("install")];
        args.extend(extra.iter().map(OsStr::new));
        args.push(bundle.as_os_str());
        self.run(args)
    }

    /// `flipslot status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(["status", "--json"]);
        expect_success(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The status report's entry for a bootname.
    pub fn status_slot(&self, bootname: &str) -> serde_json::Value {
        let v = self.status_json();
        v["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["bootname"] == bootname)
            .cloned()
            .unwrap_or_else(|| panic!("no slot {bootname} in {v}"))
    }

    /// The grubenv variables (last duplicate wins).
    pub fn grubenv_vars(&self) -> BTreeMap<String, String> {
        let block = std::fs::read(self.grubenv_path()).unwrap();
        let env = GrubEnv::parse(&block).unwrap();
        env.vars()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The grubenv variable `name`.
    pub fn var(&self, name: &str) -> Option<String> {
        self.grubenv_vars().get(name).cloned()
    }

    /// The A/B state as the agent reads it.
    pub fn ab_state(&self) -> AbState {
        let vars = self.grubenv_vars();
        let bootnames: Vec<String> = self.slots.iter().map(|s| s.bootname.clone()).collect();
        AbState::from_vars(
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &bootnames,
        )
    }

    /// The bootname GRUB boots next.
    pub fn primary(&self) -> Option<String> {
        self.ab_state().primary().map(str::to_string)
    }

    /// The status file as the agent reads it.
    pub fn status_file(&self) -> StatusFile {
        StatusFile::load(&self.status_path()).unwrap()
    }

    /// The status record of a bootname's slot.
    pub fn record(&self, bootname: &str) -> Option<SlotRecord> {
        self.status_file()
            .slots
            .get(&self.slot_name(bootname))
            .cloned()
    }

    /// Captures what an install must not change.
    pub fn snapshot(&self) -> Snapshot {
        let vars = self.grubenv_vars();
        let bn = self.booted.clone();
        Snapshot {
            booted_slot: self.slot_name(&bn),
            slot_sha256: self
                .slots
                .iter()
                .map(|s| {
                    let h = if s.device.exists() {
                        sha256_file(&s.device)
                    } else {
                        "(missing)".to_string()
                    };
                    (s.bootname.clone(), h)
                })
                .collect(),
            grubenv_raw: std::fs::read(self.grubenv_path()).unwrap(),
            primary: self.primary(),
            order: vars.get(ORDER_VAR).cloned(),
            booted_flags: (
                vars.get(&ok_var(&bn)).cloned(),
                vars.get(&try_var(&bn)).cloned(),
            ),
            booted_record: self.record(&bn),
            status_raw: std::fs::read(self.status_path()).ok(),
            booted_bootname: bn,
        }
    }

    /// Asserts that the booted slot's bytes, its `OK`/`TRY` variables and its status
    /// record are as before (what even a successful install must not change).
    pub fn assert_booted_intact(&self, before: &Snapshot) {
        let now = self.snapshot();
        let bn = &before.booted_bootname;
        assert_eq!(
            now.slot_sha256[bn], before.slot_sha256[bn],
            "booted slot {bn} was modified"
        );
        assert_eq!(
            now.booted_flags, before.booted_flags,
            "booted slot {bn}'s OK/TRY changed"
        );
        assert_eq!(
            now.booted_record, before.booted_record,
            "booted slot {}'s status record changed",
            before.booted_slot
        );
    }

    /// [`Fixture::assert_booted_intact`], plus: the bootloader's primary slot and `ORDER`
    /// are as before (what a failed install must not change).
    pub fn assert_untouched(&self, before: &Snapshot) {
        self.assert_booted_intact(before);
        let now = self.snapshot();
        assert_eq!(now.primary, before.primary, "primary slot changed");
        assert_eq!(now.order, before.order, "ORDER changed");
    }

    /// [`Fixture::assert_untouched`], plus: no slot, no grubenv byte and no status byte changed
    /// (for bundles refused before anything is written).
    pub fn assert_nothing_written(&self, before: &Snapshot) {
        self.assert_untouched(before);
        let now = self.snapshot();
        assert_eq!(now.slot_sha256, before.slot_sha256, "a slot was modified");
        assert!(
            now.grubenv_raw == before.grubenv_raw,
            "grubenv was modified:\n{}",
            String::from_utf8_lossy(&now.grubenv_raw)
        );
        assert_eq!(
            now.status_raw, before.status_raw,
            "status.json was modified"
        );
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

fn make_key(dir: &Path, name: &str) -> TestKey {
    let key = flipslot_format::keys::generate().unwrap();
    let secret = dir.join(format!("{name}.key"));
    std::fs::write(
        &secret,
        flipslot_format::keys::secret_key_pem(&key).unwrap(),
    )
    .unwrap();
    TestKey {
        secret,
        public_pem: flipslot_format::keys::public_key_pem(&key.verifying_key()).unwrap(),
        name: name.to_string(),
    }
}
