//! Network updates in the rig: guests that bring up a virtio NIC on QEMU's user-mode network
//! and run `flipslot daemon` against HTTP servers on the host's loopback.
//!
//! Under `-netdev user` the guest's gateway [`GATEWAY`] (10.0.2.2) is the host's 127.0.0.1, so
//! a server bound to `127.0.0.1:PORT` on the host is `http://10.0.2.2:PORT/` in the guest. The
//! guest gets the virtio-net modules (Debian builds `virtio_net`, `failover` and
//! `net_failover` as modules) and `/usr/sbin/rig-net-up` (`scripts/net-up.sh`), which loads
//! them and runs busybox `udhcpc` with `scripts/udhcpc.sh`; that script applies the lease's
//! address and subnet route only, with no default route, so the guest reaches 10.0.2.x and
//! nothing beyond.
//!
//! Host side: [`NetKit`] (keys, a 1.0.0 and a 2.0.0 release whose `system.toml` has an
//! `[update]` section, signed channels), [`Collector`] (records the daemon's report POSTs)
//! and [`boot`] (one `-no-reboot` boot with the NIC, after any other QEMU on the machine has
//! exited: TCG on two cores runs one VM at a time).

use crate::guest::ExtraFile;
use crate::images::{self, GuestBundle, ImageTool, KeyPair};
use crate::inspect::DiskInfo;
use crate::kernel::{self, Kernel, GUEST_MODULES};
use crate::qemu::{Vm, VmConfig, QEMU};
use crate::scenario::Scenario;
use crate::updates::{self, BootRun, Release};
use crate::{cmd, paths};
use anyhow::{bail, Context as _};
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The host's loopback as the guest sees it under QEMU's user-mode network.
pub const GATEWAY: &str = "10.0.2.2";
/// The guest's `/etc/machine-id` (the daemon's `machine_id` in every report).
pub const MACHINE_ID: &str = "f11b5107e2e0400c9a5e7e57ab1e0001";
/// The modules the NIC needs beyond the initramfs's (their dependencies are added).
pub const NET_MODULES: &[&str] = &["virtio_net"];
/// `/usr/sbin/rig-net-up` of the guest.
pub const NET_UP: &str = include_str!("scripts/net-up.sh");
/// `/usr/share/rig/udhcpc.script` of the guest.
pub const UDHCPC_SCRIPT: &str = include_str!("scripts/udhcpc.sh");
/// Where the module files and their load order (`modules`) live in the guest.
const GUEST_MODULE_DIR: &str = "/usr/lib/rig/net";
/// The version of the update the network scenarios install.
pub const UPDATE_VERSION: &str = "2.0.0";

/// The extra guest files for networking: the NIC's modules not already in the initramfs
/// (in load order, listed in `/usr/lib/rig/net/modules`), `rig-net-up`, the udhcpc script and
/// `/etc/machine-id`.
pub fn guest_files(kernel: &Kernel) -> anyhow::Result<Vec<ExtraFile>> {
    let early = kernel.module_load_order(GUEST_MODULES)?;
    let mut files = Vec::new();
    let mut order = String::new();
    for ko in kernel.module_load_order(NET_MODULES)? {
        if early.contains(&ko) {
            continue;
        }
        let name = ko
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("module path {} has no UTF-8 file name", ko.display()))?
            .to_string();
        let contents =
            std::fs::read(&ko).with_context(|| format!("cannot read {}", ko.display()))?;
        files.push(ExtraFile {
            path: format!("{GUEST_MODULE_DIR}/{name}"),
            contents,
            mode: 0o644,
        });
        order.push_str(&name);
        order.push('\n');
    }
    if files.is_empty() {
        bail!("modprobe lists no module files for {NET_MODULES:?} beyond the initramfs's");
    }
    files.push(ExtraFile {
        path: format!("{GUEST_MODULE_DIR}/modules"),
        contents: order.into_bytes(),
        mode: 0o644,
    });
    files.push(ExtraFile {
        path: "/usr/sbin/rig-net-up".into(),
        contents: NET_UP.as_bytes().to_vec(),
        mode: 0o755,
    });
    files.push(ExtraFile {
        path: "/usr/share/rig/udhcpc.script".into(),
        contents: UDHCPC_SCRIPT.as_bytes().to_vec(),
        mode: 0o755,
    });
    files.push(ExtraFile {
        path: "/etc/machine-id".into(),
        contents: format!("{MACHINE_ID}\n").into_bytes(),
        mode: 0o444,
    });
    Ok(files)
}

/// `[update]` for a guest's `system.toml` (append it): the channel and report URLs (as the
/// guest reaches them), an immediate reboot after an install, and `/etc/machine-id`.
pub fn update_section(channel_url: &str, report_url: &str) -> String {
    format!(
        "\n[update]\n\
         channel-url = \"{channel_url}\"\n\
         report-url = \"{report_url}\"\n\
         reboot = \"immediate\"\n\
         poll-interval-seconds = 3600\n\
         machine-id-file = \"/etc/machine-id\"\n"
    )
}

/// `http://10.0.2.2:PORT/PATH`: what the guest uses for the host's `127.0.0.1:PORT`.
pub fn guest_url(port: u16, path: &str) -> String {
    format!("http://{GATEWAY}:{port}/{}", path.trim_start_matches('/'))
}

/// The QEMU arguments of the guest's NIC: user-mode network, virtio-net.
pub fn nic_args() -> Vec<OsString> {
    [
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// The scenario lines that bring the network up (exit 20 when it fails) and check that the
/// guest has no default route (exit 21): it may reach the host's loopback and nothing else.
pub const SH_NET_UP: &str = "rig-net-up || exit 20\n\
                             if ip route | grep -q '^default'; then exit 21; fi\n";

/// Pids of running QEMU system emulators (any user's), from `/proc/<pid>/comm`.
pub fn running_qemus() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // comm is cut at 15 bytes: "qemu-system-x86".
    let comm_prefix = &QEMU[..QEMU.len().min(15)];
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim_end() == comm_prefix).then_some(pid)
        })
        .collect()
}

/// Waits until no QEMU runs on the machine (other test processes share its two cores);
/// fails after `timeout`.
pub fn wait_for_qemu_turn(timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let others = running_qemus();
        if others.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            bail!(
                "another QEMU (pids {others:?}) still runs after {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How long [`boot`] waits for another QEMU on the machine to finish.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(900);

/// Boots `disk` once with the NIC (`-no-reboot`: a guest reboot, power-off or panic ends
/// QEMU), after waiting for any other QEMU on the machine to exit; the serial log is
/// `target/rig-logs/<log_name>.log`. Fails when QEMU still runs after `timeout`.
pub fn boot(disk: &Path, log_name: &str, timeout: Duration) -> anyhow::Result<BootRun> {
    let waited = wait_for_qemu_turn(TURN_TIMEOUT)?;
    if waited > Duration::from_secs(1) {
        eprintln!(
            "{log_name}: waited {:.0} s for another QEMU to exit",
            waited.as_secs_f64()
        );
    }
    let mut cfg = VmConfig::new(log_name, disk);
    cfg.hard_timeout = timeout + Duration::from_secs(5);
    cfg.extra_args.extend(nic_args());
    let mut vm = Vm::start(&cfg)?;
    let status = vm.wait_exit(timeout)?;
    let serial = vm.serial()?.to_string();
    Ok(BootRun {
        serial,
        log: vm.log_path().to_path_buf(),
        status,
        elapsed: vm.elapsed(),
    })
}

/// Keys, the factory release (1.0.0, slot A) and the update ([`UPDATE_VERSION`]), both
/// with networking and the same `[update]` section, and the channels signed for them.
#[derive(Debug)]
pub struct NetKit {
    /// The image tool.
    pub tool: ImageTool,
    /// The scratch directory (kept with `FLIPSLOT_RIG_KEEP=1`).
    pub work: tempfile::TempDir,
    /// The release key (trusted by both releases).
    pub keys: KeyPair,
    /// The factory release.
    pub base: GuestBundle,
    /// The update.
    pub update: GuestBundle,
    /// Named steps and their durations.
    pub timings: Vec<(String, Duration)>,
}

impl NetKit {
    /// Builds both releases with `update_section` (see [`update_section`]) in their
    /// `system.toml`, after the rig's config and health check.
    pub fn new(prefix: &str, update_section: &str) -> anyhow::Result<NetKit> {
        let t = Instant::now();
        let tool = ImageTool::build()?;
        let mut timings = vec![("flipslot-image (cargo)".to_string(), t.elapsed())];
        let work = paths::scratch_dir(&format!("{prefix}-"))?;
        let keys = tool.keygen(&work.path().join("keys"), "release")?;
        let kernel = kernel::debian_kernel()?;
        let net = guest_files(&kernel)?;
        let mut build = |version: &str, name: &str| -> anyhow::Result<GuestBundle> {
            let mut spec = updates::release_spec(version, Release::Good);
            spec.system_toml = Some(updates::system_toml() + update_section);
            spec.files.extend(net.iter().cloned());
            let b = images::guest_bundle_spec(&tool, work.path(), &keys, spec, name)?;
            for (step, d) in &b.timings {
                timings.push((format!("{version}: {step}"), *d));
            }
            Ok(b)
        };
        let base = build(updates::BASE_VERSION, "base")?;
        let update = build(UPDATE_VERSION, "update")?;
        Ok(NetKit {
            tool,
            work,
            keys,
            base,
            update,
            timings,
        })
    }

    /// Signs the channel `stable` for the update bundle, downloadable from `bundle_url`,
    /// valid for a day, into `out`.
    pub fn channel(&self, bundle_url: &str, out: &Path) -> anyhow::Result<()> {
        cmd::run(
            Command::new(&self.tool.0)
                .args(["channel", "--name", "stable", "--bundle"])
                .arg(&self.update.bundle)
                .args(["--url", bundle_url, "--expires-in", "1d", "--key"])
                .arg(&self.keys.secret)
                .arg("--out")
                .arg(out),
        )
        .map(|_| ())
    }

    /// Builds `work/<name>/disk.img`: slot A holds the factory release, the data partition
    /// `scenario`.
    pub fn disk(&self, name: &str, scenario: &Scenario) -> anyhow::Result<(PathBuf, DiskInfo)> {
        let dir = self.work.path().join(name);
        images::disk_with(&self.tool, &dir, &self.base.bundle, &self.keys, scenario)
    }
}

/// A POST the [`Collector`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    /// The request target, e.g. `/report`.
    pub path: String,
    /// The body as JSON (`Value::String` of the raw text when it is not JSON).
    pub body: serde_json::Value,
}

/// A report endpoint on `127.0.0.1:<port>`: records every POST body and answers
/// `200 OK` (one request per connection). Stops accepting when dropped.
#[derive(Debug)]
pub struct Collector {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// The longest request head or body the collector reads.
const COLLECTOR_MAX: usize = 1 << 20;

impl Collector {
    /// Starts the collector on a free loopback port.
    pub fn start() -> anyhow::Result<Collector> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("cannot bind the report collector")?;
        listener
            .set_nonblocking(true)
            .context("cannot make the collector's socket non-blocking")?;
        let port = listener
            .local_addr()
            .context("cannot read the collector's address")?
            .port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (posts.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let p = p.clone();
                        std::thread::spawn(move || {
                            if let Err(e) = serve_one(conn, &p) {
                                eprintln!("report collector: {e:#}");
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        eprintln!("report collector: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
        Ok(Collector {
            port,
            posts,
            stop,
            accept: Some(accept),
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The POSTs so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The bodies so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.posts().into_iter().map(|p| p.body).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            if t.join().is_err() {
                eprintln!("report collector: the accept thread panicked");
            }
        }
    }
}

/// Reads one request from `conn`, records it if it is a POST, answers 200 (405 otherwise).
fn serve_one(mut conn: TcpStream, posts: &Mutex<Vec<Post>>) -> anyhow::Result<()> {
    conn.set_nonblocking(false)
        .context("cannot make a collector connection blocking")?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .context("cannot set a read timeout")?;
    let mut reader = BufReader::new(conn.try_clone().context("cannot clone a connection")?);
    let mut request_line = String::new();
    reader
        .read_line(&mut request_line)
        .context("cannot read the request line")?;
    let mut len = 0usize;
    let mut head_bytes = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .context("cannot read a request header")?;
        head_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" || head_bytes > COLLECTOR_MAX {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                len = value
                    .trim()
                    .parse()
                    .with_context(|| format!("bad Content-Length {:?}", value.trim()))?;
            }
        }
    }
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "POST" || len > COLLECTOR_MAX {
        conn.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .context("cannot answer")?;
        return Ok(());
    }
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .context("cannot read the request body")?;
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    posts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Post {
            path: path.to_string(),
            body,
        });
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .context("cannot answer")?;
    Ok(())
}

/// The `FLIPSLOT-NET lease ...` line of a serial log, as `(iface, ip, router)`.
pub fn lease(serial: &str) -> Option<(String, String, String)> {
    let line = serial.lines().find(|l| l.contains("FLIPSLOT-NET lease "))?;
    let rest = &line[line.find("FLIPSLOT-NET lease ")? + "FLIPSLOT-NET lease ".len()..];
    let mut iface = None;
    let mut ip = None;
    let mut router = None;
    for w in rest.split_whitespace() {
        if let Some(v) = w.strip_prefix("iface=") {
            iface = Some(v.to_string());
        } else if let Some(v) = w.strip_prefix("ip=") {
            ip = Some(v.to_string());
        } else if let Some(v) = w.strip_prefix("router=") {
            router = Some(v.to_string());
        }
    }
    Some((iface?, ip?, router?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn guest_scripts_are_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("net-up", NET_UP),
            ("udhcpc", UDHCPC_SCRIPT),
            ("scenario", SH_NET_UP),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            cmd::run(Command::new("sh").arg("-n").arg(&path)).unwrap();
        }
        assert!(NET_UP.contains("FLIPSLOT-NET-FAIL"));
        assert!(UDHCPC_SCRIPT.contains("FLIPSLOT-NET lease"));
        // No default route: the guest reaches its user-mode subnet only.
        assert!(!UDHCPC_SCRIPT.contains("route add default"));
    }

    #[test]
    fn update_section_follows_the_rig_config() {
        let t = crate::guest::system_toml(crate::guest::COMPATIBLE)
            + &update_section(&guest_url(8080, "/stable.json"), &guest_url(9090, "report"));
        assert!(t.contains("channel-url = \"http://10.0.2.2:8080/stable.json\""));
        assert!(t.contains("report-url = \"http://10.0.2.2:9090/report\""));
        assert!(t.contains("\n[update]\n"));
        assert!(t.ends_with("machine-id-file = \"/etc/machine-id\"\n"));
    }

    #[test]
    fn nic_and_lease() {
        let a: Vec<String> = nic_args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a.join(" "),
            "-netdev user,id=n0 -device virtio-net-pci,netdev=n0"
        );
        let log = "x\r\nFLIPSLOT-NET lease iface=eth0 ip=10.0.2.15/24 router=10.0.2.2\r\n";
        assert_eq!(
            lease(log),
            Some(("eth0".into(), "10.0.2.15/24".into(), "10.0.2.2".into()))
        );
        assert_eq!(lease("nothing"), None);
    }

    #[test]
    fn collector_records_posts() {
        let c = Collector::start().unwrap();
        for body in ["{\"event\":\"checking\"}", "not json"] {
            let mut s = TcpStream::connect(("127.0.0.1", c.port())).unwrap();
            write!(
                s,
                "POST /report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
        let posts = c.posts();
        assert_eq!(posts.len(), 2);
        assert_eq!(posts[0].path, "/report");
        assert_eq!(posts[0].body["event"], "checking");
        assert_eq!(posts[1].body, serde_json::Value::String("not json".into()));
    }
}
