//! Scenarios as data: the files a test puts on the guest's data partition (the directory
//! given to `flipslot-image disk --data-dir`), and parsers for the lines the guest prints.
//!
//! The guest `/sbin/init` runs `/data/early.sh` before printing
//! `FLIPSLOT-BOOTED slot=<bootname> version=<version>`, then `/data/scenario.sh`, then prints
//! `FLIPSLOT-SCENARIO-END rc=<status>` and powers off, or reboots when a script wrote `reboot`
//! to `/run/rig-action`. Scripts see `FLIPSLOT_SLOT`, `FLIPSLOT_VERSION` and `FLIPSLOT_BOOT`
//! (the boot count kept in `/data/rig/boots`).

use anyhow::{bail, Context as _};
use std::path::Path;

/// What goes on the data partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// `/data/scenario.sh`, run after the `FLIPSLOT-BOOTED` line.
    pub scenario: Option<String>,
    /// `/data/early.sh`, run before it.
    pub early: Option<String>,
    /// More files, by path relative to the data partition's root (e.g. a bundle).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Scenario {
    /// A scenario that runs `script` after boot.
    pub fn script(script: &str) -> Scenario {
        Scenario {
            scenario: Some(script.to_string()),
            ..Scenario::default()
        }
    }

    /// Writes the files into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        let mut all: Vec<(&str, &[u8])> = Vec::new();
        if let Some(s) = &self.scenario {
            all.push(("scenario.sh", s.as_bytes()));
        }
        if let Some(s) = &self.early {
            all.push(("early.sh", s.as_bytes()));
        }
        for (p, b) in &self.files {
            all.push((p.as_str(), b.as_slice()));
        }
        for (rel, bytes) in all {
            let rel = rel.trim_start_matches('/');
            if rel.is_empty() || rel.split('/').any(|c| c == "..") {
                bail!("bad data partition path {rel:?}");
            }
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create directory {}", parent.display()))?;
            }
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// One `FLIPSLOT-BOOTED` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The bootname from the kernel command line (`none` when absent).
    pub slot: String,
    /// The version marker of the booted root filesystem.
    pub version: String,
}

/// Every boot in a serial log, in order.
pub fn boots(serial: &str) -> Vec<Boot> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("FLIPSLOT-BOOTED ")? + "FLIPSLOT-BOOTED ".len()..];
            let mut slot = None;
            let mut version = None;
            for word in rest.split_whitespace() {
                if let Some(v) = word.strip_prefix("slot=") {
                    slot = Some(v.to_string());
                } else if let Some(v) = word.strip_prefix("version=") {
                    version = Some(v.to_string());
                }
            }
            Some(Boot {
                slot: slot?,
                version: version?,
            })
        })
        .collect()
}

/// The exit statuses of `FLIPSLOT-SCENARIO-END rc=N` lines (`None` for `rc=none`).
pub fn scenario_results(serial: &str) -> Vec<Option<i32>> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = &line
                [line.find("FLIPSLOT-SCENARIO-END rc=")? + "FLIPSLOT-SCENARIO-END rc=".len()..];
            Some(rest.trim().parse().ok())
        })
        .collect()
}

/// The reasons of `FLIPSLOT-INITRAMFS-FAIL:` and `FLIPSLOT-GUEST-FAIL:` lines.
pub fn failures(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            ["FLIPSLOT-INITRAMFS-FAIL:", "FLIPSLOT-GUEST-FAIL:"]
                .iter()
                .find_map(|m| line.find(m).map(|i| line[i..].trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const LOG: &str = "BdsDxe: loading\r\n[    2.1] foo\nFLIPSLOT-BOOTED slot=A version=1.0.0\r\n\
        FLIPSLOT-SCENARIO-END rc=0\nFLIPSLOT-BOOTED slot=B version=1.1.0\nFLIPSLOT-SCENARIO-END rc=none\n\
        FLIPSLOT-GUEST-FAIL: cannot mount /run\n";

    #[test]
    fn parses_boots_and_results() {
        let b = boots(LOG);
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0],
            Boot {
                slot: "A".into(),
                version: "1.0.0".into()
            }
        );
        assert_eq!(b[1].slot, "B");
        assert_eq!(scenario_results(LOG), vec![Some(0), None]);
        assert_eq!(
            failures(LOG),
            vec!["FLIPSLOT-GUEST-FAIL: cannot mount /run".to_string()]
        );
    }

    #[test]
    fn writes_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Scenario::script("echo hi\n");
        s.files.push(("bundles/u.fsb".into(), b"x".to_vec()));
        s.write_to(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("scenario.sh")).unwrap(),
            "echo hi\n"
        );
        assert!(dir.path().join("bundles/u.fsb").is_file());
        assert!(Scenario {
            files: vec![("../x".into(), vec![])],
            ..Scenario::default()
        }
        .write_to(dir.path())
        .is_err());
    }
}
