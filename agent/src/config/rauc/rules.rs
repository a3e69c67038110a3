//! Which RAUC `system.conf` keys flipslot maps, ignores with a notice, or refuses: one
//! table, [`RULES`], plus the group and slot-type names it applies to.
//!
//! The table is written to be read (and turned into documentation) by eye: one row per
//! group and key, the reason next to it.

/// What flipslot does with one RAUC key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Read into the config.
    Mapped,
    /// Has no bearing on flipslot: a [`Notice`](super::Notice) says so.
    Ignored(&'static str),
    /// Ignoring it would change what is accepted, written or activated: an error.
    Refused(&'static str),
    /// A boolean accepted at RAUC's default (which is what flipslot does), refused otherwise.
    DefaultOnly(bool, &'static str),
}

/// One row of [`RULES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The group as RAUC documents it: `system`, `slot.<class>.<idx>`, `log.<logger>`, …
    pub group: &'static str,
    /// The key.
    pub key: &'static str,
    /// What flipslot does with it.
    pub handling: Handling,
}

const fn rule(group: &'static str, key: &'static str, handling: Handling) -> Rule {
    Rule {
        group,
        key,
        handling,
    }
}

use Handling::{DefaultOnly, Ignored, Mapped, Refused};

pub(super) const SYS: &str = "system";
pub(super) const KEYRING: &str = "keyring";
pub(super) const HANDLERS: &str = "handlers";
pub(super) const SLOT: &str = "slot.<class>.<idx>";
const ARTIFACTS: &str = "artifacts.<repo>";
const LOG: &str = "log.<logger>";

const NO_BAREBOX: &str = "bootloader=barebox is not supported yet by flipslot";
const NO_EFI: &str = "bootloader=efi is not supported yet by flipslot";
const NO_VARIANTS: &str = "image variants are not supported: flipslot would install the \
                           bundle's default image instead of this board's";
const NO_HANDLERS: &str = "flipslot does not run RAUC handlers";
const NO_BOOT_SLOTS: &str = "boot-* slot types are not supported by flipslot";
const NO_CASYNC: &str = "flipslot does not install casync images";
const NO_TLS: &str = "flipslot does not use it for bundle URLs; pass install --ca-file, \
                      --client-cert and --client-key instead";
const NO_POLLING: &str = "flipslot's update polling is only configured in system.toml [update]";
const NO_CRYPT: &str = "flipslot cannot decrypt crypt bundles";
const NO_ARTIFACTS: &str = "artifact repositories are not supported by flipslot";
const NO_EVENT_LOG: &str = "flipslot does not write RAUC's event log; it logs to journald or \
                            stderr";

/// Every key of RAUC's `system.conf` and what flipslot does with it.
pub const RULES: &[Rule] = &[
    rule(SYS, "compatible", Mapped),
    rule(SYS, "bootloader", Mapped),
    rule(SYS, "grubenv", Mapped),
    rule(SYS, "data-directory", Mapped),
    rule(SYS, "bundle-formats", Mapped),
    rule(SYS, "min-bundle-version", Mapped),
    rule(SYS, "boot-attempts", Mapped),
    rule(SYS, "boot-attempts-primary", Mapped),
    rule(
        SYS,
        "mountprefix",
        Ignored("flipslot never mounts bundles or slots"),
    ),
    rule(
        SYS,
        "max-bundle-download-size",
        Ignored("flipslot never downloads a bundle into a temporary file"),
    ),
    rule(
        SYS,
        "max-bundle-signature-size",
        Ignored("flipslot applies its own limit to signature sizes"),
    ),
    rule(
        SYS,
        "statusfile",
        Ignored("flipslot keeps its own status file in data-directory and never reads RAUC's"),
    ),
    rule(
        SYS,
        "activate-installed",
        DefaultOnly(true, "flipslot always makes the installed slot primary"),
    ),
    rule(
        SYS,
        "prevent-late-fallback",
        DefaultOnly(
            false,
            "flipslot does not mark the other slots bad on mark-good",
        ),
    ),
    rule(
        SYS,
        "perform-pre-check",
        DefaultOnly(
            false,
            "flipslot does not check a whole bundle before installing",
        ),
    ),
    rule(SYS, "variant-name", Refused(NO_VARIANTS)),
    rule(SYS, "variant-file", Refused(NO_VARIANTS)),
    rule(SYS, "variant-dtb", DefaultOnly(false, NO_VARIANTS)),
    rule(SYS, "barebox-statename", Refused(NO_BAREBOX)),
    rule(SYS, "barebox-dtbpath", Refused(NO_BAREBOX)),
    rule(SYS, "efi-use-bootnext", Refused(NO_EFI)),
    rule(KEYRING, "path", Mapped),
    rule(KEYRING, "directory", Mapped),
    rule(KEYRING, "check-purpose", Mapped),
    rule(KEYRING, "allow-partial-chain", Mapped),
    rule(KEYRING, "allowed-signer-cns", Mapped),
    rule(KEYRING, "use-bundle-signing-time", Mapped),
    rule(
        KEYRING,
        "check-crl",
        DefaultOnly(
            false,
            "flipslot does not check certificate revocation lists",
        ),
    ),
    rule(HANDLERS, "bootloader-custom-backend", Mapped),
    rule(HANDLERS, "system-info", Refused(NO_HANDLERS)),
    rule(HANDLERS, "pre-install", Refused(NO_HANDLERS)),
    rule(HANDLERS, "post-install", Refused(NO_HANDLERS)),
    rule(SLOT, "device", Mapped),
    rule(SLOT, "type", Mapped),
    rule(SLOT, "bootname", Mapped),
    rule(SLOT, "readonly", Mapped),
    rule(SLOT, "install-same", Mapped),
    rule(SLOT, "force-install-same", Mapped),
    rule(SLOT, "ignore-checksum", Mapped),
    rule(
        SLOT,
        "parent",
        Refused("child slots (parent=) are not supported yet by flipslot"),
    ),
    rule(SLOT, "description", Ignored("informative only")),
    rule(
        SLOT,
        "allow-mounted",
        DefaultOnly(false, "flipslot never writes a mounted slot"),
    ),
    rule(
        SLOT,
        "resize",
        DefaultOnly(false, "flipslot does not resize file systems after writing"),
    ),
    rule(
        SLOT,
        "extra-mkfs-opts",
        Ignored("flipslot writes images as they are and never creates file systems"),
    ),
    rule(
        SLOT,
        "extra-mount-opts",
        Ignored("flipslot never mounts slots"),
    ),
    rule(SLOT, "region-start", Refused(NO_BOOT_SLOTS)),
    rule(SLOT, "region-size", Refused(NO_BOOT_SLOTS)),
    rule(SLOT, "size-limit", Refused(NO_BOOT_SLOTS)),
    rule(SLOT, "efi-loader", Refused(NO_EFI)),
    rule(SLOT, "efi-cmdline", Refused(NO_EFI)),
    rule("casync", "storepath", Ignored(NO_CASYNC)),
    rule("casync", "tmppath", Ignored(NO_CASYNC)),
    rule("casync", "install-args", Ignored(NO_CASYNC)),
    rule("casync", "use-desync", Ignored(NO_CASYNC)),
    rule(
        "streaming",
        "sandbox-user",
        Ignored("flipslot runs no separate streaming helper"),
    ),
    rule("streaming", "tls-cert", Ignored(NO_TLS)),
    rule("streaming", "tls-key", Ignored(NO_TLS)),
    rule("streaming", "tls-ca", Ignored(NO_TLS)),
    rule(
        "streaming",
        "send-headers",
        Ignored("flipslot does not send RAUC's informational headers"),
    ),
    rule("polling", "url", Refused(NO_POLLING)),
    rule("polling", "interval-sec", Refused(NO_POLLING)),
    rule("polling", "max-interval-sec", Refused(NO_POLLING)),
    rule("polling", "inhibit-files", Refused(NO_POLLING)),
    rule("polling", "candidate-criteria", Refused(NO_POLLING)),
    rule("polling", "install-criteria", Refused(NO_POLLING)),
    rule("polling", "reboot-criteria", Refused(NO_POLLING)),
    rule("polling", "reboot-cmd", Refused(NO_POLLING)),
    rule("encryption", "key", Refused(NO_CRYPT)),
    rule("encryption", "cert", Refused(NO_CRYPT)),
    rule(
        "autoinstall",
        "path",
        Refused("flipslot does not install bundles on its own at start-up"),
    ),
    rule(ARTIFACTS, "path", Refused(NO_ARTIFACTS)),
    rule(ARTIFACTS, "type", Refused(NO_ARTIFACTS)),
    rule(ARTIFACTS, "description", Refused(NO_ARTIFACTS)),
    rule(ARTIFACTS, "parent-class", Refused(NO_ARTIFACTS)),
    rule(LOG, "filename", Ignored(NO_EVENT_LOG)),
    rule(LOG, "events", Ignored(NO_EVENT_LOG)),
    rule(LOG, "format", Ignored(NO_EVENT_LOG)),
    rule(LOG, "max-size", Ignored(NO_EVENT_LOG)),
    rule(LOG, "max-files", Ignored(NO_EVENT_LOG)),
];

/// Slot types flipslot writes (as raw images onto a block device).
pub(super) const SLOT_TYPES: [&str; 3] = ["raw", "ext4", "vfat"];
/// Slot types RAUC knows that flipslot cannot write.
pub(super) const UNSUPPORTED_SLOT_TYPES: [&str; 9] = [
    "nand",
    "nor",
    "ubifs",
    "ubivol",
    "jffs2",
    "boot-emmc",
    "boot-mbr-switch",
    "boot-gpt-switch",
    "boot-raw-fallback",
];
/// The groups without a name part, as in [`RULES`].
const SIMPLE_GROUPS: [&str; 8] = [
    SYS,
    KEYRING,
    HANDLERS,
    "casync",
    "streaming",
    "polling",
    "encryption",
    "autoinstall",
];

/// The pattern in [`RULES`] that group `name` falls under, or why it is not a group RAUC
/// accepts.
pub(super) fn group_pattern(name: &str) -> Result<&'static str, String> {
    if let Some(g) = SIMPLE_GROUPS.iter().find(|g| **g == name) {
        return Ok(*g);
    }
    let parts: Vec<&str> = name.split('.').collect();
    match parts[0] {
        "slot" if parts.len() == 3 => match slot_index(parts[2]) {
            Some(_) => Ok(SLOT),
            None => Err(format!("slot index {:?} is not a decimal number", parts[2])),
        },
        "slot" => Err("slot groups are named [slot.<class>.<index>]".into()),
        "artifacts" if parts.len() == 2 => Ok(ARTIFACTS),
        "artifacts" => Err("artifact groups are named [artifacts.<repo>]".into()),
        "log" if parts.len() > 1 => Ok(LOG),
        _ => Err("unknown group".into()),
    }
}

/// A slot index written as RAUC's slot names use it: decimal, no sign, no leading zero.
pub(super) fn slot_index(s: &str) -> Option<usize> {
    let canonical = s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_table_is_consistent() {
        for (i, a) in RULES.iter().enumerate() {
            assert!(
                SIMPLE_GROUPS.contains(&a.group) || [SLOT, ARTIFACTS, LOG].contains(&a.group),
                "{a:?}"
            );
            for b in &RULES[i + 1..] {
                assert!((a.group, a.key) != (b.group, b.key), "duplicate {a:?}");
            }
        }
        for g in SIMPLE_GROUPS {
            assert!(RULES.iter().any(|r| r.group == g), "{g}");
        }
    }
}
