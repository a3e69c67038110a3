//! Compares the dm-verity hash trees `rauc::verity` builds with the ones `veritysetup format
//! --no-superblock` writes, byte for byte, and checks the root hash it prints; then verifies
//! the data and the `veritysetup` tree with a `VerifiedSource`.
//!
//! A missing `veritysetup` skips the test, except with `CI=true`, where it fails naming the
//! Debian package.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use flipslot_format::source::{ByteSource, MemSource};
use flipslot_os::process::{find_program, Cmd};
use flipslot_rauc::verity::{
    build_tree, verify_all, VerifiedSource, VerityParams, BLOCK_SIZE, SALT_SIZE,
};

const SALT_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Whether `veritysetup` is installed; panics under `CI=true` when it is not.
fn veritysetup_present() -> bool {
    if find_program(OsStr::new("veritysetup")).is_some() {
        return true;
    }
    let msg = "veritysetup not found: install the Debian package cryptsetup-bin";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping the veritysetup comparison: {msg}");
    false
}

/// Deterministic bytes that differ from block to block.
fn data(size: u64) -> Vec<u8> {
    let mut state = 0x0123_4567_89ab_cdefu64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs `veritysetup format` on `data`; returns the hash file and the printed root hash.
fn veritysetup_format(dir: &Path, data: &[u8]) -> (Vec<u8>, String) {
    let data_path = dir.join("data");
    let hash_path = dir.join("hash");
    fs::write(&data_path, data).unwrap();
    let out = Cmd::new("veritysetup")
        .args([
            "format",
            "--no-superblock",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ])
        .arg(format!("--salt={SALT_HEX}"))
        .arg(&data_path)
        .arg(&hash_path)
        .run_stdout()
        .unwrap();
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in veritysetup output:\n{out}"))
        .trim()
        .to_string();
    (fs::read(&hash_path).unwrap_or_default(), root)
}

#[test]
fn trees_match_veritysetup() {
    if !veritysetup_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut salt = [0u8; SALT_SIZE];
    hex::decode_to_slice(SALT_HEX, &mut salt).unwrap();
    let sizes = [
        4096,
        2 * 4096,
        1 << 20,
        (513u64 << 10).div_ceil(BLOCK_SIZE) * BLOCK_SIZE,
        128 * 4096,
        70 << 20,
    ];
    for size in sizes {
        let data = data(size);
        let sub = dir.path().join(size.to_string());
        fs::create_dir(&sub).unwrap();
        let (want_tree, want_root) = veritysetup_format(&sub, &data);
        let built = build_tree(&data[..], size, &salt).unwrap();
        assert_eq!(
            built.tree.len(),
            want_tree.len(),
            "tree size for {size} bytes"
        );
        assert!(
            built.tree == want_tree,
            "tree for {size} bytes differs from the one veritysetup writes"
        );
        assert_eq!(
            hex::encode(built.root_hash),
            want_root,
            "root hash for {size} bytes"
        );

        // The manifest view: payload = data || tree, checked end to end.
        let tree_size = want_tree.len() as u64;
        let params =
            VerityParams::from_manifest(&want_root, SALT_HEX, tree_size, size + tree_size).unwrap();
        let mut payload = data;
        payload.extend_from_slice(&want_tree);
        let mut last = (0, 0);
        verify_all(MemSource(payload.clone()), &params, &mut |d, t| {
            last = (d, t)
        })
        .unwrap();
        assert_eq!(last, (size, size));
        let mut src = VerifiedSource::new(MemSource(payload.clone()), params).unwrap();
        // An unaligned read across a block boundary (within the one block of 4 KiB data).
        let at = size / 2 + 123;
        let mut buf = vec![0u8; (size - at).min(5000) as usize];
        src.read_exact_at(at, &mut buf).unwrap();
        assert_eq!(buf, payload[at as usize..at as usize + buf.len()]);
    }
}
