//! The host's health checks and reboot: systemd units through `systemctl`, commands with a
//! timeout, HTTP through the agent's one HTTP client ([`crate::net::client`]). Commands
//! run through [`flipslot_os::process`].

use crate::health::{CheckFailure, CheckRunner};
use crate::host::paths::Root;
use crate::host::sys;
use crate::net::client::probe;
use crate::net::HttpOptions;
use flipslot_os::process::{stderr_tail, Cmd, CommandError};
use std::time::Duration;

/// Runs checks on this machine.
#[derive(Debug, Default)]
pub struct HostChecks {
    /// The channel URL and HTTP options of `[update]`, for the update-server check.
    pub update_server: Option<(String, crate::net::HttpOptions)>,
}

fn run(argv: &[String], timeout: Duration) -> Result<(), CheckFailure> {
    let Some(cmd) = Cmd::from_argv(argv) else {
        return Err(CheckFailure::EmptyCommand);
    };
    let program = argv[0].clone();
    match cmd.discard_stdout().timeout(timeout).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(CheckFailure::Exited {
            program,
            status: out.status.to_string(),
            stderr_tail: stderr_tail(&out.stderr, 5),
        }),
        Err(CommandError::TimedOut { .. }) => Err(CheckFailure::TimedOut { program, timeout }),
        Err(e) => Err(CheckFailure::CannotRun {
            program,
            cause: e.to_string(),
        }),
    }
}

impl CheckRunner for HostChecks {
    fn unit_active(&self, unit: &str, timeout: Duration) -> Result<(), CheckFailure> {
        let argv = ["systemctl", "is-active", "--quiet", "--", unit].map(String::from);
        run(&argv, timeout).map_err(|_| CheckFailure::UnitNotActive {
            unit: unit.to_string(),
        })
    }

    fn command(&self, argv: &[String], timeout: Duration) -> Result<(), CheckFailure> {
        run(argv, timeout)
    }

    fn http(&self, url: &str, timeout: Duration) -> Result<(), CheckFailure> {
        let (status, shown) =
            probe(url, &HttpOptions::default(), timeout).map_err(CheckFailure::Unreachable)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(CheckFailure::HttpStatus {
                url: shown,
                status: status.as_u16(),
            })
        }
    }

    fn update_server(&self, timeout: Duration) -> Result<(), CheckFailure> {
        let (url, opts) = self
            .update_server
            .as_ref()
            .ok_or(CheckFailure::NoUpdateServer)?;
        match probe(url, opts, timeout).map_err(CheckFailure::Unreachable)? {
            (status, _) if status.as_u16() < 500 => Ok(()),
            (status, shown) => Err(CheckFailure::HttpStatus {
                url: shown,
                status: status.as_u16(),
            }),
        }
    }
}

/// Restarts the machine.
pub trait Rebooter {
    /// Reboots now (returns only on failure, or in tests).
    fn reboot(&self) -> anyhow::Result<()>;
}

/// Reboots the host.
#[derive(Debug)]
pub struct HostReboot {
    /// The root directory (to find out whether systemd runs).
    pub root: Root,
}

impl Rebooter for HostReboot {
    fn reboot(&self) -> anyhow::Result<()> {
        anyhow::Context::context(sys::reboot(&self.root), "reboot failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_pass_fail_and_time_out() {
        let h = HostChecks::default();
        let t = Duration::from_secs(5);
        assert_eq!(h.command(&["true".into()], t), Ok(()));
        let e = h
            .command(
                &["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()],
                t,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit status: 3") && e.contains("broken"), "{e}");
        let e = h
            .command(&["sleep".into(), "10".into()], Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("killed"), "{e}");
        let e = h
            .command(&["/nonexistent/check".into()], t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot run"), "{e}");
    }
}
