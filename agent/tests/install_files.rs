#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot install` end to end on file-backed slots (no root needed): the happy paths,
//! then every kind of bad input, each checking that the booted slot, the bootloader's
//! primary slot and the booted slot's status record are left alone.

mod support;

use std::path::{Path, PathBuf};

use flipslot::slot::status::InstallResult;
use flipslot_format::ChunkHash;
use support::{
    compressible, expect_failure, expect_success, pseudo_random, sha256_hex, stdout, Compression,
    Fixture, COMPATIBLE, SLOT_SIZE,
};

/// An image of three and a bit chunks.
fn image(seed: u64) -> Vec<u8> {
    pseudo_random((3 << 20) + 1234, seed)
}

/// Header fields of a bundle file: (manifest length, signature count, payload offset).
fn layout(bundle: &[u8]) -> (usize, usize, usize) {
    let u64_at = |o: usize| u64::from_le_bytes(bundle[o..o + 8].try_into().unwrap()) as usize;
    let sigs = u32::from_le_bytes(bundle[24..28].try_into().unwrap()) as usize;
    (u64_at(16), sigs, u64_at(32))
}

/// Writes a copy of `bundle` with `edit` applied, next to it.
fn edited(bundle: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(bundle).unwrap();
    edit(&mut bytes);
    let out = bundle.with_file_name(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

/// Checks that slot `bn` holds `img` and the status report / grubenv show it installed
/// and primary.
fn assert_installed(f: &Fixture, bn: &str, img: &[u8], version: &str) {
    let dev = f.slot_bytes(bn);
    assert!(
        dev[..img.len()] == img[..],
        "slot {bn} does not hold the image"
    );
    let st = f.status_json();
    assert_eq!(st["primary"], f.slot_name(bn), "{st}");
    assert_eq!(st["booted"], f.slot_name(f.booted()), "{st}");
    let s = f.status_slot(bn);
    assert_eq!(s["installed"]["bundle_version"], version, "{s}");
    assert_eq!(s["installed"]["image_sha256"], sha256_hex(img), "{s}");
    assert_eq!(s["installed"]["result"], "ok", "{s}");
    assert_eq!(s["installed"]["compatible"], COMPATIBLE, "{s}");
    assert_eq!(s["boot_status"], "good", "{s}");
    assert_eq!(s["primary"], true, "{s}");
    let vars = f.grubenv_vars();
    assert!(
        vars["ORDER"].split_whitespace().next() == Some(bn),
        "ORDER does not start with {bn}: {vars:?}"
    );
    assert_eq!(vars[&format!("{bn}_OK")], "1", "{vars:?}");
    assert_eq!(vars[&format!("{bn}_TRY")], "0", "{vars:?}");
}

// ---------------------------------------------------------------------------------------
// Happy paths

#[test]
fn install_writes_inactive_slot_and_makes_it_primary() {
    let f = Fixture::new();
    let img = image(1);
    let bundle = f.bundle("1.0.0", &img);
    let before = f.snapshot();
    let out = f.install(&bundle, &["--json"]);
    expect_success(&out);
    assert_installed(&f, "B", &img, "1.0.0");
    f.assert_booted_intact(&before);
    let a = f.slot_bytes("A");
    assert!(
        a.iter().all(|&b| b == support::fill_byte(0)),
        "slot A changed"
    );
    assert_eq!(f.slot_bytes("B").len(), SLOT_SIZE, "slot file was resized");
    assert_eq!(f.var("A_OK").as_deref(), Some("1"));
    assert_eq!(f.var("A_TRY").as_deref(), Some("0"));
    assert_eq!(f.var("ORDER").as_deref(), Some("B A"));

    // Every stdout line is a versioned JSON object; the last is the summary.
    let text = stdout(&out);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for l in &lines {
        assert_eq!(l["v"], 1, "{l}");
        assert!(l["event"].is_string(), "{l}");
    }
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["version"], "1.0.0", "{done}");
    assert_eq!(done["primary"], "rootfs.1", "{done}");
    assert_eq!(done["primary_bootname"], "B", "{done}");
    assert_eq!(done["read_back"], true, "{done}");
    assert_eq!(done["images"][0]["slot"], "rootfs.1", "{done}");
    assert_eq!(done["images"][0]["sha256"], sha256_hex(&img), "{done}");
    assert_eq!(done["images"][0]["size"], img.len(), "{done}");
    assert!(
        lines.iter().any(|l| l["event"] == "start"),
        "no start event: {text}"
    );
}

#[test]
fn a_format_1_sha256_bundle_installs_and_reads_back() {
    let f = Fixture::new();
    let img = image(41);
    let bundle = f.bundle_sha256("1.0.0", &img);
    let text = std::fs::read(&bundle).unwrap();
    assert!(
        text.windows(13).any(|w| w == b"\"format\": 1,\n"),
        "not a format 1 manifest"
    );
    expect_success(&f.install(&bundle, &[]));
    assert_installed(&f, "B", &img, "1.0.0");
}

#[test]
fn zstd_bundle_installs() {
    let f = Fixture::new();
    let img = compressible((2 << 20) + 4097);
    let bundle = f.build_bundle("1.0.0", COMPATIBLE, &img, &[&f.trusted], Compression::Zstd);
    assert!(std::fs::metadata(&bundle).unwrap().len() < img.len() as u64 / 4);
    let before = f.snapshot();
    expect_success(&f.install(&bundle, &[]));
    assert_installed(&f, "B", &img, "1.0.0");
    f.assert_booted_intact(&before);
}

#[test]
fn no_read_back_installs() {
    let f = Fixture::new();
    let img = image(2);
    let bundle = f.bundle("1.0.0", &img);
    let before = f.snapshot();
    let out = f.install(&bundle, &["--no-read-back", "--json"]);
    expect_success(&out);
    let done: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(done["read_back"], false, "{done}");
    assert!(
        !stdout(&out).contains("read-back"),
        "read-back progress reported: {}",
        stdout(&out)
    );
    assert_installed(&f, "B", &img, "1.0.0");
    f.assert_booted_intact(&before);
}

#[test]
fn buffered_io_installs() {
    let f = Fixture::new();
    let img = image(3);
    let bundle = f.bundle("1.0.0", &img);
    expect_success(&f.install(&bundle, &["--buffered-io"]));
    assert_installed(&f, "B", &img, "1.0.0");
}

#[test]
fn booted_from_b_targets_a() {
    let mut f = Fixture::new();
    f.set_booted("B");
    let img = image(4);
    let bundle = f.bundle("1.0.0", &img);
    let before = f.snapshot();
    expect_success(&f.install(&bundle, &[]));
    assert_installed(&f, "A", &img, "1.0.0");
    f.assert_booted_intact(&before);
    assert!(f
        .slot_bytes("B")
        .iter()
        .all(|&b| b == support::fill_byte(1)));
    assert_eq!(f.var("ORDER").as_deref(), Some("A B"));
}

#[test]
fn second_install_picks_the_right_slot() {
    let mut f = Fixture::new();
    let one = image(5);
    expect_success(&f.install(&f.bundle("1.0.0", &one), &[]));
    assert_installed(&f, "B", &one, "1.0.0");

    // Not rebooted yet: still running A, so B is overwritten again.
    let two = image(6);
    let before = f.snapshot();
    expect_success(&f.install(&f.bundle("1.1.0", &two), &[]));
    assert_installed(&f, "B", &two, "1.1.0");
    f.assert_booted_intact(&before);

    // Reboot into B (GRUB sets B_TRY=1, userspace commits it), then install: A is the target.
    f.set_booted("B");
    expect_success(&f.run(["mark-good", "booted"]));
    let three = image(7);
    let before = f.snapshot();
    expect_success(&f.install(&f.bundle("1.2.0", &three), &[]));
    assert_installed(&f, "A", &three, "1.2.0");
    f.assert_booted_intact(&before);
    assert!(
        f.slot_bytes("B")[..two.len()] == two[..],
        "booted B changed"
    );
    assert_eq!(f.var("ORDER").as_deref(), Some("A B"));
}

#[test]
fn abc_picks_the_never_installed_slot() {
    let f = Fixture::with_bootnames(&["A", "B", "C"]);
    let one = image(8);
    let before = f.snapshot();
    expect_success(&f.install(&f.bundle("1.0.0", &one), &[]));
    assert_installed(&f, "B", &one, "1.0.0");
    f.assert_booted_intact(&before);

    // B now holds a good install; C was never installed, so it is next.
    let two = image(9);
    expect_success(&f.install(&f.bundle("1.1.0", &two), &[]));
    assert_installed(&f, "C", &two, "1.1.0");
    assert!(
        f.slot_bytes("B")[..one.len()] == one[..],
        "B was overwritten"
    );
    assert!(f
        .slot_bytes("A")
        .iter()
        .all(|&b| b == support::fill_byte(0)));
    // ORDER is rebuilt as RAUC does: the new slot, then the others in config order.
    assert_eq!(f.var("ORDER").as_deref(), Some("C A B"));
}

// ---------------------------------------------------------------------------------------
// Bad input: refused before anything is written

/// Installs `bundle` and expects a refusal naming `phrase` with nothing written.
fn refused(f: &Fixture, bundle: &Path, extra: &[&str], phrase: &str) -> String {
    let before = f.snapshot();
    let err = expect_failure(&f.install(bundle, extra), phrase);
    f.assert_nothing_written(&before);
    err
}

fn truncated_at(cut: impl FnOnce(usize, usize, usize, usize) -> usize) {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(10));
    let bytes = std::fs::read(&bundle).unwrap();
    let (m, n, p) = layout(&bytes);
    let at = cut(m, n, p, bytes.len());
    assert!(at < bytes.len());
    let short = edited(&bundle, "short.fsb", |b| b.truncate(at));
    refused(&f, &short, &[], "truncated");
}

#[test]
fn truncated_inside_header() {
    truncated_at(|_, _, _, _| 40);
    truncated_at(|_, _, _, _| 0);
}

#[test]
fn truncated_inside_manifest() {
    truncated_at(|m, _, _, _| 64 + m / 2);
}

#[test]
fn truncated_inside_signatures() {
    truncated_at(|m, n, _, _| {
        assert_eq!(n, 1);
        64 + m + 40
    });
}

#[test]
fn truncated_inside_payload() {
    truncated_at(|_, _, p, _| p + 100);
    truncated_at(|_, _, p, _| p + (2 << 20));
    truncated_at(|_, _, _, len| len - 1);
}

#[test]
fn trailing_data_is_refused() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(11));
    let long = edited(&bundle, "long.fsb", |b| b.extend_from_slice(b"junk"));
    refused(&f, &long, &[], "trailing");
}

#[test]
fn flipped_bit_in_header() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(12));
    let magic = edited(&bundle, "magic.fsb", |b| b[3] ^= 0x04);
    refused(&f, &magic, &[], "not a flipslot bundle");
    let offset = edited(&bundle, "offset.fsb", |b| b[33] ^= 0x01);
    refused(&f, &offset, &[], "payload offset");
    let reserved = edited(&bundle, "reserved.fsb", |b| b[50] ^= 0x80);
    refused(&f, &reserved, &[], "invalid bundle header");
    // The manifest length: the signed bytes shift, so the signature no longer verifies
    // (or the padding/entries no longer parse); either way it is refused.
    let mlen = edited(&bundle, "mlen.fsb", |b| b[16] ^= 0x01);
    let before = f.snapshot();
    let out = f.install(&mlen, &[]);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("rejected"),
        "{}",
        support::stderr(&out)
    );
    f.assert_nothing_written(&before);
}

#[test]
fn flipped_bit_in_manifest() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(13));
    let (m, _, _) = layout(&std::fs::read(&bundle).unwrap());
    let bad = edited(&bundle, "bad.fsb", |b| b[64 + m / 2] ^= 0x01);
    refused(&f, &bad, &[], "does not verify");
}

#[test]
fn flipped_bit_in_signature() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(14));
    let (m, _, _) = layout(&std::fs::read(&bundle).unwrap());
    // Byte 16.. of the entry is the ed25519 signature itself.
    let bad = edited(&bundle, "bad.fsb", |b| b[64 + m + 40] ^= 0x10);
    refused(&f, &bad, &[], "does not verify");
}

#[test]
fn unsigned_bundle_is_refused() {
    let f = Fixture::new();
    let bundle = f.build_bundle("1.0.0", COMPATIBLE, &image(15), &[], Compression::None);
    refused(&f, &bundle, &[], "not signed");
}

#[test]
fn untrusted_key_is_refused() {
    let f = Fixture::new();
    let stranger = f.new_key("stranger");
    let bundle = f.build_bundle(
        "1.0.0",
        COMPATIBLE,
        &image(16),
        &[&stranger],
        Compression::None,
    );
    let err = refused(&f, &bundle, &[], "0 valid signature");
    assert!(err.contains("1 required"), "{err}");
}

#[test]
fn min_signatures_two_with_one_signature_is_refused() {
    let mut f = Fixture::new();
    let second = f.new_key("second");
    f.trust(&second);
    f.min_signatures = Some(2);
    f.write_config();
    let one = f.bundle("1.0.0", &image(17));
    refused(&f, &one, &[], "2 required");
    // An untrusted second signature does not count either.
    let stranger = f.new_key("stranger");
    let odd = f.build_bundle(
        "1.0.0",
        COMPATIBLE,
        &image(17),
        &[&f.trusted, &stranger],
        Compression::None,
    );
    refused(&f, &odd, &[], "2 required");
    // Two trusted signatures pass.
    let two = f.build_bundle(
        "1.0.0",
        COMPATIBLE,
        &image(17),
        &[&f.trusted, &second],
        Compression::None,
    );
    expect_success(&f.install(&two, &[]));
    assert_installed(&f, "B", &image(17), "1.0.0");
}

#[test]
fn wrong_compatible_is_refused() {
    let f = Fixture::new();
    let bundle = f.build_bundle(
        "1.0.0",
        "other-board",
        &image(18),
        &[&f.trusted],
        Compression::None,
    );
    let err = refused(&f, &bundle, &[], "compatible");
    assert!(
        err.contains("other-board") && err.contains(COMPATIBLE),
        "{err}"
    );
}

/// Seeds status.json (format 1) as if rootfs.0 had been installed with `version`.
fn seed_booted_version(f: &Fixture, version: &str) {
    let text = format!(
        r#"{{
  "format": 1,
  "slots": {{
    "rootfs.0": {{
      "bundle_version": "{version}",
      "compatible": "{COMPATIBLE}",
      "manifest_sha256": null,
      "image_sha256": null,
      "installed_at": 1600000000,
      "result": "ok",
      "message": null
    }}
  }}
}}
"#
    );
    std::fs::write(f.status_path(), text).unwrap();
}

#[test]
fn downgrade_is_refused_unless_allowed() {
    let f = Fixture::new();
    seed_booted_version(&f, "2.0.0");
    let img = image(19);
    let bundle = f.bundle("1.0.0", &img);
    let err = refused(&f, &bundle, &[], "older than the booted slot");
    assert!(
        err.contains("--allow-downgrade") && err.contains("2.0.0"),
        "{err}"
    );
    // The same version is not a downgrade.
    let same = f.bundle("2.0.0", &img);
    expect_success(&f.install(&same, &[]));
    // Explicitly allowed.
    let before = f.snapshot();
    expect_success(&f.install(&bundle, &["--allow-downgrade"]));
    assert_installed(&f, "B", &img, "1.0.0");
    f.assert_booted_intact(&before);
    assert_eq!(
        f.record("A").unwrap().bundle_version.as_deref(),
        Some("2.0.0")
    );
}

#[test]
fn downgrade_seeded_by_a_real_install() {
    // Install 2.0.0 into B while running A, then boot B: B's record says 2.0.0.
    let mut f = Fixture::new();
    expect_success(&f.install(&f.bundle("2.0.0", &image(20)), &[]));
    f.set_booted("B");
    expect_success(&f.run(["mark-good", "booted"]));
    let bundle = f.bundle("1.9.9", &image(21));
    refused(&f, &bundle, &[], "older than the booted slot");
    let before = f.snapshot();
    expect_success(&f.install(&bundle, &["--allow-downgrade"]));
    assert_installed(&f, "A", &image(21), "1.9.9");
    f.assert_booted_intact(&before);
}

#[test]
fn image_larger_than_slot_is_refused() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &pseudo_random(SLOT_SIZE + 4096, 22));
    let err = refused(&f, &bundle, &[], "does not fit");
    assert!(err.contains("rootfs.1"), "{err}");
}

#[test]
fn missing_slot_device_is_refused() {
    let mut f = Fixture::new();
    let missing = f.path().join("missing.img");
    f.slots[1].device = missing.clone();
    f.write_config();
    let err = refused(&f, &f.bundle("1.0.0", &image(23)), &[], "does not exist");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(!missing.exists(), "the missing device was created");
}

#[test]
fn target_aliasing_the_booted_device_is_refused() {
    // Slot B's device is another name for slot A's file.
    let mut f = Fixture::new();
    let alias = f.path().join("b-alias.img");
    std::os::unix::fs::symlink(f.device("A"), &alias).unwrap();
    f.slots[1].device = alias;
    f.write_config();
    let bundle = f.bundle("1.0.0", &image(24));
    let before = f.snapshot();
    let out = f.install(&bundle, &[]);
    let err = support::stderr(&out);
    assert!(
        !out.status.success(),
        "install into an alias of the booted slot succeeded"
    );
    assert!(
        err.contains("booted") || err.contains("used by another slot"),
        "{err}"
    );
    f.assert_nothing_written(&before);
}

#[test]
fn garbage_file_is_refused() {
    let f = Fixture::new();
    let junk = f.path().join("junk.fsb");
    std::fs::write(&junk, pseudo_random(100_000, 25)).unwrap();
    refused(&f, &junk, &[], "not a flipslot bundle");
    let empty = f.path().join("empty.fsb");
    std::fs::write(&empty, b"").unwrap();
    refused(&f, &empty, &[], "truncated");
    refused(&f, &f.path().join("absent.fsb"), &[], "cannot open bundle");
}

/// A header with the given manifest length and signature count, the payload offset it
/// implies, and `tail` zero bytes after it.
fn crafted_header(manifest_len: u64, signatures: u32, tail: usize) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[0..8].copy_from_slice(b"FLIPSLOT");
    b[8..10].copy_from_slice(&1u16.to_le_bytes());
    b[12..16].copy_from_slice(&64u32.to_le_bytes());
    b[16..24].copy_from_slice(&manifest_len.to_le_bytes());
    b[24..28].copy_from_slice(&signatures.to_le_bytes());
    let end = 64u64
        .saturating_add(manifest_len)
        .saturating_add(80 * u64::from(signatures));
    let payload = end.div_ceil(4096).saturating_mul(4096);
    b[32..40].copy_from_slice(&payload.to_le_bytes());
    b.resize(64 + tail, 0);
    b
}

#[test]
fn huge_manifest_length_is_refused() {
    let f = Fixture::new();
    let p = f.path().join("huge.fsb");
    std::fs::write(&p, crafted_header(u64::MAX / 2, 1, 4096)).unwrap();
    refused(&f, &p, &[], "manifest length");
    // Within the limit but far beyond the file: refused as truncated, not allocated.
    std::fs::write(&p, crafted_header(60 << 20, 1, 4096)).unwrap();
    refused(&f, &p, &[], "truncated");
}

#[test]
fn huge_signature_count_is_refused() {
    let f = Fixture::new();
    let p = f.path().join("sigs.fsb");
    std::fs::write(&p, crafted_header(100, u32::MAX, 4096)).unwrap();
    refused(&f, &p, &[], "signatures, at most");
    std::fs::write(&p, crafted_header(100, 17, 4096)).unwrap();
    refused(&f, &p, &[], "signatures, at most");
}

#[test]
fn concurrent_install_is_refused_by_the_lock() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(26));
    let lock = flipslot::host::sys::lock_exclusive(&f.lock_path()).unwrap();
    refused(&f, &bundle, &[], "holds the lock");
    drop(lock);
    expect_success(&f.install(&bundle, &[]));
}

// ---------------------------------------------------------------------------------------
// Bad input found while writing

#[test]
fn flipped_bit_in_payload_fails_during_write_and_marks_target_bad() {
    flipped_bit_in_payload(ChunkHash::Blake3);
}

#[test]
fn flipped_bit_in_a_sha256_bundle_fails_during_write_and_marks_target_bad() {
    flipped_bit_in_payload(ChunkHash::Sha256);
}

fn flipped_bit_in_payload(alg: ChunkHash) {
    let f = Fixture::new();
    let img = image(27);
    let bundle = match alg {
        ChunkHash::Blake3 => f.bundle("1.0.0", &img),
        ChunkHash::Sha256 => f.bundle_sha256("1.0.0", &img),
    };
    let mismatch = format!("{alg} mismatch");
    let (_, _, p) = layout(&std::fs::read(&bundle).unwrap());
    // Inside the second chunk.
    let bad = edited(&bundle, "bad.fsb", |b| b[p + (1 << 20) + 777] ^= 0x01);
    let before = f.snapshot();
    let err = expect_failure(&f.install(&bad, &[]), &mismatch);
    assert!(
        err.contains("chunk 1") && err.contains("rootfs.1") && err.contains("marked bad"),
        "{err}"
    );
    f.assert_untouched(&before);
    assert_eq!(f.primary().as_deref(), Some("A"));
    assert_eq!(f.var("B_OK").as_deref(), Some("0"));
    assert_eq!(f.var("B_TRY").as_deref(), Some("0"));
    let rec = f.record("B").expect("no status record for the target");
    assert_eq!(rec.result, InstallResult::Failed, "{rec:?}");
    assert_eq!(rec.bundle_version.as_deref(), Some("1.0.0"));
    let msg = rec.message.unwrap_or_default();
    assert!(msg.contains(&mismatch), "{msg}");
    let st = f.status_slot("B");
    assert_eq!(st["installed"]["result"], "failed", "{st}");
    assert_eq!(st["boot_status"], "bad", "{st}");
    // Nothing past chunk 0 reached the slot. Chunk 0 itself is written only if its check
    // finished before chunk 1's failure stopped the writer (two checkers run at once).
    let b = f.slot_bytes("B");
    let fill = support::fill_byte(1);
    assert!(
        b[..1 << 20] == img[..1 << 20] || b[..1 << 20].iter().all(|&x| x == fill),
        "chunk 0 of slot B is neither the verified chunk nor untouched"
    );
    assert!(b[1 << 20..].iter().all(|&x| x == fill));

    // A good bundle afterwards goes into the failed slot and clears the failure.
    expect_success(&f.install(&bundle, &[]));
    assert_installed(&f, "B", &img, "1.0.0");
}
