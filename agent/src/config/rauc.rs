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
mod tests;
