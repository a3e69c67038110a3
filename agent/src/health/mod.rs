//! Boot assessment: run the configured health checks within one deadline, and decide from
//! the bootloader state and the status file whether this boot is a trial to commit or
//! roll back, or whether a previous trial already failed.

pub mod assess;
pub mod host;
pub mod verdict;

use crate::config::health::HealthConfig;
use crate::net::client::ProbeError;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Runs single checks. The host implementation is [`host::HostChecks`]; tests use fakes.
pub trait CheckRunner {
    /// Whether a systemd unit is active now; `Err` says that it is not.
    fn unit_active(&self, unit: &str, timeout: Duration) -> Result<(), CheckFailure>;
    /// Runs a command; `Err` carries the exit status and stderr tail, the timeout, or why
    /// it could not start.
    fn command(&self, argv: &[String], timeout: Duration) -> Result<(), CheckFailure>;
    /// Fetches a URL; `Err` says what was answered instead of 2xx, or that nothing was.
    fn http(&self, url: &str, timeout: Duration) -> Result<(), CheckFailure>;
    /// Whether the update server answers at all (any status below 500).
    fn update_server(&self, timeout: Duration) -> Result<(), CheckFailure>;
}

/// Why one check failed. The message ([`Display`](std::fmt::Display)) is what reports, the
/// status file and `--json` output show; it serialises as that message string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    /// A systemd unit is not active (inactive, failed, still activating, or unknown).
    #[error("{unit} is not active")]
    UnitNotActive {
        /// The unit, e.g. `sshd.service`.
        unit: String,
    },
    /// A command ran and exited unsuccessfully (or was killed by a signal).
    #[error("{program} exited with {status}{}", stderr_suffix(.stderr_tail))]
    Exited {
        /// The program (the first word of the command).
        program: String,
        /// How it exited, as the operating system describes it, e.g. `exit status: 3`.
        status: String,
        /// The last lines of its standard error (lines joined with `\n`; may be empty).
        stderr_tail: String,
    },
    /// A command ran past its own timeout and was killed.
    #[error("{program} did not finish within {} s and was killed", .timeout.as_secs())]
    TimedOut {
        /// The program (the first word of the command).
        program: String,
        /// The time it was given.
        timeout: Duration,
    },
    /// A command has no program to run.
    #[error("cannot run an empty command")]
    EmptyCommand,
    /// A command could not be started or waited for.
    #[error("cannot run {program}: {cause}")]
    CannotRun {
        /// The program (the first word of the command).
        program: String,
        /// Why, as one line.
        cause: String,
    },
    /// An HTTP endpoint answered with a status the check does not accept.
    #[error("{url} answered HTTP {status}")]
    HttpStatus {
        /// The URL as it may be shown (credentials and query values redacted).
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// An HTTP endpoint gave no answer: the URL is not usable, or the server could not be
    /// reached (connection refused, TLS failure, timeout…).
    #[error("{0}")]
    Unreachable(ProbeError),
    /// The update-server check is enabled but `[update]` has no channel URL.
    #[error("no [update] channel-url is configured")]
    NoUpdateServer,
    /// The overall health deadline passed before the check could pass.
    #[error("overall health deadline of {seconds} s passed")]
    DeadlinePassed {
        /// The configured deadline, in seconds.
        seconds: u64,
    },
}

/// The stderr tail as it follows a failed command's status: on one line, lines separated
/// by ` | `.
fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.replace('\n', " | "))
    }
}

impl Serialize for CheckFailure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// What was checked, e.g. `unit sshd.service`.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed (serialised as its message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CheckFailure>,
    /// How long it took.
    pub seconds: f64,
}

/// The outcome of all checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Whether every check passed within the deadline.
    pub healthy: bool,
    /// Each check run, in order (checks after the first failure are not run).
    pub results: Vec<CheckResult>,
    /// The first failure, as one line.
    pub reason: Option<String>,
}

/// A check to run: its name, own timeout, how to run it, and whether to retry it.
type PlannedCheck<'a> = (
    String,
    Duration,
    Box<dyn Fn(Duration) -> Result<(), CheckFailure> + 'a>,
    bool,
);

/// How often a not-yet-passing unit or HTTP check is retried.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Runs every check in the config, in order (units, commands, HTTP), stopping at the first
/// failure. Units and HTTP endpoints are retried until their own timeout, since services
/// may still be starting; commands run once. No check runs past the overall deadline.
pub fn run_checks(cfg: &HealthConfig, runner: &dyn CheckRunner) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(cfg.deadline_seconds);
    let mut results = Vec::new();
    let mut checks: Vec<PlannedCheck<'_>> = Vec::new();
    for u in &cfg.units {
        checks.push((
            format!("unit {u}"),
            Duration::from_secs(crate::config::health::DEFAULT_CHECK_TIMEOUT),
            Box::new(move |t| runner.unit_active(u, t)),
            true,
        ));
    }
    for c in &cfg.command {
        checks.push((
            format!("command {}", c.argv.join(" ")),
            Duration::from_secs(c.timeout_seconds),
            Box::new(move |t| runner.command(&c.argv, t)),
            false,
        ));
    }
    for h in &cfg.http {
        checks.push((
            format!("http {}", h.url),
            Duration::from_secs(h.timeout_seconds),
            Box::new(move |t| runner.http(&h.url, t)),
            true,
        ));
    }
    if cfg.update_server {
        checks.push((
            "update server".to_string(),
            Duration::from_secs(crate::config::health::DEFAULT_CHECK_TIMEOUT),
            Box::new(move |t| runner.update_server(t)),
            true,
        ));
    }
    for (name, timeout, run, retry) in checks {
        let start = Instant::now();
        let until = (start + timeout).min(deadline);
        let mut outcome;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                outcome = Err(CheckFailure::DeadlinePassed {
                    seconds: cfg.deadline_seconds,
                });
                break;
            }
            outcome = run(left);
            if outcome.is_ok() || !retry {
                break;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left <= RETRY_EVERY {
                break;
            }
            std::thread::sleep(RETRY_EVERY);
        }
        let seconds = start.elapsed().as_secs_f64();
        let failed = outcome.is_err();
        results.push(CheckResult {
            check: name,
            ok: !failed,
            error: outcome.err(),
            seconds,
        });
        if failed {
            break;
        }
    }
    let reason = results.iter().find(|r| !r.ok).map(|r| match &r.error {
        Some(e) => format!("{}: {e}", r.check),
        None => format!("{}: failed", r.check),
    });
    Verdict {
        healthy: reason.is_none(),
        results,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health::{CommandCheck, HttpCheck};
    use std::cell::Cell;

    struct Fake {
        unit_ok_after: u32,
        calls: Cell<u32>,
        command_ok: bool,
    }

    impl CheckRunner for Fake {
        fn unit_active(&self, u: &str, _t: Duration) -> Result<(), CheckFailure> {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() > self.unit_ok_after {
                Ok(())
            } else {
                Err(CheckFailure::UnitNotActive { unit: u.into() })
            }
        }
        fn command(&self, argv: &[String], _t: Duration) -> Result<(), CheckFailure> {
            if self.command_ok {
                Ok(())
            } else {
                Err(CheckFailure::Exited {
                    program: argv[0].clone(),
                    status: "status 3".into(),
                    stderr_tail: String::new(),
                })
            }
        }
        fn http(&self, _u: &str, _t: Duration) -> Result<(), CheckFailure> {
            Ok(())
        }
        fn update_server(&self, _t: Duration) -> Result<(), CheckFailure> {
            Err(CheckFailure::Unreachable(ProbeError::Unreachable {
                url: "http://updates.example/".into(),
                cause: "connection refused".into(),
            }))
        }
    }

    fn cfg() -> HealthConfig {
        HealthConfig {
            deadline_seconds: 5,
            units: vec!["app.service".into()],
            command: vec![CommandCheck {
                argv: vec!["/bin/check".into()],
                timeout_seconds: 1,
            }],
            http: vec![HttpCheck {
                url: "http://127.0.0.1/".into(),
                timeout_seconds: 1,
            }],
            reboot_on_failure: true,
            update_server: false,
        }
    }

    #[test]
    fn an_unreachable_update_server_fails_when_required() {
        let f = Fake {
            unit_ok_after: 0,
            calls: Cell::new(0),
            command_ok: true,
        };
        let mut c = cfg();
        c.update_server = true;
        c.deadline_seconds = 1;
        let v = run_checks(&c, &f);
        assert!(!v.healthy);
        assert!(v.reason.unwrap().starts_with("update server"));
    }

    #[test]
    fn all_pass_after_a_unit_retry() {
        let f = Fake {
            unit_ok_after: 1,
            calls: Cell::new(0),
            command_ok: true,
        };
        let v = run_checks(&cfg(), &f);
        assert!(v.healthy, "{v:?}");
        assert_eq!(v.results.len(), 3);
        assert_eq!(f.calls.get(), 2);
    }

    #[test]
    fn first_failure_stops_and_is_the_reason() {
        let f = Fake {
            unit_ok_after: 0,
            calls: Cell::new(0),
            command_ok: false,
        };
        let v = run_checks(&cfg(), &f);
        assert!(!v.healthy);
        assert_eq!(v.results.len(), 2);
        assert_eq!(
            v.reason.as_deref(),
            Some("command /bin/check: /bin/check exited with status 3")
        );
    }

    #[test]
    fn deadline_bounds_retries() {
        let f = Fake {
            unit_ok_after: u32::MAX,
            calls: Cell::new(0),
            command_ok: true,
        };
        let mut c = cfg();
        c.deadline_seconds = 1;
        let v = run_checks(&c, &f);
        assert!(!v.healthy);
        // The unit's own timeout (DEFAULT_CHECK_TIMEOUT, 30 s) allows about 60 tries; the
        // 1 s deadline stops them after at most one per RETRY_EVERY within it, and no later
        // check runs.
        let most =
            u32::try_from(Duration::from_secs(1).as_millis() / RETRY_EVERY.as_millis()).unwrap();
        assert!(
            (1..=most).contains(&f.calls.get()),
            "{} unit checks",
            f.calls.get()
        );
        assert_eq!(v.results.len(), 1, "{v:?}");
        assert!(v.reason.unwrap().starts_with("unit app.service"));
    }

    #[test]
    fn no_checks_is_healthy() {
        let f = Fake {
            unit_ok_after: 0,
            calls: Cell::new(0),
            command_ok: false,
        };
        let v = run_checks(&HealthConfig::default(), &f);
        assert!(v.healthy);
        assert!(v.results.is_empty());
    }

    #[test]
    fn each_failure_reads_as_before() {
        let cases = [
            (
                CheckFailure::UnitNotActive {
                    unit: "app.service".into(),
                },
                "app.service is not active",
            ),
            (
                CheckFailure::Exited {
                    program: "/bin/check".into(),
                    status: "exit status: 3".into(),
                    stderr_tail: String::new(),
                },
                "/bin/check exited with exit status: 3",
            ),
            (
                CheckFailure::Exited {
                    program: "/bin/check".into(),
                    status: "exit status: 3".into(),
                    stderr_tail: "not ready\nstill not ready".into(),
                },
                "/bin/check exited with exit status: 3: not ready | still not ready",
            ),
            (
                CheckFailure::TimedOut {
                    program: "sleep".into(),
                    timeout: Duration::from_millis(2500),
                },
                "sleep did not finish within 2 s and was killed",
            ),
            (CheckFailure::EmptyCommand, "cannot run an empty command"),
            (
                CheckFailure::CannotRun {
                    program: "/nonexistent/check".into(),
                    cause: "program /nonexistent/check not found".into(),
                },
                "cannot run /nonexistent/check: program /nonexistent/check not found",
            ),
            (
                CheckFailure::HttpStatus {
                    url: "http://127.0.0.1/health".into(),
                    status: 503,
                },
                "http://127.0.0.1/health answered HTTP 503",
            ),
            (
                CheckFailure::Unreachable(ProbeError::Unreachable {
                    url: "http://127.0.0.1/health".into(),
                    cause: "connection refused".into(),
                }),
                "http://127.0.0.1/health is unreachable: connection refused",
            ),
            (
                CheckFailure::Unreachable(ProbeError::Setup("invalid URL: empty host".into())),
                "invalid URL: empty host",
            ),
            (
                CheckFailure::NoUpdateServer,
                "no [update] channel-url is configured",
            ),
            (
                CheckFailure::DeadlinePassed { seconds: 90 },
                "overall health deadline of 90 s passed",
            ),
        ];
        for (failure, message) in cases {
            assert_eq!(failure.to_string(), message, "{failure:?}");
        }
    }

    #[test]
    fn a_failure_serialises_as_its_message() {
        let r = CheckResult {
            check: "unit app.service".into(),
            ok: false,
            error: Some(CheckFailure::UnitNotActive {
                unit: "app.service".into(),
            }),
            seconds: 0.5,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"check":"unit app.service","ok":false,"error":"app.service is not active","seconds":0.5}"#
        );
    }
}
