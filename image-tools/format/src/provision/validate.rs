//! [`Provision::validate`]: every rule on a description's fields, and the small checks of
//! names, GUIDs and paths it is built from. Pure.

use std::collections::HashSet;

use super::{
    DataFile, PartitionRole, PartitionSpec, Provision, ProvisionError, TargetRule,
    MAX_BOOTNAME_LEN, MAX_DATA_FILES, MAX_LABEL_LEN, MAX_MODE, MAX_PARTITIONS, MAX_TARGET_TEXT_LEN,
    PROVISION_FORMAT, SIZE_ALIGN,
};
use crate::manifest::{valid_class, valid_compatible, MAX_COMPATIBLE_LEN};

/// Longest data file path, in bytes.
const MAX_PATH_LEN: usize = 1024;
/// Longest path component and ESP file name, in bytes.
const MAX_NAME_LEN: usize = 255;

/// Whether `s` is a valid partition label: 1 to 36 of `A-Z a-z 0-9 . _ -`.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LABEL_LEN && s.bytes().all(name_byte)
}

/// Whether `s` is a valid bootname: 1 to 32 of `A-Z a-z 0-9 _` (it prefixes GRUB variable
/// names).
pub fn valid_bootname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_BOOTNAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `s` is a GUID in the usual text form: 8-4-4-4-12 hex digits (either case).
pub fn valid_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `p` is a relative path of components of 1 to 255 of `A-Z a-z 0-9 . _ -`, none
/// `.` or `..`, at most 1024 bytes in all.
pub fn valid_relative_path(p: &str) -> bool {
    !p.is_empty() && p.len() <= MAX_PATH_LEN && p.split('/').all(valid_name)
}

/// `A-Z a-z 0-9 . _ -`.
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// One path component or file name: 1 to 255 of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
fn valid_name(c: &str) -> bool {
    !c.is_empty() && c.len() <= MAX_NAME_LEN && c != "." && c != ".." && c.bytes().all(name_byte)
}

fn invalid<T>(s: String) -> Result<T, ProvisionError> {
    Err(ProvisionError::Invalid(s))
}

impl Provision {
    /// Checks every rule the agent relies on: format 1; the compatible string; the target
    /// rule's texts; the ESP image's name and size; 1 to 16 partitions (exactly one `esp`,
    /// at least one `slot` of one class with unique bootnames, exactly one `data`; unique
    /// labels; sizes positive multiples of 4096, only the last may be the rest of the disk,
    /// never the esp; well-formed type GUIDs; class and bootname on slots only); at most
    /// 256 data files with unique relative paths and modes up to `0o7777`; and a status
    /// file path that no data file takes. No path may be both a file and a directory.
    pub fn validate(&self) -> Result<(), ProvisionError> {
        if self.format != PROVISION_FORMAT {
            return invalid(format!("unsupported payload format {}", self.format));
        }
        if !valid_compatible(&self.compatible) {
            return invalid(format!(
                "compatible must be 1 to {MAX_COMPATIBLE_LEN} bytes, is {} bytes",
                self.compatible.len()
            ));
        }
        check_target(&self.target)?;
        check_partitions(&self.partitions)?;
        self.check_esp()?;
        check_files(&self.data_files, self.status_file.as_deref())
    }

    /// The ESP image: its file name, and a size that fits the esp partition.
    fn check_esp(&self) -> Result<(), ProvisionError> {
        if !valid_name(&self.esp.file) {
            return invalid(format!(
                "esp.file {:?} must be a file name of 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ - \
                 (no '/')",
                self.esp.file
            ));
        }
        let size = self.esp.size;
        if size == 0 || size % SIZE_ALIGN != 0 {
            return invalid(format!(
                "esp.size {size} must be a positive multiple of {SIZE_ALIGN}"
            ));
        }
        let part = self.esp_partition();
        // check_partitions refused an esp without a size.
        let room = part.size.unwrap_or(0);
        if size > room {
            return invalid(format!(
                "esp.size {size} is larger than the esp partition {:?} ({room} bytes)",
                part.label
            ));
        }
        Ok(())
    }
}

/// `by_id`: printable ASCII without spaces or `/`; `serial`: printable ASCII; both 1 to
/// 255 bytes.
fn check_target(t: &TargetRule) -> Result<(), ProvisionError> {
    if let Some(glob) = &t.by_id {
        let ok = glob.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if glob.is_empty() || glob.len() > MAX_TARGET_TEXT_LEN || !ok {
            return invalid(format!(
                "target.by_id {glob:?} must be 1 to {MAX_TARGET_TEXT_LEN} printable ASCII \
                 characters without spaces or '/' (a glob over /dev/disk/by-id names)"
            ));
        }
    }
    if let Some(serial) = &t.serial {
        let ok = serial.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if serial.is_empty() || serial.len() > MAX_TARGET_TEXT_LEN || !ok {
            return invalid(format!(
                "target.serial {serial:?} must be 1 to {MAX_TARGET_TEXT_LEN} printable ASCII \
                 characters"
            ));
        }
    }
    Ok(())
}

/// The partition table: each entry, then the rules between them.
fn check_partitions(parts: &[PartitionSpec]) -> Result<(), ProvisionError> {
    if parts.is_empty() || parts.len() > MAX_PARTITIONS {
        return invalid(format!(
            "a description lists 1 to {MAX_PARTITIONS} partitions, this one {}",
            parts.len()
        ));
    }
    let mut labels = HashSet::new();
    let mut bootnames = HashSet::new();
    let mut total: u64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let name = format!("partition {} ({:?})", i + 1, p.label);
        check_partition(p, i + 1 == parts.len()).or_else(|e| invalid(format!("{name}: {e}")))?;
        if !labels.insert(p.label.as_str()) {
            return invalid(format!("{name}: label is used by more than one partition"));
        }
        if let Some(bn) = &p.bootname {
            if !bootnames.insert(bn.as_str()) {
                return invalid(format!(
                    "{name}: bootname {bn:?} is used by more than one slot"
                ));
            }
        }
        total = total
            .checked_add(p.size.unwrap_or(0))
            .filter(|t| *t <= u64::MAX / 2)
            .ok_or_else(|| {
                ProvisionError::Invalid(format!("{name}: the partition sizes add up to too much"))
            })?;
    }
    let count = |role| parts.iter().filter(|p| p.role == role).count();
    for (role, what) in [
        (PartitionRole::Esp, "an EFI system partition for GRUB"),
        (PartitionRole::Data, "the data partition"),
    ] {
        let n = count(role);
        if n != 1 {
            return invalid(format!(
                "{n} partitions have role {:?}; exactly one is needed ({what})",
                role.as_str()
            ));
        }
    }
    let mut classes = parts.iter().filter_map(|p| p.class.as_deref());
    let Some(first) = classes.next() else {
        return invalid("no partition has role \"slot\": at least one slot is needed".into());
    };
    if let Some(other) = classes.find(|c| *c != first) {
        return invalid(format!(
            "slots of more than one class ({first:?}, {other:?}): every slot is a boot slot of \
             one class"
        ));
    }
    Ok(())
}

/// One entry on its own; `last` says whether it may take the rest of the disk.
fn check_partition(p: &PartitionSpec, last: bool) -> Result<(), String> {
    if !valid_label(&p.label) {
        return Err(format!(
            "label must be 1 to {MAX_LABEL_LEN} of A-Z a-z 0-9 . _ -"
        ));
    }
    match p.size {
        Some(n) if n == 0 || n % SIZE_ALIGN != 0 => {
            return Err(format!(
                "size {n} must be a positive multiple of {SIZE_ALIGN}"
            ))
        }
        Some(_) => {}
        None if !last => {
            return Err("only the last partition may take the rest of the disk (size null)".into())
        }
        None if p.role == PartitionRole::Esp => {
            return Err("the esp needs a size; it cannot take the rest of the disk".into())
        }
        None => {}
    }
    if let Some(g) = &p.type_guid {
        if !valid_guid(g) {
            return Err(format!(
                "type_guid {g:?} is not a GUID (8-4-4-4-12 hex digits)"
            ));
        }
        if g.bytes().all(|b| b == b'0' || b == b'-') {
            return Err("type_guid is all zeros, which marks an unused GPT entry".into());
        }
    }
    if p.role == PartitionRole::Slot {
        match &p.class {
            Some(c) if valid_class(c) => {}
            Some(c) => return Err(format!("class {c:?} must be 1 to 64 of A-Z a-z 0-9 _ -")),
            None => return Err("a slot needs a class".into()),
        }
        match &p.bootname {
            Some(b) if valid_bootname(b) => {}
            Some(b) => {
                return Err(format!(
                    "bootname {b:?} must be 1 to {MAX_BOOTNAME_LEN} of A-Z a-z 0-9 _"
                ))
            }
            None => return Err("a slot needs a bootname".into()),
        }
    } else {
        for (key, value) in [("class", &p.class), ("bootname", &p.bootname)] {
            if value.is_some() {
                return Err(format!(
                    "{key} is only for slots, not role {:?}",
                    p.role.as_str()
                ));
            }
        }
    }
    Ok(())
}

/// The data files and the status file: counts, paths, modes, and no path that is both a
/// file and a directory (or written twice).
fn check_files(files: &[DataFile], status_file: Option<&str>) -> Result<(), ProvisionError> {
    if files.len() > MAX_DATA_FILES {
        return invalid(format!(
            "{} data files, at most {MAX_DATA_FILES} are allowed",
            files.len()
        ));
    }
    let bad_path = |what: &str, path: &str| {
        invalid(format!(
            "{what} {path:?} must be a relative path of A-Z a-z 0-9 . _ - components (no '.', \
             '..' or empty component, at most {MAX_PATH_LEN} bytes)"
        ))
    };
    let mut paths: Vec<(&str, String)> = Vec::with_capacity(files.len() + 1);
    for (i, f) in files.iter().enumerate() {
        if !valid_relative_path(&f.path) {
            return bad_path(&format!("data file {i}: path"), &f.path);
        }
        if f.mode > MAX_MODE {
            return invalid(format!(
                "data file {:?}: mode {:o} is above 7777 (octal)",
                f.path, f.mode
            ));
        }
        paths.push((&f.path, format!("data file {:?}", f.path)));
    }
    if let Some(s) = status_file {
        if !valid_relative_path(s) {
            return bad_path("status_file", s);
        }
        paths.push((s, format!("status_file {s:?}")));
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for (path, what) in &paths {
        if !seen.insert(path) {
            return invalid(format!("{what} is written twice"));
        }
    }
    for (path, what) in &paths {
        let mut dir = *path;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if seen.contains(parent) {
                return invalid(format!(
                    "{what} needs directory {parent:?}, which is also written as a file"
                ));
            }
            dir = parent;
        }
    }
    Ok(())
}
