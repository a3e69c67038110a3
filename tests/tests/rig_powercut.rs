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
//! `FLIPSLOT_RIG_SOAK=N` adds N random kills; `FLIPSLOT_RIG_SEED=S` fixes the seed.

use flipslot_e2e::inspect::{self, DiskInfo};
use flipslot_e2e::qemu::{Vm, VmConfig};
use flipslot_e2e::scenario::{self, Scenario, SH_HELPERS};
use flipslot_e2e::updates::{Kit, Release};
use flipslot_e2e::{host, paths};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The failpoints of `agent/src/failpoint.rs` and where the scenario arms them.
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

/// Runs one kill point on a fresh copy of the disk; returns the host-measured install time
/// of the re-install (to scale random kills).
fn run_cut(rig: &Rig, n: usize, cut: &Cut, final_boot: bool) -> Duration {
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
        assert!(
            log.contains("RIG-PRE-INSTALL-END rc=0"),
            "{}",
            vm.log_path().display()
        );
    }

    // The boot that is cut.
    let b = cut.cut_boot();
    let mut vm = Vm::start(&vm_config(&format!("{name}-boot{b}"), &disk, &params)).unwrap();
    match cut {
        Cut::Kill(after) => {
            vm.wait_for("RIG-INSTALL-START", BOOT_TIMEOUT).unwrap();
            std::thread::sleep(*after);
            vm.kill().unwrap();
        }
        Cut::Failpoint(_) => {
            vm.wait_exit(BOOT_TIMEOUT).unwrap();
        }
    }
    let log = vm.serial().unwrap().to_string();
    let w = vm.log_path().display().to_string();
    drop(vm);
    let install_finished = log.contains("RIG-INSTALL-END rc=0");
    if let Cut::Failpoint(f) = cut {
        assert!(
            log.contains(&format!("flipslot: failpoint {f} hit (PowerOff)")),
            "failpoint {f} was not hit; log {w}"
        );
        assert!(!install_finished, "{w}");
    }
    let env = inspect::grubenv(&disk, &rig.layout).unwrap();
    let pick = grub_pick(&env);
    eprintln!(
        "powercut {n:02} {label}: cut in boot {b} (install finished: {install_finished}); \
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
    let recovered = status(&log, "recovered", &w);
    let booted = scenario::status_slot(&recovered, &pick).unwrap();
    assert_eq!(booted["state"], "booted", "{recovered}");
    assert_eq!(booted["boot_status"], "good", "{recovered}");
    if pick == "A" {
        assert_eq!(boots[0].version, "1.0.0", "{w}");
    } else {
        // Only a slot whose install completed may boot; it must then be the new release.
        assert_eq!(booted["installed"]["result"], "ok", "{recovered}");
        assert_eq!(boots[0].version, "2.0.0", "{w}");
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
        assert_eq!(boots[0].version, "2.0.0", "{w}");
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
    install_time
}

#[test]
fn power_cuts_during_updates() {
    let test = "power_cuts_during_updates";
    if !host::vm_tests_can_run(test) {
        return;
    }
    let started = Instant::now();
    let mut kit = Kit::new("powercut").unwrap();
    kit.add("good", "2.0.0", Release::Good).unwrap();
    kit.add("unhealthy", "2.0.0", Release::FailsHealth).unwrap();
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

    let mut survived = 0;
    let mut install_time = Duration::ZERO;
    for fp in FAILPOINTS {
        // After these two the disk is in the same state as after install-mid-write (A boots,
        // B is marked bad), so the boot of the new slot is left out to save time.
        let final_boot = !matches!(*fp, "install-after-mark-bad" | "install-before-record");
        let t = run_cut(&rig, survived + 1, &Cut::Failpoint(fp), final_boot);
        install_time = install_time.max(t);
        survived += 1;
    }
    eprintln!(
        "{test}: an install takes about {:.1} s (host view); random kills fall within it",
        install_time.as_secs_f64()
    );
    for k in 0..RANDOM_KILLS + soak {
        let window = u64::try_from(install_time.as_millis())
            .unwrap_or(2000)
            .max(1);
        let after = Duration::from_millis(rng.next() % window);
        // In a soak run every third kill point also boots the new slot.
        let final_boot = k >= RANDOM_KILLS && k % 3 == 0;
        run_cut(&rig, survived + 1, &Cut::Kill(after), final_boot);
        survived += 1;
    }
    eprintln!(
        "{test}: survived {survived} of {survived} kill points ({} failpoints, {} random kills, seed {seed}) in {:.0} s",
        FAILPOINTS.len(),
        RANDOM_KILLS + soak,
        started.elapsed().as_secs_f64()
    );
    assert!(survived >= 10);
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
