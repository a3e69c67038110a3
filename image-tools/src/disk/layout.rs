//! The disk layout file: parsing the TOML into a checked [`Layout`] whose partitions have
//! fixed numbers, starts and sizes. Pure: no I/O. The keys are documented in [`crate::disk`].

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
    /// Size in bytes.
    pub size: u64,
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
    /// Parses and checks a layout file. `origin` (a path) names the layout in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Layout, DiskError> {
        let err = |reason: String| DiskError::Layout {
            origin: origin.to_string(),
            reason,
        };
        let raw: RawLayout = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        Layout::check(raw, origin).map_err(err)
    }

    fn check(raw: RawLayout, origin: &str) -> Result<Layout, String> {
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
            let part = check_partition(p, number, next_start)
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

fn check_partition(p: &RawPartition, number: u32, default_start: u64) -> Result<Partition, String> {
    if !valid_label(&p.label) {
        return Err(format!(
            "label {:?} must be 1 to {MAX_LABEL} characters of A-Z a-z 0-9 . _ -",
            p.label
        ));
    }
    let size = size_value(&p.size)?;
    if size == 0 || size % ALIGN != 0 {
        return Err(format!(
            "size {size} must be a positive multiple of {ALIGN} bytes"
        ));
    }
    let start = match &p.start {
        Some(s) => size_value(s)?,
        None => default_start,
    };
    if start < MIB || start % ALIGN != 0 {
        return Err(format!(
            "start {start} must be a multiple of {ALIGN} bytes and at least 1M (room for the GPT)"
        ));
    }
    start
        .checked_add(size)
        .filter(|end| *end <= u64::MAX / 2)
        .ok_or_else(|| "start + size is too large".to_string())?;
    let not_for = |key: &str, value: &Option<String>| match value {
        Some(_) => Err(format!("key {key:?} does not apply to role {:?}", p.role)),
        None => Ok(()),
    };
    let role = match p.role.as_str() {
        "esp" => {
            not_for("class", &p.class)?;
            not_for("bootname", &p.bootname)?;
            not_for("fs", &p.fs)?;
            not_for("from", &p.from)?;
            if size < MIN_ESP {
                return Err(format!(
                    "an esp needs at least {MIN_ESP} bytes (2M), not {size}"
                ));
            }
            Role::Esp
        }
        "slot" => {
            not_for("fs", &p.fs)?;
            not_for("from", &p.from)?;
            let class = p
                .class
                .clone()
                .ok_or("a slot needs a class (e.g. class = \"rootfs\")")?;
            if !valid_class(&class) {
                return Err(format!(
                    "class {class:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -"
                ));
            }
            let bootname = p
                .bootname
                .clone()
                .ok_or("a slot needs a bootname (e.g. bootname = \"A\")")?;
            if !valid_bootname(&bootname) {
                return Err(format!(
                    "bootname {bootname:?} must be 1 to {MAX_BOOTNAME} characters of A-Z a-z 0-9 _"
                ));
            }
            Role::Slot { class, bootname }
        }
        "data" => {
            not_for("class", &p.class)?;
            not_for("bootname", &p.bootname)?;
            let from_dir = match p.from.as_deref() {
                None => false,
                Some("dir") => true,
                Some(other) => {
                    return Err(format!(
                        "from = {other:?} is not supported (the only value is \"dir\": contents \
                         from --data-dir)"
                    ))
                }
            };
            match p.fs.as_deref().unwrap_or("ext4") {
                "ext4" => Role::Data {
                    fs: DataFs::Ext4 { from_dir },
                },
                "none" if !from_dir => Role::Data { fs: DataFs::None },
                "none" => return Err("from = \"dir\" needs fs = \"ext4\"".into()),
                other => {
                    return Err(format!(
                        "fs = {other:?} is not supported (expected \"ext4\" or \"none\")"
                    ))
                }
            }
        }
        other => {
            return Err(format!(
                "role {other:?} is not one of \"esp\", \"slot\", \"data\""
            ))
        }
    };
    if let Some(f) = &p.status_file {
        if !matches!(
            role,
            Role::Data {
                fs: DataFs::Ext4 { .. }
            }
        ) {
            return Err("status-file is only for ext4 data partitions".into());
        }
        if !valid_relative_path(f) {
            return Err(format!(
                "status-file {f:?} must be a relative path of A-Z a-z 0-9 . _ - components \
                 (no \"..\"), e.g. \"flipslot/status.json\""
            ));
        }
    }
    Ok(Partition {
        number,
        label: p.label.clone(),
        role,
        start,
        size,
        status_file: p.status_file.clone(),
    })
}

/// Whether `p` is a relative path whose components are 1 to 255 of `A-Z a-z 0-9 . _ -`
/// and not `.` or `..`.
fn valid_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && p.split('/').all(|c| {
            !c.is_empty()
                && c.len() <= 255
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

/// Checks the partitions together: unique labels and bootnames, one ESP, at least one slot,
/// one slot class, at most one `from = "dir"`, no overlaps.
fn check_set(parts: &[Partition]) -> Result<(), String> {
    let mut labels = HashSet::new();
    let mut bootnames = HashSet::new();
    for p in parts {
        if !labels.insert(p.label.as_str()) {
            return Err(format!(
                "label {:?} is used by more than one partition",
                p.label
            ));
        }
        if let Some(bn) = p.bootname() {
            if !bootnames.insert(bn) {
                return Err(format!("bootname {bn:?} is used by more than one slot"));
            }
        }
    }
    match parts.iter().filter(|p| p.role == Role::Esp).count() {
        0 => {
            return Err(
                "no partition has role = \"esp\": GRUB needs an EFI system partition".into(),
            )
        }
        1 => {}
        n => {
            return Err(format!(
                "{n} partitions have role = \"esp\"; exactly one is needed"
            ))
        }
    }
    let classes: Vec<&str> = parts
        .iter()
        .filter_map(|p| match &p.role {
            Role::Slot { class, .. } => Some(class.as_str()),
            _ => None,
        })
        .collect();
    let Some(first_class) = classes.first() else {
        return Err("no partition has role = \"slot\": a disk needs at least one slot".into());
    };
    if let Some(other) = classes.iter().find(|c| *c != first_class) {
        return Err(format!(
            "slots of more than one class ({first_class:?}, {other:?}) are not supported: every \
             slot is a boot slot"
        ));
    }
    let from_dir = parts
        .iter()
        .filter(|p| {
            p.role
                == (Role::Data {
                    fs: DataFs::Ext4 { from_dir: true },
                })
        })
        .count();
    if from_dir > 1 {
        return Err(format!(
            "{from_dir} partitions have from = \"dir\"; at most one can take --data-dir"
        ));
    }
    let mut by_start: Vec<&Partition> = parts.iter().collect();
    by_start.sort_by_key(|p| p.start);
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.start < a.end() {
            return Err(format!(
                "partitions {:?} (bytes {}..{}) and {:?} (bytes {}..{}) overlap",
                a.label,
                a.start,
                a.end(),
                b.label,
                b.start,
                b.end()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
bootloader = "grub-efi"
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 panic=-1"
boot-attempts = 1

[[partition]]
label = "esp"
role = "esp"
size = "32M"

[[partition]]
label = "rootfs-a"
role = "slot"
class = "rootfs"
bootname = "A"
size = "128M"

[[partition]]
label = "rootfs-b"
role = "slot"
class = "rootfs"
bootname = "B"
size = "128M"

[[partition]]
label = "data"
role = "data"
size = "64M"
fs = "ext4"
from = "dir"
"#;

    fn err_of(text: &str) -> String {
        Layout::parse(text, "test.toml").unwrap_err().to_string()
    }

    fn with_parts(parts: &str) -> String {
        format!("bootloader = \"grub-efi\"\nkernel = \"/boot/vmlinuz\"\n{parts}")
    }

    const ESP: &str = "[[partition]]\nlabel = \"esp\"\nrole = \"esp\"\nsize = \"8M\"\n";
    const SLOT_A: &str =
        "[[partition]]\nlabel = \"a\"\nrole = \"slot\"\nclass = \"rootfs\"\nbootname = \"A\"\nsize = \"8M\"\n";

    #[test]
    fn example_parses_and_is_placed() {
        let l = Layout::parse(EXAMPLE, "x.toml").unwrap();
        assert_eq!(l.bootloader, Bootloader::GrubEfi);
        assert_eq!(l.cmdline, ["console=ttyS0", "panic=-1"]);
        assert_eq!(l.initrd.as_deref(), Some("/boot/initrd.img"));
        let starts: Vec<(u32, u64, u64)> = l
            .partitions
            .iter()
            .map(|p| (p.number, p.start, p.size))
            .collect();
        assert_eq!(
            starts,
            [
                (1, MIB, 32 * MIB),
                (2, 33 * MIB, 128 * MIB),
                (3, 161 * MIB, 128 * MIB),
                (4, 289 * MIB, 64 * MIB)
            ]
        );
        assert_eq!(l.bootnames(), ["A", "B"]);
        assert_eq!(l.initial_slot().unwrap().label, "rootfs-a");
        assert_eq!(l.esp().unwrap().number, 1);
        assert_eq!(l.disk_size(), 354 * MIB);
        assert_eq!(
            l.partitions[3].role,
            Role::Data {
                fs: DataFs::Ext4 { from_dir: true }
            }
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        let l = Layout::parse(
            &with_parts(&format!("{ESP}{}", SLOT_A.replace("\"8M\"", "4194304"))),
            "t",
        )
        .unwrap();
        assert_eq!(l.partitions[1].size, 4 << 20);
    }

    #[test]
    fn explicit_starts_and_overlaps() {
        let text = with_parts(&format!(
            "{ESP}{}",
            SLOT_A.replace("size = \"8M\"", "size = \"8M\"\nstart = \"4M\"")
        ));
        let e = err_of(&text);
        assert!(e.contains("overlap"), "{e}");
        assert!(e.contains("\"esp\"") && e.contains("\"a\""), "{e}");
        assert!(e.starts_with("layout test.toml: "), "{e}");
        let ok = with_parts(&format!(
            "{}{ESP}",
            SLOT_A.replace("size = \"8M\"", "size = \"8M\"\nstart = \"100M\"")
        ));
        let l = Layout::parse(&ok, "t").unwrap();
        assert_eq!(l.partitions[0].start, 100 * MIB);
        assert_eq!(l.partitions[1].start, 108 * MIB);
        let e = err_of(&with_parts(
            &SLOT_A.replace("size = \"8M\"", "size = \"8M\"\nstart = 512"),
        ));
        assert!(e.contains("at least 1M"), "{e}");
    }

    #[test]
    fn structural_errors_are_clear() {
        let e = err_of(&with_parts(SLOT_A));
        assert!(e.contains("no partition has role = \"esp\""), "{e}");
        let e = err_of(&with_parts(ESP));
        assert!(e.contains("at least one slot"), "{e}");
        let e = err_of(&with_parts(&format!(
            "{ESP}{SLOT_A}{}",
            SLOT_A.replace("\"a\"", "\"b\"")
        )));
        assert!(
            e.contains("bootname \"A\" is used by more than one slot"),
            "{e}"
        );
        let e = err_of(&with_parts(&format!(
            "{ESP}{SLOT_A}{}",
            SLOT_A.replace("\"A\"", "\"B\"")
        )));
        assert!(e.contains("label \"a\" is used by more than one"), "{e}");
        let e = err_of(&with_parts(&format!("{ESP}{ESP}")));
        assert!(e.contains("label"), "{e}");
        let e = err_of(&with_parts(&format!(
            "{ESP}{SLOT_A}{}",
            SLOT_A
                .replace("\"a\"", "\"b\"")
                .replace("\"A\"", "\"B\"")
                .replace("rootfs", "appfs")
        )));
        assert!(e.contains("more than one class"), "{e}");
    }

    #[test]
    fn key_errors_are_clear() {
        let e = err_of(&with_parts(&format!(
            "{ESP}{}",
            SLOT_A.replace("bootname = \"A\"\n", "")
        )));
        assert!(
            e.contains("partition 2 (\"a\"): a slot needs a bootname"),
            "{e}"
        );
        let e = err_of(&with_parts(&format!(
            "{ESP}{}",
            SLOT_A.replace("\"A\"", "\"A-1\"")
        )));
        assert!(e.contains("bootname \"A-1\""), "{e}");
        let e = err_of(&with_parts(&format!(
            "{ESP}{}",
            SLOT_A.replace("\"slot\"", "\"boot\"")
        )));
        assert!(e.contains("role \"boot\""), "{e}");
        let e = err_of(&with_parts(&format!(
            "{}{SLOT_A}",
            ESP.replace("\"8M\"", "\"8M\"\nclass = \"x\"")
        )));
        assert!(e.contains("\"class\" does not apply"), "{e}");
        let e = err_of(&with_parts(&format!(
            "{ESP}{}",
            SLOT_A.replace("\"8M\"", "\"1000\"")
        )));
        assert!(e.contains("multiple of 4096"), "{e}");
        let e = err_of(&with_parts(&format!("{ESP}{SLOT_A}colour = 1\n")));
        assert!(e.contains("colour"), "{e}");
        let e = err_of(&with_parts(&format!(
            "{}{SLOT_A}",
            ESP.replace("\"8M\"", "\"1M\"")
        )));
        assert!(e.contains("esp needs at least"), "{e}");
        let e = err_of(&format!(
            "bootloader = \"u-boot\"\nkernel = \"/k\"\n{ESP}{SLOT_A}"
        ));
        assert!(e.contains("u-boot"), "{e}");
    }

    #[test]
    fn boot_settings_are_checked() {
        let base = format!("{ESP}{SLOT_A}");
        let e = err_of(&format!(
            "bootloader = \"grub-efi\"\nkernel = \"boot/vmlinuz\"\n{base}"
        ));
        assert!(e.contains("kernel \"boot/vmlinuz\""), "{e}");
        let e = err_of(&format!(
            "bootloader = \"grub-efi\"\nkernel = \"/boot/../vmlinuz\"\n{base}"
        ));
        assert!(e.contains("kernel"), "{e}");
        let e = err_of(&format!(
            "bootloader = \"grub-efi\"\nkernel = \"/k\"\ncmdline = \"root=/dev/sda2\"\n{base}"
        ));
        assert!(e.contains("sets root="), "{e}");
        let e = err_of(&format!(
            "bootloader = \"grub-efi\"\nkernel = \"/k\"\ncmdline = \"a='b c'\"\n{base}"
        ));
        assert!(e.contains("quotes"), "{e}");
        let e = err_of(&format!(
            "bootloader = \"grub-efi\"\nkernel = \"/k\"\nboot-attempts = 3\n{base}"
        ));
        assert!(e.contains("boot-attempts = 3 is not supported"), "{e}");
    }

    #[test]
    fn data_partitions() {
        let data = |extra: &str| {
            with_parts(&format!(
                "{ESP}{SLOT_A}[[partition]]\nlabel = \"data\"\nrole = \"data\"\nsize = \"16M\"\n{extra}"
            ))
        };
        let l = Layout::parse(&data(""), "t").unwrap();
        assert_eq!(
            l.partitions[2].role,
            Role::Data {
                fs: DataFs::Ext4 { from_dir: false }
            }
        );
        let l = Layout::parse(&data("fs = \"none\"\n"), "t").unwrap();
        assert_eq!(l.partitions[2].role, Role::Data { fs: DataFs::None });
        assert!(err_of(&data("fs = \"xfs\"\n")).contains("xfs"));
        assert!(err_of(&data("from = \"tar\"\n")).contains("tar"));
        assert!(err_of(&data("fs = \"none\"\nfrom = \"dir\"\n")).contains("needs fs"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_label("rootfs-a.1_x"));
        assert!(!valid_label("root fs"));
        assert!(!valid_label(&"x".repeat(37)));
        assert!(valid_bootname("system0"));
        assert!(!valid_bootname("A B"));
        assert!(valid_boot_path("/boot/vmlinuz-6.1.0+1"));
        assert!(!valid_boot_path("/boot//x"));
        assert!(!valid_boot_path("/boot/$x"));
        assert!(!valid_boot_path("/"));
    }
}
