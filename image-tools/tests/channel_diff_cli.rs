//! `flipslot-image channel-diff` on real channels signed by `flipslot-image channel`: a
//! raised rollout, a new release, a downgrade, the same file, verified and unverified, and
//! the changes it refuses to plan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use flipslot_format::builder::{self, BuildOptions, ImageInput};
use flipslot_format::keys;
use flipslot_format::Compression;
use std::path::Path;
use std::process::Output;

/// The time the channels are signed at (`SOURCE_DATE_EPOCH`), then a day apart each.
const T0: u64 = 1_767_225_600;
const DAY: u64 = 86_400;

fn key_files(dir: &Path, name: &str, n: u8) {
    let k = SigningKey::from_bytes(&[n; 32]);
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

fn run(dir: &Path, epoch: Option<u64>, args: &[&str]) -> Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_flipslot-image"));
    c.current_dir(dir)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("FLIPSLOT_LOG");
    if let Some(t) = epoch {
        c.env("SOURCE_DATE_EPOCH", t.to_string());
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, None, args);
    assert!(
        out.status.success(),
        "{args:?} failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail with exit status 1; returns (stdout, stderr).
fn fails(dir: &Path, args: &[&str]) -> (String, String) {
    let out = run(dir, None, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// `channel-diff` judged at `NOW` (the second channel's issue time plus a minute).
const NOW: &str = "1767398460";

/// `channel-diff --now NOW ARGS`.
fn diff<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["channel-diff", "--now", NOW];
    v.extend_from_slice(args);
    v
}

/// A one-image bundle of `version` signed by key 1.
fn bundle(dir: &Path, version: &str) -> String {
    let img = dir.join(format!("rootfs-{version}.img"));
    let v = semver::Version::parse(version).unwrap();
    // A size that differs by release, so the bundle's size changes too.
    let len = 50_000 + 1_000 * v.minor as u32;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + v.minor as u32) as u8).collect();
    std::fs::write(&img, data).unwrap();
    let name = format!("acme-box-{version}.fsb");
    builder::build(
        &[ImageInput {
            class: "rootfs".into(),
            path: img,
        }],
        &BuildOptions {
            compatible: "acme-box".into(),
            version: v,
            build_time: T0,
            description: None,
            chunk_size: 64 * 1024,
            compression: Compression::None,
            zstd_level: 3,
            block_index: false,
            chunk_hash: Default::default(),
        },
        &[SigningKey::from_bytes(&[1; 32])],
        &mut std::fs::File::create(dir.join(&name)).unwrap(),
        &mut |_, _, _| {},
    )
    .unwrap();
    name
}

/// `flipslot-image channel` for `bundle` at `percent`, signed at `epoch` by `key`.
fn channel(dir: &Path, out: &str, name: &str, bundle: &str, percent: u8, epoch: u64) {
    let url = format!("https://updates.example.com/acme-box/{bundle}");
    let percent = percent.to_string();
    let args = [
        "channel",
        "--name",
        name,
        "--bundle",
        bundle,
        "--url",
        &url,
        "--rollout-percent",
        &percent,
        "--expires-in",
        "7d",
        "--key",
        "release.key",
        "--out",
        out,
    ];
    let o = run(dir, Some(epoch), &args);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn channel_diff_plans_real_channel_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_files(dir, "release", 1);
    key_files(dir, "stranger", 2);
    let b14 = bundle(dir, "1.4.0");
    let b15 = bundle(dir, "1.5.0");
    channel(dir, "s1.json", "stable", &b14, 20, T0);
    channel(dir, "s2.json", "stable", &b14, 50, T0 + DAY);
    channel(dir, "s3.json", "stable", &b15, 10, T0 + 2 * DAY);
    channel(dir, "s4.json", "stable", &b14, 100, T0 + 3 * DAY);
    channel(dir, "beta.json", "beta", &b15, 10, T0 + 2 * DAY);
    // Raising the rollout of 1.4.0 from 20 % to 50 %: buckets 20-49 are offered it.
    let t = ok(
        dir,
        &diff(&["--keyring", "release.pub", "s1.json", "s2.json"]),
    );
    assert!(
        t.starts_with("channel stable (acme-box): s1.json -> s2.json\n"),
        "{t}"
    );
    assert!(
        t.contains("signatures: both verified against release.pub"),
        "{t}"
    );
    assert!(t.contains("~ rollout_percent         20 % -> 50 %"), "{t}");
    assert!(!t.contains("~ version"), "{t}");
    assert!(
        t.contains("+    30 %  buckets 20-49  held back -> 1.4.0: offered 1.4.0"),
        "{t}"
    );
    assert!(
        t.contains("     20 %  buckets 0-19   1.4.0, unchanged"),
        "{t}"
    );
    assert!(t.contains("not affected: they keep 1.4.0"), "{t}");
    assert!(
        t.ends_with("Plan (shares of the fleet): 30 % newly offered 1.4.0, 70 % unchanged.\n"),
        "{t}"
    );
    assert!(!t.contains("warning"), "{t}");

    // A new release at 10 %: a fresh cohort; of the 50 % on 1.4.0, about 5 % move.
    let out = ok(
        dir,
        &diff(&["--keyring", "release.pub", "--json", "s2.json", "s3.json"]),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["v"], 1, "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["old"]["verified"], true);
    assert_eq!(v["old"]["version"], "1.4.0");
    assert_eq!(v["new"]["version"], "1.5.0");
    assert_eq!(v["version_change"], "upgrade");
    assert_eq!(v["bundle_changed"], true);
    let effects: Vec<(&str, f64)> = v["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["effect"].as_str().unwrap(),
                c["share_percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        effects,
        vec![
            ("upgraded", 5.0),
            ("withdrawn", 45.0),
            ("offered", 5.0),
            ("unchanged", 45.0)
        ]
    );
    assert_eq!(v["cohorts"][0]["exact"], false);
    assert_eq!(v["cohorts"][0]["new_buckets"]["to"], 9);
    assert_eq!(v["old_release_devices"]["affected"], true);
    assert_eq!(v["old_release_devices"]["moving_percent"], 5.0);
    let fields: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "version",
            "serial",
            "issued_at",
            "expires_at",
            "bundle.manifest_sha256",
            "bundle.size",
            "bundle.urls",
            "rollout_percent"
        ]
    );
    assert_eq!(v["warnings"], serde_json::json!([]));

    // Back to 1.4.0: a downgrade devices on 1.5.0 ignore; warned, still exit 0. Without a
    // keyring the output says the files are unverified.
    let t = ok(dir, &diff(&["s3.json", "s4.json"]));
    assert!(t.contains("signatures: UNVERIFIED (no --keyring)"), "{t}");
    assert!(t.contains("1.5.0 -> 1.4.0 (DOWNGRADE)"), "{t}");
    assert!(t.contains("warning: downgrade from 1.5.0 to 1.4.0"), "{t}");
    assert!(
        t.contains("devices that installed OLD's release: not affected: they keep 1.5.0"),
        "{t}"
    );
    let out = ok(dir, &diff(&["--json", "s3.json", "s4.json"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["warnings"][0]["kind"], "downgrade");

    // The same file: no changes.
    let t = ok(
        dir,
        &diff(&["--keyring", "release.pub", "s2.json", "s2.json"]),
    );
    assert!(
        t.ends_with("No changes: OLD and NEW say the same.\n"),
        "{t}"
    );

    // Refused: signed by a key the keyring does not hold; swapped files (a lower serial);
    // another channel.
    let (_, err) = fails(
        dir,
        &diff(&["--keyring", "stranger.pub", "s1.json", "s2.json"]),
    );
    assert!(
        err.contains("s1.json") && err.contains("signature"),
        "{err}"
    );
    let (out, err) = fails(dir, &diff(&["--json", "s2.json", "s1.json"]));
    assert!(err.contains("lower than OLD's"), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["error"].as_str().unwrap().contains("rollback"), "{v}");
    let (_, err) = fails(dir, &diff(&["s2.json", "beta.json"]));
    assert!(err.contains("different names"), "{err}");

    // Judged now (the channels' expiry is long past): both expired, warned.
    let t = ok(dir, &["channel-diff", "s1.json", "s2.json"]);
    assert!(t.contains("warning: NEW expired at"), "{t}");
    assert!(t.contains("warning: OLD expired at"), "{t}");
}
