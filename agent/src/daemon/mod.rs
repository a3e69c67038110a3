//! `flipslot daemon`: polls a signed channel, installs what it offers into the inactive
//! slot, reboots per policy, reports every step, and serves the local socket API.
//!
//! Code map: [`crate::config::update`] (`[update]`), [`decide`] (pure decisions), [`cycle`] (one poll,
//! blocking), [`fetch`] (the conditional GET), [`events`] (reports and their queue),
//! [`state`] (`daemon.json`), [`server`] / [`client`] (the socket API, both sides),
//! [`notify`] (systemd notifications). This module runs the loop: a current-thread tokio
//! runtime whose blocking work (polls, installs, reports, reboots) runs in
//! `spawn_blocking`; the install lock still admits one installer at a time.

pub mod client;
pub mod cycle;
pub mod decide;
pub mod events;
pub mod fetch;
pub mod notify;
pub mod server;
pub mod state;

use crate::config::update::{RebootPolicy, UpdateConfig};
use crate::health::host::{HostReboot, Rebooter};
use crate::host::clock::{Clock, SystemClock};
use crate::host::paths;
use crate::net::HttpOptions;
use crate::ops::Agent;
use anyhow::{anyhow, Context, Result};
use cycle::{CycleResult, PollOutcome, Staged};
use decide::RebootGate;
use notify::NotifyState;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A socket client's request to poll now; answered with the poll's result line.
pub type CheckRequest = oneshot::Sender<Value>;

/// How often a reboot held back by an inhibit file is looked at again.
const INHIBIT_RECHECK: Duration = Duration::from_secs(30);
/// The longest sleep before a reboot window is looked at again (the clock may jump).
const WINDOW_RECHECK: Duration = Duration::from_secs(600);

/// How `flipslot daemon` runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Poll once, act, exit (no socket).
    pub once: bool,
    /// The socket (already resolved under the root).
    pub socket: PathBuf,
    /// Run this program instead of rebooting (tests, custom reboot flows).
    pub reboot_command: Option<PathBuf>,
}

/// Runs a program instead of rebooting.
#[derive(Debug)]
pub struct CommandReboot {
    /// The program (no arguments, no shell).
    pub program: PathBuf,
}

impl Rebooter for CommandReboot {
    fn reboot(&self) -> Result<()> {
        let program = self.program.display().to_string();
        let cmd = flipslot_os::process::Cmd::new(&self.program)
            .discard_stdout()
            .timeout(Duration::from_secs(60));
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(anyhow!(
                "reboot command {program} exited with {}: {}",
                out.status,
                flipslot_os::process::stderr_tail(&out.stderr, 5)
            )),
            Err(flipslot_os::process::CommandError::TimedOut { .. }) => {
                Err(anyhow!("reboot command {program} timed out"))
            }
            Err(e) => Err(anyhow!("cannot run reboot command {program}: {e}")),
        }
    }
}

/// Everything a poll needs, shared by the loop, the socket server and blocking tasks.
pub struct Daemon {
    /// Config, root, command line.
    pub agent: Agent,
    /// `[update]`.
    pub update: UpdateConfig,
    /// `update.channel-url`.
    pub channel_url: String,
    /// TLS and headers for the channel, bundle and report URLs.
    pub http: HttpOptions,
    /// This machine's ID.
    pub machine_id: String,
    /// The clock.
    pub clock: Box<dyn Clock + Send + Sync>,
    /// Reports and their queue.
    pub reports: Arc<Mutex<events::Reports>>,
    /// `daemon.json`, resolved.
    pub state_path: PathBuf,
    /// How to reboot.
    pub rebooter: Box<dyn Rebooter + Send + Sync>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("machine_id", &self.machine_id)
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

/// Reads the machine ID (first line, trimmed; must not be empty).
pub fn read_machine_id(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the machine ID from {}", path.display()))?;
    let id = text.lines().next().unwrap_or("").trim().to_string();
    if id.is_empty() {
        return Err(anyhow!("machine ID file {} is empty", path.display()));
    }
    Ok(id)
}

impl Daemon {
    /// Sets up from the agent's config (which must have `[update]` with `channel-url`).
    pub fn new(agent: Agent, rebooter: Box<dyn Rebooter + Send + Sync>) -> Result<Daemon> {
        let cfg_path = agent.cfg.path.display().to_string();
        let update = agent.cfg.update.clone().ok_or_else(|| {
            anyhow!("config {cfg_path}: flipslot daemon needs an [update] section with channel-url")
        })?;
        let channel_url = update.channel_url.clone().ok_or_else(|| {
            anyhow!("config {cfg_path}: update.channel-url is required by flipslot daemon")
        })?;
        let http = fetch::http_options(&update, &agent.root)?;
        let machine_id = read_machine_id(&agent.root.resolve(&update.machine_id_file))?;
        let data_dir = agent.root.resolve(&agent.cfg.data_dir);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let reports = events::Reports::new(
            update.report_url.as_deref(),
            &http,
            data_dir.join(paths::REPORTS_DIR_NAME),
            machine_id.clone(),
            Box::new(SystemClock),
        )?;
        Ok(Daemon {
            state_path: data_dir.join(paths::DAEMON_STATE_FILE_NAME),
            agent,
            update,
            channel_url,
            http,
            machine_id,
            clock: Box::new(SystemClock),
            reports: Arc::new(Mutex::new(reports)),
            rebooter,
        })
    }

    /// Whether a reboot into `staged` may start now; reboots when it may. `Ok(Go)` means
    /// the reboot was asked for.
    pub fn reboot_step(&self, staged: &Staged) -> RebootGate {
        let gate = decide::reboot_gate(
            self.update.reboot,
            self.update.reboot_window.as_ref(),
            self.inhibited_by(),
            self.clock.now_unix(),
        );
        match &gate {
            RebootGate::Go => {
                log::info!(
                    "rebooting into slot {} (version {})",
                    staged.slot,
                    staged.version
                );
                self.report_event(
                    "rebooting",
                    Some(&staged.version),
                    Some(&staged.slot),
                    json!({ "reboot": self.update.reboot.as_str() }),
                );
                if let Err(e) = self.rebooter.reboot() {
                    let reason = format!("{e:#}");
                    log::error!("{reason}");
                    self.report_event(
                        "failed",
                        Some(&staged.version),
                        Some(&staged.slot),
                        json!({ "reason": reason }),
                    );
                }
            }
            RebootGate::Never => {}
            RebootGate::Inhibited(f) => log::info!(
                "slot {} is staged; reboot held back by {}",
                staged.slot,
                f.display()
            ),
            RebootGate::OutsideWindow(d) => log::info!(
                "slot {} is staged; reboot in the window {} (opens in {} s)",
                staged.slot,
                self.update
                    .reboot_window
                    .map(|w| w.to_string())
                    .unwrap_or_default(),
                d.as_secs()
            ),
        }
        if staged.fresh && gate != RebootGate::Go {
            let why = match &gate {
                RebootGate::Inhibited(f) => format!("inhibited by {}", f.display()),
                RebootGate::OutsideWindow(_) => "waiting for the reboot window".into(),
                _ => "reboot policy is never".into(),
            };
            self.report_event(
                "staged",
                Some(&staged.version),
                Some(&staged.slot),
                json!({ "reboot": self.update.reboot.as_str(), "reason": why }),
            );
        }
        gate
    }

    fn report_event(&self, event: &str, version: Option<&str>, slot: Option<&str>, extra: Value) {
        match self.reports.lock() {
            Ok(mut r) => r.send(event, version, slot, extra),
            Err(_) => log::error!("report queue lock poisoned; event {event} not reported"),
        }
    }

    fn next_wait(&self) -> Duration {
        let mut b = [0u8; 8];
        let unit = match getrandom::getrandom(&mut b) {
            Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
            Err(_) => 0.5,
        };
        decide::poll_wait(
            self.update.poll_interval_seconds,
            self.update.poll_jitter_seconds,
            unit,
        )
    }
}

/// Runs `flipslot daemon`.
pub fn run(agent: Agent, opts: DaemonOptions) -> Result<()> {
    // Once per start (other commands log them at debug level only).
    for n in agent.config_notices() {
        log::warn!("{n}");
    }
    let rebooter: Box<dyn Rebooter + Send + Sync> = match &opts.reboot_command {
        Some(p) => Box::new(CommandReboot { program: p.clone() }),
        None => Box::new(HostReboot {
            root: agent.root.clone(),
        }),
    };
    let d = Arc::new(Daemon::new(agent, rebooter)?);
    if opts.once {
        let r = d.cycle();
        if let Some(staged) = &r.staged {
            d.reboot_step(staged);
        }
        if let Ok(mut rep) = d.reports.lock() {
            rep.flush();
        }
        println!("{}", r.to_json());
        if r.outcome.is_error() {
            return Err(anyhow!(
                "{}",
                r.reason.as_deref().unwrap_or("the update check failed")
            ));
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let r = rt.block_on(serve(d, opts.socket));
    // A poll still running in a blocking thread ends with the process.
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

async fn serve(d: Arc<Daemon>, socket: PathBuf) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::time::{sleep_until, Instant};

    let (listener, _guard) = server::bind(&socket)?;
    let (check_tx, mut check_rx) = mpsc::channel::<CheckRequest>(16);
    let accept = tokio::spawn(server::accept_loop(listener, d.clone(), check_tx));
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let watchdog = notify::watchdog_interval();
    let mut wd = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    log::info!(
        "flipslot daemon started: channel {}, socket {}, poll every {} s (+ up to {} s), reboot {}",
        reqwest::Url::parse(&d.channel_url)
            .map(|u| crate::net::headers::redact(&u))
            .unwrap_or_default(),
        socket.display(),
        d.update.poll_interval_seconds,
        d.update.poll_jitter_seconds,
        d.update.reboot.as_str()
    );
    notify::notify_logged(&[
        NotifyState::Ready,
        NotifyState::Status("waiting for the first poll"),
    ]);

    let mut next_poll = Instant::now();
    let mut pending: Option<Staged> = None;
    let mut next_reboot_check = Instant::now();
    let far = Duration::from_secs(365 * 86_400);
    'outer: loop {
        let mut waiters: Vec<CheckRequest> = Vec::new();
        tokio::select! {
            _ = sleep_until(next_poll) => {}
            Some(w) = check_rx.recv() => waiters.push(w),
            _ = sleep_until(next_reboot_check), if pending.is_some() => {
                if let Some(staged) = pending.clone() {
                    let d2 = d.clone();
                    let gate = tokio::task::spawn_blocking(move || d2.reboot_step(&staged)).await;
                    let (again, wait) = reboot_followup(gate.ok());
                    if !again { pending = None; }
                    next_reboot_check = Instant::now() + wait.unwrap_or(far);
                }
                continue;
            }
            _ = wd.tick(), if watchdog.is_some() => {
                notify::notify_logged(&[NotifyState::Watchdog]);
                continue;
            }
            _ = term.recv() => break 'outer,
            _ = int.recv() => break 'outer,
        }

        notify::notify_logged(&[NotifyState::Status("checking for updates")]);
        let d2 = d.clone();
        let mut job = tokio::task::spawn_blocking(move || d2.cycle());
        let result: CycleResult = loop {
            tokio::select! {
                r = &mut job => break r.unwrap_or_else(|e| CycleResult {
                    outcome: PollOutcome::Failed,
                    reason: Some(format!("update task failed: {e}")),
                    version: None,
                    staged: None,
                }),
                Some(w) = check_rx.recv() => waiters.push(w),
                _ = wd.tick(), if watchdog.is_some() => notify::notify_logged(&[NotifyState::Watchdog]),
                _ = term.recv() => {
                    log::warn!("stopping during an update check; an interrupted install leaves its target slot marked bad");
                    break 'outer;
                }
                _ = int.recv() => break 'outer,
            }
        };
        let line = result.to_json();
        for w in waiters {
            // The client may have gone; its answer is then dropped.
            w.send(line.clone()).ok();
        }
        let wait = d.next_wait();
        next_poll = Instant::now() + wait;
        let status = format!(
            "last check: {}; next in {} s",
            result.outcome,
            wait.as_secs()
        );
        notify::notify_logged(&[NotifyState::Status(&status)]);
        if let Some(staged) = result.staged {
            if d.update.reboot != RebootPolicy::Never || staged.fresh {
                let d2 = d.clone();
                let s2 = staged.clone();
                let gate = tokio::task::spawn_blocking(move || d2.reboot_step(&s2)).await;
                let (again, wait) = reboot_followup(gate.ok());
                // `staged` was reported by this first step; later steps only reboot.
                pending = again.then_some(Staged {
                    fresh: false,
                    ..staged
                });
                next_reboot_check = Instant::now() + wait.unwrap_or(far);
            }
        }
    }
    notify::notify_logged(&[NotifyState::Stopping]);
    accept.abort();
    log::info!("flipslot daemon stopped");
    Ok(())
}

/// After a reboot step: whether to try again, and when.
fn reboot_followup(gate: Option<RebootGate>) -> (bool, Option<Duration>) {
    match gate {
        Some(RebootGate::Inhibited(_)) => (true, Some(INHIBIT_RECHECK)),
        Some(RebootGate::OutsideWindow(d)) => (true, Some(d.min(WINDOW_RECHECK))),
        // Asked for (the system goes down), never, or the task died: the next poll finds
        // the staged slot again.
        Some(RebootGate::Go) | Some(RebootGate::Never) | None => (false, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("machine-id");
        assert!(read_machine_id(&p).is_err());
        std::fs::write(&p, "\n").unwrap();
        assert!(format!("{:#}", read_machine_id(&p).unwrap_err()).contains("empty"));
        std::fs::write(&p, "0123abcd\n").unwrap();
        assert_eq!(read_machine_id(&p).unwrap(), "0123abcd");
    }

    #[test]
    fn followups() {
        assert_eq!(
            reboot_followup(Some(RebootGate::Inhibited("/x".into()))),
            (true, Some(INHIBIT_RECHECK))
        );
        assert_eq!(
            reboot_followup(Some(RebootGate::OutsideWindow(Duration::from_secs(5)))),
            (true, Some(Duration::from_secs(5)))
        );
        assert_eq!(
            reboot_followup(Some(RebootGate::OutsideWindow(Duration::from_secs(5000)))),
            (true, Some(WINDOW_RECHECK))
        );
        assert_eq!(reboot_followup(Some(RebootGate::Go)), (false, None));
        assert_eq!(reboot_followup(None), (false, None));
    }

    #[test]
    fn command_reboot_runs_the_program() {
        assert!(CommandReboot {
            program: "true".into()
        }
        .reboot()
        .is_ok());
        assert!(CommandReboot {
            program: "false".into()
        }
        .reboot()
        .is_err());
    }
}
