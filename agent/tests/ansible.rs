#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `examples/ansible/rollout.yml` run by the real `ansible-playbook` (Debian's
//! `ansible-core`) against localhost over the `local` connection, on the fixture's
//! file-backed slots. The playbook's reboot is replaced, through `flipslot_reboot_command`,
//! by a stand-in for a boot: it boots the primary slot (the kernel command line file names
//! it) and runs `flipslot health`, as `flipslot-health.service` would. The first run
//! copies and installs the bundle, "reboots" and sees the new slot booted and committed;
//! the second changes nothing.
//!
//! Without `ansible-playbook` the test skips, except under CI (`CI=true`), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{pseudo_random, stderr, stdout, Fixture};

/// `ansible-playbook` from `PATH`, or `None` (after saying so) when it is missing
/// outside CI.
fn ansible_playbook() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("ansible-playbook"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ansible-playbook is required under CI: install Debian's ansible-core"
        );
        eprintln!("SKIPPED: ansible-playbook is not installed (Debian's ansible-core)");
    }
    found
}

/// The playbook in the repository.
fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ansible/rollout.yml")
}

/// The stand-in for a reboot: the bootloader boots the slot that is primary (the kernel
/// command line file names it), then `flipslot health` assesses the boot. `flipslot` is
/// the fixture's command line (binary, `--config`, `--cmdline-file`).
fn write_boot_script(f: &Fixture) -> PathBuf {
    let flipslot: Vec<String> = [
        env!("CARGO_BIN_EXE_flipslot").to_string(),
        "--config".into(),
        f.config_path().display().to_string(),
        "--cmdline-file".into(),
        f.cmdline_path().display().to_string(),
    ]
    .into();
    let script = format!(
        r#"#!/usr/bin/env python3
# A boot, for the test: the primary slot boots, then flipslot-health.service runs.
import json, subprocess
flipslot = {flipslot}
status = json.loads(subprocess.run(flipslot + ["status", "--json"], check=True,
                                   capture_output=True).stdout)
primary = next(s["bootname"] for s in status["slots"] if s["primary"])
with open({cmdline}, "w") as f:
    f.write("BOOT_IMAGE=/vmlinuz ro quiet flipslot.slot=" + primary + "\n")
subprocess.run(flipslot + ["health", "--no-reboot"], check=True)
"#,
        flipslot = serde_json::to_string(&flipslot).unwrap(),
        cmdline = serde_json::to_string(&f.cmdline_path()).unwrap(),
    );
    let path = f.path().join("boot.py");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs the playbook on localhost with the test's variables; Ansible keeps its files in
/// the fixture's directory and reads no user configuration.
fn run_playbook(tool: &Path, f: &Fixture, vars: &Path) -> Output {
    let home = f.path().join("ansible");
    std::fs::create_dir_all(&home).unwrap();
    let inventory = f.path().join("inventory.ini");
    std::fs::write(
        &inventory,
        "[flipslot]\nlocalhost ansible_connection=local \
         ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n",
    )
    .unwrap();
    let cfg = home.join("ansible.cfg");
    std::fs::write(&cfg, "[defaults]\n").unwrap();
    let out = Command::new(tool)
        .arg("-i")
        .arg(&inventory)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .arg(playbook())
        .current_dir(f.path())
        .stdin(Stdio::null())
        .env("ANSIBLE_CONFIG", &cfg)
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", home.join("remote-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_STDOUT_CALLBACK", "default")
        .env_remove("ANSIBLE_INVENTORY")
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-playbook failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// The result line (`ok`, `changed`, `skipping`, ...) of the task named `task` in the
/// default callback's output.
fn task_result<'a>(log: &'a str, task: &str) -> &'a str {
    let header = format!("TASK [{task}]");
    let mut lines = log.lines().skip_while(|l| !l.starts_with(&header));
    assert!(lines.next().is_some(), "no task {task:?} in:\n{log}");
    let line = lines
        .find(|l| l.contains(": [localhost]"))
        .unwrap_or_else(|| panic!("no result of {task:?} in:\n{log}"));
    line.split(':').next().unwrap_or_default()
}

/// The `changed=N` count of the play recap.
fn recap_changed(log: &str) -> u32 {
    let recap = log
        .lines()
        .rev()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap in:\n{log}"));
    recap
        .split_whitespace()
        .find_map(|w| w.strip_prefix("changed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no changed= in {recap:?}"))
}

#[test]
fn rollout_playbook_installs_boots_commits_then_changes_nothing() {
    let Some(tool) = ansible_playbook() else {
        return;
    };
    let f = Fixture::new();
    let started = std::time::Instant::now();
    let img = pseudo_random((2 << 20) + 999, 7);
    let bundle = f.bundle("2.0.0", &img);
    let boot = write_boot_script(&f);
    let vars = f.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::to_string_pretty(&serde_json::json!({
            "flipslot_bundle": bundle,
            "flipslot_bundle_dest": f.path().join("on-device/rollout.fsb"),
            "flipslot_bin": env!("CARGO_BIN_EXE_flipslot"),
            "flipslot_args": ["--config", f.config_path(), "--cmdline-file", f.cmdline_path()],
            "flipslot_become": false,
            "flipslot_reboot_command": [boot],
            "flipslot_reboot_timeout": 30,
            "flipslot_commit_retries": 3,
            "flipslot_commit_delay": 1,
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::create_dir(f.path().join("on-device")).unwrap();

    // First run: copied, installed into B, booted, committed.
    let first = stdout(&run_playbook(&tool, &f, &vars));
    assert_eq!(
        task_result(&first, "Install the bundle into the inactive slot"),
        "changed",
        "{first}"
    );
    assert_eq!(task_result(&first, "Reboot into the new slot"), "skipping");
    assert_eq!(
        task_result(&first, "Reboot with the configured command"),
        "changed"
    );
    assert_eq!(
        task_result(&first, "Check that the new slot booted and committed"),
        "ok"
    );
    let st = f.status_json();
    assert_eq!(st["booted"], "rootfs.1", "{st}");
    assert_eq!(st["primary"], "rootfs.1", "{st}");
    let b = f.status_slot("B");
    assert_eq!(b["installed"]["bundle_version"], "2.0.0", "{b}");
    assert_eq!(b["installed"]["image_sha256"], support::sha256_hex(&img));
    assert!(b["installed"]["trial"]["committed_at"].is_u64(), "{b}");
    assert_eq!(b["boot_status"], "good", "{b}");

    // Second run: the bundle runs in the booted slot; nothing is copied, written or
    // rebooted.
    let before = f.snapshot();
    let second = stdout(&run_playbook(&tool, &f, &vars));
    f.assert_nothing_written(&before);
    assert_eq!(
        task_result(&second, "Install the bundle into the inactive slot"),
        "ok",
        "{second}"
    );
    assert_eq!(
        task_result(&second, "Reboot with the configured command"),
        "skipping"
    );
    assert_eq!(
        task_result(&second, "Check that the new slot booted and committed"),
        "ok"
    );
    assert!(
        second.contains("is already installed in the booted slot rootfs.1 (B)"),
        "{second}"
    );
    assert_eq!(recap_changed(&second), 0, "{second}");
    eprintln!(
        "two playbook runs took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
