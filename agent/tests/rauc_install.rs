#![allow(clippy::unwrap_used, clippy::expect_used)]
//! RAUC devices moving to flipslot: bundles built by the real `rauc bundle` and signed by
//! an `openssl` PKI are installed by `flipslot install` into loop-device slots, driven by
//! a flipslot config or by an unchanged RAUC `system.conf`, through the `rauc` drop-in
//! CLI, with GRUB, U-Boot (checked with the real `fw_printenv`) and custom backends; bad
//! bundles change nothing. Needs root, losetup, openssl, rauc and libubootenv-tool: each
//! missing one skips the test, or fails it when `CI=true`.

mod support;

#[path = "../../image-tools/rauc/tests/rauc_support/mod.rs"]
mod rauc_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flipslot::slot::status::InstallResult;
use rauc_support::{cms_size, flipped, pseudo_random, rauc_bundle, BundleSpec, Pki};
use support::loopdev::{require, run_cmd, LoopDevice};
use support::{expect_failure, expect_success, sha256_hex, Fixture, COMPATIBLE};

fn scratch() -> tempfile::TempDir {
    // Backing files on a disk file system (a tmpfs backing file cannot do direct I/O).
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn loop_dev(dir: &Path, name: &str) -> Option<LoopDevice> {
    require(
        "a loop device (root and losetup)",
        LoopDevice::create(&dir.join(name), 16 << 20),
    )
}

/// The PKI, an image and a bundle of it (compatible of the support fixture).
struct Material {
    pki: Pki,
    image: Vec<u8>,
    work: PathBuf,
}

fn material(dir: &Path) -> Option<Material> {
    let pki = Pki::create(&dir.join("pki"))?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    Some(Material {
        pki,
        image: pseudo_random((5 << 20) + 777, 31),
        work,
    })
}

impl Material {
    fn bundle(&self, name: &str, spec: BundleSpec<'_>) -> Option<PathBuf> {
        let img = self.work.join("rootfs.img");
        std::fs::write(&img, &self.image).unwrap();
        let out = self.work.join(name);
        rauc_bundle(&self.pki, &spec, &img, &out)?;
        Some(out)
    }
}

fn spec(format: &str) -> BundleSpec<'_> {
    BundleSpec {
        format,
        compatible: COMPATIBLE,
        ..Default::default()
    }
}

/// The fixture's config plus the X.509 keyring.
fn with_x509(f: &mut Fixture, m: &Material) {
    f.extra_config = format!("[x509-keyring]\npath = \"{}\"\n", m.pki.keyring().display());
    f.write_config();
}

fn cmp_prefix(dev: &Path, img: &[u8], dir: &Path) {
    let file = dir.join("expected.raw");
    std::fs::write(&file, img).unwrap();
    let n = img.len().to_string();
    let r = run_cmd(&[
        "cmp",
        "-n",
        &n,
        dev.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(r.is_ok(), "{} differs from the image: {r:?}", dev.display());
}

#[test]
fn plain_and_verity_bundles_install_into_loop_device_slots() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    for format in ["plain", "verity"] {
        let Some(a) = loop_dev(d.path(), &format!("{format}-a.img")) else {
            return;
        };
        let Some(b) = loop_dev(d.path(), &format!("{format}-b.img")) else {
            return;
        };
        let mut f = Fixture::with_devices(&[(a.device.clone(), "A"), (b.device.clone(), "B")]);
        with_x509(&mut f, &m);
        let Some(bundle) = m.bundle(&format!("{format}.raucb"), spec(format)) else {
            return;
        };
        let before = f.snapshot();
        let out = f.install(&bundle, &["--json"]);
        expect_success(&out);
        let done: serde_json::Value =
            serde_json::from_str(support::stdout(&out).lines().last().unwrap()).unwrap();
        assert_eq!(done["version"], "2.0.0", "{done}");
        assert_eq!(done["read_back"], true, "{done}");
        assert_eq!(done["images"][0]["sha256"], sha256_hex(&m.image), "{done}");
        cmp_prefix(&b.device, &m.image, d.path());
        f.assert_booted_intact(&before);
        assert_eq!(f.primary().as_deref(), Some("B"), "{format}");
        let rec = f.record("B").unwrap();
        assert_eq!(rec.result, InstallResult::Ok);
        assert_eq!(rec.bundle_version.as_deref(), Some("2.0.0"));
    }
}

#[test]
fn bad_rauc_bundles_change_nothing() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let mut f = Fixture::new();
    with_x509(&mut f, &m);
    let Some(plain) = m.bundle("plain.raucb", spec("plain")) else {
        return;
    };
    let verity = m.bundle("verity.raucb", spec("verity")).unwrap();
    let wrong = m
        .bundle(
            "wrong-compatible.raucb",
            BundleSpec {
                compatible: "another-board",
                ..spec("verity")
            },
        )
        .unwrap();
    let rogue = m
        .bundle(
            "rogue.raucb",
            BundleSpec {
                signer: "rogue",
                ..spec("verity")
            },
        )
        .unwrap();
    let expired = m
        .bundle(
            "expired.raucb",
            BundleSpec {
                signer: "expired",
                ..spec("plain")
            },
        )
        .unwrap();
    let codesign = m
        .bundle(
            "codesign.raucb",
            BundleSpec {
                signer: "codesign",
                ..spec("verity")
            },
        )
        .unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            flipped(&plain, 2 << 20, &m.work.join("p1.raucb")),
            "modified",
        ),
        (flipped(&verity, -30, &m.work.join("v2.raucb")), "signature"),
        (flipped(&verity, -1, &m.work.join("v3.raucb")), "signature"),
        (wrong, "compatible"),
        (rogue, "rogue signer"),
        (expired, "expired"),
        (codesign, "purpose"),
    ];
    for (bundle, phrase) in cases {
        let before = f.snapshot();
        let err = expect_failure(&f.install(&bundle, &[]), phrase);
        eprintln!("{}: {err}", bundle.display());
        f.assert_nothing_written(&before);
    }
}

/// A verity bundle is checked block by block while it is written (no pass over it first):
/// a changed data block or hash block fails the install at that block, named with its
/// bundle offset; the target stays marked bad, the booted slot and the primary untouched.
#[test]
fn tampered_verity_bundles_fail_while_written_and_leave_the_target_bad() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let mut f = Fixture::new();
    with_x509(&mut f, &m);
    let Some(verity) = m.bundle("verity.raucb", spec("verity")) else {
        return;
    };
    // payload = data || tree; the tree's size follows from the data's.
    let len = std::fs::metadata(&verity).unwrap().len();
    let payload = len - 8 - cms_size(&verity);
    let data_size = (1..=payload / 4096)
        .map(|b| b * 4096)
        .find(|&ds| {
            flipslot_rauc::verity::Geometry::new(ds)
                .unwrap()
                .tree_size()
                + ds
                == payload
        })
        .unwrap();
    let g = flipslot_rauc::verity::Geometry::new(data_size).unwrap();
    assert_eq!(g.levels().len(), 2, "{g:?}");
    // Leaf hash block 5 (the hashes of data blocks 640..768, inside the image).
    let leaf5 = data_size + g.levels()[0].offset + 5 * 4096;
    let cases = [
        (
            flipped(&verity, 2 << 20, &m.work.join("v-data.raucb")),
            "data block 512 (bundle offset 2097152)".to_string(),
        ),
        (
            flipped(&verity, leaf5 as i64 + 40, &m.work.join("v-hash.raucb")),
            format!("hash block 5 of level 0 (bundle offset {leaf5})"),
        ),
    ];
    for (bundle, phrase) in cases {
        let before = f.snapshot();
        let err = expect_failure(&f.install(&bundle, &[]), "does not match its hash");
        assert!(
            err.contains(&phrase) && err.contains("rootfs.1") && err.contains("marked bad"),
            "{err}"
        );
        f.assert_untouched(&before);
        assert_eq!(f.primary().as_deref(), Some("A"));
        assert_eq!(f.var("B_OK").as_deref(), Some("0"));
        let rec = f.record("B").expect("no status record for the target");
        assert_eq!(rec.result, InstallResult::Failed, "{rec:?}");
    }
    // The intact bundle installs into the same slot afterwards.
    expect_success(&f.install(&verity, &[]));
    assert_eq!(f.slot_bytes("B")[..m.image.len()], m.image[..]);
    assert_eq!(f.primary().as_deref(), Some("B"));
}

/// A `rauc` symlink to the flipslot binary.
fn rauc_dropin(dir: &Path) -> PathBuf {
    let link = dir.join("rauc");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_flipslot"), &link).unwrap();
    }
    link
}

fn rauc(dropin: &Path, conf: &Path, cmdline: &Path, args: &[&str]) -> Output {
    Command::new(dropin)
        .arg("--conf")
        .arg(conf)
        .arg("--cmdline-file")
        .arg(cmdline)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A RAUC system.conf for two slots, with `system` lines for the bootloader.
fn system_conf(dir: &Path, m: &Material, a: &Path, b: &Path, bootloader: &str) -> PathBuf {
    let conf = dir.join("system.conf");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "# as a RAUC device ships it\n[system]\ncompatible={COMPATIBLE}\n{bootloader}\
             data-directory={}/data\n\n[keyring]\npath={}\n\n\
             [slot.rootfs.0]\ndevice={}\ntype=ext4\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={}\ntype=ext4\nbootname=B\n",
            dir.display(),
            m.pki.keyring().display(),
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn rauc_system_conf_and_cli_drop_in_with_grub() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let Some(a) = loop_dev(d.path(), "a.img") else {
        return;
    };
    let Some(b) = loop_dev(d.path(), "b.img") else {
        return;
    };
    // The support fixture provides the grubenv and the kernel command line (booted A).
    let f = Fixture::with_devices(&[(a.device.clone(), "A"), (b.device.clone(), "B")]);
    let conf = system_conf(
        f.path(),
        &m,
        &a.device,
        &b.device,
        &format!("bootloader=grub\ngrubenv={}\n", f.grubenv_path().display()),
    );
    let Some(bundle) = m.bundle("verity.raucb", spec("verity")) else {
        return;
    };
    let dropin = rauc_dropin(d.path());
    let cmdline = f.cmdline_path();

    let out = rauc(
        &dropin,
        &conf,
        &cmdline,
        &["info", "--output-format=json", bundle.to_str().unwrap()],
    );
    expect_success(&out);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["compatible"], COMPATIBLE);
    assert_eq!(info["images"][0]["rootfs"]["size"], m.image.len());
    // With --keyring and no config, byte for byte what the real rauc prints.
    let keyring = m.pki.keyring();
    let ours = Command::new(&dropin)
        .args(["info", "--output-format=json", "--keyring"])
        .arg(&keyring)
        .arg(&bundle)
        .output()
        .unwrap();
    expect_success(&ours);
    let theirs = Command::new("rauc")
        .args(["info", "--output-format=json", "--keyring"])
        .arg(&keyring)
        .arg(&bundle)
        .output()
        .unwrap();
    expect_success(&theirs);
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout).trim(),
        String::from_utf8_lossy(&theirs.stdout).trim()
    );

    let out = rauc(
        &dropin,
        &conf,
        &cmdline,
        &["install", bundle.to_str().unwrap()],
    );
    expect_success(&out);
    assert!(
        support::stdout(&out).contains("succeeded"),
        "{}",
        support::stdout(&out)
    );
    cmp_prefix(&b.device, &m.image, d.path());
    assert_eq!(f.var("ORDER").as_deref(), Some("B A"));
    assert_eq!(f.var("B_OK").as_deref(), Some("1"));
    assert_eq!(f.var("B_TRY").as_deref(), Some("0"));

    let out = rauc(
        &dropin,
        &conf,
        &cmdline,
        &["status", "--detailed", "--output-format=json"],
    );
    expect_success(&out);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["compatible"], COMPATIBLE, "{st}");
    assert_eq!(st["booted"], "A", "{st}");
    assert_eq!(st["boot_primary"], "rootfs.1", "{st}");
    let slots = st["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    let s1 = &slots[1]["rootfs.1"];
    assert_eq!(s1["class"], "rootfs", "{st}");
    assert_eq!(s1["bootname"], "B");
    assert_eq!(s1["type"], "ext4");
    assert_eq!(s1["state"], "active");
    assert_eq!(s1["boot_status"], "good");
    assert_eq!(s1["slot_status"]["bundle"]["version"], "2.0.0");
    assert_eq!(slots[0]["rootfs.0"]["state"], "booted");

    let out = rauc(&dropin, &conf, &cmdline, &["status", "mark-bad", "other"]);
    expect_success(&out);
    assert_eq!(
        support::stdout(&out).trim(),
        "rauc status: marked slot rootfs.1 as bad"
    );
    assert_eq!(f.var("B_OK").as_deref(), Some("0"));
    let out = rauc(
        &dropin,
        &conf,
        &cmdline,
        &["status", "mark-active", "rootfs.1"],
    );
    expect_success(&out);
    assert_eq!(
        support::stdout(&out).trim(),
        "rauc status: activated slot rootfs.1"
    );
    let out = rauc(&dropin, &conf, &cmdline, &["status", "mark-good"]);
    expect_success(&out);
    assert_eq!(
        support::stdout(&out).trim(),
        "rauc status: marked slot rootfs.0 as good"
    );
}

#[test]
fn rauc_system_conf_with_uboot_environment() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let Some(a) = loop_dev(d.path(), "a.img") else {
        return;
    };
    let Some(b) = loop_dev(d.path(), "b.img") else {
        return;
    };
    if require(
        "fw_printenv (libubootenv-tool)",
        run_cmd(&["which", "fw_printenv"]),
    )
    .is_none()
    {
        return;
    }
    let f = Fixture::with_devices(&[(a.device.clone(), "A"), (b.device.clone(), "B")]);
    // A redundant environment in two files, initialised by the real fw_setenv.
    let env_cfg = f.path().join("fw_env.config");
    let (e1, e2) = (f.path().join("env1"), f.path().join("env2"));
    std::fs::write(&e1, vec![0u8; 0x4000]).unwrap();
    std::fs::write(&e2, vec![0u8; 0x4000]).unwrap();
    std::fs::write(
        &env_cfg,
        format!("{} 0x0 0x4000\n{} 0x0 0x4000\n", e1.display(), e2.display()),
    )
    .unwrap();
    let defaults = f.path().join("initial-env");
    std::fs::write(
        &defaults,
        "BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\nbootdelay=2\n",
    )
    .unwrap();
    let cfg = env_cfg.to_str().unwrap();
    run_cmd(&[
        "fw_setenv",
        "-c",
        cfg,
        "-f",
        defaults.to_str().unwrap(),
        "bootdelay",
        "2",
    ])
    .unwrap();
    // RAUC's system.conf has no key for the environment's location (fw_printenv's
    // /etc/fw_env.config is used); flipslot's system.toml has one, which the test needs.
    let toml = f.path().join("system.toml");
    std::fs::write(
        &toml,
        format!(
            "compatible = \"{COMPATIBLE}\"\nbootloader = \"uboot\"\nfw-env-config = \"{cfg}\"\n\
             data-directory = \"{}/data\"\n[x509-keyring]\npath = \"{}\"\n\
             [[slot.rootfs]]\ndevice = \"{}\"\nbootname = \"A\"\n\
             [[slot.rootfs]]\ndevice = \"{}\"\nbootname = \"B\"\n",
            f.path().display(),
            m.pki.keyring().display(),
            a.device.display(),
            b.device.display()
        ),
    )
    .unwrap();
    let Some(bundle) = m.bundle("plain.raucb", spec("plain")) else {
        return;
    };
    let dropin = rauc_dropin(d.path());
    let out = rauc(
        &dropin,
        &toml,
        &f.cmdline_path(),
        &["install", bundle.to_str().unwrap()],
    );
    expect_success(&out);
    cmp_prefix(&b.device, &m.image, d.path());
    let printenv = |var: &str| run_cmd(&["fw_printenv", "-c", cfg, var]).unwrap();
    assert_eq!(printenv("BOOT_ORDER"), "BOOT_ORDER=B A");
    assert_eq!(printenv("BOOT_B_LEFT"), "BOOT_B_LEFT=3");
    assert_eq!(
        printenv("bootdelay"),
        "bootdelay=2",
        "unrelated variables are kept"
    );

    // The boot script decrements B's counter; a failed health check marks it bad.
    run_cmd(&["fw_setenv", "-c", cfg, "BOOT_B_LEFT", "2"]).unwrap();
    let out = rauc(
        &dropin,
        &toml,
        &f.cmdline_path(),
        &["status", "--output-format=json"],
    );
    expect_success(&out);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["boot_primary"], "rootfs.1", "{st}");
    let out = rauc(
        &dropin,
        &toml,
        &f.cmdline_path(),
        &["status", "mark-bad", "rootfs.1"],
    );
    expect_success(&out);
    assert_eq!(printenv("BOOT_ORDER"), "BOOT_ORDER=A");
    assert_eq!(printenv("BOOT_B_LEFT"), "BOOT_B_LEFT=0");
}

#[test]
fn rauc_system_conf_with_custom_backend() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let f = Fixture::new();
    let state = f.path().join("boot-state");
    std::fs::write(&state, "PRIMARY=A\nSTATE_A=good\nSTATE_B=good\nCURRENT=A\n").unwrap();
    let script = f.path().join("custom-backend");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# RAUC's custom backend protocol over a state file\nS={}\n\
             case \"$1\" in\n\
             get-primary) sed -n 's/^PRIMARY=//p' \"$S\" ;;\n\
             set-primary) sed -i \"s/^PRIMARY=.*/PRIMARY=$2/\" \"$S\" ;;\n\
             get-state) sed -n \"s/^STATE_$2=//p\" \"$S\" ;;\n\
             set-state) sed -i \"s/^STATE_$2=.*/STATE_$2=$3/\" \"$S\" ;;\n\
             get-current) sed -n 's/^CURRENT=//p' \"$S\" ;;\n\
             *) exit 2 ;;\nesac\n",
            state.display()
        ),
    )
    .unwrap();
    run_cmd(&["chmod", "755", script.to_str().unwrap()]).unwrap();
    let conf = system_conf(
        f.path(),
        &m,
        &f.device("A"),
        &f.device("B"),
        "bootloader=custom\n",
    );
    let text = std::fs::read_to_string(&conf).unwrap()
        + &format!(
            "\n[handlers]\nbootloader-custom-backend={}\n",
            script.display()
        );
    std::fs::write(&conf, text).unwrap();
    // No slot on the kernel command line: the backend's get-current names it.
    let cmdline = f.path().join("cmdline-plain");
    std::fs::write(&cmdline, "BOOT_IMAGE=/vmlinuz ro quiet\n").unwrap();
    let Some(bundle) = m.bundle("verity.raucb", spec("verity")) else {
        return;
    };
    let dropin = rauc_dropin(d.path());
    let out = rauc(
        &dropin,
        &conf,
        &cmdline,
        &["install", bundle.to_str().unwrap()],
    );
    expect_success(&out);
    let st = std::fs::read_to_string(&state).unwrap();
    assert!(
        st.contains("PRIMARY=B") && st.contains("STATE_B=good"),
        "{st}"
    );
    let out = rauc(
        &dropin,
        &conf,
        &cmdline,
        &["status", "--output-format=json"],
    );
    expect_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["booted"], "A", "{v}");
    assert_eq!(v["boot_primary"], "rootfs.1", "{v}");
    assert_eq!(f.slot_bytes("B")[..m.image.len()], m.image[..]);
}

#[test]
fn install_same_false_skips_a_slot_that_holds_the_image() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let f = Fixture::new();
    let conf = system_conf(
        f.path(),
        &m,
        &f.device("A"),
        &f.device("B"),
        &format!("bootloader=grub\ngrubenv={}\n", f.grubenv_path().display()),
    );
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("bootname=B\n", "bootname=B\ninstall-same=false\n");
    std::fs::write(&conf, text).unwrap();
    let Some(bundle) = m.bundle("verity.raucb", spec("verity")) else {
        return;
    };
    let install = || {
        Command::new(env!("CARGO_BIN_EXE_flipslot"))
            .arg("--config")
            .arg(&conf)
            .arg("--cmdline-file")
            .arg(f.cmdline_path())
            .args(["install", "--no-daemon"])
            .arg(&bundle)
            .env("FLIPSLOT_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = install();
    expect_success(&out);
    assert_eq!(f.slot_bytes("B")[..m.image.len()], m.image[..]);
    // Out of rotation again (e.g. rolled back): the same bundle only reactivates it.
    expect_success(&f.run(["mark-bad", "B"]));
    let out = install();
    expect_success(&out);
    let err = support::stderr(&out);
    assert!(err.contains("not written again"), "{err}");
    assert_eq!(f.primary().as_deref(), Some("B"), "still activated");
}

#[test]
fn rauc_bundles_install_over_http_from_nginx() {
    let d = scratch();
    let Some(m) = material(d.path()) else { return };
    let Some(nginx) = support::nginx::Nginx::start(&support::nginx::NginxConfig::default()) else {
        return;
    };
    for format in ["plain", "verity"] {
        let mut f = Fixture::new();
        with_x509(&mut f, &m);
        let Some(bundle) = m.bundle(&format!("{format}.raucb"), spec(format)) else {
            return;
        };
        nginx.publish(&bundle, &format!("{format}.raucb"));
        let before = f.snapshot();
        let out = f.run([
            "install",
            "--no-daemon",
            &nginx.url(&format!("{format}.raucb")),
        ]);
        expect_success(&out);
        assert_eq!(f.slot_bytes("B")[..m.image.len()], m.image[..], "{format}");
        f.assert_booted_intact(&before);
        assert_eq!(f.primary().as_deref(), Some("B"));

        // A verity bundle whose data was modified on the server: the block fails while
        // streaming; the booted slot and the bootloader's choice are untouched.
        if format == "verity" {
            let mut f = Fixture::new();
            with_x509(&mut f, &m);
            let bad = flipped(&bundle, 3 << 20, &m.work.join("bad-verity.raucb"));
            nginx.publish(&bad, "bad-verity.raucb");
            let before = f.snapshot();
            let out = f.run(["install", "--no-daemon", &nginx.url("bad-verity.raucb")]);
            let err = expect_failure(&out, "does not match its hash");
            assert!(err.contains("stays marked bad"), "{err}");
            f.assert_untouched(&before);
        }
    }
}
