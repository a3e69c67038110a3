//! Reporting: every daemon event becomes one JSON object POSTed to `report-url`. When a
//! POST fails the event is queued on disk (`<data-directory>/reports/NNNNNNNN.json`, at
//! most [`MAX_QUEUED`] files, the oldest dropped first), and the queue is sent, oldest
//! first, before the next event. After one failure the endpoint counts as down until the
//! next poll starts, so an install is not slowed down by a dead endpoint.
//!
//! Blocking (reqwest's blocking client): call from `spawn_blocking` or a plain thread.

use crate::host::clock::Clock;
use crate::net::headers::redact;
use crate::net::HttpOptions;
use anyhow::{anyhow, bail, Context, Result};
use reqwest::blocking::Client;
use reqwest::header::CONTENT_TYPE;
use reqwest::Url;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most reports kept in the queue.
pub const MAX_QUEUED: usize = 1000;
/// Version of the report schema (`"v"`).
pub const REPORT_SCHEMA_VERSION: u32 = 1;
/// Timeout of one POST (connect and each wait).
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the report object: `{"v":1,"event":…,"machine_id":…,"version":…,"slot":…,
/// "time":…}` plus the fields of `extra` (an object).
pub fn report_json(
    event: &str,
    machine_id: &str,
    version: Option<&str>,
    slot: Option<&str>,
    time: u64,
    extra: Value,
) -> Value {
    let mut m = Map::new();
    m.insert("v".into(), REPORT_SCHEMA_VERSION.into());
    m.insert("event".into(), event.into());
    m.insert("machine_id".into(), machine_id.into());
    m.insert("version".into(), version.map_or(Value::Null, Value::from));
    m.insert("slot".into(), slot.map_or(Value::Null, Value::from));
    m.insert("time".into(), time.into());
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            m.entry(k).or_insert(v);
        }
    }
    Value::Object(m)
}

/// Sends reports and keeps the queue.
pub struct Reports {
    endpoint: Option<(Client, Url, String)>,
    queue_dir: PathBuf,
    machine_id: String,
    clock: Box<dyn Clock + Send>,
    endpoint_down: bool,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("endpoint", &self.endpoint.as_ref().map(|e| &e.2))
            .field("queue_dir", &self.queue_dir)
            .field("endpoint_down", &self.endpoint_down)
            .finish_non_exhaustive()
    }
}

impl Reports {
    /// Reports to `url` (none: events are only logged), queueing in `queue_dir`.
    pub fn new(
        url: Option<&str>,
        http: &HttpOptions,
        queue_dir: PathBuf,
        machine_id: String,
        clock: Box<dyn Clock + Send>,
    ) -> Result<Reports> {
        let endpoint = match url {
            Some(u) => {
                let (client, parsed) = super::fetch::client_for(u, http, POST_TIMEOUT)?;
                let shown = redact(&parsed);
                Some((client, parsed, shown))
            }
            None => None,
        };
        Ok(Reports {
            endpoint,
            queue_dir,
            machine_id,
            clock,
            endpoint_down: false,
        })
    }

    /// Lets the next event try the endpoint again (called when a poll starts).
    pub fn new_cycle(&mut self) {
        self.endpoint_down = false;
    }

    /// Reports one event (logged at info level; never fails the caller).
    pub fn send(&mut self, event: &str, version: Option<&str>, slot: Option<&str>, extra: Value) {
        let now = self.clock.now_unix();
        let body = report_json(event, &self.machine_id, version, slot, now, extra);
        log::info!("event {body}");
        if self.endpoint.is_none() {
            return;
        }
        let text = body.to_string();
        if !self.endpoint_down && self.flush() {
            match self.post(&text) {
                Ok(()) => return,
                Err(e) => self.mark_down(&e),
            }
        }
        if let Err(e) = self.enqueue(&text) {
            log::error!("cannot queue a report: {e:#}");
        }
    }

    /// Sends the queued reports, oldest first; `true` when the queue is empty afterwards.
    pub fn flush(&mut self) -> bool {
        if self.endpoint.is_none() {
            return true;
        }
        let files = match queued(&self.queue_dir) {
            Ok(f) => f,
            Err(e) => {
                log::error!("cannot list queued reports: {e:#}");
                return false;
            }
        };
        if !files.is_empty() {
            log::info!("sending {} queued report(s)", files.len());
        }
        for (_, path) in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    log::error!("dropping unreadable queued report {}: {e}", path.display());
                    remove(&path);
                    continue;
                }
            };
            if let Err(e) = self.post(&text) {
                self.mark_down(&e);
                return false;
            }
            remove(&path);
        }
        true
    }

    fn mark_down(&mut self, e: &anyhow::Error) {
        log::warn!("cannot send report, queueing it: {e:#}");
        self.endpoint_down = true;
    }

    fn post(&self, text: &str) -> Result<()> {
        let Some((client, url, shown)) = &self.endpoint else {
            return Ok(());
        };
        let resp = client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(text.to_string())
            .send()
            .map_err(|e| anyhow!("{shown}: {}", crate::net::error::chain(&e.without_url())))?;
        if !resp.status().is_success() {
            bail!("{shown}: HTTP {}", resp.status());
        }
        Ok(())
    }

    /// Appends `text` to the queue, dropping the oldest files beyond [`MAX_QUEUED`].
    fn enqueue(&self, text: &str) -> Result<()> {
        std::fs::create_dir_all(&self.queue_dir)
            .with_context(|| format!("cannot create {}", self.queue_dir.display()))?;
        let files = queued(&self.queue_dir)?;
        let next = files.last().map_or(1, |(n, _)| n + 1);
        if next > 99_999_999 {
            bail!(
                "report queue {} is at its highest number",
                self.queue_dir.display()
            );
        }
        let excess = (files.len() + 1).saturating_sub(MAX_QUEUED);
        for (_, old) in files.iter().take(excess) {
            log::warn!("report queue full: dropping {}", old.display());
            remove(old);
        }
        let path = self.queue_dir.join(format!("{next:08}.json"));
        flipslot_os::fs::atomic_write(&path, text.as_bytes())?;
        Ok(())
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        log::error!("cannot remove {}: {e}", path.display());
    }
}

/// The queued report files `NNNNNNNN.json`, by number.
pub fn queued(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if stem.len() == 8 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = stem.parse() {
                out.push((n, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::clock::FixedClock;

    #[test]
    fn report_fields() {
        let v = report_json(
            "downloading",
            "m1",
            Some("2.0.0"),
            None,
            5,
            serde_json::json!({"percent": 40, "event": "ignored"}),
        );
        assert_eq!(
            v,
            serde_json::json!({"v":1,"event":"downloading","machine_id":"m1","version":"2.0.0",
                "slot":null,"time":5,"percent":40})
        );
    }

    #[test]
    fn queue_is_bounded_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("reports");
        // A port that was free a moment ago: POSTs fail fast.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Reports::new(
            Some(&format!("http://127.0.0.1:{port}/r")),
            &HttpOptions::default(),
            q.clone(),
            "m".into(),
            Box::new(FixedClock(1)),
        )
        .unwrap();
        for i in 0..(MAX_QUEUED + 5) {
            r.send("checking", None, None, serde_json::json!({"i": i}));
        }
        let files = queued(&q).unwrap();
        assert_eq!(files.len(), MAX_QUEUED);
        assert_eq!(files[0].0, 6);
        let first: Value =
            serde_json::from_str(&std::fs::read_to_string(&files[0].1).unwrap()).unwrap();
        assert_eq!(first["i"], 5);
        std::fs::write(q.join("junk.json"), "x").unwrap();
        std::fs::write(q.join(".00000001.json.tmp"), "x").unwrap();
        assert_eq!(queued(&q).unwrap().len(), MAX_QUEUED);
    }

    #[test]
    fn without_endpoint_nothing_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("reports");
        let mut r = Reports::new(
            None,
            &HttpOptions::default(),
            q.clone(),
            "m".into(),
            Box::new(FixedClock(1)),
        )
        .unwrap();
        r.send("checking", None, None, Value::Null);
        assert!(r.flush());
        assert!(!q.exists());
    }
}
