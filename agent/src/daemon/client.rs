//! The CLI's side of the socket API (blocking): connect if a daemon listens, send one
//! request, read its answer lines. See [`super::server`] for the protocol.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Connects when the socket exists and a daemon accepts; `None` otherwise (the caller
/// then works locally).
pub fn connect(socket: &Path) -> Option<Client> {
    if !socket.exists() {
        return None;
    }
    match UnixStream::connect(socket) {
        Ok(s) => {
            let writer = s.try_clone().ok()?;
            log::info!("talking to the flipslot daemon on {}", socket.display());
            Some(Client {
                reader: BufReader::new(s),
                writer,
            })
        }
        Err(e) => {
            log::info!(
                "no daemon answers on {} ({e}); working locally",
                socket.display()
            );
            None
        }
    }
}

impl Client {
    fn send(&mut self, req: &Value) -> Result<()> {
        let mut line = req.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.flush())
            .context("cannot send a request to the daemon")
    }

    fn read(&mut self) -> Result<Option<Value>> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .context("cannot read the daemon's answer")?;
        if n == 0 {
            return Ok(None);
        }
        let v = serde_json::from_str(&line).context("the daemon sent a line that is not JSON")?;
        Ok(Some(v))
    }

    /// `{"op":"status"}` (or with `"text":true`): the answer, or the daemon's error.
    pub fn status(&mut self, text: bool) -> Result<Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(120)))
            .context("cannot set a timeout on the daemon socket")?;
        let req = if text {
            json!({"op": "status", "text": true})
        } else {
            json!({"op": "status"})
        };
        self.send(&req)?;
        let v = self
            .read()?
            .ok_or_else(|| anyhow!("the daemon closed the connection"))?;
        error_line(&v)?;
        Ok(v)
    }

    /// Sends an install request; `on_line` sees every line; returns the `done` line, or
    /// the `error` line's message as an error.
    pub fn install(&mut self, req: &Value, on_line: &mut dyn FnMut(&Value)) -> Result<Value> {
        self.send(req)?;
        while let Some(v) = self.read()? {
            on_line(&v);
            match v["event"].as_str() {
                Some("done") => return Ok(v),
                Some("error") => error_line(&v)?,
                _ => {}
            }
        }
        bail!("the daemon closed the connection before the install finished")
    }

    /// `{"op":"check"}`: the poll's result line.
    pub fn check(&mut self) -> Result<Value> {
        self.send(&json!({"op": "check"}))?;
        self.read()?
            .ok_or_else(|| anyhow!("the daemon closed the connection"))
    }
}

/// The install request for `source` (made absolute when it is a relative path, since the
/// daemon runs elsewhere) with the caller's choices.
pub fn install_request(
    source: &Path,
    opts: &crate::install::InstallOptions,
    direct_io: bool,
) -> Result<Value> {
    let s = source.to_str().context("the bundle path is not UTF-8")?;
    let source = if crate::net::is_url(s) || source.is_absolute() {
        s.to_string()
    } else {
        let abs = std::env::current_dir()
            .context("cannot read the current directory")?
            .join(source);
        abs.to_str()
            .context("the bundle path is not UTF-8")?
            .to_string()
    };
    Ok(json!({
        "op": "install",
        "source": source,
        "allow_downgrade": opts.allow_downgrade,
        "read_back": opts.read_back,
        "direct_io": direct_io,
        "if_needed": opts.if_needed,
    }))
}

/// An `{"event":"error"}` line as an error (its `message`); any other line is `Ok`.
pub fn error_line(v: &Value) -> Result<()> {
    if v["event"] == "error" {
        bail!(
            "{}",
            v["message"]
                .as_str()
                .unwrap_or("the daemon reported an error")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let opts = crate::install::InstallOptions {
            allow_downgrade: true,
            read_back: false,
            if_needed: true,
            ..Default::default()
        };
        let r = install_request(Path::new("/b.fsb"), &opts, true).unwrap();
        assert_eq!(r["source"], "/b.fsb");
        assert_eq!(r["allow_downgrade"], true);
        assert_eq!(r["read_back"], false);
        assert_eq!(r["if_needed"], true);
        let opts = crate::install::InstallOptions::default();
        let r = install_request(Path::new("http://h/b.fsb"), &opts, true).unwrap();
        assert_eq!(r["source"], "http://h/b.fsb");
        assert_eq!(r["if_needed"], false);
        let r = install_request(Path::new("b.fsb"), &opts, true).unwrap();
        assert!(Path::new(r["source"].as_str().unwrap()).is_absolute());
    }

    #[test]
    fn no_socket_no_client() {
        let dir = tempfile::tempdir().unwrap();
        assert!(connect(&dir.path().join("none.sock")).is_none());
        // A stale socket file nobody listens on.
        let p = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        assert!(p.exists());
        assert!(connect(&p).is_none());
    }

    #[test]
    fn error_lines_become_errors() {
        assert!(error_line(&json!({"event": "done"})).is_ok());
        let e = error_line(&json!({"event": "error", "message": "install running"})).unwrap_err();
        assert_eq!(e.to_string(), "install running");
        let e = error_line(&json!({"event": "error"})).unwrap_err();
        assert_eq!(e.to_string(), "the daemon reported an error");
    }
}
