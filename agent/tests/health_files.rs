#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Boot assessment on files: install, a modelled boot, `flipslot health`, and what the
//! next boot sees. The bootloader here is a model of the reference boot script (walk
//! ORDER, first slot with OK=1 and TRY=0 wins, set its TRY=1); the QEMU rig runs the real
//! GRUB with the real script.

mod support;

use support::{expect_success, stdout, Fixture};

fn with_check(argv: &[&str]) -> Fixture {
    let mut f = Fixture::new();
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    f.extra_config = format!(
        "\n[health]\ndeadline-seconds = 20\n[[health.command]]\nargv = [{}]\ntimeout-seconds = 5\n",
        argv.join(", ")
    );
    f.write_config();
    f
}

fn health(f: &Fixture) -> (bool, serde_json::Value) {
    let out = f.run(["health", "--no-reboot", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("health --json: {e}: {}", support::stderr(&out)));
    (out.status.success(), v)
}

fn install_new_version(f: &Fixture) {
    let bundle = f.bundle("2.0.0", &support::pseudo_random(300_000, 5));
    expect_success(&f.install(&bundle, &[]));
}

#[test]
fn a_trial_that_passes_is_committed() {
    let mut f = with_check(&["true"]);
    assert_eq!(f.grub_boot().as_deref(), Some("A"));
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["boot"], "routine");
    assert_eq!(
        f.var("A_TRY").as_deref(),
        Some("0"),
        "routine boot re-armed"
    );

    install_new_version(&f);
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    assert_eq!(f.var("B_TRY").as_deref(), Some("1"));
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["boot"], "trial");
    assert_eq!(v["action"], "committed");
    assert_eq!(f.var("B_OK").as_deref(), Some("1"));
    assert_eq!(f.var("B_TRY").as_deref(), Some("0"));
    assert!(f.record("B").unwrap().trial.committed_at.is_some());
    // The next boot stays on B, and it is now a routine boot.
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["boot"], "routine");
    let s = f.status_json();
    assert_eq!(s["booted"], "rootfs.1");
    assert_eq!(s["primary"], "rootfs.1");
    assert!(s["last_rollback"].is_null(), "{s}");
}

#[test]
fn a_trial_that_fails_its_checks_falls_back_with_the_reason() {
    let mut f = with_check(&["false"]);
    // The factory slot A boots routinely even though the check fails: it is kept.
    f.grub_boot();
    let (ok, v) = health(&f);
    assert!(!ok);
    assert_eq!(v["action"], "kept");
    install_new_version(&f);
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    let (ok, v) = health(&f);
    assert!(!ok, "a failed trial must exit non-zero");
    assert_eq!(v["action"], "fallback");
    assert_eq!(f.var("B_OK").as_deref(), Some("0"));
    let reason = v["verdict"]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("command false"), "{reason}");
    // The bootloader now picks A.
    assert_eq!(f.grub_boot().as_deref(), Some("A"));
    // A's own check still fails (the same `false`): it is kept, as before the update.
    let (ok, v) = health(&f);
    assert!(!ok, "{v}");
    assert_eq!(v["action"], "kept", "{v}");
    assert_eq!(v["rollbacks"][0]["from_slot"], "rootfs.1");
    assert_eq!(v["rollbacks"][0]["reason"], reason.as_str());
    let s = f.status_json();
    assert_eq!(s["booted"], "rootfs.0");
    assert_eq!(s["last_rollback"]["from_slot"], "rootfs.1");
    assert_eq!(s["last_rollback"]["from_version"], "2.0.0");
    assert_eq!(s["last_rollback"]["to_slot"], "rootfs.0");
    assert_eq!(s["last_rollback"]["reason"], reason.as_str());
    let text = stdout(&f.run(["status"]));
    assert!(
        text.contains("rollback:   from rootfs.1 (2.0.0) to rootfs.0"),
        "{text}"
    );
    // Recorded once: another boot of A reports no new rollback.
    f.grub_boot();
    let (ok, v) = health(&f);
    assert!(!ok, "{v}");
    assert_eq!(v["action"], "kept", "{v}");
    assert_eq!(v["rollbacks"].as_array().unwrap().len(), 0);
}

#[test]
fn a_trial_that_never_reaches_the_check_is_rolled_back_by_the_bootloader() {
    let mut f = with_check(&["true"]);
    install_new_version(&f);
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    // B panics: no health run. The next boot skips B (TRY=1).
    assert_eq!(f.grub_boot().as_deref(), Some("A"));
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    let reason = v["rollbacks"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("never reached the health check"),
        "{reason}"
    );
    assert_eq!(
        f.var("B_OK").as_deref(),
        Some("0"),
        "failed trial marked bad"
    );
    assert_eq!(f.status_json()["last_rollback"]["from_slot"], "rootfs.1");
}

#[test]
fn rollback_switches_to_the_other_good_slot_and_refuses_a_bad_one() {
    let mut f = with_check(&["true"]);
    install_new_version(&f);
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["action"], "committed", "{v}");
    let out = f.run(["rollback", "--json"]);
    expect_success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["to_slot"], "rootfs.0");
    assert_eq!(f.primary().as_deref(), Some("A"));
    assert!(f.status_json()["last_rollback"]["reason"]
        .as_str()
        .unwrap()
        .contains("operator"));
    assert_eq!(f.grub_boot().as_deref(), Some("A"));
    // From A, B is still good: rolling "back" to B works; after marking B bad it does not.
    expect_success(&f.run(["mark-bad", "B"]));
    let out = f.run(["rollback"]);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("marked bad"),
        "{}",
        support::stderr(&out)
    );
}

#[test]
fn not_booted_from_a_slot_is_nothing_to_do() {
    let f = with_check(&["false"]);
    std::fs::write(f.cmdline_path(), "root=/dev/nfs ip=dhcp\n").unwrap();
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["boot"], "not-from-slot");
    assert!(v["verdict"].is_null());
}

#[test]
fn an_invalid_health_section_is_named() {
    let mut f = Fixture::new();
    f.extra_config = "\n[health]\n[[health.command]]\nargv = []\n".into();
    f.write_config();
    let out = f.run(["health"]);
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(err.contains("health.command[0].argv"), "{err}");
}

#[test]
fn an_update_during_an_uncommitted_trial_is_refused() {
    let mut f = with_check(&["true"]);
    install_new_version(&f);
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    // B runs its trial; before its health check, another update would overwrite A, the
    // only proven slot.
    let bundle = f.bundle("3.0.0", &support::pseudo_random(200_000, 9));
    let before = f.slot_bytes("A");
    let out = f.install(&bundle, &[]);
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(err.contains("trial boot and not committed"), "{err}");
    assert_eq!(f.slot_bytes("A"), before);
    // After the commit it goes through.
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["action"], "committed", "{v}");
    expect_success(&f.install(&bundle, &[]));
}

#[test]
fn an_install_keeps_the_booted_slot_as_fallback() {
    let mut f = with_check(&["true"]);
    // A routine boot whose health run has not happened yet: A_TRY=1.
    assert_eq!(f.grub_boot().as_deref(), Some("A"));
    assert_eq!(f.var("A_TRY").as_deref(), Some("1"));
    install_new_version(&f);
    assert_eq!(f.var("A_TRY").as_deref(), Some("0"), "fallback re-armed");
    // B fails to come up: the bootloader still finds A.
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    assert_eq!(f.grub_boot().as_deref(), Some("A"));
}

/// Answers every connection with `status` (a minimal HTTP server for the update-server check).
fn tiny_server(status: &'static str) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut b = [0u8; 2048];
            let _n = c.read(&mut b);
            let _w = c.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    port
}

fn with_update_server_check(url: &str) -> Fixture {
    let mut f = Fixture::new();
    f.extra_config = format!(
        "\n[health]\ndeadline-seconds = 3\nupdate-server = true\n\n[update]\nchannel-url = \"{url}\"\n"
    );
    f.write_config();
    f
}

#[test]
fn the_update_server_check_passes_on_any_answer_and_fails_when_unreachable() {
    // A 404 still proves the server is reachable.
    let port = tiny_server("404 Not Found");
    let mut f = with_update_server_check(&format!("http://127.0.0.1:{port}/stable.json"));
    f.grub_boot();
    let (ok, v) = health(&f);
    assert!(ok, "{v}");
    assert_eq!(v["verdict"]["results"][0]["check"], "update server");
    // A 503 does not.
    let port = tiny_server("503 Service Unavailable");
    let mut f = with_update_server_check(&format!("http://127.0.0.1:{port}/stable.json"));
    f.grub_boot();
    let (ok, v) = health(&f);
    assert!(!ok);
    assert!(
        v["verdict"]["reason"].as_str().unwrap().contains("503"),
        "{v}"
    );
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut f = with_update_server_check(&format!("http://127.0.0.1:{port}/stable.json"));
    f.grub_boot();
    let (ok, v) = health(&f);
    assert!(!ok);
    assert!(
        v["verdict"]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );
}

#[test]
fn the_update_server_check_needs_a_channel_url() {
    let mut f = Fixture::new();
    f.extra_config = "\n[health]\nupdate-server = true\n".into();
    f.write_config();
    let out = f.run(["health"]);
    assert!(!out.status.success());
    assert!(support::stderr(&out).contains("health.update-server"));
}
