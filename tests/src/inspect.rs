//! Looking into a disk image from the host after (or between) boots: the partition table as
//! `flipslot-image disk --json` reported it, files on the ESP read with mtools at the ESP's
//! offset (no mounts, no loop devices), and the grubenv parsed into variables.
//! Only read a disk while no QEMU runs on it.

use crate::cmd;
use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// Where the grubenv lives on the ESP (the guest mounts the ESP at `/boot/efi`).
pub const ESP_GRUBENV: &str = "/EFI/BOOT/grubenv";

/// One partition of a built disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// GPT partition number.
    pub number: u64,
    /// GPT name (PARTLABEL).
    pub label: String,
    /// `esp`, `slot` or `data`.
    pub role: String,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The partitions of a disk, from the final `done` event of `flipslot-image disk --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// In GPT order.
    pub partitions: Vec<PartInfo>,
}

impl DiskInfo {
    /// Parses the JSON lines `flipslot-image disk --json` printed.
    pub fn from_json_lines(text: &str) -> anyhow::Result<DiskInfo> {
        let done = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .rfind(|v| v.get("event").and_then(|e| e.as_str()) == Some("done"))
            .context("no \"done\" event in the output of flipslot-image disk --json")?;
        if done.get("ok").and_then(serde_json::Value::as_bool) != Some(true) {
            bail!("flipslot-image disk reported failure: {done}");
        }
        let parts = done
            .get("partitions")
            .and_then(|p| p.as_array())
            .context("the done event has no partitions array")?;
        let mut partitions = Vec::new();
        for p in parts {
            let num = |k: &str| {
                p.get(k)
                    .and_then(serde_json::Value::as_u64)
                    .with_context(|| format!("partition without numeric {k}: {p}"))
            };
            let text = |k: &str| {
                p.get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .with_context(|| format!("partition without {k}: {p}"))
            };
            partitions.push(PartInfo {
                number: num("number")?,
                label: text("label")?,
                role: text("role")?,
                start: num("start")?,
                size: num("size")?,
            });
        }
        Ok(DiskInfo { partitions })
    }

    /// The partition labelled `label`.
    pub fn by_label(&self, label: &str) -> anyhow::Result<&PartInfo> {
        self.partitions
            .iter()
            .find(|p| p.label == label)
            .with_context(|| format!("no partition labelled {label}"))
    }

    /// The ESP.
    pub fn esp(&self) -> anyhow::Result<&PartInfo> {
        self.partitions
            .iter()
            .find(|p| p.role == "esp")
            .context("no esp partition")
    }
}

/// Reads `path` (e.g. [`ESP_GRUBENV`]) from the FAT filesystem at byte `offset` of `disk`,
/// with `mcopy -i DISK@@OFFSET`.
pub fn read_fat_file(disk: &Path, offset: u64, path: &str) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let out = dir.path().join("file");
    let mut image = OsString::from(disk);
    image.push(format!("@@{offset}"));
    cmd::run(
        Command::new("mcopy")
            .arg("-n")
            .arg("-i")
            .arg(&image)
            .arg(format!("::{path}"))
            .arg(&out)
            .env("MTOOLS_SKIP_CHECK", "1"),
    )?;
    std::fs::read(&out).with_context(|| format!("cannot read {}", out.display()))
}

/// The variables of a GRUB environment block (`# GRUB Environment Block`, `KEY=VALUE` lines,
/// `#` padding).
pub fn parse_grubenv(bytes: &[u8]) -> anyhow::Result<BTreeMap<String, String>> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    if lines.next() != Some("# GRUB Environment Block") {
        bail!("not a GRUB environment block");
    }
    Ok(lines
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The grubenv variables of a disk built with the rig's layout.
pub fn grubenv(disk: &Path, info: &DiskInfo) -> anyhow::Result<BTreeMap<String, String>> {
    parse_grubenv(&read_fat_file(disk, info.esp()?.start, ESP_GRUBENV)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn done_event() {
        let text = "{\"v\":1,\"event\":\"progress\",\"phase\":\"esp\"}\n\
            {\"v\":1,\"event\":\"done\",\"ok\":true,\"partitions\":[\
            {\"number\":1,\"label\":\"esp\",\"role\":\"esp\",\"start\":1048576,\"size\":33554432,\"guid\":\"x\",\"contents\":\"GRUB\"},\
            {\"number\":2,\"label\":\"rootfs-a\",\"role\":\"slot\",\"start\":34603008,\"size\":100663296,\"guid\":\"y\",\"bootname\":\"A\",\"contents\":\"rootfs\"}]}\n";
        let info = DiskInfo::from_json_lines(text).unwrap();
        assert_eq!(info.esp().unwrap().start, 1 << 20);
        assert_eq!(info.by_label("rootfs-a").unwrap().number, 2);
        assert!(info.by_label("data").is_err());
        assert!(DiskInfo::from_json_lines("{\"event\":\"done\",\"ok\":false}\n").is_err());
    }

    #[test]
    fn grubenv_block() {
        let mut block = b"# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\n".to_vec();
        block.resize(1024, b'#');
        let vars = parse_grubenv(&block).unwrap();
        assert_eq!(vars["ORDER"], "A B");
        assert_eq!(vars["A_TRY"], "0");
        assert_eq!(vars.len(), 3);
        assert!(parse_grubenv(b"hello").is_err());
    }
}
