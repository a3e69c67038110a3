//! flipslot-demo: watch a QEMU device update itself. Boots a disk whose slot A runs 1.0.0,
//! installs 2.0.0 into slot B, reboots into B and commits it; then tries a broken 2.1.0 (its
//! health check fails), which is rolled back to 2.0.0. Streams the guest's serial console
//! (the interesting lines, or all of them with `--verbose`) with a narration line per step,
//! checks every step, prints a summary and exits non-zero if anything deviates.
//!
//! Run it with `tests/demo.sh`, or `cargo run --release -p flipslot-e2e --bin flipslot-demo`.

use anyhow::{bail, Context as _};
use flipslot_e2e::qemu::{Vm, VmConfig};
use flipslot_e2e::scenario::{self, Scenario, SH_HELPERS};
use flipslot_e2e::updates::{Kit, Release};
use flipslot_e2e::{host, inspect};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every boot ends within this (TCG: ~10–15 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest's side of the demo, keyed by its boot counter.
const SCRIPT: &str = r#"show_status() { flipslot status | sed 's/^/  status| /'; }
case "$FLIPSLOT_BOOT" in
1)  show_status
    echo "demo: installing 2.0.0"
    flipslot install /data/bundles/v2.fsb || exit 1
    echo reboot > /run/rig-action ;;
2)  show_status
    echo reboot > /run/rig-action ;;
3)  echo "demo: installing 2.1.0"
    flipslot install /data/bundles/v21-broken.fsb || exit 1
    echo reboot > /run/rig-action ;;
*)  show_status
    rig_status final ;;
esac
"#;

struct Step {
    title: &'static str,
    slot: Option<&'static str>,
    version: &'static str,
    expect: &'static [&'static str],
}

const STEPS: &[Step] = &[
    Step {
        title: "boot the factory image: slot A runs 1.0.0; install 2.0.0 into slot B, reboot",
        slot: Some("A"),
        version: "1.0.0",
        expect: &[
            "slot rootfs.0 kept",
            "installed qemu-x86 2.0.0",
            "flipslot-rig: reboot",
        ],
    },
    Step {
        title: "GRUB tries slot B once; its health check passes, flipslot commits it",
        slot: Some("B"),
        version: "2.0.0",
        expect: &["trial boot of slot rootfs.1 passed: committed"],
    },
    Step {
        title: "B is the committed system now; install a broken 2.1.0 into slot A, reboot",
        slot: Some("B"),
        version: "2.0.0",
        expect: &["slot rootfs.1 kept", "installed qemu-x86 2.1.0"],
    },
    Step {
        title: "GRUB tries 2.1.0 in slot A; its health check fails: marked bad, reboot",
        slot: Some("A"),
        version: "2.1.0",
        expect: &["FAIL command test -e /etc/app-ready", "failed: marked bad"],
    },
    Step {
        title: "back on 2.0.0 (slot B): flipslot records the rollback and why",
        slot: Some("B"),
        version: "2.0.0",
        expect: &["rollback: slot rootfs.0 (2.1.0) failed its trial"],
    },
];

fn main() {
    let verbose = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--verbose" | "-v") => true,
        Some(_) => {
            eprintln!(
                "usage: flipslot-demo [--verbose]\n\
                 Boots a QEMU device through an update and a rolled-back broken update."
            );
            std::process::exit(2);
        }
    };
    match run(verbose) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("\ndemo FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

fn say(msg: &str) {
    println!("\n\x1b[1m==> {msg}\x1b[0m");
}

fn run(verbose: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let missing = host::missing(host::VM_NEEDS);
    if !missing.is_empty() {
        bail!(
            "missing {}; install: apt-get install {} (or run tests/deps.sh)",
            missing
                .iter()
                .map(|n| n.what)
                .collect::<Vec<_>>()
                .join(", "),
            host::packages(&missing).join(" ")
        );
    }
    say("building: flipslot-image, the static agent, a guest kernel + initramfs, three releases");
    let mut kit = Kit::new("demo")?;
    kit.add("v2", "2.0.0", Release::Good)?;
    kit.add("v21-broken", "2.1.0", Release::FailsHealth)?;
    let mut s = Scenario::script(&format!("{SH_HELPERS}{SCRIPT}"));
    s.files.push((
        "health.env".into(),
        b"# the guest init runs `flipslot health` on every boot\n".to_vec(),
    ));
    let (disk, layout) = kit.disk("demo", &s, &["v2", "v21-broken"])?;
    println!(
        "    built in {:.0} s; disk {} (A = 1.0.0; bundles 2.0.0 and 2.1.0 on the data partition)",
        started.elapsed().as_secs_f64(),
        disk.display()
    );

    let mut summary = Vec::new();
    let mut last_log = String::new();
    for (i, step) in STEPS.iter().enumerate() {
        say(&format!("[{}/{}] {}", i + 1, STEPS.len(), step.title));
        let t = Instant::now();
        let log = boot(&disk, &format!("demo-boot{}", i + 1), verbose)?;
        let boots = scenario::boots(&log);
        let got = boots
            .first()
            .map(|b| format!("{} {}", b.slot, b.version))
            .unwrap_or_else(|| "nothing".into());
        let env = inspect::grubenv(&disk, &layout)?;
        let env_line = ["ORDER", "A_OK", "A_TRY", "B_OK", "B_TRY"]
            .iter()
            .map(|k| format!("{k}={}", env.get(*k).map_or("?", String::as_str)))
            .collect::<Vec<_>>()
            .join(" ");
        println!("    grubenv on the disk now: {env_line}");
        summary.push(format!(
            "boot {}: slot {got:<10} {:5.1} s  {env_line}",
            i + 1,
            t.elapsed().as_secs_f64()
        ));
        if let Some(slot) = step.slot {
            let want = format!("{slot} {}", step.version);
            if got != want {
                bail!("boot {}: expected {want}, booted {got}", i + 1);
            }
        }
        for e in step.expect {
            if !log.contains(e) {
                bail!("boot {}: the serial log lacks {e:?}", i + 1);
            }
        }
        if !scenario::failures(&log).is_empty() {
            bail!("boot {}: {:?}", i + 1, scenario::failures(&log));
        }
        last_log = log;
    }

    let status = scenario::json_lines(&last_log, "final")?
        .pop()
        .context("the last boot printed no status")?
        .value;
    let rb = &status["last_rollback"];
    if status["booted"] != "rootfs.1"
        || scenario::status_slot(&status, "A").map(|a| &a["boot_status"])
            != Some(&serde_json::json!("bad"))
        || rb["from_version"] != "2.1.0"
        || rb["to_version"] != "2.0.0"
    {
        bail!("unexpected final status: {status:#}");
    }
    say("summary");
    for line in &summary {
        println!("    {line}");
    }
    println!(
        "    2.0.0 was installed, tried and committed; 2.1.0 failed its health check and was \
         rolled back:\n    last_rollback: {} ({}) -> {} ({}): {}",
        rb["from_slot"].as_str().unwrap_or("?"),
        rb["from_version"].as_str().unwrap_or("?"),
        rb["to_slot"].as_str().unwrap_or("?"),
        rb["to_version"].as_str().unwrap_or("?"),
        rb["reason"].as_str().unwrap_or("?"),
    );
    println!(
        "    all {} boots as expected in {:.0} s; serial logs in target/rig-logs/demo-boot*.log",
        STEPS.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a console line shows in the end: progress bars redraw it after a carriage return
/// (and clear it when done), so the last part with text in it, without escape sequences.
fn last_state(raw: &str) -> String {
    raw.rsplit('\r')
        .map(strip_ansi)
        .find(|s| !s.trim().is_empty())
        .unwrap_or_default()
}

/// `line` without terminal escape sequences (GRUB's menu paints with them).
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters, up to the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines worth showing without `--verbose`.
fn interesting(line: &str) -> bool {
    // GRUB's harmless complaint about the headless console.
    if line.contains("no suitable video mode") {
        return false;
    }
    const KEEP: &[&str] = &[
        "Booting `flipslot",
        "flipslot: booting slot",
        "FLIPSLOT-BOOTED",
        "flipslot-rig: running flipslot health",
        "flipslot-rig: reboot",
        "flipslot-rig: poweroff",
        "  status|",
        "demo:",
        "installed ",
        "ok   ",
        "FAIL ",
        "trial boot of",
        "kept (",
        "rollback:",
        "error:",
        "Kernel panic",
    ];
    KEEP.iter().any(|k| line.contains(k))
}

/// One boot of `disk`, streaming its console; returns the whole serial log.
fn boot(disk: &Path, name: &str, verbose: bool) -> anyhow::Result<String> {
    let mut cfg = VmConfig::new(name, disk);
    cfg.hard_timeout = BOOT_TIMEOUT + Duration::from_secs(5);
    let mut vm = Vm::start(&cfg)?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut shown = 0;
    let mut out = std::io::stdout();
    loop {
        let exited = vm.try_exit()?.is_some();
        let serial = vm.serial()?.to_string();
        let complete = if exited {
            serial.len()
        } else {
            serial.rfind('\n').map_or(0, |i| i + 1)
        };
        for raw in serial[shown..complete].lines() {
            let line = last_state(raw);
            if verbose || interesting(&line) {
                writeln!(out, "    | {line}")?;
            }
        }
        shown = complete;
        out.flush()?;
        if exited {
            return Ok(serial);
        }
        if Instant::now() >= deadline {
            vm.kill()?;
            bail!(
                "boot {name} did not end within {} s; serial log {}",
                BOOT_TIMEOUT.as_secs(),
                vm.log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::last_state;

    #[test]
    fn a_redrawn_line_shows_its_last_state() {
        // A bar redrawn twice and cleared, then the summary printed over it.
        let raw = "write [#...]  50%\r\u{1b}[2Kwrite [####] 100%\r\u{1b}[2Kinstalled 1.0.0\r";
        assert_eq!(last_state(raw), "installed 1.0.0");
        assert_eq!(
            last_state("\rscan [##..]\u{1b}[K\r\u{1b}[Kdemo: ok"),
            "demo: ok"
        );
        assert_eq!(last_state("\u{1b}[1mplain\u{1b}[0m"), "plain");
        assert_eq!(last_state("\r\u{1b}[2K"), "");
    }
}
