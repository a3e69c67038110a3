//! The daemon's state file (`<data-directory>/daemon.json`): the last accepted channel
//! serial (a replayed older channel is refused), the validators of the last handled
//! channel response (for conditional GETs), and which boot outcomes were reported.
//!
//! Versioned by `format` (only 1 is understood) and saved atomically like the status
//! file: temp file, fsync, rename, fsync the directory. Only the daemon writes it.
//!
//! The channel URL is kept only as a SHA-256 fingerprint: a URL may carry credentials or
//! a token, and this file needs only to know whether the validators belong to it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The only format this version reads and writes.
pub const FORMAT: u32 = 1;

/// What the daemon remembers across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The highest channel serial accepted so far.
    #[serde(default)]
    pub last_serial: Option<u64>,
    /// The version of the last accepted channel.
    #[serde(default)]
    pub last_channel_version: Option<String>,
    /// Its manifest hash, hex (a 304 stands for this channel).
    #[serde(default)]
    pub last_channel_manifest: Option<String>,
    /// SHA-256 (hex) of the channel URL the validators below belong to.
    #[serde(default)]
    pub channel_url_sha256: Option<String>,
    /// The channel URL itself, as files written before the fingerprint held it: read,
    /// honoured, and never written again.
    #[serde(default, skip_serializing)]
    pub channel_url: Option<String>,
    /// `ETag` of the last channel response that was handled to the end.
    #[serde(default)]
    pub etag: Option<String>,
    /// `Last-Modified` of that response.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// `committed_at` of the last commit reported.
    #[serde(default)]
    pub reported_commit_at: Option<u64>,
    /// `at` of the last rollback reported.
    #[serde(default)]
    pub reported_rollback_at: Option<u64>,
}

impl DaemonState {
    /// A fresh state.
    pub fn new() -> DaemonState {
        DaemonState {
            format: FORMAT,
            ..Default::default()
        }
    }

    /// Reads the state; a missing file is a fresh state.
    pub fn load(path: &Path) -> Result<DaemonState> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DaemonState::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let st: DaemonState = serde_json::from_str(&text)
            .with_context(|| format!("corrupt daemon state {}", path.display()))?;
        if st.format != FORMAT {
            bail!(
                "daemon state {} has format {}, this flipslot understands format {FORMAT}",
                path.display(),
                st.format
            );
        }
        Ok(st)
    }

    /// Replaces the state file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        flipslot_os::fs::atomic_write(path, text.as_bytes())?;
        Ok(())
    }

    /// The validators to send for `url` (none when they belong to another URL).
    pub fn validators_for(&self, url: &str) -> (Option<&str>, Option<&str>) {
        let same = match &self.channel_url_sha256 {
            Some(fp) => *fp == url_fingerprint(url),
            None => self.channel_url.as_deref() == Some(url),
        };
        if same {
            (self.etag.as_deref(), self.last_modified.as_deref())
        } else {
            (None, None)
        }
    }

    /// Records that the validators now belong to `url` (by fingerprint only).
    pub fn set_channel_url(&mut self, url: &str) {
        self.channel_url_sha256 = Some(url_fingerprint(url));
        self.channel_url = None;
    }
}

/// The lower-case hex SHA-256 of a URL.
fn url_fingerprint(url: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(url.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::status::temp_path;

    const FORMAT1_FIXTURE: &str = r#"{
  "format": 1,
  "last_serial": 7,
  "last_channel_version": "2.0.0",
  "last_channel_manifest": "abab",
  "channel_url_sha256": "e74fb219ce1cd4969ff387fa428b797163d5cf5d318ebeb83788e1ba3d529789",
  "etag": "\"abc\"",
  "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT",
  "reported_commit_at": 1700000000,
  "reported_rollback_at": null
}
"#;

    #[test]
    fn round_trip_and_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        assert_eq!(DaemonState::load(&path).unwrap(), DaemonState::new());
        std::fs::write(&path, FORMAT1_FIXTURE).unwrap();
        let st = DaemonState::load(&path).unwrap();
        assert_eq!(st.last_serial, Some(7));
        assert_eq!(
            st.validators_for("https://u.example/c.json"),
            (Some("\"abc\""), Some("Mon, 01 Jan 2024 00:00:00 GMT"))
        );
        assert_eq!(st.validators_for("https://other/c.json"), (None, None));
        st.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), FORMAT1_FIXTURE);
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn a_channel_url_is_kept_as_a_fingerprint_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let url = "https://user:secret@u.example/c.json?token=t0ken";
        // A file written before the fingerprint: its URL still selects the validators.
        let legacy = FORMAT1_FIXTURE.replace(
            "\"channel_url_sha256\": \"e74fb219ce1cd4969ff387fa428b797163d5cf5d318ebeb83788e1ba3d529789\"",
            &format!("\"channel_url\": \"{url}\""),
        );
        assert!(legacy.contains("secret"));
        std::fs::write(&path, &legacy).unwrap();
        let mut st = DaemonState::load(&path).unwrap();
        assert_eq!(st.validators_for(url).0, Some("\"abc\""));
        assert_eq!(st.validators_for("https://u.example/c.json"), (None, None));
        // Saved again, the URL is gone and only its fingerprint remains.
        st.set_channel_url(url);
        st.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("t0ken") && !text.contains("u.example"),
            "{text}"
        );
        let st = DaemonState::load(&path).unwrap();
        assert_eq!(st.validators_for(url).0, Some("\"abc\""));
        assert_eq!(st.validators_for("https://u.example/c.json"), (None, None));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        std::fs::write(&path, "{\"format\": 2}").unwrap();
        let e = format!("{:#}", DaemonState::load(&path).unwrap_err());
        assert!(e.contains("daemon.json") && e.contains("format 2"), "{e}");
        std::fs::write(&path, "{").unwrap();
        let e = format!("{:#}", DaemonState::load(&path).unwrap_err());
        assert!(e.contains("daemon.json"), "{e}");
    }
}
