//! RAUC's `system.conf`, read as a flipslot [`SystemConfig`].
//!
//! [`parse_system_conf`] is pure: it takes the text and the file's absolute path (RAUC
//! resolves relative paths in the file against the file's directory, and so does this
//! module) and returns the config plus [`Notice`]s. [`SystemConfig::load_in_root`] calls
//! it for a file named `*.conf` with the file's path on the configured system (under
//! `--root` that differs from where it is read), so relative paths come out as RAUC sees
//! them on the device; [`discover`] finds the file where RAUC would look.
//!
//! # Nothing is silently ignored
//!
//! Every group and key RAUC knows has one row in [`RULES`], which says what flipslot
//! does with it ([`Handling`]):
//!
//! - **mapped** onto the config (`compatible`, `bootloader`, `[keyring]`, slots, …);
//! - **ignored with a notice** when it cannot matter to flipslot (`mountprefix`: flipslot
//!   never mounts bundles or slots; `[log.*]`; `[casync]`; transport settings);
//! - **refused** when ignoring it would change which bundles are accepted, what is
//!   written where, or when slots are activated (`[handlers] post-install`, `[polling]`,
//!   `variant-name`, `parent`, …);
//! - **refused unless at RAUC's default** for switches whose default is what flipslot
//!   does anyway (`activate-installed=true`, `check-crl=false`, `resize=false`, …).
//!
//! Keys RAUC does not know are refused as RAUC refuses them. All refusals of one file are
//! reported together ([`ConfigError::RaucUnsupported`]), each as `[group] key (line N)`
//! with a reason. Some rows also depend on another value: `grubenv` only with
//! `bootloader=grub`, `boot-attempts*` only with `uboot` (as in RAUC), the custom
//! backend only with `custom`; unsupported bootloaders and slot types, and slots without
//! a `bootname`, are refused the same way.
//!
//! # Defaults
//!
//! RAUC's own: `grubenv=/boot/grub/grubenv` with GRUB, `boot-attempts*` 3 (0 counts as
//! unset), `bundle-formats` all of plain, verity and crypt (flipslot installs plain and
//! verity), `check-purpose=smimesign`, slot `type=raw`, `readonly=false`,
//! `install-same=true`. For what RAUC has no key for: no ed25519 keyring, one signature,
//! `fw_env_config` [`paths::FW_ENV_CONFIG`], default `[health]`, no update daemon.
//! `data-directory` is optional in RAUC but required here (flipslot's status file and
//! install lock live there).

use std::path::{Path, PathBuf};

use flipslot_rauc::keyfile::{Group, KeyFile, KeyFileError};

use crate::config::health::HealthConfig;
use crate::config::model::{
    validate_slots, validate_x509, BootloaderKind, ConfigError, ConfigFormat, RaucBundlePolicy,
    SlotDecl, SystemConfig, X509Keyring, DEFAULT_BOOT_ATTEMPTS,
};
use crate::host::paths::{self, Root};

mod rules;

pub use crate::config::model::{Finding, Notice};

use rules::Handling::{DefaultOnly, Ignored, Mapped, Refused};
use rules::UNSUPPORTED_SLOT_TYPES;
use rules::{group_pattern, slot_index, HANDLERS, KEYRING, SLOT, SLOT_TYPES, SYS};
pub use rules::{Handling, Rule, RULES};

/// What RAUC uses when `grubenv` is unset.
pub const DEFAULT_GRUBENV: &str = "/boot/grub/grubenv";

/// The first of RAUC's `system.conf` locations ([`paths::RAUC_SYSTEM_CONFS`]) that is a
/// file under `root`, as a host path (resolve it under `root` to read it).
pub fn discover(root: &Root) -> Option<PathBuf> {
    paths::RAUC_SYSTEM_CONFS
        .iter()
        .map(Path::new)
        .find(|p| root.resolve(p).is_file())
        .map(Path::to_path_buf)
}

/// Reads values of one file: resolves paths and names keys in errors.
struct Reader<'a> {
    origin: &'a Path,
}

impl Reader<'_> {
    fn keyfile_err(&self, error: KeyFileError) -> ConfigError {
        ConfigError::KeyFile {
            path: self.origin.to_path_buf(),
            error,
        }
    }

    fn invalid(&self, key: String, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_path_buf(),
            key,
            reason: reason.into(),
        }
    }

    /// `[group] key (line N)`, or `[group] key` when the key is absent.
    fn key_name(g: &Group, key: &str) -> String {
        match g.entry(key) {
            Some(e) => format!("[{}] {key} (line {})", g.name, e.line),
            None => format!("[{}] {key}", g.name),
        }
    }

    /// A string value; an empty one is an error, as in RAUC.
    fn string(&self, g: &Group, key: &str) -> Result<Option<String>, ConfigError> {
        let v = g.string(key).map_err(|e| self.keyfile_err(e))?;
        match v {
            Some(s) if s.is_empty() => Err(self.invalid(Self::key_name(g, key), "empty value")),
            v => Ok(v),
        }
    }

    fn required(&self, g: Option<&Group>, group: &str, key: &str) -> Result<String, ConfigError> {
        let v = match g {
            Some(g) => self.string(g, key)?,
            None => None,
        };
        v.ok_or_else(|| self.invalid(format!("[{group}] {key}"), "required key is missing"))
    }

    fn bool(&self, g: &Group, key: &str) -> Result<Option<bool>, ConfigError> {
        g.bool(key).map_err(|e| self.keyfile_err(e))
    }

    fn int(&self, g: &Group, key: &str) -> Result<Option<i64>, ConfigError> {
        g.int(key).map_err(|e| self.keyfile_err(e))
    }

    /// A path value resolved as RAUC does: a relative one against the file's directory.
    fn path(&self, g: &Group, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(v) = self.string(g, key)? else {
            return Ok(None);
        };
        let p = Path::new(v.trim_end());
        let p = match self.origin.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        if !p.is_absolute() {
            return Err(self.invalid(
                Self::key_name(g, key),
                format!(
                    "{} is relative and the file's own directory is not known",
                    p.display()
                ),
            ));
        }
        Ok(Some(p))
    }
}

/// Parses and checks a RAUC `system.conf`; `origin` is the file's absolute path (kept as
/// [`SystemConfig::path`], used in messages and to resolve relative paths).
pub fn parse_system_conf(
    text: &str,
    origin: &Path,
) -> Result<(SystemConfig, Vec<Notice>), ConfigError> {
    let r = Reader { origin };
    // RAUC (GLib) merges a repeated group and keeps the last of a repeated key; a device
    // config that says a thing twice is refused instead, naming both lines.
    let kf = KeyFile::parse_unique(text).map_err(|e| r.keyfile_err(e))?;
    let mut notices = Vec::new();
    let problems = classify(&r, &kf, &mut notices)?;
    if !problems.is_empty() {
        return Err(ConfigError::RaucUnsupported {
            path: origin.to_path_buf(),
            problems,
        });
    }

    let system = kf.group(SYS);
    let compatible = r.required(system, SYS, "compatible")?;
    let bootloader = match r.required(system, SYS, "bootloader")?.as_str() {
        "grub" => BootloaderKind::Grub,
        "uboot" => BootloaderKind::Uboot,
        "custom" => BootloaderKind::Custom,
        other => {
            // classify() has refused it already; kept as a second line of defence.
            return Err(r.invalid(
                "[system] bootloader".into(),
                format!("{other:?} is not supported by flipslot"),
            ));
        }
    };
    let mut grubenv = None;
    let mut boot_attempts = DEFAULT_BOOT_ATTEMPTS;
    let mut boot_attempts_primary = DEFAULT_BOOT_ATTEMPTS;
    let mut rauc_bundles = RaucBundlePolicy::default();
    let data_dir = match system {
        Some(g) => r.path(g, "data-directory")?,
        None => None,
    };
    let data_dir = data_dir.ok_or_else(|| {
        r.invalid(
            "[system] data-directory".into(),
            "flipslot keeps its status file and install lock there: add \
             data-directory=<dir> to [system], on a persistent partition that updates do \
             not overwrite",
        )
    })?;
    if let Some(g) = system {
        if bootloader == BootloaderKind::Grub {
            grubenv = Some(
                r.path(g, "grubenv")?
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_GRUBENV)),
            );
        }
        for (key, slot) in [
            ("boot-attempts", &mut boot_attempts),
            ("boot-attempts-primary", &mut boot_attempts_primary),
        ] {
            match r.int(g, key)? {
                None | Some(0) => {}
                Some(v @ 1..=255) => *slot = v as u32,
                Some(v) => {
                    return Err(r.invalid(
                        Reader::key_name(g, key),
                        format!("{v} is not between 0 (unset) and 255"),
                    ))
                }
            }
        }
        if let Some(v) = r.string(g, "bundle-formats")? {
            let f = bundle_formats(&v)
                .map_err(|e| r.invalid(Reader::key_name(g, "bundle-formats"), e))?;
            if !f.plain && !f.verity {
                return Err(r.invalid(
                    Reader::key_name(g, "bundle-formats"),
                    "only crypt bundles would be accepted, and flipslot cannot install them",
                ));
            }
            if f.crypt_named {
                notices.push(finding(
                    g,
                    "bundle-formats",
                    "crypt bundles are still refused: flipslot cannot decrypt them",
                ));
            }
            rauc_bundles.plain = f.plain;
            rauc_bundles.verity = f.verity;
        }
        if let Some(v) = r.string(g, "min-bundle-version")? {
            if !is_rauc_version(&v) {
                return Err(r.invalid(
                    Reader::key_name(g, "min-bundle-version"),
                    format!("{v:?} is not Major[.Minor[.Patch]][-pre_release][+build]"),
                ));
            }
            rauc_bundles.min_bundle_version = Some(v);
        }
    }
    let custom_backend = match (bootloader, kf.group(HANDLERS)) {
        (BootloaderKind::Custom, Some(g)) => r.path(g, "bootloader-custom-backend")?,
        _ => None,
    };
    if bootloader == BootloaderKind::Custom && custom_backend.is_none() {
        return Err(r.invalid(
            "[handlers] bootloader-custom-backend".into(),
            "required with bootloader=custom",
        ));
    }
    let x509_keyring = keyring(&r, kf.group(KEYRING))?;

    let mut decls = Vec::new();
    for g in kf.groups().iter().filter(|g| g.name.starts_with("slot.")) {
        decls.push(slot_decl(&r, g)?);
    }
    let slots = validate_slots(
        decls,
        |class| format!("[slot.{class}.*]"),
        "add [slot.<class>.<index>] groups",
    )
    .map_err(|(key, reason)| r.invalid(key, reason))?;

    let cfg = SystemConfig {
        path: origin.to_path_buf(),
        compatible,
        bootloader,
        grubenv,
        fw_env_config: PathBuf::from(paths::FW_ENV_CONFIG),
        custom_backend,
        boot_attempts,
        boot_attempts_primary,
        keyring: None,
        x509_keyring: Some(x509_keyring),
        rauc_bundles,
        format: ConfigFormat::RaucSystemConf,
        min_signatures: 1,
        data_dir,
        slots,
        health: HealthConfig::default(),
        update: None,
        notices: notices.iter().map(ToString::to_string).collect(),
    };
    Ok((cfg, notices))
}

fn finding(g: &Group, key: &str, message: impl Into<String>) -> Finding {
    Finding {
        group: g.name.clone(),
        key: Some(key.to_string()),
        line: g.entry(key).map_or(g.line, |e| e.line),
        message: message.into(),
    }
}

/// Applies [`RULES`] and the rules that depend on other values to every group and key:
/// collects notices and returns every refusal.
fn classify(
    r: &Reader<'_>,
    kf: &KeyFile,
    notices: &mut Vec<Notice>,
) -> Result<Vec<Finding>, ConfigError> {
    let mut problems = Vec::new();
    let system = kf.group(SYS);
    let bootloader = match system {
        Some(g) => r.string(g, "bootloader")?,
        None => None,
    };
    for g in kf.groups() {
        let pattern = match group_pattern(&g.name) {
            Ok(p) => p,
            Err(why) => {
                problems.push(Finding {
                    group: g.name.clone(),
                    key: None,
                    line: g.line,
                    message: why,
                });
                continue;
            }
        };
        for e in g.entries() {
            let rule = RULES
                .iter()
                .find(|rule| rule.group == pattern && rule.key == e.key);
            match rule.map(|rule| rule.handling) {
                None => problems.push(finding(g, &e.key, "unknown key")),
                Some(Mapped) => {}
                Some(Ignored(why)) => notices.push(finding(g, &e.key, format!("ignored: {why}"))),
                Some(Refused(why)) => problems.push(finding(g, &e.key, why)),
                Some(DefaultOnly(default, why)) => {
                    if r.bool(g, &e.key)? != Some(default) {
                        problems.push(finding(
                            g,
                            &e.key,
                            format!("{why} (only {}={default} is accepted)", e.key),
                        ));
                    }
                }
            }
        }
        if pattern == SLOT {
            classify_slot(r, g, &mut problems)?;
        }
    }

    let bl = bootloader.as_deref();
    if let (Some(g), Some(b)) = (system, bl) {
        match b {
            "grub" | "uboot" | "custom" => {}
            "barebox" | "efi" | "noop" => problems.push(finding(
                g,
                "bootloader",
                format!("bootloader={b} is not supported yet by flipslot"),
            )),
            _ => problems.push(finding(
                g,
                "bootloader",
                format!("unknown bootloader {b:?} (RAUC knows barebox, custom, efi, grub, noop and uboot)"),
            )),
        }
    }
    if let Some(g) = system {
        if g.entry("grubenv").is_some() && bl != Some("grub") {
            problems.push(finding(g, "grubenv", "only valid with bootloader=grub"));
        }
        for key in ["boot-attempts", "boot-attempts-primary"] {
            // As in RAUC, 0 means unset and is allowed with any bootloader.
            if r.int(g, key)?.is_some_and(|v| v != 0) && bl != Some("uboot") {
                problems.push(finding(g, key, "only valid with bootloader=uboot"));
            }
        }
    }
    if let Some(g) = kf.group(HANDLERS) {
        if g.entry("bootloader-custom-backend").is_some() && bl != Some("custom") {
            problems.push(finding(
                g,
                "bootloader-custom-backend",
                "only valid with bootloader=custom",
            ));
        }
    }
    Ok(problems)
}

/// The refusals that depend on a slot's values: its type and a missing bootname.
fn classify_slot(
    r: &Reader<'_>,
    g: &Group,
    problems: &mut Vec<Finding>,
) -> Result<(), ConfigError> {
    if let Some(t) = r.string(g, "type")? {
        let t = t.trim_end();
        if UNSUPPORTED_SLOT_TYPES.contains(&t) {
            problems.push(finding(
                g,
                "type",
                format!(
                    "slot type {t} is not supported by flipslot, which writes {} slots",
                    SLOT_TYPES.join(", ")
                ),
            ));
        } else if !SLOT_TYPES.contains(&t) {
            problems.push(finding(g, "type", format!("unknown slot type {t:?}")));
        }
    }
    if g.entry("bootname").is_none() && g.entry("parent").is_none() {
        problems.push(Finding {
            group: g.name.clone(),
            key: None,
            line: g.line,
            message: "flipslot needs a bootname on every slot; slots without one are not \
                      supported yet"
                .into(),
        });
    }
    Ok(())
}

/// One `[slot.<class>.<idx>]` group, after [`classify`] accepted it.
fn slot_decl(r: &Reader<'_>, g: &Group) -> Result<SlotDecl, ConfigError> {
    let mut parts = g.name.splitn(3, '.').skip(1);
    let (Some(class), Some(Some(index))) = (parts.next(), parts.next().map(slot_index)) else {
        return Err(r.invalid(format!("[{}]", g.name), "not [slot.<class>.<index>]"));
    };
    let device = r
        .path(g, "device")?
        .ok_or_else(|| r.invalid(format!("[{}] device", g.name), "required key is missing"))?;
    let bootname = r
        .string(g, "bootname")?
        .ok_or_else(|| r.invalid(format!("[{}] bootname", g.name), "required by flipslot"))?;
    let mut install_same = true;
    // RAUC's precedence: install-same, then its deprecated names.
    for key in ["ignore-checksum", "force-install-same", "install-same"] {
        if let Some(v) = r.bool(g, key)? {
            install_same = v;
        }
    }
    Ok(SlotDecl {
        class: class.to_string(),
        index,
        device,
        bootname: bootname.trim_end().to_string(),
        readonly: r.bool(g, "readonly")?.unwrap_or(false),
        install_same,
        slot_type: r
            .string(g, "type")?
            .map_or_else(|| "raw".to_string(), |t| t.trim_end().to_string()),
        device_key: Reader::key_name(g, "device"),
        bootname_key: Reader::key_name(g, "bootname"),
    })
}

/// `[keyring]` as an [`X509Keyring`], checked by [`validate_x509`].
fn keyring(r: &Reader<'_>, g: Option<&Group>) -> Result<X509Keyring, ConfigError> {
    let Some(g) = g else {
        return Err(r.invalid(
            "[keyring]".into(),
            "flipslot verifies every bundle: add a [keyring] group with path= and/or directory=",
        ));
    };
    let mut k = X509Keyring {
        path: r.path(g, "path")?,
        directory: r.path(g, "directory")?,
        allow_partial_chain: r.bool(g, "allow-partial-chain")?.unwrap_or(false),
        allowed_signer_cns: g
            .list("allowed-signer-cns")
            .map_err(|e| r.keyfile_err(e))?
            .unwrap_or_default(),
        use_bundle_signing_time: r.bool(g, "use-bundle-signing-time")?.unwrap_or(false),
        ..X509Keyring::default()
    };
    k.check_purpose = match r.string(g, "check-purpose")? {
        // RAUC's own name for its code-signing purpose, which flipslot calls codesign.
        Some(p) if p == "codesign-rauc" => "codesign".into(),
        Some(p) => p,
        None => "smimesign".into(),
    };
    validate_x509(&k).map_err(|(key, reason)| {
        let name = match key.strip_prefix("x509-keyring.") {
            Some(k) => Reader::key_name(g, k),
            None => format!("[{}]", g.name),
        };
        r.invalid(name, reason)
    })?;
    Ok(k)
}

/// The formats `bundle-formats` leaves enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Formats {
    plain: bool,
    verity: bool,
    crypt: bool,
    /// `crypt` or `+crypt` was written.
    crypt_named: bool,
}

/// RAUC's `bundle-formats`: space-separated, either a set (`plain verity`) or changes to
/// the default set of all three (`-plain +verity`), not both.
fn bundle_formats(v: &str) -> Result<Formats, String> {
    let mut f = Formats {
        plain: true,
        verity: true,
        crypt: true,
        crypt_named: false,
    };
    let (mut set, mut modify) = (false, false);
    for token in v.split(' ').filter(|t| !t.is_empty()) {
        let (sign, name) = match token.as_bytes()[0] {
            b'+' | b'-' => (Some(&token[..1]), &token[1..]),
            _ => (None, token),
        };
        if sign.is_some() {
            modify = true;
        } else if !set {
            set = true;
            f.plain = false;
            f.verity = false;
            f.crypt = false;
        }
        let on = sign != Some("-");
        match name {
            "plain" => f.plain = on,
            "verity" => f.verity = on,
            "crypt" => {
                f.crypt = on;
                f.crypt_named |= on;
            }
            _ => {
                return Err(format!(
                    "invalid bundle format {name:?} (RAUC knows plain, verity and crypt)"
                ))
            }
        }
    }
    if set && modify {
        return Err(format!(
            "{v:?} mixes a set of formats with +/- changes to the default set"
        ));
    }
    if !(f.plain || f.verity || f.crypt) {
        return Err(format!("{v:?} leaves no bundle format enabled"));
    }
    Ok(f)
}

/// Whether `v` is a version RAUC accepts for `min-bundle-version`:
/// `Major[.Minor[.Patch]]`, then optionally `-pre_release` and `+build`.
fn is_rauc_version(v: &str) -> bool {
    let v = v.rsplit_once('+').map_or(v, |(core, _)| core);
    let v = v.rsplit_once('-').map_or(v, |(core, _)| core);
    let parts: Vec<&str> = v.splitn(3, '.').collect();
    parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
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
}
