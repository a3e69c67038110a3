//! Step reports to a URL (`--report-url`): one JSON object POSTed per step, so a lab's
//! provisioning server sees each machine's progress and failure. Best effort: a report
//! that cannot be sent is logged and provisioning goes on (the serial console and the
//! exit status stay authoritative).

use crate::net::client::client_for;
use crate::net::HttpOptions;
use reqwest::blocking::Client;
use reqwest::header::CONTENT_TYPE;
use reqwest::Url;
use serde_json::{json, Value};
use std::time::Duration;

/// How long one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts provisioning step reports.
#[derive(Debug)]
pub struct StepReports {
    endpoint: Option<(Client, Url)>,
    machine: std::cell::RefCell<String>,
}

impl StepReports {
    /// Reports to `url` (none: every report is dropped) for the machine `machine` (its
    /// disk serial or name, as the lab knows it).
    pub fn new(url: Option<&str>, http: &HttpOptions, machine: &str) -> StepReports {
        let endpoint = url.and_then(|u| match client_for(u, http, REPORT_TIMEOUT) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("provisioning reports are off: {e:#}");
                None
            }
        });
        StepReports {
            endpoint,
            machine: std::cell::RefCell::new(machine.to_string()),
        }
    }

    /// Names the machine once the disk is known.
    pub fn set_machine(&self, machine: &str) {
        *self.machine.borrow_mut() = machine.to_string();
    }

    /// Sends `{"event":"provision","step":..,"state":..,"detail":..,"machine":..}` plus
    /// `extra`'s fields.
    pub fn send(&self, step: &str, state: &str, detail: &str, extra: Value) {
        let Some((client, url)) = &self.endpoint else {
            return;
        };
        let mut body = json!({
            "event": "provision",
            "step": step,
            "state": state,
            "detail": detail,
            "machine": self.machine.borrow().as_str(),
        });
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        let sent = client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send();
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => log::warn!(
                "provisioning report to {} refused: HTTP {}",
                crate::net::headers::redact(url),
                r.status()
            ),
            Err(e) => log::warn!(
                "cannot send provisioning report to {}: {}",
                crate::net::headers::redact(url),
                crate::net::error::chain(&e.without_url())
            ),
        }
    }
}
