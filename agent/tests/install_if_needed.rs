#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot install --if-needed` on file-backed slots: a bundle is installed once; run
//! again, the command writes nothing while the bundle waits for the reboot (`pending`) and
//! after it booted (`booted`); another bundle is installed as usual.

mod support;

use support::{expect_success, pseudo_random, stdout, Fixture};

/// The last line of `install --json`, parsed.
fn done_line(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn if_needed_installs_once_then_skips_while_pending_and_once_booted() {
    let mut f = Fixture::new();
    let img = pseudo_random((2 << 20) + 77, 11);
    let bundle = f.bundle("2.0.0", &img);

    // Not installed anywhere: installed into B, as without the flag.
    let out = f.install(&bundle, &["--if-needed", "--json"]);
    expect_success(&out);
    let done = done_line(&out);
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["skipped"], false, "{done}");
    assert!(done.get("skip_reason").is_none(), "{done}");
    assert_eq!(done["primary"], "rootfs.1", "{done}");
    assert_eq!(done["images"][0]["slot"], "rootfs.1", "{done}");
    let manifest = done["manifest_sha256"].clone();

    // Again before the reboot: B holds it and boots next. Nothing is written, not even
    // the status file or the grubenv.
    let before = f.snapshot();
    let out = f.install(&bundle, &["--if-needed", "--json"]);
    expect_success(&out);
    f.assert_nothing_written(&before);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "only the done line: {lines:?}");
    let done = &lines[0];
    assert_eq!(done["v"], 1, "{done}");
    assert_eq!(done["skipped"], true, "{done}");
    assert_eq!(done["skip_reason"], "pending", "{done}");
    assert_eq!(done["primary"], "rootfs.1", "{done}");
    assert_eq!(done["primary_bootname"], "B", "{done}");
    assert_eq!(done["version"], "2.0.0", "{done}");
    assert_eq!(done["manifest_sha256"], manifest, "{done}");
    assert_eq!(done["images"], serde_json::json!([]), "{done}");
    assert_eq!(
        done["message"],
        "test-board 2.0.0 is already installed in slot rootfs.1 (B), which boots next: \
         nothing to do but reboot",
        "{done}"
    );

    // The text summary says the same.
    let out = f.install(&bundle, &["--if-needed"]);
    expect_success(&out);
    assert!(
        stdout(&out).contains("already installed in slot rootfs.1 (B), which boots next"),
        "{}",
        stdout(&out)
    );

    // The trial boot of B, committed by the health run.
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    expect_success(&f.run(["health", "--no-reboot"]));
    let st = f.status_slot("B");
    assert!(
        st["installed"]["trial"]["committed_at"].is_u64(),
        "B not committed: {st}"
    );

    // Booted and committed: nothing to do, nothing written.
    let before = f.snapshot();
    let out = f.install(&bundle, &["--if-needed", "--json"]);
    expect_success(&out);
    f.assert_nothing_written(&before);
    let done = done_line(&out);
    assert_eq!(done["skipped"], true, "{done}");
    assert_eq!(done["skip_reason"], "booted", "{done}");
    assert_eq!(done["primary"], "rootfs.1", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("already installed in the booted slot rootfs.1 (B): nothing to do"),
        "{done}"
    );

    // Without the flag the same bundle is written into A again (the old behaviour).
    let out = f.install(&bundle, &["--json"]);
    expect_success(&out);
    let done = done_line(&out);
    assert_eq!(done["skipped"], false, "{done}");
    assert_eq!(done["primary"], "rootfs.0", "{done}");
}

#[test]
fn if_needed_installs_a_different_bundle_and_still_checks_signatures() {
    let f = Fixture::new();
    let first = f.bundle("2.0.0", &pseudo_random(1 << 20, 1));
    expect_success(&f.install(&first, &["--if-needed"]));

    // Another bundle: installed, into the slot that is not booted (B again).
    let second = f.bundle("2.1.0", &pseudo_random(1 << 20, 2));
    let out = f.install(&second, &["--if-needed", "--json"]);
    expect_success(&out);
    let done = done_line(&out);
    assert_eq!(done["skipped"], false, "{done}");
    assert_eq!(done["version"], "2.1.0", "{done}");
    assert_eq!(done["primary"], "rootfs.1", "{done}");

    // The first bundle no longer boots next: it is installed again.
    let out = f.install(&first, &["--if-needed", "--json"]);
    expect_success(&out);
    assert_eq!(done_line(&out)["skipped"], false);

    // It is pending now. Once its signer is no longer trusted it is refused, not skipped:
    // the signatures are checked before the rule.
    std::fs::remove_file(f.keyring_dir().join("trusted.pub")).unwrap();
    f.trust(&f.new_key("successor"));
    let before = f.snapshot();
    let out = f.install(&first, &["--if-needed"]);
    support::expect_failure(&out, "signature");
    f.assert_nothing_written(&before);
}
