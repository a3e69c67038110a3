//! The local API: a Unix socket (mode 0600) speaking JSON lines. Each request is one line;
//! the answer is one or more lines:
//!
//! - `{"op":"status"}` → the object `flipslot status --json` prints (one line);
//!   `{"op":"status","text":true}` → `{"v":1,"event":"status","text":"…"}`.
//! - `{"op":"install","source":"<path or URL>","allow_downgrade":false}` (optional
//!   `"read_back":true`, `"direct_io":true`, `"if_needed":false`) → the progress lines of
//!   `install --json`,
//!   then `{"v":1,"event":"done",…}` or `{"v":1,"event":"error","message":"…"}`.
//! - `{"op":"check"}` → polls the channel now; `{"v":1,"event":"done","outcome":…}`.
//!
//! Anything else is answered with an `error` line.

use super::{CheckRequest, Daemon};
use crate::install::InstallOptions;
use crate::ops::{self, Agent};
use anyhow::{bail, Context, Result};
use flipslot_cli_support::progress::Reporter;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The longest request line accepted.
const MAX_REQUEST: u64 = 64 << 10;

/// One request.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The status report.
    Status {
        /// The text of `flipslot status` instead of the JSON.
        #[serde(default)]
        text: bool,
    },
    /// Install a bundle file or URL.
    Install {
        /// Path (as the daemon sees it) or http(s) URL.
        source: String,
        /// Allow an older version.
        #[serde(default)]
        allow_downgrade: bool,
        /// Read the slot back after writing.
        #[serde(default = "yes")]
        read_back: bool,
        /// Direct I/O on slot devices.
        #[serde(default = "yes")]
        direct_io: bool,
        /// Nothing to do when the bundle already boots next (`install --if-needed`).
        #[serde(default)]
        if_needed: bool,
    },
    /// Poll the channel now.
    Check,
}

fn yes() -> bool {
    true
}

/// The error line.
pub fn error_line(message: &str) -> Value {
    json!({ "v": 1, "event": "error", "message": message })
}

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot remove socket {}: {e}", self.0.display());
            }
        }
    }
}

/// Binds the socket at `path` (mode 0600), replacing a stale one; fails when another
/// daemon answers on it. Must run inside the runtime.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketGuard)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another flipslot daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    let guard = SocketGuard(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok((listener, guard))
}

/// Serves connections until the runtime stops.
pub async fn accept_loop(
    listener: UnixListener,
    d: Arc<Daemon>,
    checks: mpsc::Sender<CheckRequest>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let d = d.clone();
                let checks = checks.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, d, checks).await {
                        log::debug!("socket client: {e:#}");
                    }
                });
            }
            Err(e) => {
                log::warn!("cannot accept a socket connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> std::io::Result<()> {
    let mut s = v.to_string();
    s.push('\n');
    w.write_all(s.as_bytes()).await?;
    w.flush().await
}

async fn serve_connection(
    stream: UnixStream,
    d: Arc<Daemon>,
    checks: mpsc::Sender<CheckRequest>,
) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let mut line = String::new();
        let n = (&mut reader)
            .take(MAX_REQUEST + 1)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if n as u64 > MAX_REQUEST {
            write_line(&mut w, &error_line("request too long")).await?;
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                write_line(&mut w, &error_line(&format!("bad request: {e}"))).await?;
                continue;
            }
        };
        log::info!("socket request: {}", describe(&req));
        match req {
            Request::Status { text } => {
                let d = d.clone();
                let r = tokio::task::spawn_blocking(move || ops::status(&d.agent)).await;
                let v = match r {
                    Ok(Ok(report)) if text => json!({
                        "v": 1, "event": "status", "text": crate::ops::render::status_text(&report)
                    }),
                    Ok(Ok(report)) => serde_json::to_value(&report)?,
                    Ok(Err(e)) => error_line(&format!("{e:#}")),
                    Err(e) => error_line(&format!("status task failed: {e}")),
                };
                write_line(&mut w, &v).await?;
            }
            Request::Check => {
                let (tx, rx) = oneshot::channel();
                let v = if checks.send(tx).await.is_err() {
                    error_line("the daemon is stopping")
                } else {
                    rx.await
                        .unwrap_or_else(|_| error_line("the daemon is stopping"))
                };
                write_line(&mut w, &v).await?;
            }
            Request::Install {
                source,
                allow_downgrade,
                read_back,
                direct_io,
                if_needed,
            } => {
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                let d = d.clone();
                let opts = InstallOptions {
                    allow_downgrade,
                    read_back,
                    if_needed,
                    ..InstallOptions::default()
                };
                let job =
                    tokio::task::spawn_blocking(move || install(&d, &source, &opts, direct_io, tx));
                let mut client_gone = false;
                while let Some(line) = rx.recv().await {
                    if client_gone {
                        continue;
                    }
                    let mut line = line;
                    line.push('\n');
                    if let Err(e) = w.write_all(line.as_bytes()).await {
                        // The install goes on; only its progress has nowhere to go.
                        log::info!("socket client left during an install: {e}");
                        client_gone = true;
                    }
                }
                if let Err(e) = job.await {
                    log::error!("install task failed: {e}");
                }
                if client_gone {
                    return Ok(());
                }
                w.flush().await?;
            }
        }
    }
}

fn describe(req: &Request) -> String {
    match req {
        Request::Status { .. } => "status".into(),
        Request::Check => "check".into(),
        Request::Install { source, .. } => {
            let shown = if crate::net::is_url(source) {
                reqwest::Url::parse(source)
                    .map(|u| crate::net::headers::redact(&u))
                    .unwrap_or_else(|_| "(invalid URL)".into())
            } else {
                source.clone()
            };
            format!("install {shown}")
        }
    }
}

/// Runs an install for a socket client; every line goes to `tx`, the last one `done` or
/// `error`.
fn install(
    d: &Daemon,
    source: &str,
    opts: &InstallOptions,
    direct_io: bool,
    tx: mpsc::UnboundedSender<String>,
) {
    let started = std::time::Instant::now();
    let agent = Agent {
        cfg: d.agent.cfg.clone(),
        root: d.agent.root.clone(),
        cmdline_file: d.agent.cmdline_file.clone(),
        direct_io,
    };
    let mut progress = Reporter::json_to(Box::new(LineSender {
        tx: tx.clone(),
        buf: Vec::new(),
    }));
    let r = if crate::net::is_url(source) {
        ops::install_url(&agent, source, &d.http, opts, &mut progress)
    } else {
        ops::install_file(&agent, Path::new(source), opts, &mut progress)
    };
    progress.finish();
    drop(progress);
    let v = match r {
        Ok(out) => {
            log::info!(
                "socket install of {} done; slot {} boots next",
                out.version,
                out.primary
            );
            crate::ops::render::install_done_json(&out, started.elapsed())
                .unwrap_or_else(|_| json!({}))
        }
        Err(e) => {
            log::error!("socket install failed: {e:#}");
            error_line(&format!("{e:#}"))
        }
    };
    // The receiver lives until every sender is gone; a closed one means the task ended.
    tx.send(v.to_string()).ok();
}

/// A `Write` that sends each complete line to a channel.
struct LineSender {
    tx: mpsc::UnboundedSender<String>,
    buf: Vec<u8>,
}

impl Write for LineSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            // A closed channel means the connection task is gone; progress is dropped.
            self.tx.send(text).ok();
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

    #[test]
    fn requests_parse() {
        let r: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert!(matches!(r, Request::Status { text: false }));
        let r: Request =
            serde_json::from_str(r#"{"op":"install","source":"/b.fsb","allow_downgrade":true}"#)
                .unwrap();
        assert!(matches!(
            r,
            Request::Install {
                allow_downgrade: true,
                read_back: true,
                direct_io: true,
                if_needed: false,
                ..
            }
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"install"}"#).is_err());
    }

    #[test]
    fn line_sender_splits_lines() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut s = LineSender {
            tx,
            buf: Vec::new(),
        };
        s.write_all(b"{\"a\":1}\n{\"b\"").unwrap();
        s.write_all(b":2}\n").unwrap();
        assert_eq!(rx.try_recv().unwrap(), "{\"a\":1}");
        assert_eq!(rx.try_recv().unwrap(), "{\"b\":2}");
        assert!(rx.try_recv().is_err());
    }
}
