#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Network updates end to end, in QEMU with the real GRUB, OVMF and the static `flipslot`:
//! a real nginx on the host's loopback serves a signed channel and the 2.0.0 bundle, a
//! collector in the test records the daemon's reports, and the guest (1.0.0 in slot A)
//! reaches both as `http://10.0.2.2:PORT/` through QEMU's user-mode network. The guest runs
//! `flipslot daemon --once` with `reboot = "immediate"`: it installs into B and reboots
//! (which ends QEMU under `-no-reboot`); on the next boot `flipslot health` commits B and the
//! daemon reports the commit. Each test asserts on the serial log, on `flipslot status
//! --json` as the guest printed it, and on what the host's servers saw.

// The agent tests' nginx and fault proxy, shared as they are; dead_code is allowed because
// these tests use only part of them (TLS, other faults).
#[path = "../../agent/tests/support/faultproxy.rs"]
#[allow(dead_code)]
mod faultproxy;
#[path = "../../agent/tests/support/nginx.rs"]
#[allow(dead_code)]
mod nginx;

use faultproxy::{Fault, FaultProxy};
use flipslot_e2e::network::{self, Collector, NetKit, MACHINE_ID, UPDATE_VERSION};
use flipslot_e2e::scenario::{self, Boot, Scenario, SH_HELPERS};
use flipslot_e2e::updates::BootRun;
use flipslot_e2e::{host, inspect};
use nginx::{Nginx, NginxConfig};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One boot under TCG takes ~10 s; the download and install add some.
const BOOT_TIMEOUT: Duration = Duration::from_secs(100);
/// Where nginx serves the bundle and the channel.
const BUNDLE_PATH: &str = "bundles/system-2.0.0.fsb";
const CHANNEL_PATH: &str = "channels/stable.json";

/// The guest's scenario: network up on every boot, then
/// boot 1: status, `flipslot daemon --once` (installs and reboots: the END line never comes);
/// later boots: `flipslot daemon --once` (reports the commit), status.
/// `flipslot health` runs before it on every boot (the guest init, `/data/health.env`).
fn net_scenario() -> Scenario {
    let script = format!(
        "{SH_HELPERS}export FLIPSLOT_LOG=info\n\
         {}\
         case \"$FLIPSLOT_BOOT\" in\n\
         1)\n\
         \x20   rig_status before\n\
         \x20   echo RIG-DAEMON-START\n\
         \x20   flipslot daemon --once\n\
         \x20   echo \"RIG-DAEMON-END rc=$?\"\n\
         \x20   ;;\n\
         *)\n\
         \x20   flipslot daemon --once > /tmp/daemon.out\n\
         \x20   echo \"FLIPSLOT-JSON daemon rc=$? $(tail -n 1 /tmp/daemon.out)\"\n\
         \x20   rig_status final\n\
         \x20   ;;\n\
         esac\n",
        network::SH_NET_UP
    );
    let mut s = Scenario::script(&script);
    s.files.push((
        "health.env".into(),
        b"# the guest init runs `flipslot health` on every boot\n".to_vec(),
    ));
    s
}

/// Host servers and the kit, or `None` when the test must be skipped.
struct Rig {
    test: String,
    nginx: Nginx,
    collector: Collector,
    kit: NetKit,
}

/// Starts nginx and the collector, builds the releases and publishes the bundle and its
/// channel. `proxy_for(nginx_port)` may name the port of a proxy the guest reaches nginx
/// through (for the channel and the bundle alike).
fn rig(test: &str, proxy_for: impl FnOnce(u16) -> Option<u16>) -> Option<Rig> {
    if !host::vm_tests_can_run(test) {
        return None;
    }
    let nginx = Nginx::start(&NginxConfig::default())?;
    let collector = Collector::start().unwrap();
    let via = proxy_for(nginx.port);
    let port = via.unwrap_or(nginx.port);
    let update = network::update_section(
        &network::guest_url(port, CHANNEL_PATH),
        &network::guest_url(collector.port(), "report"),
    );
    let kit = NetKit::new(test, &update).unwrap();
    for (step, d) in &kit.timings {
        eprintln!("{test}: {:7.2} s  {step}", d.as_secs_f64());
    }
    for dir in ["bundles", "channels"] {
        std::fs::create_dir_all(nginx.www().join(dir)).unwrap();
    }
    nginx.publish(&kit.update.bundle, BUNDLE_PATH);
    kit.channel(
        &network::guest_url(port, BUNDLE_PATH),
        &nginx.www().join(CHANNEL_PATH),
    )
    .unwrap();
    Some(Rig {
        test: test.into(),
        nginx,
        collector,
        kit,
    })
}

impl Rig {
    fn access_log(&self) -> String {
        let path = self.nginx.www().parent().unwrap().join("access.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// The boots of one disk.
struct Disk {
    test: String,
    disk: PathBuf,
    layout: inspect::DiskInfo,
    runs: Vec<BootRun>,
}

impl Disk {
    fn new(rig: &Rig) -> Disk {
        let (disk, layout) = rig.kit.disk(&rig.test, &net_scenario()).unwrap();
        Disk {
            test: rig.test.clone(),
            disk,
            layout,
            runs: Vec::new(),
        }
    }

    fn boot(&mut self) -> String {
        let name = format!("{}-boot{}", self.test, self.runs.len() + 1);
        let run = network::boot(&self.disk, &name, BOOT_TIMEOUT).unwrap();
        eprintln!(
            "{}: boot {} took {:.1} s ({}): {:?}; log {}",
            self.test,
            self.runs.len() + 1,
            run.elapsed.as_secs_f64(),
            run.status,
            scenario::boots(&run.serial),
            run.log.display()
        );
        assert!(
            scenario::failures(&run.serial).is_empty(),
            "{}",
            run.log.display()
        );
        assert!(
            !run.serial.contains("FLIPSLOT-NET-FAIL"),
            "network did not come up; log {}",
            run.log.display()
        );
        let serial = run.serial.clone();
        self.runs.push(run);
        serial
    }

    fn where_(&self) -> String {
        self.runs
            .last()
            .map(|r| r.log.display().to_string())
            .unwrap_or_default()
    }

    fn vm_seconds(&self) -> f64 {
        self.runs.iter().map(|r| r.elapsed.as_secs_f64()).sum()
    }
}

fn boot(slot: &str, version: &str) -> Boot {
    Boot {
        slot: slot.into(),
        version: version.into(),
    }
}

/// The one `FLIPSLOT-JSON <tag>` line of a serial log.
fn json(serial: &str, tag: &str, where_: &str) -> (i32, Value) {
    let lines = scenario::json_lines(serial, tag).unwrap();
    assert_eq!(lines.len(), 1, "one {tag} line expected; log {where_}");
    (lines[0].rc, lines[0].value.clone())
}

/// The first report named `event`.
/// The first `name` report about the update (version 2.0.0). The factory image's record
/// makes the daemon also report the commit of 1.0.0 in slot A on the first boot.
fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name && e["version"] == UPDATE_VERSION)
        .unwrap_or_else(|| panic!("no {name} report about {UPDATE_VERSION} in {events:#?}"))
}

fn position(events: &[Value], name: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == name && e["version"] == UPDATE_VERSION)
        .unwrap_or_else(|| panic!("no {name} report about {UPDATE_VERSION} in {events:#?}"))
}

/// Boot 1: A (1.0.0) brings the network up, its daemon installs 2.0.0 from the channel into
/// B and reboots. Boot 2: B (2.0.0) commits, the daemon reports it and finds nothing newer.
/// Returns the serial logs of both boots.
fn update_over_network(rig: &Rig, d: &mut Disk) -> (String, String) {
    // Boot 1.
    let log1 = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log1), [boot("A", "1.0.0")], "{w}");
    assert_eq!(scenario::health_results(&log1), [0], "{w}");
    let (iface, ip, router) = network::lease(&log1).unwrap_or_else(|| panic!("no lease; {w}"));
    eprintln!("{}: lease {iface} {ip} router {router}", d.test);
    assert!(ip.starts_with("10.0.2."), "{ip}; {w}");
    assert_eq!(router, network::GATEWAY, "{w}");
    let (rc, before) = json(&log1, "before", &w);
    assert_eq!(rc, 0, "{w}");
    assert_eq!(before["booted"], "rootfs.0", "{before}");
    assert!(log1.contains("RIG-DAEMON-START"), "{w}");
    // The daemon rebooted the machine: the scenario never went on.
    assert!(
        !log1.contains("RIG-DAEMON-END"),
        "the daemon did not reboot; {w}"
    );
    assert_eq!(scenario::scenario_results(&log1), [], "{w}");

    // Boot 2.
    let log2 = d.boot();
    let w = d.where_();
    assert_eq!(scenario::boots(&log2), [boot("B", UPDATE_VERSION)], "{w}");
    assert!(
        log2.contains("trial boot of slot rootfs.1 passed: committed"),
        "{w}"
    );
    assert_eq!(scenario::health_results(&log2), [0], "{w}");
    assert_eq!(scenario::scenario_results(&log2), [Some(0)], "{w}");
    let (rc, daemon) = json(&log2, "daemon", &w);
    assert_eq!(rc, 0, "{daemon}; {w}");
    // Boot 1's poll left the channel's validators in daemon.json, so this poll is a
    // conditional GET answered 304 (`unchanged`); a full GET would end `skipped` (2.0.0 is
    // not newer than the booted 2.0.0). Either way nothing is installed.
    assert!(
        daemon["outcome"] == "unchanged" || daemon["outcome"] == "skipped",
        "{daemon}; {w}"
    );
    assert_eq!(daemon["version"], UPDATE_VERSION, "{daemon}; {w}");
    let (rc, last) = json(&log2, "final", &w);
    assert_eq!(rc, 0, "{w}");
    assert_eq!(last["booted"], "rootfs.1", "{last}");
    assert_eq!(last["primary"], "rootfs.1", "{last}");
    let b = scenario::status_slot(&last, "B").unwrap();
    assert_eq!(b["state"], "booted", "{last}");
    assert_eq!(b["primary"], true, "{last}");
    assert_eq!(b["boot_status"], "good", "{last}");
    assert_eq!(b["installed"]["bundle_version"], UPDATE_VERSION, "{last}");
    assert!(b["installed"]["trial"]["committed_at"].is_u64(), "{last}");
    let a = scenario::status_slot(&last, "A").unwrap();
    assert_eq!(a["boot_status"], "good", "{last}");
    assert_eq!(a["primary"], false, "{last}");

    // What the host saw: the reports, in order, about 2.0.0 in rootfs.1.
    let events = rig.collector.events();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    eprintln!("{}: reports {names:?}", d.test);
    for e in &events {
        assert_eq!(e["v"], 1, "{e}");
        assert_eq!(e["machine_id"], MACHINE_ID, "{e}");
    }
    assert!(rig.collector.posts().iter().all(|p| p.path == "/report"));
    for name in ["installed", "rebooting", "committed"] {
        let e = event(&events, name);
        assert_eq!(e["version"], UPDATE_VERSION, "{e}");
        assert_eq!(e["slot"], "rootfs.1", "{e}");
    }
    // The first poll reports the boot outcome of the factory image (its record says
    // committed), then starts checking.
    let first_update_report = events
        .iter()
        .position(|e| !(e["event"] == "committed" && e["version"] != UPDATE_VERSION))
        .unwrap_or(events.len());
    assert_eq!(
        names.get(first_update_report),
        Some(&"checking"),
        "{names:?}"
    );
    assert!(
        position(&events, "installed") < position(&events, "rebooting")
            && position(&events, "rebooting") < position(&events, "committed"),
        "{names:?}"
    );
    assert_eq!(event(&events, "rebooting")["reboot"], "immediate");
    assert_eq!(
        event(&events, "committed")["committed_at"],
        b["installed"]["trial"]["committed_at"],
        "{last}"
    );
    // Each commit is reported once: the update's, and the factory image's before it.
    for version in [UPDATE_VERSION, "1.0.0"] {
        let commits = events
            .iter()
            .filter(|e| e["event"] == "committed" && e["version"] == version)
            .count();
        assert_eq!(commits, 1, "{version}: {names:?}");
    }
    let pct: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "downloading")
        .filter_map(|e| e["percent"].as_u64())
        .collect();
    assert_eq!(pct.first(), Some(&0), "{pct:?}");
    assert_eq!(pct.last(), Some(&100), "{pct:?}");
    assert!(!names.contains(&"failed"), "{names:?}");

    let env = inspect::grubenv(&d.disk, &d.layout).unwrap();
    eprintln!("{}: grubenv on the disk: {env:?}", d.test);
    for (k, v) in [
        ("ORDER", "B A"),
        ("B_OK", "1"),
        ("B_TRY", "0"),
        ("A_OK", "1"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    (log1, log2)
}

/// `access.log` lines (combined format) of requests for `path`: (status, body bytes).
fn access_lines(log: &str, path: &str) -> Vec<(u16, u64)> {
    log.lines()
        .filter(|l| l.contains(&format!(" /{path} ")))
        .map(|l| {
            // ... "GET /path HTTP/1.1" STATUS BYTES "referer" "agent"
            let after = &l[l.find("\" ").unwrap() + 2..];
            let mut w = after.split_whitespace();
            (
                w.next().unwrap().parse().unwrap(),
                w.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn daemon_updates_over_http() {
    let test = "daemon_updates_over_http";
    let Some(rig) = rig(test, |_| None) else {
        return;
    };
    let mut d = Disk::new(&rig);
    let started = Instant::now();
    update_over_network(&rig, &mut d);

    let access = rig.access_log();
    let channel = access_lines(&access, CHANNEL_PATH);
    let statuses: Vec<u16> = channel.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [200, 304],
        "one channel GET per boot, the second conditional:\n{access}"
    );
    let bundle = access_lines(&access, BUNDLE_PATH);
    assert!(
        !bundle.is_empty() && bundle.iter().all(|(s, _)| *s == 206),
        "the bundle is read with range requests only:\n{access}"
    );
    let size = std::fs::metadata(&rig.kit.update.bundle).unwrap().len();
    let sent: u64 = bundle.iter().map(|(_, b)| b).sum();
    eprintln!(
        "{test}: bundle {size} bytes, nginx sent {sent} in {} requests",
        bundle.len()
    );
    assert!(sent <= size + 4096 * bundle.len() as u64, "{access}");
    eprintln!(
        "{test}: 2 boots, {:.1} s of VM time, {:.1} s in all",
        d.vm_seconds(),
        started.elapsed().as_secs_f64()
    );
}

/// Every response body the proxy forwards is cut after this many bytes.
const CUT: u64 = 5 << 20;

/// The first offset of a `Range: bytes=FIRST-LAST` header.
fn range_start(range: &str) -> u64 {
    range
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split('-').next())
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("bad range {range:?}"))
}

#[test]
fn download_cut_resumes() {
    let test = "download_cut_resumes";
    let mut proxy = None;
    let Some(rig) = rig(test, |nginx_port| {
        let p = FaultProxy::start(nginx_port);
        p.every(Fault::DropAfter(CUT));
        let port = p.port();
        proxy = Some(p);
        Some(port)
    }) else {
        return;
    };
    let proxy = proxy.unwrap();
    let mut d = Disk::new(&rig);
    let started = Instant::now();
    let (log1, _) = update_over_network(&rig, &mut d);

    let size = std::fs::metadata(&rig.kit.update.bundle).unwrap().len();
    let seen: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.request_line.contains(BUNDLE_PATH))
        .collect();
    for s in &seen {
        eprintln!(
            "{test}: proxy: {} range {:?} if-range {:?} -> {:?}, {} body bytes",
            s.request_line, s.range, s.if_range, s.status, s.body_sent
        );
    }
    let cut: Vec<_> = seen.iter().filter(|s| s.body_sent == CUT).collect();
    let expected_cuts = size / CUT;
    assert!(
        cut.len() as u64 >= expected_cuts.saturating_sub(1).max(2),
        "{} connections cut for a {size}-byte bundle; see {}",
        cut.len(),
        d.runs[0].log.display()
    );
    assert!(seen.iter().all(|s| s.status == Some(206)), "{seen:#?}");
    // Each resumed request starts where the cut one stopped, and asks with If-Range.
    let streams: Vec<_> = seen.iter().filter(|s| s.body_sent > 1).collect();
    let starts: Vec<u64> = streams
        .iter()
        .map(|s| range_start(s.range.as_deref().unwrap()))
        .collect();
    eprintln!("{test}: range starts {starts:?}");
    assert!(starts.windows(2).all(|w| w[1] > w[0]), "{starts:?}");
    for pair in streams.windows(2) {
        if pair[0].body_sent == CUT {
            assert_eq!(
                range_start(pair[1].range.as_deref().unwrap()),
                range_start(pair[0].range.as_deref().unwrap()) + CUT,
                "{seen:#?}"
            );
            assert!(pair[1].if_range.is_some(), "{seen:#?}");
        }
    }
    assert!(
        log1.contains("retry 1/"),
        "the agent logged no retry; {}",
        d.runs[0].log.display()
    );

    // nginx's side: range answers only, as many as the proxy forwarded.
    let access = rig.access_log();
    let bundle = access_lines(&access, BUNDLE_PATH);
    assert_eq!(bundle.len(), seen.len(), "{access}");
    assert!(bundle.iter().all(|(s, _)| *s == 206), "{access}");
    eprintln!(
        "{test}: {} bundle requests, {} cut; 2 boots, {:.1} s of VM time, {:.1} s in all",
        seen.len(),
        cut.len(),
        d.vm_seconds(),
        started.elapsed().as_secs_f64()
    );
    drop(proxy);
}
