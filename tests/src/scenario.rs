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

/// Shell functions for scenario scripts (put them first in a script): they print what the
/// host parses with [`json_lines`] and [`grubenv_lines`], each on one line so that kernel
/// messages on the same console cannot split it.
///
/// - `rig_json TAG CMD...` runs CMD (its stderr goes to the console) and prints
///   `FLIPSLOT-JSON TAG rc=<exit status> <CMD's JSON stdout on one line>`; returns CMD's status.
/// - `rig_status TAG` is `rig_json TAG flipslot status --json`.
/// - `rig_grubenv TAG` prints `FLIPSLOT-GRUBENV TAG sha256=<hex> <NAME=VALUE ...>` for the
///   guest's grubenv.
pub const SH_HELPERS: &str = r#"# flipslot rig helpers (tests/src/scenario.rs SH_HELPERS)
rig_json() {
    rig_tag=$1
    shift
    "$@" > /tmp/rig-json.out
    rig_rc=$?
    echo "FLIPSLOT-JSON $rig_tag rc=$rig_rc $(tr -d '\n' < /tmp/rig-json.out)"
    return $rig_rc
}
rig_status() { rig_json "$1" flipslot status --json; }
rig_grubenv() {
    rig_env=/boot/efi/EFI/BOOT/grubenv
    echo "FLIPSLOT-GRUBENV $1 sha256=$(sha256sum < $rig_env | cut -d' ' -f1) $(grep -v '^#' $rig_env | tr '\n' ' ')"
}
"#;

/// One `FLIPSLOT-JSON <tag> rc=<n> <json>` line (see [`SH_HELPERS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonLine {
    /// The exit status of the command that printed the JSON.
    pub rc: i32,
    /// Its output (`Null` when it printed nothing).
    pub value: serde_json::Value,
}

/// Every `FLIPSLOT-JSON <tag>` line of a serial log, in order; fails on a line whose JSON
/// does not parse (naming the line).
pub fn json_lines(serial: &str, tag: &str) -> anyhow::Result<Vec<JsonLine>> {
    let marker = format!("FLIPSLOT-JSON {tag} rc=");
    let mut out = Vec::new();
    for line in serial.lines() {
        let Some(i) = line.find(&marker) else {
            continue;
        };
        let rest = line[i + marker.len()..].trim_end_matches('\r');
        let (rc, json) = rest.split_once(' ').unwrap_or((rest, ""));
        let rc = rc
            .parse()
            .with_context(|| format!("bad rc in serial line {line:?}"))?;
        let value = if json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(json)
                .with_context(|| format!("bad JSON in serial line {line:?}"))?
        };
        out.push(JsonLine { rc, value });
    }
    Ok(out)
}

/// One `FLIPSLOT-GRUBENV <tag> sha256=<hex> NAME=VALUE...` line (see [`SH_HELPERS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubenvLine {
    /// SHA-256 of the whole 1024-byte block, hex.
    pub sha256: String,
    /// Its variables.
    pub vars: std::collections::BTreeMap<String, String>,
}

/// Every `FLIPSLOT-GRUBENV <tag>` line of a serial log, in order. Values with spaces (such as
/// `ORDER=A B`) are rejoined: a word without `=` continues the previous value.
pub fn grubenv_lines(serial: &str, tag: &str) -> Vec<GrubenvLine> {
    let marker = format!("FLIPSLOT-GRUBENV {tag} sha256=");
    serial
        .lines()
        .filter_map(|line| {
            let rest = line[line.find(&marker)? + marker.len()..].trim_end_matches('\r');
            let mut words = rest.split_whitespace();
            let sha256 = words.next()?.to_string();
            let mut vars = std::collections::BTreeMap::new();
            let mut last: Option<String> = None;
            for w in words {
                match (w.split_once('='), &last) {
                    (Some((k, v)), _) => {
                        vars.insert(k.to_string(), v.to_string());
                        last = Some(k.to_string());
                    }
                    (None, Some(k)) => {
                        if let Some(v) = vars.get_mut(k) {
                            v.push(' ');
                            v.push_str(w);
                        }
                    }
                    (None, None) => {}
                }
            }
            Some(GrubenvLine { sha256, vars })
        })
        .collect()
}

/// The exit statuses of the guest init's `FLIPSLOT-HEALTH-END rc=N` lines (absent for a
/// boot whose health run rebooted the machine).
pub fn health_results(serial: &str) -> Vec<i32> {
    serial
        .lines()
        .filter_map(|line| {
            let rest =
                &line[line.find("FLIPSLOT-HEALTH-END rc=")? + "FLIPSLOT-HEALTH-END rc=".len()..];
            rest.trim().parse().ok()
        })
        .collect()
}

/// The entry of `flipslot status --json` for the slot with `bootname`.
pub fn status_slot<'a>(
    status: &'a serde_json::Value,
    bootname: &str,
) -> Option<&'a serde_json::Value> {
    status["slots"]
        .as_array()?
        .iter()
        .find(|s| s["bootname"] == bootname)
}

/// The bootname of the booted slot in `flipslot status --json`.
pub fn status_booted(status: &serde_json::Value) -> Option<&str> {
    status["slots"]
        .as_array()?
        .iter()
        .find(|s| s["state"] == "booted")?["bootname"]
        .as_str()
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
    fn parses_json_grubenv_and_health_lines() {
        let log = "x FLIPSLOT-JSON status rc=0 {  \"booted\": \"rootfs.0\",  \"slots\": [{\"bootname\": \"A\", \"state\": \"booted\"}]}\r\n\
            FLIPSLOT-JSON install rc=1 \n\
            FLIPSLOT-GRUBENV before sha256=ab12 ORDER=B A A_OK=1 A_TRY=0 \n\
            FLIPSLOT-HEALTH-END rc=1\n";
        let st = json_lines(log, "status").unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].rc, 0);
        assert_eq!(st[0].value["booted"], "rootfs.0");
        assert_eq!(status_booted(&st[0].value), Some("A"));
        assert_eq!(status_slot(&st[0].value, "A").unwrap()["state"], "booted");
        assert!(status_slot(&st[0].value, "B").is_none());
        let inst = json_lines(log, "install").unwrap();
        assert_eq!(inst[0].rc, 1);
        assert_eq!(inst[0].value, serde_json::Value::Null);
        assert!(json_lines("FLIPSLOT-JSON status rc=0 {broken\n", "status").is_err());
        let env = grubenv_lines(log, "before");
        assert_eq!(env[0].sha256, "ab12");
        assert_eq!(env[0].vars["ORDER"], "B A");
        assert_eq!(env[0].vars["A_TRY"], "0");
        assert_eq!(health_results(log), vec![1]);
        let script = format!("{SH_HELPERS}rig_status s\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        std::fs::write(&path, script).unwrap();
        crate::cmd::run(std::process::Command::new("sh").arg("-n").arg(&path)).unwrap();
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
