//! The checks of one partition table entry and of the set of partitions: labels, sizes,
//! starts, roles, overlaps, and the rules between partitions (one ESP, slots of one class
//! with distinct bootnames, at most one data partition filled from a directory).

use super::*;

/// Whether a partition may have `size = "rest"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RestRule {
    /// A disk image: never.
    Never,
    /// Provisioning, a partition before the last: no.
    NotHere,
    /// Provisioning, the last partition: yes (unless it is the esp).
    Allowed,
}

/// The partition's size: bytes, or `None` for `size = "rest"` where `rule` allows it.
fn partition_size(raw: &RawSize, rule: RestRule) -> Result<Option<u64>, String> {
    if !matches!(raw, RawSize::Text(t) if t.trim() == REST) {
        return size_value(raw).map(Some);
    }
    match rule {
        RestRule::Allowed => Ok(None),
        RestRule::NotHere => Err("size = \"rest\" is only allowed on the last partition".into()),
        RestRule::Never => Err(
            "size = \"rest\" (the rest of the disk) is only for `flipslot-image provision`; a \
             disk image needs a fixed size for every partition"
                .into(),
        ),
    }
}

pub(super) fn check_partition(
    p: &RawPartition,
    number: u32,
    default_start: u64,
    rest_rule: RestRule,
    kind: LayoutKind,
) -> Result<Partition, String> {
    if !valid_label(&p.label) {
        return Err(format!(
            "label {:?} must be 1 to {MAX_LABEL} characters of A-Z a-z 0-9 . _ -",
            p.label
        ));
    }
    let size = partition_size(&p.size, rest_rule)?;
    let rest = size.is_none();
    let size = size.unwrap_or(0);
    if !rest && (size == 0 || size % ALIGN != 0) {
        return Err(format!(
            "size {size} must be a positive multiple of {ALIGN} bytes"
        ));
    }
    if kind == LayoutKind::Provisioning && p.start.is_some() {
        return Err(
            "start is not supported for provisioning: flipslot provision places the partitions \
             one after another on the machine's disk"
                .into(),
        );
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
            if rest {
                return Err("an esp needs a fixed size, not size = \"rest\"".into());
            }
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
        rest,
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
pub(super) fn check_set(parts: &[Partition]) -> Result<(), String> {
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
