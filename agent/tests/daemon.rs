#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot daemon` end to end: a real nginx serves a signed channel and its bundle, a
//! tiny collector records the report POSTs, and the daemon runs once (`--once`) or in the
//! background (socket API). The reboot policy is `never`, or a reboot command that only
//! writes a marker file: no test reboots the host.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flipslot::slot::status::{InstallResult, SlotRecord, StatusFile};
use flipslot_format::channel::{sign_channel, Channel, ChannelBundle};
use flipslot_format::source::FileSource;
use flipslot_format::Bundle;
use serde_json::Value;
use support::nginx::{free_port, Nginx, NginxConfig};
use support::{expect_success, pseudo_random, stderr, stdout, Fixture, TestKey, COMPATIBLE};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One report POST: its head (request line and headers) and its JSON body.
#[derive(Debug, Clone)]
struct Post {
    head: String,
    body: Value,
}

/// Records the JSON bodies POSTed to it, answering 200. Its thread does not assert: a
/// request it cannot take (not a POST, no JSON body) is recorded as an error, and the test
/// fails on its own thread when it asks for the events or drops the collector.
struct Collector {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// Reads one request; `Ok(None)` for a connection closed without one.
fn read_post(s: &mut std::net::TcpStream) -> Result<Option<Post>, String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    let mut r = BufReader::new(
        s.try_clone()
            .map_err(|e| format!("cannot clone a connection: {e}"))?,
    );
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the request head {head:?}: {e}"))?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(format!("the connection closed inside the head {head:?}"));
        }
        if head.is_empty() && !line.starts_with("POST ") {
            return Err(format!("not a POST: {line:?}"));
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v
                .trim()
                .parse()
                .map_err(|e| format!("bad Content-Length {line:?}: {e}"))?;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .map_err(|e| format!("cannot read the body of {head:?}: {e}"))?;
    let body = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "the body of {head:?} is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok(Some(Post { head, body }))
}

impl Collector {
    fn start_on(port: u16) -> Collector {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (p, e) = (posts.clone(), errors.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                match read_post(&mut s) {
                    Ok(Some(post)) => {
                        p.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(post);
                        s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .ok();
                    }
                    Ok(None) => {}
                    Err(why) => {
                        e.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(why);
                        s.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .ok();
                    }
                }
            }
        });
        Collector {
            port,
            posts,
            errors,
        }
    }

    fn start() -> Collector {
        Collector::start_on(free_port())
    }

    /// Fails the test if the collector received a request it could not take.
    fn check(&self) {
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            errors.is_empty(),
            "the report collector received bad requests: {errors:#?}"
        );
    }

    fn posts(&self) -> Vec<Post> {
        self.check();
        self.posts.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.posts().into_iter().map(|p| p.body).collect()
    }

    fn names(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
    }
}

/// A device with `[update]` pointing at nginx, and the bundles it serves.
struct Setup {
    f: Fixture,
    nginx: Nginx,
    socket: PathBuf,
    inhibit: PathBuf,
}

const MACHINE_ID: &str = "5f6d0c1e2b3a49788a7f6e5d4c3b2a19";

fn setup(report_port: u16, extra: &str) -> Option<Setup> {
    setup_reporting_to(&format!("http://127.0.0.1:{report_port}/report"), extra)
}

/// Like [`setup`], with the report URL given; `extra` ends up in `[update]`.
fn setup_reporting_to(report_url: &str, extra: &str) -> Option<Setup> {
    let nginx = Nginx::start(&NginxConfig::default())?;
    let mut f = Fixture::new();
    let p = f.path().to_path_buf();
    std::fs::write(p.join("machine-id"), format!("{MACHINE_ID}\n")).unwrap();
    f.extra_config = format!(
        "\n[update]\nchannel-url = \"{}\"\nreport-url = \"{report_url}\"\n\
         machine-id-file = \"{}\"\ninhibit-files = [\"{}\"]\npoll-interval-seconds = 3600\n{extra}\n",
        nginx.url("stable.json"),
        p.join("machine-id").display(),
        p.join("inhibit").display(),
    );
    f.write_config();
    // The booted slot A runs 1.0.0.
    let mut st = StatusFile::default();
    st.set_record(
        "rootfs.0",
        SlotRecord {
            bundle_version: Some("1.0.0".into()),
            compatible: COMPATIBLE.into(),
            manifest_sha256: None,
            image_sha256: None,
            installed_at: Some(1),
            result: InstallResult::Ok,
            message: None,
            trial: Default::default(),
        },
    );
    st.save(&f.status_path()).unwrap();
    Some(Setup {
        socket: p.join("flipslot.sock"),
        inhibit: p.join("inhibit"),
        f,
        nginx,
    })
}

fn image(seed: u64) -> Vec<u8> {
    pseudo_random((2 << 20) + 777, seed)
}

fn manifest_sha256(bundle: &Path) -> flipslot_format::Sha256Digest {
    Bundle::open_unverified(FileSource::open(bundle).unwrap())
        .unwrap()
        .manifest_sha256()
}

/// Distinct modification times, so nginx's ETag changes with every publish.
static MTIME: AtomicU64 = AtomicU64::new(0);

struct ChannelSpec<'a> {
    version: &'a str,
    serial: u64,
    bundle_url: String,
    manifest_of: &'a Path,
    size_of: &'a Path,
    expires_at: u64,
    rollout: u8,
    key: &'a TestKey,
}

impl Setup {
    /// Publishes a bundle as `name` and returns its URL.
    fn publish_bundle(&self, bundle: &Path, name: &str) -> String {
        self.nginx.publish(bundle, name);
        self.nginx.url(name)
    }

    fn spec<'a>(
        &'a self,
        version: &'a str,
        serial: u64,
        bundle: &'a Path,
        url: String,
    ) -> ChannelSpec<'a> {
        ChannelSpec {
            version,
            serial,
            bundle_url: url,
            manifest_of: bundle,
            size_of: bundle,
            expires_at: now() + 3600,
            rollout: 100,
            key: &self.f.trusted,
        }
    }

    fn publish_channel(&self, c: &ChannelSpec<'_>) {
        let ch = Channel {
            format: 1,
            name: "stable".into(),
            compatible: COMPATIBLE.into(),
            version: semver::Version::parse(c.version).unwrap(),
            serial: c.serial,
            issued_at: c.expires_at.min(now()) - 60,
            expires_at: c.expires_at,
            bundle: ChannelBundle {
                urls: vec![c.bundle_url.clone()],
                manifest_sha256: manifest_sha256(c.manifest_of),
                size: std::fs::metadata(c.size_of).unwrap().len(),
            },
            rollout_percent: c.rollout,
        };
        let key = flipslot_format::keys::load_secret_key(&c.key.secret).unwrap();
        let bytes = sign_channel(&ch, &[key]).unwrap();
        let path = self.nginx.www().join("stable.json");
        std::fs::write(&path, bytes).unwrap();
        let bump = MTIME.fetch_add(1, Ordering::SeqCst) + 1;
        let t = SystemTime::now() + Duration::from_secs(bump * 10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flipslot"));
        cmd.arg("--config")
            .arg(self.f.config_path())
            .arg("--cmdline-file")
            .arg(self.f.cmdline_path())
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .env("FLIPSLOT_LOG", "info");
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
        ] {
            cmd.env_remove(v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `flipslot daemon --once`; returns the result line and the output.
    fn once(&self, extra: &[&str]) -> (Value, Output) {
        let mut args = vec!["daemon", "--once"];
        args.extend(extra);
        let out = self.run(&args);
        let line = stdout(&out)
            .lines()
            .last()
            .map(|l| serde_json::from_str(l).unwrap())
            .unwrap_or_else(|| panic!("no result line; stderr:\n{}", stderr(&out)));
        (line, out)
    }

    fn queued(&self) -> Vec<(String, Value)> {
        let dir = self.f.data_dir().join("reports");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
                )
            })
            .collect()
    }
}

/// The daemon refused or skipped without touching any slot, grubenv or status.json.
fn assert_refused(
    s: &Setup,
    before: &support::Snapshot,
    out: &(Value, Output),
    outcome: &str,
    phrase: &str,
) {
    let (line, o) = out;
    assert_eq!(line["outcome"], outcome, "{line}\nstderr:\n{}", stderr(o));
    let reason = line["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains(phrase),
        "reason {reason:?} lacks {phrase:?}"
    );
    s.f.assert_nothing_written(before);
}

// ---------------------------------------------------------------------------------------

#[test]
fn installs_a_newer_version_then_polls_with_304() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let img = image(1);
    let bundle = s.f.bundle("2.0.0", &img);
    let url = s.publish_bundle(&bundle, "b2.fsb");
    s.publish_channel(&s.spec("2.0.0", 1, &bundle, url));
    let before = s.f.snapshot();

    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "installed", "{line}");
    assert_eq!(line["staged"]["slot"], "rootfs.1");
    assert!(s.f.slot_bytes("B")[..img.len()] == img[..]);
    assert_eq!(s.f.primary().as_deref(), Some("B"));
    s.f.assert_booted_intact(&before);
    let st = s.f.status_json();
    assert_eq!(st["primary"], "rootfs.1");

    let names = c.names();
    assert_eq!(
        names.first().map(String::as_str),
        Some("checking"),
        "{names:?}"
    );
    let tail: Vec<&str> = names
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["installed", "staged"], "{names:?}");
    let pct: Vec<u64> = c
        .events()
        .iter()
        .filter(|e| e["event"] == "downloading")
        .map(|e| e["percent"].as_u64().unwrap())
        .collect();
    assert!(
        pct.len() >= 3 && pct.first() == Some(&0) && pct.last() == Some(&100),
        "{pct:?}"
    );
    assert!(
        pct.windows(2).all(|w| w[1] > w[0] && w[1] % 10 == 0),
        "{pct:?}"
    );
    for e in c.events() {
        assert_eq!(e["v"], 1);
        assert_eq!(e["machine_id"], MACHINE_ID);
        assert!(e["time"].as_u64().unwrap() >= now() - 600, "{e}");
    }
    let installed = c
        .events()
        .into_iter()
        .find(|e| e["event"] == "installed")
        .unwrap();
    assert_eq!(installed["version"], "2.0.0");
    assert_eq!(installed["slot"], "rootfs.1");
    assert_eq!(
        installed["manifest_sha256"],
        manifest_sha256(&bundle).to_hex()
    );
    let staged = c
        .events()
        .into_iter()
        .find(|e| e["event"] == "staged")
        .unwrap();
    assert_eq!(staged["reboot"], "never");

    // The same channel again: a 304, nothing installed.
    let status_before = std::fs::read(s.f.status_path()).unwrap();
    let n = c.events().len();
    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "unchanged", "{line}");
    assert_eq!(std::fs::read(s.f.status_path()).unwrap(), status_before);
    let later: Vec<String> = c.names()[n..].to_vec();
    assert_eq!(later, ["checking"], "{later:?}");
    assert!(stderr(&out).contains("304"), "{}", stderr(&out));

    // After the reboot into B, `flipslot health` commits it; the daemon reports that.
    let mut f = s.f;
    assert_eq!(f.grub_boot().as_deref(), Some("B"));
    let s = Setup { f, ..s };
    expect_success(&s.run(&["health", "--no-reboot"]));
    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "unchanged", "{line}");
    let committed: Vec<Value> = c
        .events()
        .into_iter()
        .filter(|e| e["event"] == "committed")
        .collect();
    assert_eq!(committed.len(), 1, "{:?}", c.names());
    assert_eq!(committed[0]["slot"], "rootfs.1");
    assert_eq!(committed[0]["version"], "2.0.0");
    // Reported once only.
    s.once(&[]);
    assert_eq!(c.names().iter().filter(|n| *n == "committed").count(), 1);
}

#[test]
fn expired_channel_is_refused() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let bundle = s.f.bundle("2.0.0", &image(2));
    let url = s.publish_bundle(&bundle, "b.fsb");
    let mut spec = s.spec("2.0.0", 1, &bundle, url);
    spec.expires_at = now() - 3600;
    s.publish_channel(&spec);
    let before = s.f.snapshot();
    let out = s.once(&[]);
    assert!(!out.1.status.success());
    assert_refused(&s, &before, &out, "refused", "expired");
    let failed = c
        .events()
        .into_iter()
        .find(|e| e["event"] == "failed")
        .unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("expired"),
        "{failed}"
    );
}

#[test]
fn lower_serial_is_refused() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let b1 = s.f.bundle("1.0.0", &image(3));
    let u1 = s.publish_bundle(&b1, "b1.fsb");
    s.publish_channel(&s.spec("1.0.0", 5, &b1, u1));
    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "skipped", "{line}");
    assert!(
        line["reason"].as_str().unwrap().contains("not newer"),
        "{line}"
    );

    let b2 = s.f.bundle("2.0.0", &image(4));
    let u2 = s.publish_bundle(&b2, "b2.fsb");
    s.publish_channel(&s.spec("2.0.0", 4, &b2, u2));
    let before = s.f.snapshot();
    let out = s.once(&[]);
    assert_refused(&s, &before, &out, "refused", "serial 4 is lower");
}

#[test]
fn unknown_key_and_garbage_are_refused() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let bundle = s.f.bundle("2.0.0", &image(5));
    let url = s.publish_bundle(&bundle, "b.fsb");
    let rogue = s.f.new_key("rogue");
    let mut spec = s.spec("2.0.0", 1, &bundle, url);
    spec.key = &rogue;
    s.publish_channel(&spec);
    let before = s.f.snapshot();
    let out = s.once(&[]);
    assert_refused(&s, &before, &out, "refused", "untrusted key");

    std::fs::write(
        s.nginx.www().join("stable.json"),
        b"{\"format\":1,\"payload\":\"{}\",\"signatures\":[]}",
    )
    .unwrap();
    let out = s.once(&[]);
    assert_refused(&s, &before, &out, "refused", "not signed");
}

#[test]
fn manifest_hash_mismatch_is_refused_before_writing() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let served = s.f.bundle("2.0.0", &image(6));
    let other = s.f.bundle("2.0.0", &image(7));
    let url = s.publish_bundle(&served, "b.fsb");
    let mut spec = s.spec("2.0.0", 1, &served, url);
    spec.manifest_of = &other;
    s.publish_channel(&spec);
    let before = s.f.snapshot();
    let out = s.once(&[]);
    assert!(!out.1.status.success());
    assert_refused(&s, &before, &out, "failed", "expected");
    let failed = c
        .events()
        .into_iter()
        .find(|e| e["event"] == "failed")
        .unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains(&manifest_sha256(&other).to_hex()),
        "{failed}"
    );
    assert!(
        !c.names().contains(&"downloading".to_string()),
        "{:?}",
        c.names()
    );
}

#[test]
fn zero_rollout_is_not_installed() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let bundle = s.f.bundle("2.0.0", &image(8));
    let url = s.publish_bundle(&bundle, "b.fsb");
    let mut spec = s.spec("2.0.0", 1, &bundle, url);
    spec.rollout = 0;
    s.publish_channel(&spec);
    let before = s.f.snapshot();
    let out = s.once(&[]);
    expect_success(&out.1);
    assert_refused(&s, &before, &out, "skipped", "rollout");
}

#[test]
fn inhibit_file_holds_the_install_back() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    let img = image(9);
    let bundle = s.f.bundle("2.0.0", &img);
    let url = s.publish_bundle(&bundle, "b.fsb");
    s.publish_channel(&s.spec("2.0.0", 1, &bundle, url));
    std::fs::write(&s.inhibit, "maintenance").unwrap();
    let before = s.f.snapshot();
    let out = s.once(&[]);
    expect_success(&out.1);
    assert_refused(&s, &before, &out, "skipped", "inhibit");
    // Gone: the same (unchanged) channel is installed at the next poll.
    std::fs::remove_file(&s.inhibit).unwrap();
    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "installed", "{line}");
    assert!(s.f.slot_bytes("B")[..img.len()] == img[..]);
}

/// The secrets of [`reports_are_queued_while_the_endpoint_is_down_then_flushed_in_order`]:
/// a password and a token in the report URL, and a header from `header-file`.
const SECRETS: [&str; 3] = ["s3cret-pass", "s3cret-token", "s3cret-header"];

/// No secret in `what` (named `name` in the failure).
fn assert_no_secret(name: &str, what: &str) {
    for secret in SECRETS {
        assert!(!what.contains(secret), "{name} shows {secret:?}:\n{what}");
    }
}

/// Every file under `dir`, with its text.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            out.push((p, text));
        }
    }
    out
}

#[test]
fn reports_are_queued_while_the_endpoint_is_down_then_flushed_in_order() {
    let port = free_port();
    let keep = tempfile::tempdir().unwrap();
    let header_file = keep.path().join("headers");
    std::fs::write(&header_file, "X-Device-Token: s3cret-header\n").unwrap();
    let report_url =
        format!("http://reporter:s3cret-pass@127.0.0.1:{port}/report?token=s3cret-token");
    let extra = format!(
        "reboot = \"never\"\nheader-file = \"{}\"",
        header_file.display()
    );
    let Some(s) = setup_reporting_to(&report_url, &extra) else {
        return;
    };
    let bundle = s.f.bundle("2.0.0", &image(10));
    let url = s.publish_bundle(&bundle, "b.fsb");
    s.publish_channel(&s.spec("2.0.0", 1, &bundle, url));
    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "installed", "{line}");
    let queued = s.queued();
    let names: Vec<&str> = queued
        .iter()
        .map(|(_, v)| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"checking"), "{names:?}");
    assert_eq!(
        &names[names.len() - 2..],
        ["installed", "staged"],
        "{names:?}"
    );
    assert_eq!(queued[0].0, "00000001.json");
    // The endpoint was down, and the message says which one, without its secrets.
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot send report, queueing it: http://***@127.0.0.1:{port}/report?token=***"
        )),
        "{err}"
    );
    assert_no_secret("stdout", &stdout(&out));
    assert_no_secret("stderr", &err);

    let c = Collector::start_on(port);
    let (line, out) = s.once(&[]);
    expect_success(&out);
    assert_eq!(line["outcome"], "unchanged", "{line}");
    let got = c.events();
    let expected: Vec<Value> = queued.into_iter().map(|(_, v)| v).collect();
    assert_eq!(got[..expected.len()], expected[..]);
    assert_eq!(got[expected.len()]["event"], "checking");
    assert!(s.queued().is_empty());
    assert_no_secret("stdout", &stdout(&out));
    assert_no_secret("stderr", &stderr(&out));

    // The secrets went where they belong, on every report: the token in the request
    // target, the password as basic auth, the header as configured ...
    let posts = c.posts();
    assert_eq!(posts.len(), got.len());
    for p in &posts {
        assert!(
            p.head.starts_with("POST /report?token=s3cret-token "),
            "{}",
            p.head
        );
        let header = |name: &str| {
            p.head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        // base64("reporter:s3cret-pass")
        assert_eq!(
            header("authorization"),
            Some("Basic cmVwb3J0ZXI6czNjcmV0LXBhc3M="),
            "{}",
            p.head
        );
        assert_eq!(
            header("x-device-token"),
            Some("s3cret-header"),
            "{}",
            p.head
        );
        // ... and nowhere in what the reports say.
        assert_no_secret("a report body", &p.body.to_string());
    }
    // Nor in the status file, the daemon's state or a queued report.
    let files = files_under(&s.f.data_dir());
    assert!(
        files.iter().any(|(p, _)| p.ends_with("daemon.json")),
        "{files:?}"
    );
    for (path, text) in files {
        assert_no_secret(&path.display().to_string(), &text);
    }
}

#[test]
fn immediate_policy_reboots_through_the_reboot_command() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"immediate\"") else {
        return;
    };
    let marker = s.f.path().join("rebooted");
    let script = s.f.path().join("reboot.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho yes > {}\n", marker.display()),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();

    let bundle = s.f.bundle("2.0.0", &image(11));
    let url = s.publish_bundle(&bundle, "b.fsb");
    s.publish_channel(&s.spec("2.0.0", 1, &bundle, url));
    // Inhibited: installed nothing, no reboot.
    std::fs::write(&s.inhibit, "").unwrap();
    let script_s = script.display().to_string();
    let (line, _) = s.once(&["--reboot-command", &script_s]);
    assert_eq!(line["outcome"], "skipped", "{line}");
    assert!(!marker.exists());
    std::fs::remove_file(&s.inhibit).unwrap();
    let (line, out) = s.once(&["--reboot-command", &script_s]);
    expect_success(&out);
    assert_eq!(line["outcome"], "installed", "{line}");
    assert!(marker.exists(), "reboot command not run:\n{}", stderr(&out));
    let names = c.names();
    assert_eq!(
        names.last().map(String::as_str),
        Some("rebooting"),
        "{names:?}"
    );
    assert!(!names.contains(&"staged".to_string()), "{names:?}");
}

/// A daemon running in the background, stopped with SIGTERM on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

#[test]
fn socket_api_serves_status_install_and_check() {
    let c = Collector::start();
    let Some(s) = setup(c.port, "reboot = \"never\"") else {
        return;
    };
    // The channel offers the booted version: nothing to install.
    let b1 = s.f.bundle("1.0.0", &image(12));
    let u1 = s.publish_bundle(&b1, "b1.fsb");
    s.publish_channel(&s.spec("1.0.0", 1, &b1, u1));
    let local = s.f.status_json();

    let log = std::fs::File::create(s.f.path().join("daemon.log")).unwrap();
    let child = s
        .cmd()
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = Running(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.socket.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&s.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // status through the socket equals the local one.
    let out = s.run(&["status", "--json"]);
    expect_success(&out);
    assert!(
        stderr(&out).contains("talking to the flipslot daemon"),
        "{}",
        stderr(&out)
    );
    let via: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(via, local);
    let out = s.run(&["status"]);
    expect_success(&out);
    assert!(
        stdout(&out).contains("booted:     rootfs.0 (A)"),
        "{}",
        stdout(&out)
    );

    // check: polls now.
    let out = s.run(&["check"]);
    expect_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["outcome"] == "skipped" || v["outcome"] == "unchanged",
        "{v}"
    );

    // install through the socket streams progress and ends with done.
    let img = image(13);
    let b2 = s.f.bundle("2.0.0", &img);
    let out = s.run(&["install", "--json", b2.to_str().unwrap()]);
    expect_success(&out);
    assert!(
        stderr(&out).contains("talking to the flipslot daemon"),
        "{}",
        stderr(&out)
    );
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l["v"] == 1), "{lines:?}");
    assert!(lines.iter().any(|l| l["event"] == "start"), "{lines:?}");
    assert!(
        lines.iter().filter(|l| l["event"] == "progress").count() >= 2,
        "{lines:?}"
    );
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["primary"], "rootfs.1");
    assert!(s.f.slot_bytes("B")[..img.len()] == img[..]);
    assert_eq!(s.f.primary().as_deref(), Some("B"));

    // --if-needed reaches the daemon: the bundle waits for the reboot, nothing to do.
    let out = s.run(&["install", "--if-needed", "--json", b2.to_str().unwrap()]);
    expect_success(&out);
    let done: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(done["skipped"], true, "{done}");
    assert_eq!(done["skip_reason"], "pending", "{done}");

    // An install error comes back as the command's error.
    let out = s.run(&["install", s.f.path().join("missing.fsb").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.fsb"), "{}", stderr(&out));

    // --no-daemon works locally while the daemon runs.
    let out = s.run(&["status", "--json", "--no-daemon"]);
    expect_success(&out);
    assert!(!stderr(&out).contains("talking to the flipslot daemon"));

    drop(daemon);
    assert!(!s.socket.exists(), "socket left behind");
    // Without a daemon the CLI works locally.
    let out = s.run(&["status", "--json"]);
    expect_success(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["primary"], "rootfs.1");
}
