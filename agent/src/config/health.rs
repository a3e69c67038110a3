//! The `[health]` section of the system config: which checks decide whether a boot is
//! good, and the deadline for all of them together.

use serde::{Deserialize, Serialize};

/// Default overall deadline in seconds.
pub const DEFAULT_DEADLINE: u64 = 300;
/// Default per-check timeout in seconds.
pub const DEFAULT_CHECK_TIMEOUT: u64 = 30;

/// Health checks run by `flipslot health` after each boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConfig {
    /// All checks together must finish within this many seconds.
    #[serde(default = "default_deadline")]
    pub deadline_seconds: u64,
    /// systemd units that must be active (`systemctl is-active`).
    #[serde(default)]
    pub units: Vec<String>,
    /// Commands that must exit 0.
    #[serde(default)]
    pub command: Vec<CommandCheck>,
    /// HTTP endpoints that must answer 2xx.
    #[serde(default)]
    pub http: Vec<HttpCheck>,
    /// Whether to reboot into the previous slot when a trial boot fails its checks.
    #[serde(default = "yes")]
    pub reboot_on_failure: bool,
    /// Whether the update server (the host of `[update] channel-url`) must answer: any
    /// HTTP response below 500 counts, with the daemon's TLS and header options.
    #[serde(default)]
    pub update_server: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            deadline_seconds: DEFAULT_DEADLINE,
            units: Vec::new(),
            command: Vec::new(),
            http: Vec::new(),
            reboot_on_failure: true,
            update_server: false,
        }
    }
}

/// A command that must exit 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandCheck {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Seconds before the command is killed and the check fails.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// An HTTP endpoint that must answer with a 2xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpCheck {
    /// `http://host:port/path` (plain HTTP: health endpoints are local).
    pub url: String,
    /// Seconds before the request fails.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_deadline() -> u64 {
    DEFAULT_DEADLINE
}

fn default_timeout() -> u64 {
    DEFAULT_CHECK_TIMEOUT
}

fn yes() -> bool {
    true
}

impl HealthConfig {
    /// Checks the values; returns the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.deadline_seconds == 0 {
            return Err((
                "health.deadline-seconds".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, u) in self.units.iter().enumerate() {
            if u.is_empty() || u.starts_with('-') || u.contains(char::is_whitespace) {
                return Err((
                    format!("health.units[{i}]"),
                    format!("{u:?} is not a unit name"),
                ));
            }
        }
        for (i, c) in self.command.iter().enumerate() {
            if c.argv.is_empty() || c.argv[0].is_empty() {
                return Err((
                    format!("health.command[{i}].argv"),
                    "must name a program".into(),
                ));
            }
            if c.timeout_seconds == 0 {
                return Err((
                    format!("health.command[{i}].timeout-seconds"),
                    "must be at least 1".into(),
                ));
            }
        }
        for (i, h) in self.http.iter().enumerate() {
            if !crate::net::is_url(&h.url) || reqwest::Url::parse(&h.url).is_err() {
                return Err((
                    format!("health.http[{i}].url"),
                    format!("{:?} is not an http(s)://host[:port]/path URL", h.url),
                ));
            }
            if h.timeout_seconds == 0 {
                return Err((
                    format!("health.http[{i}].timeout-seconds"),
                    "must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }
}
