//! End-to-end tests of the `flipslot-image` binary: key generation, building from image
//! files and from directories, verification, inspection, extraction and the error paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const EPOCH: &str = "1700000000";

/// The binary, with a clean environment for the variables it reads.
fn bin(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flipslot-image"));
    c.current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("FLIPSLOT_LOG");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin(dir).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and asserts success; returns standard output.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and asserts exit status 1; returns standard error.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: expected exit 1\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(err.contains("error: "), "{err}");
    err
}

/// Deterministic bytes.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 8192) % 3 == 2 {
                0
            } else {
                x as u8
            }
        })
        .collect()
}

/// Creates a key pair in `dir/keys` and returns its key id.
fn keygen(dir: &Path, name: &str) -> String {
    let out = ok(
        dir,
        &["keygen", "--out-dir", "keys", "--name", name, "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["v"], 1);
    v["key_id"].as_str().unwrap().to_string()
}

#[test]
fn keygen_build_verify_info_extract() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // keygen: files, modes, key id.
    let out = ok(dir, &["keygen", "--out-dir", "keys", "--name", "release"]);
    let key_line = out.lines().next().unwrap();
    let id = key_line.strip_prefix("key id ").unwrap().to_string();
    assert_eq!(id.len(), 16, "{out}");
    assert!(
        out.contains("keys/release.key") && out.contains("keys/release.pub"),
        "{out}"
    );
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("keys/release.key"), 0o600);
    assert_eq!(mode("keys/release.pub") & 0o600, 0o600);
    assert!(std::fs::read_to_string(dir.join("keys/release.key"))
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));

    // build from image files, with JSON progress.
    let rootfs = data(1, 700 * 1024 + 11);
    let boot = data(2, 100 * 1024);
    std::fs::write(dir.join("rootfs.img"), &rootfs).unwrap();
    std::fs::write(dir.join("boot.img"), &boot).unwrap();
    let out = ok(
        dir,
        &[
            "build",
            "--compatible",
            "acme-box",
            "--version",
            "1.2.0",
            "--description",
            "nightly",
            "--key",
            "keys/release.key",
            "--image",
            "rootfs=rootfs.img",
            "--image",
            "boot=boot.img",
            "--out",
            "update.fsb",
            "--chunk-size",
            "64K",
            "--compression",
            "zstd",
            "--block-index",
            "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l["v"] == 1));
    assert!(lines
        .iter()
        .any(|l| l["event"] == "progress" && l["phase"] == "write"));
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(
        done["size"],
        std::fs::metadata(dir.join("update.fsb")).unwrap().len()
    );
    assert_eq!(done["signatures"][0], id.as_str());
    assert_eq!(done["images"][0]["class"], "rootfs");
    assert_eq!(done["images"][1]["class"], "boot");
    let manifest_sha = done["manifest_sha256"].as_str().unwrap().to_string();

    // verify.
    let out = ok(dir, &["verify", "--keyring", "keys", "update.fsb"]);
    assert!(
        out.starts_with("update.fsb: OK, version 1.2.0 for acme-box, signed by "),
        "{out}"
    );
    assert!(out.contains(&id), "{out}");

    // info --json.
    let out = ok(
        dir,
        &[
            "info",
            "--keyring",
            "keys/release.pub",
            "--json",
            "update.fsb",
        ],
    );
    let info: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(info["v"], 1);
    assert_eq!(info["verified"], true);
    assert_eq!(info["compatible"], "acme-box");
    assert_eq!(info["version"], "1.2.0");
    assert_eq!(info["description"], "nightly");
    assert_eq!(info["manifest_sha256"], manifest_sha.as_str());
    assert_eq!(info["build_time_rfc3339"].as_str().unwrap().len(), 20);
    assert_eq!(info["size"], done["size"]);
    assert_eq!(info["payload_offset"].as_u64().unwrap() % 4096, 0);
    assert_eq!(info["signatures"][0]["key_id"], id.as_str());
    assert_eq!(info["signatures"][0]["status"], "trusted");
    let img = &info["images"][0];
    assert_eq!(img["index"], 0);
    assert_eq!(img["class"], "rootfs");
    assert_eq!(img["size"], rootfs.len() as u64);
    assert_eq!(img["sha256"], hex::encode(Sha256::digest(&rootfs)).as_str());
    assert_eq!(img["chunk_size"], 65536);
    assert_eq!(img["chunks"], 11);
    assert_eq!(img["compression"], "zstd");
    assert!(img["stored_size"].as_u64().unwrap() < rootfs.len() as u64);
    assert_eq!(img["block_index"], true);
    assert_eq!(info["images"][1]["class"], "boot");
    assert_eq!(info["images"].as_array().unwrap().len(), 2);

    // info as text, and without verification (with its warning).
    let out = ok(dir, &["info", "--keyring", "keys", "update.fsb"]);
    assert!(
        out.contains("compatible:      acme-box") && out.contains(&format!("{id} trusted")),
        "{out}"
    );
    let o = run(dir, &["info", "--no-verify", "update.fsb"]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("NOT checked"),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stdout).contains(&format!("{id} unverified")));

    // extract by class and by index, then compare.
    ok(
        dir,
        &[
            "extract",
            "--keyring",
            "keys",
            "--image",
            "rootfs",
            "--out",
            "r.img",
            "update.fsb",
        ],
    );
    assert!(std::fs::read(dir.join("r.img")).unwrap() == rootfs);
    let out = ok(
        dir,
        &[
            "extract",
            "--keyring",
            "keys",
            "--image",
            "1",
            "--out",
            "b.img",
            "--json",
            "update.fsb",
        ],
    );
    assert!(std::fs::read(dir.join("b.img")).unwrap() == boot);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["class"], "boot");
    let err = fails(
        dir,
        &[
            "extract",
            "--keyring",
            "keys",
            "--image",
            "data",
            "--out",
            "x.img",
            "update.fsb",
        ],
    );
    assert!(
        err.contains("no image \"data\"") && err.contains("rootfs, boot"),
        "{err}"
    );
    assert!(!dir.join("x.img").exists());

    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn wrong_keyring_and_tampering_fail_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let id = keygen(dir, "release");
    std::fs::create_dir(dir.join("other")).unwrap();
    ok(dir, &["keygen", "--out-dir", "other", "--name", "x"]);
    std::fs::write(dir.join("rootfs.img"), data(3, 200 * 1024)).unwrap();
    ok(
        dir,
        &[
            "build",
            "--compatible",
            "acme",
            "--version",
            "2.0.0",
            "--key",
            "keys/release.key",
            "--image",
            "rootfs=rootfs.img",
            "--out",
            "u.fsb",
            "--chunk-size",
            "64K",
        ],
    );

    // A keyring that does not hold the signer.
    let err = fails(dir, &["verify", "--keyring", "other", "u.fsb"]);
    assert!(
        err.contains("u.fsb") && err.contains("untrusted") && err.contains(&id),
        "{err}"
    );
    let out = run(dir, &["verify", "--keyring", "other", "--json", "u.fsb"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["ok"].as_bool()),
        (Some("done"), Some(false))
    );
    assert!(v["error"].as_str().unwrap().contains(&id));
    // Needing two signatures.
    let err = fails(
        dir,
        &[
            "verify",
            "--keyring",
            "keys",
            "--min-signatures",
            "2",
            "u.fsb",
        ],
    );
    assert!(err.contains("2 required"), "{err}");
    // A keyring that does not exist, a bundle that does not exist.
    let err = fails(dir, &["verify", "--keyring", "nowhere", "u.fsb"]);
    assert!(err.contains("nowhere"), "{err}");
    let err = fails(dir, &["verify", "--keyring", "keys", "missing.fsb"]);
    assert!(err.contains("missing.fsb"), "{err}");

    // A flipped payload byte: the chunk is named.
    let mut bytes = std::fs::read(dir.join("u.fsb")).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 0x40;
    std::fs::write(dir.join("bad.fsb"), &bytes).unwrap();
    let err = fails(dir, &["verify", "--keyring", "keys", "bad.fsb"]);
    assert!(
        err.contains("bad.fsb") && err.contains("chunk 3") && err.contains("blake3 mismatch"),
        "{err}"
    );
    let err = fails(
        dir,
        &[
            "extract",
            "--keyring",
            "keys",
            "--image",
            "0",
            "--out",
            "x.img",
            "bad.fsb",
        ],
    );
    assert!(err.contains("chunk 3"), "{err}");
    assert!(
        !dir.join("x.img").exists(),
        "a failed extract left its output"
    );
    // sign refuses a bundle whose payload does not match.
    let err = fails(dir, &["sign", "--key", "other/x.key", "bad.fsb"]);
    assert!(err.contains("bad.fsb") && err.contains("chunk 3"), "{err}");
}

#[test]
fn keygen_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    keygen(dir, "k");
    let before = std::fs::read(dir.join("keys/k.key")).unwrap();
    let err = fails(dir, &["keygen", "--out-dir", "keys", "--name", "k"]);
    assert!(
        err.contains("keys/k.key") && err.contains("refusing"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("keys/k.key")).unwrap(), before);
    // Only the public half existing is refused too, and nothing is written.
    std::fs::write(dir.join("keys/p.pub"), "x").unwrap();
    let err = fails(dir, &["keygen", "--out-dir", "keys", "--name", "p"]);
    assert!(err.contains("keys/p.pub"), "{err}");
    assert!(!dir.join("keys/p.key").exists());
    fails(dir, &["keygen", "--out-dir", "keys", "--name", "a/b"]);
}

#[test]
fn unsigned_then_sign_and_resign() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let id1 = keygen(dir, "one");
    let id2 = keygen(dir, "two");
    std::fs::write(dir.join("rootfs.img"), data(4, 150 * 1024)).unwrap();
    let out = run(
        dir,
        &[
            "build",
            "--compatible",
            "acme",
            "--version",
            "1.0.0",
            "--image",
            "rootfs=rootfs.img",
            "--out",
            "u.fsb",
        ],
    );
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("unsigned"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("UNSIGNED"));
    let err = fails(dir, &["verify", "--keyring", "keys", "u.fsb"]);
    assert!(err.contains("not signed"), "{err}");

    let out = ok(dir, &["sign", "--key", "keys/one.key", "u.fsb"]);
    assert_eq!(out.trim(), format!("u.fsb: signed by {id1}"));
    let out = ok(
        dir,
        &[
            "sign",
            "--key",
            "keys/two.key",
            "--key",
            "keys/one.key",
            "u.fsb",
        ],
    );
    assert_eq!(out.trim(), format!("u.fsb: signed by {id2}, {id1}"));
    ok(
        dir,
        &[
            "verify",
            "--keyring",
            "keys",
            "--min-signatures",
            "2",
            "u.fsb",
        ],
    );
    let out = ok(dir, &["resign", "--key", "keys/two.key", "--json", "u.fsb"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["signatures"], serde_json::json!([id2]));
    ok(dir, &["verify", "--keyring", "keys/two.pub", "u.fsb"]);
    fails(dir, &["verify", "--keyring", "keys/one.pub", "u.fsb"]);
}

#[test]
fn build_input_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("a.img"), data(5, 10_000)).unwrap();
    let base = [
        "build",
        "--compatible",
        "acme",
        "--version",
        "1.0.0",
        "--out",
        "o.fsb",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let args = with(&["--image", "rootfs=missing.img"]);
    let err = fails(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("missing.img"), "{err}");
    let args = with(&["--image", "rootfs=a.img", "--image", "rootfs=a.img"]);
    let err = fails(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        err.contains("rootfs") && err.contains("more than once"),
        "{err}"
    );
    let args = with(&["--image", "rootfs=a.img", "--key", "nokey.key"]);
    let err = fails(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("nokey.key"), "{err}");
    // Command line errors are clap's (exit 2).
    let out = run(
        dir,
        &[
            "build",
            "--compatible",
            "acme",
            "--version",
            "one",
            "--out",
            "o.fsb",
            "--image",
            "r=a.img",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        dir,
        &[
            "build",
            "--compatible",
            "acme",
            "--version",
            "1.0.0",
            "--out",
            "o.fsb",
            "--image",
            "r=a.img",
            "--chunk-size",
            "1000",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("multiple of 4K"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("o.fsb").exists());
}

#[test]
fn every_command_has_help() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(tmp.path(), &["--help"]);
    for cmd in [
        "keygen", "build", "sign", "resign", "verify", "info", "extract",
    ] {
        assert!(out.contains(cmd), "{out}");
        let help = ok(tmp.path(), &[cmd, "--help"]);
        assert!(help.contains("Usage: flipslot-image"), "{help}");
    }
    let help = ok(tmp.path(), &["build", "--help"]);
    for flag in [
        "--compatible",
        "--version",
        "--key",
        "--image",
        "--dir",
        "--fs",
        "--chunk-size",
        "--compression",
        "--zstd-level",
        "--block-index",
        "--ext4-size",
        "--label",
        "--json",
    ] {
        assert!(help.contains(flag), "build --help lacks {flag}");
    }
}

/// Whether `program` is installed; if not, the test is skipped, unless CI=true.
fn have(program: &str) -> bool {
    if flipslot_os::process::find_program(program.as_ref()).is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{program} is not installed, and CI=true requires this test to run");
    }
    eprintln!("skipping: {program} is not installed");
    false
}

/// A small tree with files, a subdirectory and a symlink.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=acme\nVERSION_ID=1\n").unwrap();
    std::fs::write(root.join("usr/bin/tool"), data(6, 50_000)).unwrap();
    std::fs::set_permissions(
        root.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../etc/os-release", root.join("usr/os-release")).unwrap();
}

/// Sets every regular file's modification time to `secs`.
fn touch_all(root: &Path, secs: u64) {
    for p in ["etc/os-release", "usr/bin/tool"] {
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(p))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    }
}

fn build_dir_twice(fs: &str, program: &str, magic: (usize, &[u8])) {
    if !have(program) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    keygen(dir, "k");
    make_tree(&dir.join("tree"));
    let build = |out: &str| {
        let o = bin(dir)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args([
                "build",
                "--compatible",
                "acme",
                "--version",
                "3.1.0",
                "--key",
                "keys/k.key",
                "--dir",
                "rootfs=tree",
                "--fs",
                fs,
                "--out",
                out,
                "--chunk-size",
                "64K",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "build --fs {fs}: {}", text(&o.stderr));
        std::fs::read(dir.join(out)).unwrap()
    };
    touch_all(&dir.join("tree"), 1_000_000_000);
    let a = build("a.fsb");
    // Other host times, another build: the same bytes.
    touch_all(&dir.join("tree"), 1_600_000_000);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build("b.fsb");
    assert!(
        a == b,
        "two --fs {fs} builds with SOURCE_DATE_EPOCH={EPOCH} differ"
    );

    ok(dir, &["verify", "--keyring", "keys", "a.fsb"]);
    let info: serde_json::Value =
        serde_json::from_str(ok(dir, &["info", "--keyring", "keys", "--json", "a.fsb"]).trim())
            .unwrap();
    assert_eq!(info["build_time"], EPOCH.parse::<u64>().unwrap());
    ok(
        dir,
        &[
            "extract",
            "--keyring",
            "keys",
            "--image",
            "rootfs",
            "--out",
            "fs.img",
            "a.fsb",
        ],
    );
    let img = std::fs::read(dir.join("fs.img")).unwrap();
    assert_eq!(
        &img[magic.0..magic.0 + magic.1.len()],
        magic.1,
        "{fs} magic"
    );
    // The temporary filesystem image is gone.
    let hidden: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn build_from_dir_squashfs_is_reproducible() {
    build_dir_twice("squashfs", "mksquashfs", (0, b"hsqs"));
}

#[test]
fn build_from_dir_erofs_is_reproducible() {
    // EROFS superblock at 1024, magic 0xE0F5E1E2 little-endian.
    build_dir_twice("erofs", "mkfs.erofs", (1024, &[0xe2, 0xe1, 0xf5, 0xe0]));
}

#[test]
fn build_from_dir_ext4_is_reproducible() {
    // ext2/3/4 superblock at 1024, s_magic 0xEF53 at offset 56.
    build_dir_twice("ext4", "mke2fs", (1024 + 56, &[0x53, 0xef]));
}

#[test]
fn chunk_hash_is_blake3_by_default_and_sha256_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    keygen(dir, "release");
    let image = data(7, 300 * 1024 + 5);
    std::fs::write(dir.join("rootfs.img"), &image).unwrap();
    let whole = hex::encode(Sha256::digest(&image));
    for (flag, alg, format) in [(None, "blake3", 2), (Some("sha256"), "sha256", 1)] {
        let out = format!("{alg}.fsb");
        let mut args = vec![
            "build",
            "--compatible",
            "acme-box",
            "--version",
            "1.0.0",
            "--key",
            "keys/release.key",
            "--image",
            "rootfs=rootfs.img",
            "--chunk-size",
            "64K",
            "--out",
            &out,
            "--json",
        ];
        if let Some(f) = flag {
            args.extend(["--chunk-hash", f]);
        }
        let done = ok(dir, &args);
        let done: serde_json::Value = serde_json::from_str(done.lines().last().unwrap()).unwrap();
        assert_eq!(done["chunk_hash"], alg, "{done}");
        assert_eq!(done["manifest_format"], format, "{done}");
        let info = ok(dir, &["info", &out, "--keyring", "keys", "--json"]);
        let info: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
        assert_eq!(info["chunk_hash"], alg);
        assert_eq!(info["manifest_format"], format);
        // The whole-image digest stays SHA-256 whatever the chunk hash.
        assert_eq!(info["images"][0]["sha256"], whole.as_str());
        let text = ok(dir, &["info", &out, "--keyring", "keys"]);
        assert!(
            text.contains(&format!(
                "chunk hash:      {alg} (manifest format {format})"
            )),
            "{text}"
        );
        ok(dir, &["verify", &out, "--keyring", "keys"]);
        // A flipped payload byte is found by verify with either hash.
        let mut bytes = std::fs::read(dir.join(&out)).unwrap();
        let at = bytes.len() - 1000;
        bytes[at] ^= 1;
        std::fs::write(dir.join("bad.fsb"), &bytes).unwrap();
        let err = fails(dir, &["verify", "bad.fsb", "--keyring", "keys"]);
        assert!(err.contains("chunk"), "{err}");
    }
    let err = run(dir, &["build", "--chunk-hash", "md5"]);
    assert_eq!(err.status.code(), Some(2));
    assert!(text(&err.stderr).contains("md5"));
}
