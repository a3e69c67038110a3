#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Power cuts during an update, in QEMU: each of the agent's failpoints armed in turn
//! (`FLIPSLOT_FAILPOINT=<name>:poweroff`: the guest powers off at that step without syncing),
//! then host-side kills of QEMU (SIGKILL) at seeded pseudo-random moments of an install.
//! After every cut the next boot must reach a bootable, complete slot — the one GRUB picks from
//! the grubenv left on the disk, which must be the factory slot A or a slot whose install had
//! completed — a new install must then succeed, and (for the failpoints) the new slot must
//! boot and commit.
//!
//! One disk is built once and copied per kill point; the kill point's parameters reach the
//! guest on a second, tiny virtio disk (a shell snippet headed `# FLIPSLOT-PARAMS`), so the
//! scenario on the data partition is the same for all of them.
//!
//! A random kill counts only when it interrupted the install: QEMU was still running when it
//! was killed, and the serial log shows the install had started and not finished. A kill
//! that comes too late is reported, not counted, and drawn again.
//!
//! `FLIPSLOT_RIG_SOAK=N` adds N random kills; `FLIPSLOT_RIG_SEED=S` fixes the seed (CI sets
//! one; without it the seed comes from the clock and is printed).

use flipslot_e2e::inspect::{self, DiskInfo};
use flipslot_e2e::qemu::{Vm, VmConfig};
use flipslot_e2e::scenario::{self, Scenario, SH_HELPERS};
use flipslot_e2e::updates::{Kit, Release, BASE_VERSION};
use flipslot_e2e::{host, paths};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The failpoints of `agent/src/host/failpoint.rs` and where the scenario arms them.
const FAILPOINTS: &[&str] = &[
    "install-after-mark-bad",
    "install-mid-write",
    "install-before-record",
    "install-before-activate",
    "grubenv-torn-write",
    "health-before-mark-bad",
];

/// Random kills in a default run.
const RANDOM_KILLS: usize = 4;
/// Draws per random kill before the test gives up on landing one inside the install.
const KILL_DRAWS: usize = 4;

/// The release the updates install; it passes its health check.
const GOOD_VERSION: &str = "2.0.0";
/// The release that fails its health check (a version of its own, so a boot's version says
/// which of the two it is).
const UNHEALTHY_VERSION: &str = "1.9.0";

/// Reads the parameters from the control disk; shared by the scenario and `health.env`.
const PARAMS: &str = r#"for rig_d in /dev/vd?; do
    if head -c 17 "$rig_d" 2>/dev/null | grep -q '^# FLIPSLOT-PARAMS'; then
        head -c 4096 "$rig_d" > /tmp/rig-params.sh
        . /tmp/rig-params.sh
        break
    fi
done
"#;

/// RIG_MODE: `install` (a failpoint armed for the install on boot 1), `kill` (the host kills
/// QEMU during the install on boot 1) or `health` (boot 1 installs a release that fails its
/// health check; its health run on boot 2 has the failpoint armed). The boot after the cut
/// prints its status, installs the good bundle and reboots; the next boot prints the final
/// status.
const SCENARIO: &str = r#"cut=1
[ "$RIG_MODE" = health ] && cut=2
if [ "$FLIPSLOT_BOOT" -lt "$cut" ]; then
    flipslot install /data/bundles/unhealthy.fsb
    echo "RIG-PRE-INSTALL-END rc=$?"
    echo reboot > /run/rig-action
elif [ "$FLIPSLOT_BOOT" = "$cut" ]; then
    rig_status before-cut
    echo RIG-INSTALL-START
    if [ "$RIG_MODE" = install ]; then
        FLIPSLOT_FAILPOINT="$RIG_FAILPOINT:poweroff" flipslot install /data/bundles/good.fsb
    else
        flipslot install /data/bundles/good.fsb
    fi
    echo "RIG-INSTALL-END rc=$?"
elif [ "$FLIPSLOT_BOOT" = $((cut + 1)) ]; then
    rig_status recovered
    rig_grubenv recovered
    echo RIG-REINSTALL-START
    flipslot install /data/bundles/good.fsb
    echo "RIG-REINSTALL-END rc=$?"
    rig_status reinstalled
    [ "$RIG_FINAL" = 1 ] && echo reboot > /run/rig-action
else
    rig_status final
fi
"#;

const HEALTH_ENV: &str = r#"if [ "$RIG_MODE" = health ] && [ "$FLIPSLOT_BOOT" = 2 ]; then
    export FLIPSLOT_FAILPOINT="$RIG_FAILPOINT:poweroff"
fi
"#;

/// One kill point.
#[derive(Debug, Clone)]
enum Cut {
    /// A failpoint.
    Failpoint(&'static str),
    /// A host-side kill this long after the scenario announced the install.
    Kill(Duration),
}

impl Cut {
    fn label(&self) -> String {
        match self {
            Cut::Failpoint(f) => f.to_string(),
            Cut::Kill(d) => format!("kill+{}ms", d.as_millis()),
        }
    }

    fn params(&self, final_boot: bool) -> String {
        let (mode, fp) = match self {
            Cut::Failpoint("health-before-mark-bad") => ("health", "health-before-mark-bad"),
            Cut::Failpoint(f) => ("install", *f),
            Cut::Kill(_) => ("kill", ""),
        };
        let mut s = format!(
            "# FLIPSLOT-PARAMS\nRIG_MODE={mode}\nRIG_FAILPOINT={fp}\nRIG_FINAL={}\n",
            u8::from(final_boot)
        );
        while s.len() < 4096 {
            s.push('\n');
        }
        s
    }

    /// The boot (1-based) that is cut.
    fn cut_boot(&self) -> usize {
        match self {
            Cut::Failpoint("health-before-mark-bad") => 2,
            _ => 1,
        }
    }
}

/// xorshift64*: a seeded sequence without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The seed: `FLIPSLOT_RIG_SEED`, or the clock (never 0, which xorshift cannot leave).
fn seed() -> u64 {
    match std::env::var("FLIPSLOT_RIG_SEED") {
        Ok(s) => s.parse().expect("FLIPSLOT_RIG_SEED must be a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        }
    }
    .max(1)
}

/// The slot GRUB's reference script picks: the first in ORDER with OK=1 and TRY=0.
fn grub_pick(env: &BTreeMap<String, String>) -> Option<String> {
    env.get("ORDER")?
        .split_whitespace()
        .find(|bn| {
            env.get(&format!("{bn}_OK")).map(String::as_str) == Some("1")
                && env.get(&format!("{bn}_TRY")).map(String::as_str) == Some("0")
        })
        .map(str::to_string)
}

struct Rig {
    disk: PathBuf,
    layout: DiskInfo,
    work: PathBuf,
}

fn vm_config(name: &str, disk: &Path, params: &Path) -> VmConfig {
    let mut cfg = VmConfig::new(name, disk);
    cfg.disks.push(params.to_path_buf());
    cfg.hard_timeout = BOOT_TIMEOUT + Duration::from_secs(5);
    cfg
}

fn status(serial: &str, tag: &str, w: &str) -> Value {
    let lines = scenario::json_lines(serial, tag).unwrap();
    assert_eq!(lines.len(), 1, "one {tag} status expected; log {w}");
    assert_eq!(lines[0].rc, 0, "{w}");
    lines[0].value.clone()
}

/// What one kill point came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The cut interrupted the install (or the health run) and the machine came back;
    /// with the host-measured time of the re-install (to scale random kills).
    Survived(Duration),
    /// A random kill came too late to interrupt the install: not a cut.
    Missed,
}

/// Whether a host-side kill interrupted the install: QEMU was running when it was killed,
/// and the serial log up to the kill shows the install started and not ended.
fn kill_interrupted(killed: bool, serial: &str) -> bool {
    killed && serial.contains("RIG-INSTALL-START") && !serial.contains("RIG-INSTALL-END")
}

/// How far the install got, from the target's record after the cut.
fn step_reached(target: Option<&Value>) -> &'static str {
    match target {
        None | Some(Value::Null) => "before marking the target bad",
        Some(r) if r["result"] == "ok" => "after recording the install",
        Some(_) => "between marking the target bad and recording the install",
    }
}

/// Runs one kill point on a fresh copy of the disk.
fn run_cut(rig: &Rig, n: usize, cut: &Cut, final_boot: bool) -> Outcome {
    let label = cut.label();
    let name = format!("powercut-{n:02}-{}", label.replace('+', "-"));
    let dir = rig.work.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::copy(&rig.disk, &disk).unwrap();
    let params = dir.join("params.img");
    std::fs::write(&params, cut.params(final_boot)).unwrap();
    let t = Instant::now();

    // Boots before the cut (the health failpoint first installs the unhealthy release).
    for b in 1..cut.cut_boot() {
        let mut vm = Vm::start(&vm_config(&format!("{name}-boot{b}"), &disk, &params)).unwrap();
        vm.wait_exit(BOOT_TIMEOUT).unwrap();
        let log = vm.serial().unwrap().to_string();
        let w = vm.log_path().display().to_string();
        assert_eq!(
            scenario::boots(&log),
            [scenario::Boot {
                slot: "A".into(),
                version: BASE_VERSION.into()
            }],
            "{w}"
        );
        assert!(log.contains("RIG-PRE-INSTALL-END rc=0"), "{w}");
    }

    // The boot that is cut.
    let b = cut.cut_boot();
    let mut vm = Vm::start(&vm_config(&format!("{name}-boot{b}"), &disk, &params)).unwrap();
    let killed = match cut {
        Cut::Kill(after) => {
            vm.wait_for("RIG-INSTALL-START", BOOT_TIMEOUT).unwrap();
            std::thread::sleep(*after);
            vm.kill().unwrap()
        }
        Cut::Failpoint(_) => {
            vm.wait_exit(BOOT_TIMEOUT).unwrap();
            false
        }
    };
    let log = vm.serial().unwrap().to_string();
    let w = vm.log_path().display().to_string();
    drop(vm);
    let install_ended = log.contains("RIG-INSTALL-END");
    match cut {
        Cut::Failpoint(f) => {
            assert!(
                log.contains(&format!("flipslot: failpoint {f} hit (PowerOff)")),
                "failpoint {f} was not hit; log {w}"
            );
            assert!(!install_ended, "{w}");
            let boots = scenario::boots(&log);
            let expected = if *f == "health-before-mark-bad" {
                // The trial of the unhealthy release, whose health run is cut.
                ("B", UNHEALTHY_VERSION)
            } else {
                ("A", BASE_VERSION)
            };
            assert_eq!(boots.len(), 1, "{w}");
            assert_eq!(
                (boots[0].slot.as_str(), boots[0].version.as_str()),
                expected,
                "{w}"
            );
        }
        Cut::Kill(_) if !kill_interrupted(killed, &log) => {
            // Too late: the install had finished (and must have succeeded), else something
            // other than the kill stopped it.
            assert!(
                log.contains("RIG-INSTALL-END rc=0"),
                "the kill did not interrupt the install (QEMU still running: {killed}), \
                 yet the install did not succeed; log {w}"
            );
            eprintln!(
                "powercut {n:02} {label}: missed (QEMU still running: {killed}, install ended: \
                 {install_ended}); not counted; log {w}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
            return Outcome::Missed;
        }
        Cut::Kill(_) => {}
    }
    let env = inspect::grubenv(&disk, &rig.layout).unwrap();
    let pick = grub_pick(&env);
    eprintln!(
        "powercut {n:02} {label}: cut in boot {b} (install ended: {install_ended}); \
         grubenv {env:?}; GRUB picks {pick:?}"
    );
    let pick = pick.unwrap_or_else(|| panic!("nothing bootable after the cut: {env:?}; log {w}"));

    // The boot after the cut: a complete slot, then a new install.
    let b = b + 1;
    let mut vm = Vm::start(&vm_config(&format!("{name}-boot{b}"), &disk, &params)).unwrap();
    vm.wait_for("RIG-REINSTALL-START", BOOT_TIMEOUT).unwrap();
    let reinstall_started = Instant::now();
    vm.wait_for("RIG-REINSTALL-END", BOOT_TIMEOUT).unwrap();
    let install_time = reinstall_started.elapsed();
    vm.wait_exit(BOOT_TIMEOUT).unwrap();
    let log = vm.serial().unwrap().to_string();
    let w = vm.log_path().display().to_string();
    drop(vm);
    let boots = scenario::boots(&log);
    assert_eq!(boots.len(), 1, "{w}");
    assert_eq!(
        boots[0].slot, pick,
        "GRUB booted another slot than expected; {w}"
    );
    assert_eq!(
        scenario::health_results(&log),
        [0],
        "the health run after the cut did not pass; {w}"
    );
    let recovered = status(&log, "recovered", &w);
    let booted = scenario::status_slot(&recovered, &pick).unwrap();
    assert_eq!(booted["state"], "booted", "{recovered}");
    assert_eq!(booted["boot_status"], "good", "{recovered}");
    if pick == "A" {
        assert_eq!(boots[0].version, BASE_VERSION, "{w}");
    } else {
        // Only a slot whose install completed may boot; it must then be the good release,
        // never the unhealthy one.
        assert_eq!(booted["installed"]["result"], "ok", "{recovered}");
        assert_eq!(
            booted["installed"]["bundle_version"], GOOD_VERSION,
            "{recovered}"
        );
        assert_eq!(boots[0].version, GOOD_VERSION, "{w}");
    }
    if let Cut::Kill(_) = cut {
        let target = scenario::status_slot(&recovered, "B").unwrap();
        eprintln!(
            "powercut {n:02} {label}: the kill came {}",
            step_reached(target.get("installed"))
        );
    }
    assert!(
        log.contains("RIG-REINSTALL-END rc=0"),
        "the install after the cut failed; {w}"
    );
    let reinstalled = status(&log, "reinstalled", &w);
    let other = if pick == "A" { "B" } else { "A" };
    let target = scenario::status_slot(&reinstalled, other).unwrap();
    assert_eq!(target["installed"]["result"], "ok", "{reinstalled}");
    assert_eq!(target["primary"], true, "{reinstalled}");

    // The new slot boots and commits.
    if final_boot {
        let b = b + 1;
        let mut vm = Vm::start(&vm_config(&format!("{name}-boot{b}"), &disk, &params)).unwrap();
        vm.wait_exit(BOOT_TIMEOUT).unwrap();
        let log = vm.serial().unwrap().to_string();
        let w = vm.log_path().display().to_string();
        drop(vm);
        let boots = scenario::boots(&log);
        assert_eq!(boots.len(), 1, "{w}");
        assert_eq!(boots[0].slot, other, "{w}");
        assert_eq!(boots[0].version, GOOD_VERSION, "{w}");
        assert_eq!(scenario::health_results(&log), [0], "{w}");
        assert!(log.contains("passed: committed"), "{w}");
        let last = status(&log, "final", &w);
        let s = scenario::status_slot(&last, other).unwrap();
        assert_eq!(s["boot_status"], "good", "{last}");
        assert_eq!(s["primary"], true, "{last}");
    }
    eprintln!(
        "powercut {n:02} {label}: survived in {:.1} s (booted {pick} after the cut{})",
        t.elapsed().as_secs_f64(),
        if final_boot {
            format!(", then {other} committed")
        } else {
            String::new()
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
    Outcome::Survived(install_time)
}

#[test]
fn power_cuts_during_updates() {
    let test = "power_cuts_during_updates";
    if !host::vm_tests_can_run(test) {
        return;
    }
    let started = Instant::now();
    let mut kit = Kit::new("powercut").unwrap();
    kit.add("good", GOOD_VERSION, Release::Good).unwrap();
    kit.add("unhealthy", UNHEALTHY_VERSION, Release::FailsHealth)
        .unwrap();
    for (step, d) in &kit.timings {
        eprintln!("{test}: {:7.2} s  {step}", d.as_secs_f64());
    }
    let mut s = Scenario::script(&format!("{SH_HELPERS}{PARAMS}{SCENARIO}"));
    s.files.push((
        "health.env".into(),
        format!("{PARAMS}{HEALTH_ENV}").into_bytes(),
    ));
    let (disk, layout) = kit.disk("base", &s, &["good", "unhealthy"]).unwrap();
    let work = paths::scratch_dir("powercut-runs-").unwrap();
    let rig = Rig {
        disk,
        layout,
        work: work.path().to_path_buf(),
    };

    let seed = seed();
    let soak: usize = std::env::var("FLIPSLOT_RIG_SOAK")
        .ok()
        .map(|v| v.parse().expect("FLIPSLOT_RIG_SOAK must be a number"))
        .unwrap_or(0);
    eprintln!("{test}: seed {seed} (FLIPSLOT_RIG_SEED={seed} repeats it), soak {soak}");
    let mut rng = Rng(seed);

    // Every run_cut that returns survived (a failed check panics, naming its log).
    let mut n = 0;
    let mut failpoint_cuts = 0;
    let mut install_time = Duration::ZERO;
    for fp in FAILPOINTS {
        // After these two the disk is in the same state as after install-mid-write (A boots,
        // B is marked bad), so the boot of the new slot is left out to save time.
        let final_boot = !matches!(*fp, "install-after-mark-bad" | "install-before-record");
        n += 1;
        match run_cut(&rig, n, &Cut::Failpoint(fp), final_boot) {
            Outcome::Survived(t) => {
                install_time = install_time.max(t);
                failpoint_cuts += 1;
            }
            Outcome::Missed => panic!("failpoint {fp}: only a random kill can miss"),
        }
    }
    eprintln!(
        "{test}: an install takes about {:.1} s (host view); random kills fall within it",
        install_time.as_secs_f64()
    );
    let mut kill_cuts = 0;
    let mut missed = 0;
    for k in 0..RANDOM_KILLS + soak {
        // In a soak run every third kill point also boots the new slot.
        let final_boot = k >= RANDOM_KILLS && k % 3 == 0;
        let mut landed = false;
        for _ in 0..KILL_DRAWS {
            let window = u64::try_from(install_time.as_millis())
                .unwrap_or(2000)
                .max(1);
            let after = Duration::from_millis(rng.next() % window);
            n += 1;
            match run_cut(&rig, n, &Cut::Kill(after), final_boot) {
                Outcome::Survived(_) => {
                    landed = true;
                    break;
                }
                Outcome::Missed => missed += 1,
            }
        }
        assert!(
            landed,
            "random kill {k}: none of {KILL_DRAWS} kills interrupted the install (seed {seed})"
        );
        kill_cuts += 1;
    }
    eprintln!(
        "{test}: survived {} cuts that interrupted an update ({failpoint_cuts} failpoints, \
         {kill_cuts} random kills; {missed} late kills not counted; seed {seed}) in {:.0} s",
        failpoint_cuts + kill_cuts,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failpoint_cuts, FAILPOINTS.len());
    assert_eq!(kill_cuts, RANDOM_KILLS + soak);
}

#[test]
fn grub_pick_follows_the_reference_script() {
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let e = env(&[
        ("ORDER", "B A"),
        ("A_OK", "1"),
        ("A_TRY", "0"),
        ("B_OK", "0"),
        ("B_TRY", "0"),
    ]);
    assert_eq!(grub_pick(&e).as_deref(), Some("A"));
    let e = env(&[
        ("ORDER", "B A"),
        ("A_OK", "1"),
        ("A_TRY", "0"),
        ("B_OK", "1"),
        ("B_TRY", "0"),
    ]);
    assert_eq!(grub_pick(&e).as_deref(), Some("B"));
    let e = env(&[
        ("ORDER", "B A"),
        ("A_OK", "1"),
        ("A_TRY", "1"),
        ("B_OK", "1"),
        ("B_TRY", "1"),
    ]);
    assert_eq!(grub_pick(&e), None);
    let p = Cut::Failpoint("install-mid-write").params(true);
    assert_eq!(p.len(), 4096);
    assert!(p.starts_with("# FLIPSLOT-PARAMS\nRIG_MODE=install\n"));
    assert_eq!(Cut::Failpoint("health-before-mark-bad").cut_boot(), 2);
}

#[test]
fn only_a_kill_of_a_running_install_counts() {
    let during = "FLIPSLOT-BOOTED slot=A version=1.0.0\nRIG-INSTALL-START\n";
    let after = format!("{during}installed ...\nRIG-INSTALL-END rc=0\n");
    assert!(kill_interrupted(true, during));
    assert!(!kill_interrupted(false, during), "QEMU had already exited");
    assert!(!kill_interrupted(true, &after), "the install had ended");
    assert!(!kill_interrupted(
        true,
        "FLIPSLOT-BOOTED slot=A version=1.0.0\n"
    ));
    assert_eq!(step_reached(None), "before marking the target bad");
    let ok = serde_json::json!({"result": "ok"});
    assert_eq!(step_reached(Some(&ok)), "after recording the install");
}
