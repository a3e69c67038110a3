//! The `[update]` section of the system config: where the daemon finds its channel, how
//! often it looks, when it may reboot, where it reports, and what stops it.
//!
//! [`RawUpdateConfig`] is what the file says; [`UpdateConfig::from_raw`] validates it and
//! fills in the defaults that depend on the rest of the config (the data directory).

use crate::host::paths;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default time between two polls of the channel, in seconds.
pub const DEFAULT_POLL_INTERVAL: u64 = 3600;

/// When the daemon reboots into a slot it installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RebootPolicy {
    /// Right after the install (unless an inhibit file exists; then when it is gone).
    Immediate,
    /// Inside `reboot-window` (UTC), once no inhibit file exists.
    Window,
    /// Never: the slot stays staged until something else reboots the machine.
    Never,
}

impl RebootPolicy {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootPolicy::Immediate => "immediate",
            RebootPolicy::Window => "window",
            RebootPolicy::Never => "never",
        }
    }
}

/// A daily time window in UTC, `HH:MM-HH:MM`, that may wrap midnight (`23:00-01:30`).
/// The start is inside the window, the end is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RebootWindow {
    /// Minutes after midnight UTC where the window opens.
    pub start: u32,
    /// Minutes after midnight UTC where it closes.
    pub end: u32,
}

const DAY: u64 = 86_400;

impl RebootWindow {
    /// Parses `HH:MM-HH:MM`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<RebootWindow, String> {
        let hm = |t: &str| -> Result<u32, String> {
            let t = t.trim();
            let (h, m) = t
                .split_once(':')
                .ok_or_else(|| format!("{t:?} is not HH:MM"))?;
            let num = |x: &str| -> Option<u32> {
                (!x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| x.parse().ok())
                    .flatten()
            };
            match (num(h), num(m)) {
                (Some(h), Some(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
                _ => Err(format!("{t:?} is not a time between 00:00 and 23:59")),
            }
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not HH:MM-HH:MM"))?;
        let w = RebootWindow {
            start: hm(a)?,
            end: hm(b)?,
        };
        if w.start == w.end {
            return Err(format!("{s:?} is empty (start and end are equal)"));
        }
        Ok(w)
    }

    /// Whether the unix time `now` is inside the window.
    pub fn contains(&self, now: u64) -> bool {
        let m = ((now % DAY) / 60) as u32;
        if self.start < self.end {
            self.start <= m && m < self.end
        } else {
            m >= self.start || m < self.end
        }
    }

    /// Seconds from `now` until the window next opens (0 when inside it).
    pub fn seconds_until_open(&self, now: u64) -> u64 {
        if self.contains(now) {
            return 0;
        }
        let secs_today = now % DAY;
        let start = u64::from(self.start) * 60;
        if start > secs_today {
            start - secs_today
        } else {
            DAY - secs_today + start
        }
    }
}

impl std::fmt::Display for RebootWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02} UTC",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// `[update]` as written in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUpdateConfig {
    channel_url: Option<String>,
    poll_interval_seconds: Option<u64>,
    poll_jitter_seconds: Option<u64>,
    reboot: Option<RebootPolicy>,
    reboot_window: Option<String>,
    report_url: Option<String>,
    inhibit_files: Option<Vec<PathBuf>>,
    machine_id_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    header_file: Option<PathBuf>,
}

/// The validated `[update]` section, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateConfig {
    /// The signed channel document (http or https); required by `flipslot daemon`.
    pub channel_url: Option<String>,
    /// Seconds between two polls.
    pub poll_interval_seconds: u64,
    /// Each wait is the interval plus a uniformly random 0..=this many seconds.
    pub poll_jitter_seconds: u64,
    /// When to reboot after an install.
    pub reboot: RebootPolicy,
    /// With [`RebootPolicy::Window`]: when.
    pub reboot_window: Option<RebootWindow>,
    /// Where events are POSTed as JSON, if anywhere.
    pub report_url: Option<String>,
    /// While any of these exists, no install and no reboot starts.
    pub inhibit_files: Vec<PathBuf>,
    /// The file holding this machine's ID (the rollout bucket).
    pub machine_id_file: PathBuf,
    /// Extra CA certificates (PEM) for the channel, bundle and report URLs.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Its key.
    pub client_key: Option<PathBuf>,
    /// Extra request headers, one `Name: value` a line (secret: never logged).
    pub header_file: Option<PathBuf>,
}

fn check_url(key: &str, url: &str) -> Result<(), (String, String)> {
    let ok = crate::net::is_url(url) && reqwest::Url::parse(url).is_ok_and(|u| u.has_host());
    if ok {
        Ok(())
    } else {
        // Not echoed: a URL may carry credentials.
        Err((
            format!("update.{key}"),
            "is not an http:// or https:// URL".into(),
        ))
    }
}

fn check_abs(key: &str, p: &Path) -> Result<(), (String, String)> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err((
            key.to_string(),
            format!("{} is not an absolute path", p.display()),
        ))
    }
}

impl UpdateConfig {
    /// Validates `raw`; `data_dir` gives the default inhibit file. The error is the
    /// offending key and why.
    pub fn from_raw(
        raw: RawUpdateConfig,
        data_dir: &Path,
    ) -> Result<UpdateConfig, (String, String)> {
        if let Some(u) = &raw.channel_url {
            check_url("channel-url", u)?;
        }
        if let Some(u) = &raw.report_url {
            check_url("report-url", u)?;
        }
        let interval = raw.poll_interval_seconds.unwrap_or(DEFAULT_POLL_INTERVAL);
        if interval == 0 {
            return Err((
                "update.poll-interval-seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if interval > 365 * DAY {
            return Err((
                "update.poll-interval-seconds".into(),
                "must be at most a year".into(),
            ));
        }
        let jitter = raw.poll_jitter_seconds.unwrap_or(interval / 10);
        if jitter > 365 * DAY {
            return Err((
                "update.poll-jitter-seconds".into(),
                "must be at most a year".into(),
            ));
        }
        let reboot = raw.reboot.unwrap_or(RebootPolicy::Immediate);
        let reboot_window = match (reboot, &raw.reboot_window) {
            (RebootPolicy::Window, None) => {
                return Err((
                    "update.reboot-window".into(),
                    "required when reboot = \"window\" (e.g. \"02:00-04:00\", UTC)".into(),
                ))
            }
            (RebootPolicy::Window, Some(w)) => {
                Some(RebootWindow::parse(w).map_err(|e| ("update.reboot-window".to_string(), e))?)
            }
            (_, Some(_)) => {
                return Err((
                    "update.reboot-window".into(),
                    format!(
                        "only used with reboot = \"window\" (reboot is \"{}\")",
                        reboot.as_str()
                    ),
                ))
            }
            (_, None) => None,
        };
        let inhibit_files = raw.inhibit_files.unwrap_or_else(|| {
            vec![
                Path::new(paths::RUN_DIR).join(paths::INHIBIT_FILE_NAME),
                data_dir.join(paths::INHIBIT_FILE_NAME),
            ]
        });
        for (i, p) in inhibit_files.iter().enumerate() {
            check_abs(&format!("update.inhibit-files[{i}]"), p)?;
        }
        let machine_id_file = raw
            .machine_id_file
            .unwrap_or_else(|| PathBuf::from(paths::MACHINE_ID));
        check_abs("update.machine-id-file", &machine_id_file)?;
        for (key, p) in [
            ("update.ca-file", &raw.ca_file),
            ("update.client-cert", &raw.client_cert),
            ("update.client-key", &raw.client_key),
            ("update.header-file", &raw.header_file),
        ] {
            if let Some(p) = p {
                check_abs(key, p)?;
            }
        }
        match (&raw.client_cert, &raw.client_key) {
            (Some(_), None) => {
                return Err((
                    "update.client-key".into(),
                    "required with update.client-cert".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "update.client-cert".into(),
                    "required with update.client-key".into(),
                ))
            }
            _ => {}
        }
        Ok(UpdateConfig {
            channel_url: raw.channel_url,
            poll_interval_seconds: interval,
            poll_jitter_seconds: jitter,
            reboot,
            reboot_window,
            report_url: raw.report_url,
            inhibit_files,
            machine_id_file,
            ca_file: raw.ca_file,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
            header_file: raw.header_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UpdateConfig, (String, String)> {
        let raw: RawUpdateConfig =
            toml::from_str(text).map_err(|e| ("toml".into(), e.to_string()))?;
        UpdateConfig::from_raw(raw, Path::new("/var/lib/flipslot"))
    }

    #[test]
    fn defaults() {
        let c = parse("channel-url = \"https://u.example/stable.json\"\n").unwrap();
        assert_eq!(c.poll_interval_seconds, 3600);
        assert_eq!(c.poll_jitter_seconds, 360);
        assert_eq!(c.reboot, RebootPolicy::Immediate);
        assert_eq!(
            c.inhibit_files,
            vec![
                PathBuf::from("/run/flipslot/inhibit"),
                PathBuf::from("/var/lib/flipslot/inhibit")
            ]
        );
        assert_eq!(c.machine_id_file, PathBuf::from("/etc/machine-id"));
        let c = parse("poll-interval-seconds = 60\n").unwrap();
        assert_eq!((c.poll_jitter_seconds, c.channel_url), (6, None));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("channel-url = \"ftp://x/y\"", "update.channel-url"),
            ("report-url = \"not a url\"", "update.report-url"),
            ("poll-interval-seconds = 0", "update.poll-interval-seconds"),
            ("reboot = \"window\"", "update.reboot-window"),
            (
                "reboot = \"window\"\nreboot-window = \"25:00-01:00\"",
                "update.reboot-window",
            ),
            ("reboot-window = \"01:00-02:00\"", "update.reboot-window"),
            ("inhibit-files = [\"rel/x\"]", "update.inhibit-files[0]"),
            ("machine-id-file = \"machine-id\"", "update.machine-id-file"),
            ("client-cert = \"/c.pem\"", "update.client-key"),
            ("header-file = \"h\"", "update.header-file"),
        ] {
            let (k, reason) = parse(text).unwrap_err();
            assert_eq!(k, key, "{text}: {reason}");
        }
        let (_, e) = parse("colour = 1").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let (_, e) =
            parse("channel-url = \"https://user:s3cret@x/c\"\nreboot = \"sometimes\"").unwrap_err();
        assert!(e.contains("sometimes") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn windows() {
        let w = RebootWindow::parse("02:00-04:00").unwrap();
        assert_eq!((w.start, w.end), (120, 240));
        assert_eq!(w.to_string(), "02:00-04:00 UTC");
        let day = 19_000 * DAY;
        assert!(!w.contains(day + 3600));
        assert!(w.contains(day + 7200));
        assert!(w.contains(day + 4 * 3600 - 1));
        assert!(!w.contains(day + 4 * 3600));
        assert_eq!(w.seconds_until_open(day + 3600), 3600);
        assert_eq!(w.seconds_until_open(day + 7300), 0);
        assert_eq!(w.seconds_until_open(day + 5 * 3600), DAY - 3 * 3600);

        let wrap = RebootWindow::parse("23:30-01:00").unwrap();
        assert!(wrap.contains(day + 23 * 3600 + 1800));
        assert!(wrap.contains(day + 1800));
        assert!(!wrap.contains(day + 3600));
        assert!(!wrap.contains(day + 12 * 3600));
        assert_eq!(wrap.seconds_until_open(day + 23 * 3600), 1800);
        assert_eq!(wrap.seconds_until_open(day + 3600), 22 * 3600 + 1800);

        for bad in [
            "",
            "02:00",
            "2-4",
            "02:00-02:00",
            "24:00-01:00",
            "02:60-03:00",
            "a:b-c:d",
        ] {
            assert!(RebootWindow::parse(bad).is_err(), "{bad}");
        }
        assert!(RebootWindow::parse("2:05 - 3:00").is_ok());
    }
}
