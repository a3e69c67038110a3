//! The status file (`<data-directory>/status.json`): what was installed into each slot.
//!
//! Versioned by its `format` field (only format 1 is understood). Saved atomically:
//! write a temp file in the same directory, fsync it, rename it over, fsync the directory.
//! Writers are expected to hold the install lock, so one fixed temp name suffices; a temp
//! file left by a crash is ignored by [`StatusFile::load`] and replaced by the next save.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flipslot_format::Sha256Digest;
use serde::{Deserialize, Serialize};

use crate::slot::SlotHistory;

/// The only status format this version reads and writes.
pub const FORMAT: u32 = 1;

/// Errors from loading or saving the status file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Reading failed (other than the file being absent).
    #[error("cannot read status file {path}")]
    Read {
        /// The status file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid status JSON.
    #[error("corrupt status file {path}")]
    Corrupt {
        /// The status file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The file has a `format` this version does not know.
    #[error("status file {path} has format {found}, this flipslot understands format {FORMAT}")]
    UnsupportedFormat {
        /// The status file.
        path: PathBuf,
        /// The format found.
        found: u64,
    },
    /// Writing, syncing or renaming failed.
    #[error("cannot write status file {path}")]
    Write {
        /// The file being written (the temp file or the status file).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Outcome of the last install into a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallResult {
    /// The image was written and verified.
    Ok,
    /// The install started but did not complete.
    Failed,
}

/// What the last install into one slot was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Version of the bundle installed.
    #[serde(default)]
    pub bundle_version: Option<String>,
    /// The bundle's compatible string.
    pub compatible: String,
    /// SHA-256 of the signed manifest (a hex string in the file).
    #[serde(default)]
    pub manifest_sha256: Option<Sha256Digest>,
    /// The signed manifest's SHA-256 of the image written (a hex string in the file).
    #[serde(default)]
    pub image_sha256: Option<Sha256Digest>,
    /// When the install finished (unix seconds).
    #[serde(default)]
    pub installed_at: Option<u64>,
    /// Whether it succeeded.
    pub result: InstallResult,
    /// A note, e.g. the error of a failed install.
    #[serde(default)]
    pub message: Option<String>,
    /// What became of the trial boot of this install.
    #[serde(default, skip_serializing_if = "Trial::is_empty")]
    pub trial: Trial,
}

/// The boot assessment of an installed slot: committed, failed its health checks, or
/// rolled back from. Reset by every install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// When a trial boot of this slot passed its health checks and was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<u64>,
    /// Why the trial boot failed its health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_failure: Option<String>,
    /// When the system fell back from this slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_at: Option<u64>,
}

impl Trial {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self == &Trial::default()
    }
}

/// A fallback from a slot that failed its trial to the slot that booted instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// The slot that failed.
    pub from_slot: String,
    /// Its version.
    pub from_version: Option<String>,
    /// The slot running now.
    pub to_slot: String,
    /// Its version.
    pub to_version: Option<String>,
    /// Why.
    pub reason: String,
    /// When the fallback was noticed (unix seconds).
    pub at: u64,
}

/// The whole status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFile {
    /// Always [`FORMAT`].
    pub format: u32,
    /// Records by slot name (`rootfs.0`).
    pub slots: BTreeMap<String, SlotRecord>,
    /// The most recent rollback, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<RollbackRecord>,
}

impl Default for StatusFile {
    fn default() -> Self {
        StatusFile {
            format: FORMAT,
            slots: BTreeMap::new(),
            last_rollback: None,
        }
    }
}

#[derive(Deserialize)]
struct FormatProbe {
    format: u64,
}

/// The temp file [`StatusFile::save`] writes before renaming it over `path`.
pub use flipslot_os::fs::temp_path;

impl StatusFile {
    /// Whether `slot`'s last install succeeded and its trial boot was neither committed
    /// nor rolled back yet: the one definition of an uncommitted trial.
    pub fn is_uncommitted_trial(&self, slot: &str) -> bool {
        self.slots.get(slot).is_some_and(|r| {
            r.result == InstallResult::Ok
                && r.trial.committed_at.is_none()
                && r.trial.rolled_back_at.is_none()
        })
    }

    /// Decodes status JSON; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<StatusFile, StatusError> {
        let corrupt = |source| StatusError::Corrupt {
            path: path.to_path_buf(),
            source,
        };
        let probe: FormatProbe = serde_json::from_str(text).map_err(corrupt)?;
        if probe.format != u64::from(FORMAT) {
            return Err(StatusError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: probe.format,
            });
        }
        serde_json::from_str(text).map_err(corrupt)
    }

    /// Encodes as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> serde_json::Result<String> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        Ok(text)
    }

    /// Reads the status file; a missing file is an empty status.
    pub fn load(path: &Path) -> Result<StatusFile, StatusError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StatusFile::default()),
            Err(source) => Err(StatusError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Replaces the status file atomically (temp file, fsync, rename, fsync directory).
    pub fn save(&self, path: &Path) -> Result<(), StatusError> {
        let text = self.to_json().map_err(|e| StatusError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        flipslot_os::fs::atomic_write(path, text.as_bytes()).map_err(|e| StatusError::Write {
            path: e.path,
            source: e.source,
        })?;
        Ok(())
    }

    /// The record of `slot_name`, if any install into it was recorded.
    pub fn record(&self, slot_name: &str) -> Option<&SlotRecord> {
        self.slots.get(slot_name)
    }

    /// Records an install into `slot_name`, replacing the previous record.
    pub fn set_record(&mut self, slot_name: &str, record: SlotRecord) {
        self.slots.insert(slot_name.to_string(), record);
    }

    /// The install history of a slot, as [`crate::slot::choose_target`] wants it.
    pub fn history(&self, slot_name: &str) -> SlotHistory {
        self.record(slot_name)
            .map(|r| SlotHistory {
                installed_at: r.installed_at,
                failed: r.result == InstallResult::Failed,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(result: InstallResult, at: u64) -> SlotRecord {
        SlotRecord {
            bundle_version: Some("1.2.3".into()),
            compatible: "acme-gateway".into(),
            manifest_sha256: Some(Sha256Digest([0xab; 32])),
            image_sha256: None,
            installed_at: Some(at),
            result,
            message: None,
            trial: Trial::default(),
        }
    }

    /// Format 1 as written by this version.
    const FORMAT1_FIXTURE: &str = r#"{
  "format": 1,
  "slots": {
    "rootfs.1": {
      "bundle_version": "2.0.0",
      "compatible": "acme-gateway",
      "manifest_sha256": null,
      "image_sha256": "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
      "installed_at": 1700000000,
      "result": "failed",
      "message": "write error at offset 4096"
    }
  }
}
"#;

    #[test]
    fn parses_format1_fixture() {
        let s = StatusFile::parse(FORMAT1_FIXTURE, Path::new("status.json")).unwrap();
        let r = s.record("rootfs.1").unwrap();
        assert_eq!(r.result, InstallResult::Failed);
        assert_eq!(r.installed_at, Some(1_700_000_000));
        assert_eq!(r.message.as_deref(), Some("write error at offset 4096"));
        assert_eq!(
            s.history("rootfs.1"),
            SlotHistory {
                installed_at: Some(1_700_000_000),
                failed: true
            }
        );
        assert_eq!(s.history("rootfs.0"), SlotHistory::default());
        assert_eq!(s.to_json().unwrap(), FORMAT1_FIXTURE);
    }

    /// A format-1 status file as written before digests were typed: a good install with a
    /// committed trial, one that was rolled back, one interrupted, and the last rollback.
    const FORMAT1_WRITTEN: &str = include_str!("../../tests/fixtures/status/format1.json");

    #[test]
    fn loads_a_status_file_with_hex_digests_and_writes_it_back_unchanged() {
        let s = StatusFile::parse(FORMAT1_WRITTEN, Path::new("status.json")).unwrap();
        let good = s.record("rootfs.0").unwrap();
        assert_eq!(
            good.manifest_sha256.map(|d| d.to_hex()).as_deref(),
            Some("38767daa5c6388cfccb077cb282d5ed0d5dbb7c38ec76077f0d45b681e448740")
        );
        assert_eq!(
            good.image_sha256.map(|d| d.to_hex()).as_deref(),
            Some("4b393da51e7b02c77339f403c0331d613647acbdc03bca3456656d0d78ead438")
        );
        assert_eq!(good.trial.committed_at, Some(1_700_000_300));
        let interrupted = s.record("appfs.1").unwrap();
        assert_eq!(interrupted.result, InstallResult::Failed);
        assert!(interrupted.manifest_sha256.is_some());
        assert_eq!(interrupted.image_sha256, None);
        assert_eq!(
            s.record("rootfs.1").unwrap().manifest_sha256,
            interrupted.manifest_sha256
        );
        assert_eq!(s.last_rollback.as_ref().unwrap().from_slot, "rootfs.1");
        assert_eq!(s.to_json().unwrap(), FORMAT1_WRITTEN);
    }

    #[test]
    fn digests_may_be_absent_but_not_malformed() {
        let absent = r#"{"format": 1, "slots": {"rootfs.0":
            {"compatible": "c", "result": "ok"}}}"#;
        let s = StatusFile::parse(absent, Path::new("status.json")).unwrap();
        let r = s.record("rootfs.0").unwrap();
        assert_eq!((r.manifest_sha256, r.image_sha256), (None, None));

        let bad = r#"{"format": 1, "slots": {"rootfs.0":
            {"compatible": "c", "result": "ok", "image_sha256": "00ff"}}}"#;
        let e = StatusFile::parse(bad, Path::new("/x/status.json")).unwrap_err();
        assert!(matches!(e, StatusError::Corrupt { .. }));
        // The message names the file; the cause follows in the chain.
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert!(
            shown.starts_with("corrupt status file /x/status.json: ")
                && shown.contains("64 hex digits, not 4 characters"),
            "{shown}"
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = StatusFile::load(&dir.path().join("status.json")).unwrap();
        assert_eq!(s, StatusFile::default());
        assert_eq!(s.format, FORMAT);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let mut s = StatusFile::default();
        s.set_record("rootfs.0", record(InstallResult::Ok, 100));
        s.save(&path).unwrap();
        assert_eq!(StatusFile::load(&path).unwrap(), s);
        s.set_record("rootfs.1", record(InstallResult::Failed, 200));
        s.save(&path).unwrap();
        assert_eq!(StatusFile::load(&path).unwrap(), s);
        assert!(!temp_path(&path).exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }

    #[test]
    fn crash_leftover_temp_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let mut s = StatusFile::default();
        s.set_record("rootfs.0", record(InstallResult::Ok, 100));
        s.save(&path).unwrap();
        // A crash between writing the temp file and the rename leaves a partial temp file.
        std::fs::write(temp_path(&path), b"{\"format\": 1, \"slo").unwrap();
        assert_eq!(StatusFile::load(&path).unwrap(), s);
        // The next save replaces it.
        s.set_record("rootfs.1", record(InstallResult::Ok, 300));
        s.save(&path).unwrap();
        assert_eq!(StatusFile::load(&path).unwrap(), s);
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn corrupt_json_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        std::fs::write(&path, b"{ not json").unwrap();
        let e = StatusFile::load(&path).unwrap_err();
        assert!(matches!(e, StatusError::Corrupt { .. }));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, b"{\"format\": 1, \"slots\": {\"rootfs.0\": {}}}").unwrap();
        assert!(matches!(
            StatusFile::load(&path).unwrap_err(),
            StatusError::Corrupt { .. }
        ));
        std::fs::write(&path, b"{\"slots\": {}}").unwrap();
        assert!(matches!(
            StatusFile::load(&path).unwrap_err(),
            StatusError::Corrupt { .. }
        ));
    }

    #[test]
    fn unknown_format_is_rejected() {
        let e = StatusFile::parse(
            "{\"format\": 2, \"slots\": {}, \"new\": true}",
            Path::new("/x/status.json"),
        )
        .unwrap_err();
        assert!(matches!(e, StatusError::UnsupportedFormat { found: 2, .. }));
        assert!(
            e.to_string().contains("/x/status.json") && e.to_string().contains('2'),
            "{e}"
        );
    }

    #[test]
    fn unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/status.json");
        let e = StatusFile::default().save(&path).unwrap_err();
        assert!(e.to_string().contains("missing-dir"), "{e}");
    }
}
