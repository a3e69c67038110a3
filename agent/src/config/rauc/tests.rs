use super::*;
use crate::config::Slot;

const ORIGIN: &str = "/etc/rauc/system.conf";

/// An x86 gateway with GRUB on EFI, shaped like RAUC's integration examples.
const GRUB: &str = "\
# RAUC system configuration
[system]
compatible=Acme x86 Gateway
bootloader=grub
grubenv=/boot/efi/EFI/BOOT/grubenv
data-directory=/data/rauc
bundle-formats=-plain
mountprefix=/run/rauc/mnt
max-bundle-download-size=268435456

[keyring]
path=ca.cert.pem
check-purpose=codesign
allowed-signer-cns=Acme Release 2024;Acme Release 2025

[slot.rootfs.0]
device=/dev/disk/by-partlabel/rootfs-a
type=ext4
bootname=A

[slot.rootfs.1]
device=/dev/disk/by-partlabel/rootfs-b
type=ext4
bootname=B
";

/// A Raspberry Pi with U-Boot, like the community BSP layers ship it.
const UBOOT: &str = "\
[system]
compatible=raspberrypi4
bootloader=uboot
data-directory=/data/rauc
boot-attempts=5
boot-attempts-primary=2
bundle-formats=verity
min-bundle-version=2024.04-rc1

[keyring]
path=/etc/rauc/ca.cert.pem
use-bundle-signing-time=true
allow-partial-chain=true

[slot.rootfs.0]
device=/dev/mmcblk0p2
type=ext4
bootname=A

[slot.rootfs.1]
device=/dev/mmcblk0p3
type=ext4
bootname=B
";

/// A board whose boot selection is a script speaking RAUC's custom backend protocol.
const CUSTOM: &str = "\
[system]
compatible=Acme Board rev3
bootloader=custom
data-directory=/srv/rauc

[handlers]
bootloader-custom-backend=bin/boot-select

[keyring]
directory=certs.d

[slot.rootfs.1]
device=/dev/mmcblk1p3
bootname=system1

[slot.rootfs.0]
device=/dev/mmcblk1p2
type=raw
bootname=system0

[slot.appfs.0]
device=/dev/mmcblk1p5
type=vfat
bootname=app0
install-same=false

[slot.appfs.1]
device=/dev/mmcblk1p6
type=vfat
bootname=app1
readonly=true
force-install-same=false
install-same=true
";

const MINIMAL: &str = "\
[system]
compatible=x
bootloader=grub
data-directory=/data

[keyring]
path=/k.pem

[slot.rootfs.0]
device=/dev/sda2
bootname=A

[slot.rootfs.1]
device=/dev/sda3
bootname=B
";

fn parse(text: &str) -> Result<(SystemConfig, Vec<Notice>), ConfigError> {
    parse_system_conf(text, Path::new(ORIGIN))
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

fn names(slots: &[Slot]) -> Vec<(&str, &str)> {
    slots
        .iter()
        .map(|s| (s.name.as_str(), s.bootname.as_str()))
        .collect()
}

#[test]
fn grub_system_conf() {
    let (cfg, notices) = parse(GRUB).unwrap();
    assert_eq!(cfg.path, PathBuf::from(ORIGIN));
    assert_eq!(cfg.format, ConfigFormat::RaucSystemConf);
    assert_eq!(cfg.compatible, "Acme x86 Gateway");
    assert_eq!(cfg.bootloader, BootloaderKind::Grub);
    assert_eq!(
        cfg.grubenv,
        Some(PathBuf::from("/boot/efi/EFI/BOOT/grubenv"))
    );
    assert_eq!(cfg.data_dir, PathBuf::from("/data/rauc"));
    assert_eq!(
        cfg.rauc_bundles,
        RaucBundlePolicy {
            plain: false,
            verity: true,
            min_bundle_version: None
        }
    );
    let k = cfg.x509_keyring.as_ref().unwrap();
    assert_eq!(k.path, Some(PathBuf::from("/etc/rauc/ca.cert.pem")));
    assert_eq!(k.directory, None);
    assert_eq!(k.check_purpose, "codesign");
    assert_eq!(
        k.allowed_signer_cns,
        ["Acme Release 2024", "Acme Release 2025"]
    );
    assert!(!k.allow_partial_chain && !k.use_bundle_signing_time);
    assert_eq!(cfg.keyring, None);
    assert_eq!(cfg.min_signatures, 1);
    assert_eq!(cfg.fw_env_config, PathBuf::from(paths::FW_ENV_CONFIG));
    assert_eq!(cfg.custom_backend, None);
    assert_eq!(cfg.update, None);
    assert_eq!(cfg.health, HealthConfig::default());
    assert_eq!(names(&cfg.slots), [("rootfs.0", "A"), ("rootfs.1", "B")]);
    let b = cfg.slot_by_name("rootfs.1").unwrap();
    assert_eq!(b.device, PathBuf::from("/dev/disk/by-partlabel/rootfs-b"));
    assert!(!b.readonly && b.install_same);

    let keys: Vec<_> = notices.iter().map(|n| n.key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["mountprefix", "max-bundle-download-size"]);
    assert_eq!(notices[0].line, 8);
    let shown: Vec<String> = notices.iter().map(ToString::to_string).collect();
    assert_eq!(cfg.notices, shown);
    assert!(
        shown[0].starts_with("[system] mountprefix (line 8): ignored: flipslot never mounts"),
        "{}",
        shown[0]
    );
}

#[test]
fn uboot_system_conf() {
    let (cfg, notices) = parse(UBOOT).unwrap();
    assert!(notices.is_empty(), "{notices:?}");
    assert_eq!(cfg.bootloader, BootloaderKind::Uboot);
    assert_eq!(cfg.grubenv, None);
    assert_eq!((cfg.boot_attempts, cfg.boot_attempts_primary), (5, 2));
    assert!(!cfg.rauc_bundles.plain && cfg.rauc_bundles.verity);
    assert_eq!(
        cfg.rauc_bundles.min_bundle_version.as_deref(),
        Some("2024.04-rc1")
    );
    let k = cfg.x509_keyring.unwrap();
    assert!(k.use_bundle_signing_time && k.allow_partial_chain);
    assert_eq!(k.check_purpose, "smimesign");
    assert_eq!(names(&cfg.slots), [("rootfs.0", "A"), ("rootfs.1", "B")]);
}

#[test]
fn custom_system_conf() {
    let (cfg, _) = parse(CUSTOM).unwrap();
    assert_eq!(cfg.bootloader, BootloaderKind::Custom);
    assert_eq!(
        cfg.custom_backend,
        Some(PathBuf::from("/etc/rauc/bin/boot-select"))
    );
    assert_eq!(
        cfg.x509_keyring.as_ref().unwrap().directory,
        Some(PathBuf::from("/etc/rauc/certs.d"))
    );
    assert_eq!(
        names(&cfg.slots),
        [
            ("appfs.0", "app0"),
            ("appfs.1", "app1"),
            ("rootfs.0", "system0"),
            ("rootfs.1", "system1")
        ]
    );
    let app0 = cfg.slot_by_name("appfs.0").unwrap();
    assert!(!app0.readonly && !app0.install_same);
    let app1 = cfg.slot_by_name("appfs.1").unwrap();
    assert!(app1.readonly && app1.install_same);
}

#[test]
fn defaults() {
    let (cfg, notices) = parse(MINIMAL).unwrap();
    assert!(notices.is_empty() && cfg.notices.is_empty());
    assert_eq!(cfg.grubenv, Some(PathBuf::from(DEFAULT_GRUBENV)));
    assert_eq!(cfg.boot_attempts, DEFAULT_BOOT_ATTEMPTS);
    assert_eq!(cfg.boot_attempts_primary, DEFAULT_BOOT_ATTEMPTS);
    assert_eq!(cfg.rauc_bundles, RaucBundlePolicy::default());
    let k = cfg.x509_keyring.unwrap();
    assert_eq!(k.check_purpose, "smimesign");
    assert!(k.allowed_signer_cns.is_empty());
    for s in &cfg.slots {
        assert!(!s.readonly && s.install_same, "{s:?}");
    }
    // 0 means unset in RAUC, with any bootloader.
    let text = MINIMAL.replace("data-directory", "boot-attempts=0\ndata-directory");
    assert_eq!(parse(&text).unwrap().0.boot_attempts, DEFAULT_BOOT_ATTEMPTS);
    // Switches at RAUC's default are what flipslot does: no error, no notice.
    let text = MINIMAL
        .replace("data-directory", "activate-installed=true\ndata-directory")
        .replace("bootname=B", "bootname=B\nresize=false\nallow-mounted=0");
    let (_, notices) = parse(&text).unwrap();
    assert!(notices.is_empty(), "{notices:?}");
}

#[test]
fn bundle_formats_variants() {
    let ok = |v: &str| {
        let text = MINIMAL.replace(
            "data-directory",
            &format!("bundle-formats={v}\ndata-directory"),
        );
        let (cfg, notices) = parse(&text).unwrap();
        (
            cfg.rauc_bundles.plain,
            cfg.rauc_bundles.verity,
            notices.len(),
        )
    };
    assert_eq!(ok("plain verity"), (true, true, 0));
    assert_eq!(ok("verity"), (false, true, 0));
    assert_eq!(ok("  plain  "), (true, false, 0));
    assert_eq!(ok("-plain"), (false, true, 0));
    assert_eq!(ok("-crypt +verity"), (true, true, 0));
    assert_eq!(ok("-verity -crypt"), (true, false, 0));
    assert_eq!(ok("plain crypt"), (true, false, 1));
    assert_eq!(ok("+crypt"), (true, true, 1));

    let bad = |v: &str| {
        err(&MINIMAL.replace(
            "data-directory",
            &format!("bundle-formats={v}\ndata-directory"),
        ))
    };
    let e = bad("plain;verity");
    assert!(
        e.contains("[system] bundle-formats (line 4)") && e.contains("\"plain;verity\""),
        "{e}"
    );
    assert!(bad("plain -verity").contains("mixes"));
    assert!(bad("-plain -verity -crypt").contains("no bundle format"));
    assert!(bad("crypt").contains("only crypt bundles"));
    assert!(bad("-plain -verity").contains("only crypt bundles"));
    assert!(bad("squashfs").contains("invalid bundle format \"squashfs\""));
}

#[test]
fn relative_paths_resolve_against_the_files_directory() {
    let text = MINIMAL
        .replace("path=/k.pem", "path=keys/ca.pem\ndirectory=../certs")
        .replace("data-directory=/data", "data-directory=data")
        .replace("device=/dev/sda2", "device=dev/root-a");
    let (cfg, _) = parse_system_conf(&text, Path::new("/usr/lib/rauc/system.conf")).unwrap();
    let k = cfg.x509_keyring.unwrap();
    assert_eq!(k.path, Some(PathBuf::from("/usr/lib/rauc/keys/ca.pem")));
    assert_eq!(k.directory, Some(PathBuf::from("/usr/lib/rauc/../certs")));
    assert_eq!(cfg.data_dir, PathBuf::from("/usr/lib/rauc/data"));
    assert_eq!(
        cfg.slots[0].device,
        PathBuf::from("/usr/lib/rauc/dev/root-a")
    );
    let text = MINIMAL.replace("grub\n", "grub\ngrubenv=grubenv\n");
    let (cfg, _) = parse(&text).unwrap();
    assert_eq!(cfg.grubenv, Some(PathBuf::from("/etc/rauc/grubenv")));

    // Without an absolute directory to resolve against, a relative path is an error.
    let e = parse_system_conf(
        &MINIMAL.replace("/k.pem", "k.pem"),
        Path::new("system.conf"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[keyring] path (line 7)") && e.contains("relative"),
        "{e}"
    );
}

#[test]
fn every_refused_key_is_listed_with_group_key_and_line() {
    let text = "\
[system]
compatible=x
bootloader=grub
data-directory=/data
activate-installed=false
variant-name=rev-b
statusfile=/data/central.raucs

[keyring]
path=/k.pem
check-crl=true

[handlers]
post-install=/usr/lib/rauc/post.sh

[polling]
url=https://updates.example/manifest

[encryption]
key=/etc/rauc/key.pem

[autoinstall]
path=/data/update.raucb

[slot.rootfs.0]
device=/dev/sda2
bootname=A
resize=true

[slot.rootfs.1]
device=/dev/sda3
bootname=B
type=ubifs

[slot.appfs.0]
device=/dev/sda4
parent=rootfs.0

[slot.data.0]
device=/dev/sda5

[artifacts.add-ons]
path=/data/add-ons
type=trees

[streaming]
colour=blue

[wishes]
pony=yes
";
    let e = err(text);
    for expected in [
        "cannot use RAUC config /etc/rauc/system.conf: 15 setting(s)",
        "[system] activate-installed (line 5): flipslot always makes the installed slot primary (only activate-installed=true is accepted)",
        "[system] variant-name (line 6): image variants",
        "[keyring] check-crl (line 11): ",
        "[handlers] post-install (line 14): flipslot does not run RAUC handlers",
        "[polling] url (line 17): ",
        "[encryption] key (line 20): flipslot cannot decrypt",
        "[autoinstall] path (line 23): ",
        "[slot.rootfs.0] resize (line 28): ",
        "[slot.rootfs.1] type (line 33): slot type ubifs is not supported",
        "[slot.appfs.0] parent (line 37): child slots",
        "[slot.data.0] (line 39): flipslot needs a bootname",
        "[artifacts.add-ons] path (line 43): artifact repositories",
        "[artifacts.add-ons] type (line 44): ",
        "[streaming] colour (line 47): unknown key",
        "[wishes] (line 49): unknown group",
    ] {
        assert!(e.contains(expected), "{expected:?} missing in:\n{e}");
    }
    // Irrelevant keys are not errors.
    assert!(!e.contains("statusfile"), "{e}");
}

#[test]
fn unsupported_bootloaders_name_file_and_line() {
    for b in ["barebox", "efi", "noop"] {
        let e = err(&MINIMAL.replace("bootloader=grub", &format!("bootloader={b}")));
        assert!(
            e.contains("/etc/rauc/system.conf")
                && e.contains(&format!(
                    "[system] bootloader (line 3): bootloader={b} is not supported yet by flipslot"
                )),
            "{e}"
        );
    }
    let e = err(&MINIMAL.replace("bootloader=grub", "bootloader=lilo"));
    assert!(e.contains("unknown bootloader \"lilo\""), "{e}");
    let e = err(&MINIMAL.replace(
        "bootloader=grub",
        "bootloader=barebox\nbarebox-statename=state",
    ));
    assert!(e.contains("[system] barebox-statename (line 4)"), "{e}");
}

#[test]
fn keys_that_depend_on_the_bootloader() {
    let uboot = MINIMAL.replace("bootloader=grub", "bootloader=uboot");
    let e = err(&uboot.replace("uboot\n", "uboot\ngrubenv=/boot/grubenv\n"));
    assert!(
        e.contains("[system] grubenv (line 4): only valid with bootloader=grub"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("grub\n", "grub\nboot-attempts=3\n"));
    assert!(
        e.contains("[system] boot-attempts (line 4): only valid with bootloader=uboot"),
        "{e}"
    );
    let e = err(&(MINIMAL.to_string() + "[handlers]\nbootloader-custom-backend=/x\n"));
    assert!(
        e.contains("[handlers] bootloader-custom-backend (line 17)"),
        "{e}"
    );
    let e = err(&uboot.replace("uboot\n", "uboot\nboot-attempts-primary=256\n"));
    assert!(
        e.contains("[system] boot-attempts-primary (line 4)") && e.contains("256"),
        "{e}"
    );
    let e = err(&uboot.replace("uboot\n", "uboot\nboot-attempts=-1\n"));
    assert!(e.contains("-1"), "{e}");
    let e = err(&MINIMAL.replace("bootloader=grub", "bootloader=custom"));
    assert!(
        e.contains("[handlers] bootloader-custom-backend") && e.contains("required"),
        "{e}"
    );
}

#[test]
fn irrelevant_keys_give_notices() {
    let text = MINIMAL.to_string()
        + "description=the A slot\nextra-mount-opts=noatime\n\n\
           [casync]\nstorepath=/data/store\n\n\
           [streaming]\ntls-ca=/etc/ssl/ca.pem\nsend-headers=boot-id;machine-id\n\n\
           [log.install]\nfilename=install.log\nevents=install\n";
    let (cfg, notices) = parse(&text).unwrap();
    let shown: Vec<String> = notices.iter().map(ToString::to_string).collect();
    assert_eq!(cfg.notices, shown);
    for expected in [
        "[slot.rootfs.1] description (line 16): ignored: informative only",
        "[slot.rootfs.1] extra-mount-opts (line 17): ignored: flipslot never mounts slots",
        "[casync] storepath (line 20): ignored: flipslot does not install casync images",
        "[streaming] tls-ca (line 23): ignored: ",
        "[streaming] send-headers (line 24): ",
        "[log.install] filename (line 27): ignored: flipslot does not write RAUC's event log",
        "[log.install] events (line 28): ",
    ] {
        assert!(
            shown.iter().any(|s| s.starts_with(expected)),
            "{expected:?} not in {shown:#?}"
        );
    }
    assert_eq!(shown.len(), 7);
}

#[test]
fn malformed_syntax_names_the_line() {
    let e = err("[system]\ncompatible=x\n[keyring\npath=/k\n");
    assert!(
        e.contains("/etc/rauc/system.conf") && e.contains("line 3"),
        "{e}"
    );
    let e = err("[system]\ncompatible x\n");
    assert!(e.contains("line 2"), "{e}");
    let e = err(&MINIMAL.replace("bootname=B", "bootname=B\nreadonly=maybe"));
    assert!(e.contains("line 16") && e.contains("readonly"), "{e}");
    let e = err(&MINIMAL.replace("compatible=x", "compatible=\\q"));
    assert!(e.contains("line 2"), "{e}");
    let e = err(&MINIMAL.replace("compatible=x", "compatible="));
    assert!(
        e.contains("[system] compatible (line 2): empty value"),
        "{e}"
    );
}

#[test]
fn required_keys() {
    let e = err(&MINIMAL.replace("data-directory=/data\n", ""));
    assert!(
        e.contains("invalid config /etc/rauc/system.conf: [system] data-directory:")
            && e.contains("add data-directory="),
        "{e}"
    );
    let e = err(&MINIMAL.replace("compatible=x\n", ""));
    assert!(e.contains("[system] compatible: required"), "{e}");
    let e = err(&MINIMAL.replace("bootloader=grub\n", ""));
    assert!(e.contains("[system] bootloader: required"), "{e}");
    let e = err(&MINIMAL.replace("[keyring]\npath=/k.pem\n", ""));
    assert!(
        e.contains("[keyring]: flipslot verifies every bundle"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("path=/k.pem", "check-purpose=any"));
    assert!(e.contains("[keyring]: needs path"), "{e}");
    let e = err(&MINIMAL.replace("device=/dev/sda3\n", ""));
    assert!(e.contains("[slot.rootfs.1] device: required"), "{e}");
}

#[test]
fn keyring_values() {
    let text = MINIMAL.replace("path=/k.pem", "path=/k.pem\ncheck-purpose=codesign-rauc");
    assert_eq!(
        parse(&text).unwrap().0.x509_keyring.unwrap().check_purpose,
        "codesign"
    );
    let e = err(&MINIMAL.replace("path=/k.pem", "path=/k.pem\ncheck-purpose=sslclient"));
    assert!(
        e.contains("[keyring] check-purpose (line 8)") && e.contains("sslclient"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("data-directory", "min-bundle-version=v1\ndata-directory"));
    assert!(e.contains("[system] min-bundle-version (line 4)"), "{e}");
    for v in [
        "1",
        "1.2",
        "1.2.3",
        "2024.04-rc1",
        "1.0.0-beta+exp.sha.5114f85",
    ] {
        assert!(is_rauc_version(v), "{v}");
    }
    for v in ["", "1.", "1.2.3.4", "a.b", "-rc1", "1.-2"] {
        assert!(!is_rauc_version(v), "{v}");
    }
}

#[test]
fn slots_follow_flipslots_rules() {
    let e = err(&MINIMAL.replace("[slot.rootfs.1]", "[slot.rootfs.2]"));
    assert!(
        e.contains("[slot.rootfs.*]") && e.contains("found 0, 2"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("bootname=B", "bootname=A"));
    assert!(
        e.contains("[slot.rootfs.1] bootname (line 15)") && e.contains("used by another slot"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("/dev/sda3", "/dev/sda2"));
    assert!(e.contains("[slot.rootfs.1] device (line 14)"), "{e}");
    let e = err(&MINIMAL.replace("bootname=B", "bootname=B C"));
    assert!(e.contains("[slot.rootfs.1] bootname"), "{e}");
    let text = MINIMAL.to_string() + "\n[slot.appfs.0]\ndevice=/dev/sda9\nbootname=X\n";
    let e = err(&text);
    assert!(
        e.contains("[slot.appfs.*]") && e.contains("at least 2"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("[slot.rootfs.1]", "[slot.rootfs.01]"));
    assert!(
        e.contains("[slot.rootfs.01] (line 13): slot index \"01\""),
        "{e}"
    );
    let e = err(&MINIMAL.replace("[slot.rootfs.1]", "[slot.rootfs.b]"));
    assert!(e.contains("slot index \"b\""), "{e}");
    let e = err(&MINIMAL.replace("[slot.rootfs.1]", "[slot.rootfs]"));
    assert!(
        e.contains("[slot.rootfs] (line 13): slot groups are named"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("bootname=B", "bootname=B\ntype=squashfs"));
    assert!(
        e.contains("[slot.rootfs.1] type (line 16): unknown slot type \"squashfs\""),
        "{e}"
    );
    let e = err(&MINIMAL.replace("bootname=B", "bootname=B\ntype=boot-emmc\nsize-limit=4M"));
    assert!(
        e.contains("[slot.rootfs.1] type") && e.contains("[slot.rootfs.1] size-limit"),
        "{e}"
    );
    let text = MINIMAL.replace("bootname=B", "bootname=B\nignore-checksum=false");
    assert!(!parse(&text).unwrap().0.slots[1].install_same);
}

#[test]
fn repeated_groups_and_keys_are_refused() {
    // A second device= for rootfs.0: RAUC (GLib) would silently take the last one.
    let text = MINIMAL.replace("bootname=A", "bootname=A\ndevice=/dev/sda9");
    let e = err(&text);
    assert_eq!(
        e,
        "cannot parse RAUC config /etc/rauc/system.conf: line 12: [slot.rootfs.0] device \
         is set again (first on line 10)"
    );
    let text = MINIMAL.to_string() + "\n[slot.rootfs.1]\ndevice=/dev/sda4\n";
    let e = err(&text);
    assert_eq!(
        e,
        "cannot parse RAUC config /etc/rauc/system.conf: line 17: group [slot.rootfs.1] \
         appears again (first on line 13)"
    );
}

#[test]
fn discover_takes_rauc_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    assert_eq!(discover(&root), None);
    std::fs::create_dir_all(dir.path().join("usr/lib/rauc")).unwrap();
    std::fs::write(dir.path().join("usr/lib/rauc/system.conf"), MINIMAL).unwrap();
    assert_eq!(
        discover(&root),
        Some(PathBuf::from("/usr/lib/rauc/system.conf"))
    );
    std::fs::create_dir_all(dir.path().join("etc/rauc/system.conf")).unwrap();
    assert_eq!(
        discover(&root),
        Some(PathBuf::from("/usr/lib/rauc/system.conf"))
    );
    std::fs::create_dir_all(dir.path().join("run/rauc")).unwrap();
    std::fs::write(dir.path().join("run/rauc/system.conf"), MINIMAL).unwrap();
    assert_eq!(
        discover(&root),
        Some(PathBuf::from("/run/rauc/system.conf"))
    );
}
