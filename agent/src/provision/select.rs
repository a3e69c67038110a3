//! Which disk provisioning writes: the signed target rule applied to the machine's disks.
//! Pure: the disks come in as [`DiskFacts`], so every rule is tested without hardware.
//!
//! A disk is a candidate when it is not removable, not read-only, not used by the running
//! system, not a virtual device (loop, ram, device-mapper, ...), at least as large as the
//! layout needs, and matches the rule's `by_id` glob and `serial` when they are set. An
//! explicit `--disk` must pass the same checks except the virtual-device one (a loop
//! device or image file is how the layout is tried out), so the command line can only
//! narrow what the signed description allows, never widen it.

use crate::host::disks::DiskFacts;
use anyhow::{bail, Result};
use flipslot_format::provision::{DiskSelect, TargetRule};

/// Why a disk is not a candidate, or `None` when it is one.
pub fn refusal(d: &DiskFacts, rule: &TargetRule, min_size: u64, explicit: bool) -> Option<String> {
    if !d.in_use.is_empty() {
        return Some(format!(
            "it holds the running system ({})",
            d.in_use.join(", ")
        ));
    }
    if d.virtual_only && !explicit {
        return Some("it is a virtual device (name it with --disk to use it)".into());
    }
    if d.removable {
        return Some("it is removable".into());
    }
    if d.read_only {
        return Some("it is read-only".into());
    }
    if d.size < min_size {
        return Some(format!(
            "it has {} bytes, the layout needs at least {min_size}",
            d.size
        ));
    }
    if let Some(pattern) = &rule.by_id {
        if !d.by_id.iter().any(|id| glob_match(pattern, id)) {
            return Some(format!(
                "none of its /dev/disk/by-id names ({}) matches {pattern:?}",
                if d.by_id.is_empty() {
                    "none".to_string()
                } else {
                    d.by_id.join(", ")
                }
            ));
        }
    }
    if let Some(serial) = &rule.serial {
        if d.serial.as_deref() != Some(serial.as_str()) {
            return Some(format!(
                "its serial {:?} is not {serial:?}",
                d.serial.as_deref().unwrap_or("(none)")
            ));
        }
    }
    None
}

/// The disk to provision: `explicit` when given (it must pass the rule), otherwise the
/// rule's choice among `disks`. Errors list every disk and why it was not taken.
pub fn select<'d>(
    disks: &'d [DiskFacts],
    explicit: Option<&'d DiskFacts>,
    rule: &TargetRule,
    min_size: u64,
) -> Result<&'d DiskFacts> {
    if let Some(d) = explicit {
        if let Some(why) = refusal(d, rule, min_size, true) {
            bail!("disk {} may not be provisioned: {why}", d.path.display());
        }
        return Ok(d);
    }
    let mut candidates = Vec::new();
    let mut refused = Vec::new();
    for d in disks {
        match refusal(d, rule, min_size, false) {
            None => candidates.push(d),
            Some(why) => refused.push(format!("{}: {why}", d.path.display())),
        }
    }
    let listing = || {
        if refused.is_empty() {
            "no disks found".to_string()
        } else {
            refused.join("; ")
        }
    };
    let pick = match rule.select {
        DiskSelect::Only => {
            if candidates.len() > 1 {
                let names: Vec<String> = candidates
                    .iter()
                    .map(|d| d.path.display().to_string())
                    .collect();
                bail!(
                    "the description wants the only suitable disk, but there are {}: {} \
                     (name one with --disk)",
                    candidates.len(),
                    names.join(", ")
                );
            }
            candidates.first().copied()
        }
        // Ties go to the first by kernel name, so the choice is stable across boots.
        DiskSelect::Smallest => candidates.iter().copied().min_by_key(|d| d.size),
        DiskSelect::Largest => candidates.iter().copied().rev().max_by_key(|d| d.size),
    };
    match pick {
        Some(d) => Ok(d),
        None => bail!("no disk may be provisioned: {}", listing()),
    }
}

/// Shell-style glob: `*` any run, `?` one character, everything else literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn disk(name: &str, gib: u64) -> DiskFacts {
        DiskFacts {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            size: gib << 30,
            sector_size: 512,
            removable: false,
            read_only: false,
            serial: Some(format!("S-{name}")),
            by_id: vec![format!("nvme-Vendor_{name}")],
            in_use: vec![],
            virtual_only: false,
        }
    }

    fn rule(select: DiskSelect) -> TargetRule {
        TargetRule {
            select,
            by_id: None,
            serial: None,
            allow_wipe: false,
        }
    }

    #[test]
    fn smallest_largest_only() {
        let disks = vec![
            disk("nvme0n1", 500),
            disk("nvme1n1", 250),
            disk("sda", 2000),
        ];
        let min = 1 << 30;
        assert_eq!(
            select(&disks, None, &rule(DiskSelect::Smallest), min)
                .unwrap()
                .name,
            "nvme1n1"
        );
        assert_eq!(
            select(&disks, None, &rule(DiskSelect::Largest), min)
                .unwrap()
                .name,
            "sda"
        );
        let e = select(&disks, None, &rule(DiskSelect::Only), min).unwrap_err();
        assert!(e.to_string().contains("there are 3"), "{e}");
        assert_eq!(
            select(&disks[..1], None, &rule(DiskSelect::Only), min)
                .unwrap()
                .name,
            "nvme0n1"
        );
    }

    #[test]
    fn ties_pick_the_first_name() {
        let disks = vec![disk("vda", 10), disk("vdb", 10)];
        assert_eq!(
            select(&disks, None, &rule(DiskSelect::Largest), 0)
                .unwrap()
                .name,
            "vda"
        );
        assert_eq!(
            select(&disks, None, &rule(DiskSelect::Smallest), 0)
                .unwrap()
                .name,
            "vda"
        );
    }

    #[test]
    fn the_running_system_removable_small_and_virtual_disks_are_skipped() {
        let mut sys = disk("sda", 4000);
        sys.in_use = vec!["mounted at /".into()];
        let mut usb = disk("sdb", 3000);
        usb.removable = true;
        let small = disk("vdc", 1);
        let mut lp = disk("loop0", 5000);
        lp.virtual_only = true;
        let ok = disk("vdd", 100);
        let disks = vec![sys.clone(), usb, small, lp.clone(), ok];
        let got = select(&disks, None, &rule(DiskSelect::Largest), 2 << 30).unwrap();
        assert_eq!(got.name, "vdd");
        // Explicitly named: the running system is still refused, a loop device is not.
        let e = select(&disks, Some(&sys), &rule(DiskSelect::Largest), 0).unwrap_err();
        assert!(e.to_string().contains("running system"), "{e}");
        assert_eq!(
            select(&disks, Some(&lp), &rule(DiskSelect::Largest), 0)
                .unwrap()
                .name,
            "loop0"
        );
        let none = select(&disks[..3], None, &rule(DiskSelect::Largest), 2 << 30).unwrap_err();
        let msg = none.to_string();
        assert!(
            msg.contains("/dev/sda: it holds the running system"),
            "{msg}"
        );
        assert!(msg.contains("/dev/sdb: it is removable"), "{msg}");
        assert!(msg.contains("/dev/vdc: it has"), "{msg}");
    }

    #[test]
    fn by_id_and_serial_narrow_the_choice() {
        let disks = vec![disk("nvme0n1", 500), disk("nvme1n1", 250)];
        let mut r = rule(DiskSelect::Largest);
        r.by_id = Some("nvme-Vendor_nvme1*".into());
        assert_eq!(select(&disks, None, &r, 0).unwrap().name, "nvme1n1");
        // An explicit disk outside the rule is refused: the command line cannot widen it.
        let e = select(&disks, Some(&disks[0]), &r, 0).unwrap_err();
        assert!(e.to_string().contains("by-id"), "{e}");
        let mut r = rule(DiskSelect::Only);
        r.serial = Some("S-nvme0n1".into());
        assert_eq!(select(&disks, None, &r, 0).unwrap().name, "nvme0n1");
        r.serial = Some("nope".into());
        assert!(select(&disks, None, &r, 0).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("nvme-*", "nvme-Samsung_1"));
        assert!(glob_match("*SER?1", "virtio-SERX1"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("nvme-*", "ata-x"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
