//! The disk layout file: parsing the TOML into a checked [`Layout`] whose partitions have
//! fixed numbers, starts and sizes. Pure: no I/O. The keys are documented in [`crate::disk`].
//!
//! One file format serves two uses ([`LayoutKind`]): a disk image (`flipslot-image disk`),
//! where every size is fixed, and provisioning (`flipslot-image provision`), where the last
//! partition may take the rest of the machine's disk (`size = "rest"`) and the machine
//! places the partitions itself (no `start`).

use std::collections::HashSet;

use serde::Deserialize;

use super::DiskError;
use flipslot_format::manifest::valid_class;

/// Bytes per sector of the disks built here.
pub const SECTOR: u64 = 512;
/// Alignment of partition starts and sizes (the ext4 block size).
pub const ALIGN: u64 = 4096;
/// Where partitions start by default, and the earliest start allowed: 1 MiB.
pub const MIB: u64 = 1 << 20;
/// Most partitions in a layout (the GPT entry array holds 128).
pub const MAX_PARTITIONS: usize = 128;
/// Longest partition label, in characters (GPT names hold 36 UTF-16 units).
pub const MAX_LABEL: usize = 36;
/// Longest bootname.
pub const MAX_BOOTNAME: usize = 32;
/// Smallest ESP.
pub const MIN_ESP: u64 = 2 * MIB;

/// The bootloader a layout installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// GRUB for x86_64 UEFI (`EFI/BOOT/BOOTX64.EFI` on the ESP) with a RAUC-style grubenv.
    GrubEfi,
}

/// What a layout is read for; the rules differ in two places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// A disk image file (`flipslot-image disk`): every size is fixed; `start` is allowed.
    DiskImage,
    /// A provisioning description (`flipslot-image provision`): the last partition may have
    /// `size = "rest"` (the rest of the machine's disk); `start` is refused, as
    /// `flipslot provision` places the partitions.
    Provisioning,
}

/// The size value that asks for the rest of the disk.
pub const REST: &str = "rest";

/// How an ext4 data partition is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFs {
    /// An ext4 filesystem, empty or filled from `--data-dir`.
    Ext4 {
        /// Whether the contents come from the directory given as `--data-dir`.
        from_dir: bool,
    },
    /// No filesystem: the partition is left zeroed.
    None,
}

/// What a partition is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The EFI system partition: FAT with GRUB, its `grub.cfg` and `grubenv`.
    Esp,
    /// An A/B slot.
    Slot {
        /// Slot class, matched against the class of a bundle image.
        class: String,
        /// Bootname: the slot's name in `ORDER` and its `<bn>_OK`/`<bn>_TRY` variables.
        bootname: String,
    },
    /// A partition outside the A/B scheme (persistent data).
    Data {
        /// Its filesystem.
        fs: DataFs,
    },
}

impl Role {
    /// `esp`, `slot` or `data`, as in the layout file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Esp => "esp",
            Role::Slot { .. } => "slot",
            Role::Data { .. } => "data",
        }
    }
}

/// One partition, placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// GPT partition number (1-based, layout order).
    pub number: u32,
    /// GPT partition name (PARTLABEL).
    pub label: String,
    /// What it holds.
    pub role: Role,
    /// Start, in bytes from the start of the disk.
    pub start: u64,
    /// Size in bytes; 0 when [`Partition::rest`] is set.
    pub size: u64,
    /// Whether the partition takes the rest of the disk (`size = "rest"`; the last
    /// partition of a [`LayoutKind::Provisioning`] layout only).
    pub rest: bool,
    /// For an ext4 data partition: where (relative to its root) to write the agent's
    /// status file recording the factory image in the first slot, e.g.
    /// `flipslot/status.json` when the device mounts it at `/data` and its
    /// `data-directory` is `/data/flipslot`.
    pub status_file: Option<String>,
}

impl Partition {
    /// First byte after the partition.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// The slot's bootname, if it is a slot.
    pub fn bootname(&self) -> Option<&str> {
        match &self.role {
            Role::Slot { bootname, .. } => Some(bootname),
            _ => None,
        }
    }
}

/// A checked disk layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the layout came from (a path), for messages.
    pub origin: String,
    /// The bootloader.
    pub bootloader: Bootloader,
    /// Absolute path of the kernel inside each slot's filesystem.
    pub kernel: String,
    /// Absolute path of the initrd inside each slot's filesystem, if any.
    pub initrd: Option<String>,
    /// Extra kernel command-line words.
    pub cmdline: Vec<String>,
    /// Boot attempts per activation (1: RAUC's TRY flag).
    pub boot_attempts: u32,
    /// The partitions, in partition-number order.
    pub partitions: Vec<Partition>,
}

/// A size: bytes, or a string with a binary suffix.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLayout {
    bootloader: Bootloader,
    kernel: String,
    initrd: Option<String>,
    #[serde(default)]
    cmdline: String,
    boot_attempts: Option<i64>,
    #[serde(default)]
    partition: Vec<RawPartition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPartition {
    label: String,
    role: String,
    size: RawSize,
    start: Option<RawSize>,
    class: Option<String>,
    bootname: Option<String>,
    fs: Option<String>,
    from: Option<String>,
    status_file: Option<String>,
}

pub use flipslot_format::units::parse_size;

fn size_value(raw: &RawSize) -> Result<u64, String> {
    match raw {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(s) => parse_size(s),
    }
}

/// Whether `s` is a valid partition label: 1 to 36 of `A-Z a-z 0-9 . _ -`.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `s` is a valid bootname: 1 to 32 of `A-Z a-z 0-9 _` (it prefixes GRUB variable
/// names).
pub fn valid_bootname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_BOOTNAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `s` is a path GRUB can be given unquoted: absolute, `A-Z a-z 0-9 / . _ + -` only,
/// no empty, `.` or `..` component.
pub fn valid_boot_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 1024
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b))
        && s[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Kernel arguments flipslot sets itself.
const RESERVED_ARGS: [&str; 3] = ["root", "flipslot.slot", "rauc.slot"];

/// Splits and checks the extra kernel command line: printable ASCII words without quotes
/// (each word is single-quoted in `grub.cfg`), none of the arguments flipslot sets.
fn parse_cmdline(cmdline: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        if let Some(c) = word
            .chars()
            .find(|c| !c.is_ascii_graphic() || *c == '\'' || *c == '"' || *c == '\\')
        {
            return Err(format!(
                "cmdline word {word:?} contains {c:?}: quotes, backslashes and non-ASCII \
                 characters are not supported"
            ));
        }
        let key = word.split('=').next().unwrap_or(word);
        if RESERVED_ARGS.contains(&key) {
            return Err(format!(
                "cmdline sets {key}=, which flipslot sets itself (root=PARTLABEL=<slot label>, \
                 flipslot.slot=<bootname>, rauc.slot=<bootname>)"
            ));
        }
        words.push(word.to_string());
    }
    Ok(words)
}

impl Layout {
    /// Parses and checks a layout file for a disk image ([`LayoutKind::DiskImage`]).
    /// `origin` (a path) names the layout in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Layout, DiskError> {
        Layout::parse_for(text, origin, LayoutKind::DiskImage)
    }

    /// Parses and checks a layout file for `kind`. `origin` (a path) names the layout in
    /// errors.
    pub fn parse_for(text: &str, origin: &str, kind: LayoutKind) -> Result<Layout, DiskError> {
        let err = |reason: String| DiskError::Layout {
            origin: origin.to_string(),
            reason,
        };
        let raw: RawLayout = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        Layout::check(raw, origin, kind).map_err(err)
    }

    fn check(raw: RawLayout, origin: &str, kind: LayoutKind) -> Result<Layout, String> {
        if !valid_boot_path(&raw.kernel) {
            return Err(format!(
                "kernel {:?} must be an absolute path of A-Z a-z 0-9 / . _ + - characters",
                raw.kernel
            ));
        }
        if let Some(initrd) = &raw.initrd {
            if !valid_boot_path(initrd) {
                return Err(format!(
                    "initrd {initrd:?} must be an absolute path of A-Z a-z 0-9 / . _ + - characters"
                ));
            }
        }
        let cmdline = parse_cmdline(&raw.cmdline)?;
        let boot_attempts = match raw.boot_attempts {
            None | Some(1) => 1,
            Some(n) => {
                return Err(format!(
                    "boot-attempts = {n} is not supported: with RAUC's GRUB variables a slot gets \
                     exactly one trial boot per activation (its TRY flag), so the only value is 1"
                ))
            }
        };
        if raw.partition.is_empty() {
            return Err("no [[partition]]: a disk needs an esp and at least one slot".into());
        }
        if raw.partition.len() > MAX_PARTITIONS {
            return Err(format!(
                "{} partitions: a GPT holds at most {MAX_PARTITIONS}",
                raw.partition.len()
            ));
        }
        let mut partitions = Vec::new();
        let mut next_start = MIB;
        for (i, p) in raw.partition.iter().enumerate() {
            let number = u32::try_from(i + 1).map_err(|_| "too many partitions".to_string())?;
            let rest = match kind {
                LayoutKind::DiskImage => RestRule::Never,
                LayoutKind::Provisioning if i + 1 == raw.partition.len() => RestRule::Allowed,
                LayoutKind::Provisioning => RestRule::NotHere,
            };
            let part = check_partition(p, number, next_start, rest, kind)
                .map_err(|e| format!("partition {number} ({:?}): {e}", p.label))?;
            next_start = part.end().div_ceil(MIB).saturating_mul(MIB);
            partitions.push(part);
        }
        check_set(&partitions)?;
        log::debug!("layout {origin}: {} partitions", partitions.len());
        Ok(Layout {
            origin: origin.to_string(),
            bootloader: raw.bootloader,
            kernel: raw.kernel,
            initrd: raw.initrd,
            cmdline,
            boot_attempts,
            partitions,
        })
    }

    /// The ESP (a checked layout has exactly one).
    pub fn esp(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == Role::Esp)
    }

    /// The slots, in layout order.
    pub fn slots(&self) -> impl Iterator<Item = &Partition> {
        self.partitions
            .iter()
            .filter(|p| matches!(p.role, Role::Slot { .. }))
    }

    /// The slot that receives the bundle's image and is marked good: the first slot.
    pub fn initial_slot(&self) -> Option<&Partition> {
        self.slots().next()
    }

    /// The bootnames in layout order: the initial `ORDER`.
    pub fn bootnames(&self) -> Vec<&str> {
        self.slots().filter_map(Partition::bootname).collect()
    }

    /// Size of the disk: past the last partition, room for the backup GPT (33 sectors),
    /// rounded up to a MiB.
    pub fn disk_size(&self) -> u64 {
        let end = self
            .partitions
            .iter()
            .map(Partition::end)
            .max()
            .unwrap_or(MIB);
        (end + 33 * SECTOR).div_ceil(MIB) * MIB
    }
}

mod check;

use check::{check_partition, check_set, RestRule};

#[cfg(test)]
pub(crate) mod tests;
