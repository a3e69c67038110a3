//! Tests of the `channel` and `channel-verify` commands end to end on a real bundle (the
//! library side is in `image-tools/format/tests/channel.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// ---- command line, end to end ----

use ed25519_dalek::SigningKey;
use flipslot_format::builder::{self, BuildOptions, ImageInput};
use flipslot_format::channel::{verify_channel, Channel, MAX_CHANNEL_LEN};
use flipslot_format::keys::{self, key_id};
use flipslot_format::{Compression, Keyring, VerifyPolicy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOW: u64 = 1_700_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn ring(keys: &[&SigningKey]) -> Keyring {
    Keyring::from_keys(keys.iter().map(|k| {
        (
            k.verifying_key(),
            PathBuf::from(format!("{}.pub", key_id(&k.verifying_key()))),
        )
    }))
}

fn policy(n: u32) -> VerifyPolicy {
    VerifyPolicy { min_signatures: n }
}

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

fn fails(dir: &Path, args: &[&str]) -> (String, String) {
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
    (text(&out.stdout), err)
}

/// Writes `name.key` and `name.pub` into `dir` for key number `n`.
fn key_files(dir: &Path, name: &str, n: u8) {
    let k = key(n);
    std::fs::write(
        dir.join(format!("{name}.key")),
        keys::secret_key_pem(&k).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{name}.pub")),
        keys::public_key_pem(&k.verifying_key()).unwrap(),
    )
    .unwrap();
}

#[test]
fn cli_channel_from_a_real_bundle_then_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_files(dir, "release", 1);
    key_files(dir, "other", 2);
    let image: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("rootfs.img"), &image).unwrap();
    let summary = builder::build(
        &[ImageInput {
            class: "rootfs".into(),
            path: dir.join("rootfs.img"),
        }],
        &BuildOptions {
            compatible: "acme-box".into(),
            version: semver::Version::new(1, 4, 0),
            build_time: NOW,
            description: None,
            chunk_size: 64 * 1024,
            compression: Compression::None,
            zstd_level: 3,
            block_index: false,
            chunk_hash: Default::default(),
        },
        &[key(1)],
        &mut std::fs::File::create(dir.join("update.fsb")).unwrap(),
        &mut |_, _, _| {},
    )
    .unwrap();
    let bundle_len = std::fs::metadata(dir.join("update.fsb")).unwrap().len();

    let channel_args = [
        "channel",
        "--name",
        "stable",
        "--bundle",
        "update.fsb",
        "--url",
        "https://updates.example.com/update.fsb",
        "--url",
        "http://mirror.example.net/update.fsb",
        "--expires-in",
        "12h",
        "--rollout-percent",
        "25",
        "--key",
        "release.key",
        "--out",
        "stable.json",
        "--json",
    ];
    let out = ok(dir, &channel_args);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["v"], 1);
    assert_eq!(v["compatible"], "acme-box");
    assert_eq!(v["version"], "1.4.0");
    assert_eq!(v["rollout_percent"], 25);
    assert_eq!(v["bundle"]["size"], bundle_len);
    assert_eq!(
        v["bundle"]["manifest_sha256"],
        summary.manifest_sha256.to_hex()
    );
    assert_eq!(
        v["signatures"],
        serde_json::json!([key_id(&key(1).verifying_key()).to_string()])
    );
    let serial = v["serial"].as_u64().unwrap();
    assert_eq!(serial, v["issued_at"].as_u64().unwrap());
    assert_eq!(v["expires_at"].as_u64().unwrap(), serial + 12 * 3600);
    assert!(!dir.join("stable.json.tmp").exists());
    assert!(!dir.join(".stable.json.tmp").exists());

    // The library accepts what the command wrote.
    let bytes = std::fs::read(dir.join("stable.json")).unwrap();
    let ch = verify_channel(
        &bytes,
        &ring(&[&key(1)]),
        &policy(1),
        serial + 60,
        Some(serial),
        "acme-box",
    )
    .unwrap();
    assert_eq!(ch.bundle.manifest_sha256, summary.manifest_sha256);
    assert_eq!(ch.bundle.urls.len(), 2);

    // channel-verify: ok, as text and JSON.
    let out = ok(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--compatible",
            "acme-box",
            "--name",
            "stable",
            "stable.json",
        ],
    );
    assert!(out.contains("verified:") && out.contains("1.4.0"), "{out}");
    let out = ok(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--json",
            "stable.json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["name"], "stable");

    // Wrong keyring, wrong compatible, wrong name, rollback, expiry: exit 1.
    let (stdout, err) = fails(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "other.pub",
            "--json",
            "stable.json",
        ],
    );
    assert!(
        err.contains("stable.json") && err.contains("untrusted"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["error"].as_str().unwrap().contains("trusted"), "{v}");
    let (_, err) = fails(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--compatible",
            "acme-box-2",
            "stable.json",
        ],
    );
    assert!(err.contains("acme-box-2"), "{err}");
    let (_, err) = fails(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--name",
            "beta",
            "stable.json",
        ],
    );
    assert!(err.contains("beta"), "{err}");
    let last = (serial + 1).to_string();
    let (_, err) = fails(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--last-serial",
            &last,
            "stable.json",
        ],
    );
    assert!(err.contains("rollback"), "{err}");
    let later = (serial + 12 * 3600).to_string();
    let (_, err) = fails(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--now",
            &later,
            "stable.json",
        ],
    );
    assert!(err.contains("expired"), "{err}");
    let (_, err) = fails(
        dir,
        &[
            "channel-verify",
            "--keyring",
            "release.pub",
            "--min-signatures",
            "2",
            "stable.json",
        ],
    );
    assert!(err.contains("2 required"), "{err}");

    // Reproducible with SOURCE_DATE_EPOCH; the serial follows it.
    let epoch = |e: &str| {
        let out = bin(dir)
            .env("SOURCE_DATE_EPOCH", e)
            .args(channel_args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::read(dir.join("stable.json")).unwrap()
    };
    let a = epoch("4000000000");
    assert_eq!(a, epoch("4000000000"));
    let ch: Channel = {
        let env: serde_json::Value = serde_json::from_slice(&a).unwrap();
        serde_json::from_str(env["payload"].as_str().unwrap()).unwrap()
    };
    assert_eq!((ch.serial, ch.issued_at), (4_000_000_000, 4_000_000_000));

    // Without --bundle.
    let hex = summary.manifest_sha256.to_hex();
    let size = bundle_len.to_string();
    ok(
        dir,
        &[
            "channel",
            "--name",
            "beta",
            "--compatible",
            "acme-box",
            "--version",
            "1.4.0",
            "--manifest-sha256",
            &hex,
            "--size",
            &size,
            "--url",
            "https://u.example/b.fsb",
            "--serial",
            "7",
            "--key",
            "release.key",
            "--key",
            "other.key",
            "--out",
            "beta.json",
        ],
    );
    let out = ok(
        dir,
        &[
            "channel-verify",
            "--keyring",
            ".",
            "--min-signatures",
            "2",
            "--json",
            "beta.json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["serial"].as_u64(), v["rollout_percent"].as_u64()),
        (Some(7), Some(100))
    );

    // Command line mistakes.
    let (_, err) = fails(
        dir,
        &[
            "channel",
            "--name",
            "stable",
            "--bundle",
            "update.fsb",
            "--version",
            "9.9.9",
            "--url",
            "https://u.example/b.fsb",
            "--key",
            "release.key",
            "--out",
            "x.json",
        ],
    );
    assert!(err.contains("9.9.9") && err.contains("1.4.0"), "{err}");
    let (_, err) = fails(
        dir,
        &[
            "channel",
            "--name",
            "stable",
            "--bundle",
            "update.fsb",
            "--url",
            "ftp://u.example/b.fsb",
            "--key",
            "release.key",
            "--out",
            "x.json",
        ],
    );
    assert!(err.contains("ftp://"), "{err}");
    assert!(!dir.join("x.json").exists());
    let out = run(
        dir,
        &[
            "channel",
            "--name",
            "stable",
            "--url",
            "https://u/b",
            "--key",
            "release.key",
            "--out",
            "x.json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "no bundle or digest: {}",
        text(&out.stderr)
    );

    // An oversized file is refused by size.
    std::fs::write(dir.join("big.json"), vec![b' '; MAX_CHANNEL_LEN + 10]).unwrap();
    let (_, err) = fails(
        dir,
        &["channel-verify", "--keyring", "release.pub", "big.json"],
    );
    assert!(
        err.contains(&format!("{} bytes", MAX_CHANNEL_LEN + 10)),
        "{err}"
    );
}
