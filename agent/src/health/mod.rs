//! Boot assessment: run the configured health checks within one deadline, and decide from
//! the bootloader state and the status file whether this boot is a trial to commit or
//! roll back, or whether a previous trial already failed.

pub mod assess;
pub mod host;
pub mod verdict;

use crate::config::health::HealthConfig;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Runs single checks. The host implementation is [`host::HostChecks`]; tests use fakes.
pub trait CheckRunner {
    /// Whether a systemd unit is active now; `Err` says what it is instead.
    fn unit_active(&self, unit: &str, timeout: Duration) -> Result<(), String>;
    /// Runs a command; `Err` carries the exit status and stderr tail or the timeout.
    fn command(&self, argv: &[String], timeout: Duration) -> Result<(), String>;
    /// Fetches a URL; `Err` says what was answered instead of 2xx.
    fn http(&self, url: &str, timeout: Duration) -> Result<(), String>;
    /// Whether the update server answers at all (any status below 500).
    fn update_server(&self, timeout: Duration) -> Result<(), String>;
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// What was checked, e.g. `unit sshd.service`.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    Box<dyn Fn(Duration) -> Result<(), String> + 'a>,
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
                outcome = Err(format!(
                    "overall health deadline of {} s passed",
                    cfg.deadline_seconds
                ));
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
    let reason = results
        .iter()
        .find(|r| !r.ok)
        .map(|r| format!("{}: {}", r.check, r.error.as_deref().unwrap_or("failed")));
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
        fn unit_active(&self, _u: &str, _t: Duration) -> Result<(), String> {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() > self.unit_ok_after {
                Ok(())
            } else {
                Err("activating".into())
            }
        }
        fn command(&self, argv: &[String], _t: Duration) -> Result<(), String> {
            if self.command_ok {
                Ok(())
            } else {
                Err(format!("{} exited with status 3", argv[0]))
            }
        }
        fn http(&self, _u: &str, _t: Duration) -> Result<(), String> {
            Ok(())
        }
        fn update_server(&self, _t: Duration) -> Result<(), String> {
            Err("connection refused".into())
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
}
