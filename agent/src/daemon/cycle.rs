//! One poll of the channel, blocking from start to end: report boot outcomes not yet
//! reported, fetch the channel (conditional GET), verify it, decide, install, and say
//! whether a reboot is due. The decisions themselves are in [`super::decide`].

use super::decide::{self, Decision, Facts, Outcome, SkipReason};
use super::fetch::{self, Fetched};
use super::state::DaemonState;
use super::Daemon;
use crate::install::InstallOptions;
use crate::net::headers::redact;
use crate::ops;
use crate::slot::status::StatusFile;
use anyhow::{Context, Result};
use flipslot_cli_support::progress::Reporter;
use flipslot_format::channel::{self, Channel};
use flipslot_format::VerifyPolicy;
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// A slot that holds a channel's bundle and boots next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Staged {
    /// The bundle version.
    pub version: String,
    /// The slot (`rootfs.1`).
    pub slot: String,
    /// Whether this poll installed it (`false`: found staged).
    pub fresh: bool,
}

/// How one poll ended (its JSON name is the lower-case variant name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PollOutcome {
    /// The channel did not change since the last poll.
    Unchanged,
    /// The channel offers nothing to install here (same version, rollout cohort, …).
    Skipped,
    /// The channel or its bundle was refused (signature, expiry, downgrade, …).
    Refused,
    /// The poll or the install failed.
    Failed,
    /// A bundle was installed and its slot boots next.
    Installed,
    /// A slot installed earlier still waits for its reboot.
    Staged,
}

impl PollOutcome {
    /// Whether the poll ended in an error (the CLI exits non-zero).
    pub fn is_error(self) -> bool {
        matches!(self, PollOutcome::Failed | PollOutcome::Refused)
    }
}

impl std::fmt::Display for PollOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PollOutcome::Unchanged => "unchanged",
            PollOutcome::Skipped => "skipped",
            PollOutcome::Refused => "refused",
            PollOutcome::Failed => "failed",
            PollOutcome::Installed => "installed",
            PollOutcome::Staged => "staged",
        })
    }
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CycleResult {
    /// How the poll ended.
    pub outcome: PollOutcome,
    /// Why (for `skipped`, `refused`, `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The channel's version, when one was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The slot that now boots next with that version, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
}

impl CycleResult {
    fn new(outcome: PollOutcome, reason: Option<String>) -> CycleResult {
        CycleResult {
            outcome,
            reason,
            version: None,
            staged: None,
        }
    }

    /// As a socket API line.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["v"] = 1.into();
        v["event"] = "done".into();
        v
    }
}

impl Daemon {
    fn status_file(&self) -> Result<StatusFile> {
        let path = self.agent.root.resolve(&self.agent.cfg.status_path());
        Ok(StatusFile::load(&path)?)
    }

    fn load_state(&self) -> Result<DaemonState> {
        DaemonState::load(&self.state_path)
    }

    fn report(&self, event: &str, version: Option<&str>, slot: Option<&str>, extra: Value) {
        match self.reports.lock() {
            Ok(mut r) => r.send(event, version, slot, extra),
            Err(_) => log::error!("report queue lock poisoned; event {event} not reported"),
        }
    }

    /// The first inhibit file that exists.
    pub fn inhibited_by(&self) -> Option<std::path::PathBuf> {
        self.update
            .inhibit_files
            .iter()
            .find(|p| self.agent.root.resolve(p).exists())
            .cloned()
    }

    /// Reports commits and rollbacks recorded by `flipslot health` since the last report.
    fn report_boot_outcomes(&self, state: &mut DaemonState) -> Result<()> {
        let status = self.status_file()?;
        let booted = self.agent.booted()?;
        let outcomes = decide::unreported_outcomes(
            &status,
            booted,
            state.reported_commit_at,
            state.reported_rollback_at,
        );
        if outcomes.is_empty() {
            return Ok(());
        }
        for o in outcomes {
            match o {
                Outcome::Committed { slot, version, at } => {
                    self.report(
                        "committed",
                        version.as_deref(),
                        Some(&slot),
                        json!({ "committed_at": at }),
                    );
                    state.reported_commit_at = Some(at);
                }
                Outcome::RolledBack {
                    from_slot,
                    from_version,
                    to_slot,
                    reason,
                    at,
                } => {
                    self.report(
                        "rolled-back",
                        from_version.as_deref(),
                        Some(&from_slot),
                        json!({ "to_slot": to_slot, "reason": reason, "rolled_back_at": at }),
                    );
                    state.reported_rollback_at = Some(at);
                }
            }
        }
        state.save(&self.state_path)
    }

    /// One poll. Errors are reported as `failed` and returned as a result, never raised.
    pub fn cycle(&self) -> CycleResult {
        if let Ok(mut r) = self.reports.lock() {
            r.new_cycle();
        }
        match self.try_cycle() {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("{e:#}");
                log::error!("update check failed: {reason}");
                self.report("failed", None, None, json!({ "reason": reason }));
                CycleResult::new(PollOutcome::Failed, Some(reason))
            }
        }
    }

    fn try_cycle(&self) -> Result<CycleResult> {
        let mut state = self.load_state()?;
        if let Err(e) = self.report_boot_outcomes(&mut state) {
            log::error!("cannot report boot outcomes: {e:#}");
        }
        let booted = self.agent.booted()?;
        let status = self.status_file()?;
        let booted_version = crate::install::plan::booted_version(&status, booted);
        let booted_version_s = booted_version.as_ref().map(ToString::to_string);
        self.report(
            "checking",
            booted_version_s.as_deref(),
            booted.map(|b| b.name.as_str()),
            json!({}),
        );

        let (client, url) = fetch::client_for(
            &self.channel_url,
            &self.http,
            std::time::Duration::from_secs(30),
        )?;
        let shown = redact(&url);
        let (etag, lm) = state.validators_for(&self.channel_url);
        let fetched =
            fetch::fetch_channel(&client, &url, etag, lm).context("cannot fetch the channel")?;
        drop(client);
        let (body, etag, last_modified) = match fetched {
            Fetched::NotModified => {
                log::info!("channel {shown} unchanged (304)");
                return Ok(self.unchanged(&state));
            }
            Fetched::Document {
                body,
                etag,
                last_modified,
            } => (body, etag, last_modified),
        };

        let keyring = self.agent.keyring()?;
        let policy = VerifyPolicy {
            min_signatures: self.agent.cfg.min_signatures,
        };
        let now = self.clock.now_unix();
        let ch = match channel::verify_channel(
            &body,
            &keyring,
            &policy,
            now,
            state.last_serial,
            &self.agent.cfg.compatible,
        ) {
            Ok(ch) => ch,
            Err(e) => {
                let reason = format!("channel {shown} refused: {e}");
                log::error!("{reason}");
                self.report("failed", None, None, json!({ "reason": reason }));
                return Ok(CycleResult::new(PollOutcome::Refused, Some(reason)));
            }
        };
        let version = ch.version.to_string();
        log::info!(
            "channel {shown}: {} serial {} version {version}, rollout {} %",
            ch.name,
            ch.serial,
            ch.rollout_percent
        );
        state.last_serial = Some(state.last_serial.map_or(ch.serial, |s| s.max(ch.serial)));
        state.last_channel_version = Some(version.clone());
        state.last_channel_manifest = Some(ch.bundle.manifest_sha256.to_hex());
        state.save(&self.state_path)?;

        let manifest_hex = ch.bundle.manifest_sha256.to_hex();
        let report = ops::status(&self.agent)?;
        let booted_on_trial = report.slots.iter().any(|s| {
            s.state == ops::SlotState::Booted
                && s.boot_status == crate::bootloader::SlotBootState::Trying
        });
        let facts = Facts {
            channel_version: &ch.version,
            channel_manifest: &manifest_hex,
            booted_version,
            in_rollout: channel::in_rollout(&self.machine_id, &ch),
            rollout_percent: ch.rollout_percent,
            inhibited_by: self.inhibited_by(),
            staged_in: self.staged_in(&report, booted, &status, &ch.bundle.manifest_sha256),
            rolled_back_in: decide::rolled_back_slot(&status, &ch.bundle.manifest_sha256),
            booted_on_trial,
        };
        let decision = decide::decide(&facts);
        // Whether this document was handled for good, so a 304 may stand for it next time.
        let mut settled = true;
        let mut result = match decision {
            Decision::Skip(reason) => {
                log::info!("not installing {version}: {reason}");
                settled = !matches!(reason, SkipReason::Inhibited { .. });
                CycleResult::new(PollOutcome::Skipped, Some(reason.to_string()))
            }
            Decision::AlreadyStaged { slot } => {
                log::info!("version {version} is already staged in slot {slot}");
                CycleResult {
                    staged: Some(Staged {
                        version: version.clone(),
                        slot,
                        fresh: false,
                    }),
                    ..CycleResult::new(PollOutcome::Staged, None)
                }
            }
            Decision::Install => {
                log::info!(
                    "installing {version} (booted: {})",
                    booted_version_s.as_deref().unwrap_or("nothing recorded")
                );
                match self.install(&ch) {
                    Ok(slot) => CycleResult {
                        staged: Some(Staged {
                            version: version.clone(),
                            slot,
                            fresh: true,
                        }),
                        ..CycleResult::new(PollOutcome::Installed, None)
                    },
                    Err(e) => {
                        settled = false;
                        let reason = format!("{e:#}");
                        log::error!("installing {version} failed: {reason}");
                        self.report("failed", Some(&version), None, json!({ "reason": reason }));
                        CycleResult::new(PollOutcome::Failed, Some(reason))
                    }
                }
            }
        };
        result.version = Some(version);
        if settled {
            state.set_channel_url(&self.channel_url);
            state.etag = etag;
            state.last_modified = last_modified;
        } else {
            state.etag = None;
            state.last_modified = None;
        }
        state.save(&self.state_path)?;
        Ok(result)
    }

    /// The result of a 304: the last accepted channel still stands; only whether its
    /// bundle is staged (a reboot still due, e.g. after a restart) is looked at again.
    fn unchanged(&self, state: &DaemonState) -> CycleResult {
        let mut r = CycleResult::new(PollOutcome::Unchanged, None);
        r.version = state.last_channel_version.clone();
        // A stored hash that does not parse names no bundle any slot holds.
        let (Some(version), Some(manifest)) = (
            &state.last_channel_version,
            state
                .last_channel_manifest
                .as_deref()
                .and_then(flipslot_format::Sha256Digest::from_hex),
        ) else {
            return r;
        };
        let staged = self.agent.booted().and_then(|booted| {
            let status = self.status_file()?;
            let report = ops::status(&self.agent)?;
            Ok(self.staged_in(&report, booted, &status, &manifest))
        });
        match staged {
            Ok(Some(slot)) => {
                r.staged = Some(Staged {
                    version: version.clone(),
                    slot,
                    fresh: false,
                })
            }
            Ok(None) => {}
            Err(e) => log::warn!("cannot tell whether {version} is staged: {e:#}"),
        }
        r
    }

    fn staged_in(
        &self,
        report: &ops::StatusReport,
        booted: Option<&crate::config::Slot>,
        status: &StatusFile,
        manifest: &flipslot_format::Sha256Digest,
    ) -> Option<String> {
        let primary_bn = report
            .primary
            .as_deref()
            .and_then(|n| self.agent.cfg.slot_by_name(n))
            .map(|s| s.bootname.as_str());
        decide::staged_slot(&self.agent.cfg, booted, primary_bn, status, manifest)
    }

    /// Installs the channel's bundle from the first URL that works; returns the slot that
    /// boots next.
    fn install(&self, ch: &Channel) -> Result<String> {
        let version = ch.version.to_string();
        let opts = InstallOptions {
            expected_manifest_sha256: Some(ch.bundle.manifest_sha256),
            ..InstallOptions::default()
        };
        let mut last_err = None;
        for (i, url) in ch.bundle.urls.iter().enumerate() {
            let shown = reqwest::Url::parse(url)
                .map(|u| redact(&u))
                .unwrap_or_else(|_| "(invalid URL)".into());
            log::info!(
                "downloading {version} from {shown} ({} of {})",
                i + 1,
                ch.bundle.urls.len()
            );
            let sink = ProgressSink::new(self.reports.clone(), version.clone());
            let mut progress = Reporter::json_to(Box::new(sink));
            let r = ops::install_url(&self.agent, url, &self.http, &opts, &mut progress);
            progress.finish();
            match r {
                Ok(out) => {
                    self.report(
                        "installed",
                        Some(&out.version),
                        Some(&out.primary),
                        json!({ "manifest_sha256": out.manifest_sha256, "url": shown }),
                    );
                    return Ok(out.primary);
                }
                Err(e) => {
                    log::warn!("installing from {shown} failed: {e:#}");
                    let lock_busy = e
                        .chain()
                        .filter_map(|c| c.downcast_ref::<std::io::Error>())
                        .any(|io| io.kind() == std::io::ErrorKind::WouldBlock);
                    last_err = Some(e);
                    if lock_busy {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the channel lists no bundle URL")))
    }
}

/// Turns the install's JSON progress lines into `downloading` reports: 0 % when the
/// install starts, then at most one per 10 % step of each image written (the steps seen
/// depend on how often the install reports, about once per chunk).
struct ProgressSink {
    reports: Arc<Mutex<super::events::Reports>>,
    version: String,
    buf: Vec<u8>,
    /// Phase and last tenth reported.
    last: Option<(String, u64)>,
}

impl ProgressSink {
    fn new(reports: Arc<Mutex<super::events::Reports>>, version: String) -> ProgressSink {
        ProgressSink {
            reports,
            version,
            buf: Vec::new(),
            last: None,
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if v["event"] == "start" {
            // The download starts: 0 % of the first target.
            if let Some(slot) = v["targets"].get(0).and_then(Value::as_str) {
                self.last = Some((slot.to_string(), 0));
                if let Ok(mut r) = self.reports.lock() {
                    r.send(
                        "downloading",
                        Some(&self.version),
                        Some(slot),
                        json!({ "percent": 0 }),
                    );
                }
            }
            return;
        }
        if v["event"] != "progress" {
            return;
        }
        let Some(slot) = v["phase"].as_str().and_then(|p| p.strip_prefix("write ")) else {
            return;
        };
        let (Some(done), Some(total)) = (v["done"].as_u64(), v["total"].as_u64()) else {
            return;
        };
        let tenth = if total == 0 {
            10
        } else {
            (u128::from(done.min(total)) * 10 / u128::from(total)) as u64
        };
        if self
            .last
            .as_ref()
            .is_some_and(|(p, t)| p == slot && *t >= tenth)
        {
            return;
        }
        self.last = Some((slot.to_string(), tenth));
        if let Ok(mut r) = self.reports.lock() {
            r.send(
                "downloading",
                Some(&self.version),
                Some(slot),
                json!({ "percent": tenth * 10, "done": done, "total": total }),
            );
        }
    }
}

impl Write for ProgressSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            self.line(&line);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::events::{queued, Reports};
    use crate::host::clock::FixedClock;

    #[test]
    fn progress_becomes_downloading_reports_per_tenth() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("reports");
        // A port that was free a moment ago: every POST fails, so events are queued.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reports = Reports::new(
            Some(&format!("http://127.0.0.1:{port}/r")),
            &crate::net::HttpOptions::default(),
            q.clone(),
            "m".into(),
            Box::new(FixedClock(1)),
        )
        .unwrap();
        let mut sink = ProgressSink::new(Arc::new(Mutex::new(reports)), "2.0.0".into());
        let mut lines = String::from("{\"v\":1,\"event\":\"start\",\"targets\":[\"rootfs.1\"]}\n");
        for done in [0u64, 5, 9, 10, 11, 35, 99, 100, 100] {
            lines += &format!(
                "{{\"v\":1,\"event\":\"progress\",\"phase\":\"write rootfs.1\",\"done\":{done},\"total\":100}}\n"
            );
        }
        lines += "{\"v\":1,\"event\":\"progress\",\"phase\":\"read-back rootfs.1\",\"done\":100,\"total\":100}\n";
        // Written in odd pieces, as a writer may be.
        for piece in lines.as_bytes().chunks(7) {
            sink.write_all(piece).unwrap();
        }
        let got: Vec<(u64, String)> = queued(&q)
            .unwrap()
            .into_iter()
            .map(|(_, p)| {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
                assert_eq!(v["event"], "downloading");
                assert_eq!(v["version"], "2.0.0");
                (
                    v["percent"].as_u64().unwrap(),
                    v["slot"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let pct: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(pct, [0, 10, 30, 90, 100]);
        assert!(got.iter().all(|g| g.1 == "rootfs.1"));
    }

    #[test]
    fn results_as_api_lines() {
        let r = CycleResult {
            outcome: PollOutcome::Installed,
            reason: None,
            version: Some("2.0.0".into()),
            staged: Some(Staged {
                version: "2.0.0".into(),
                slot: "rootfs.1".into(),
                fresh: true,
            }),
        };
        assert_eq!(
            r.to_json(),
            serde_json::json!({"v":1,"event":"done","outcome":"installed","version":"2.0.0",
                "staged":{"version":"2.0.0","slot":"rootfs.1","fresh":true}})
        );
    }
}
