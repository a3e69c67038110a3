//! The VM runner: one QEMU process (q35, OVMF, virtio disks) whose serial console goes to
//! `target/rig-logs/<name>.log`, read incrementally by [`Vm::wait_for`].
//!
//! Every run has a hard deadline: when a wait expires QEMU is killed and the error carries
//! the tail of the serial log. Dropping a [`Vm`] kills QEMU too, so a failing test never
//! leaves one behind. TCG is used unless [`kvm_usable`] proves KVM works (on our machines
//! `/dev/kvm` exists but OVMF dies under it with "KVM internal error").

use crate::{cmd, paths};
use anyhow::{bail, Context as _};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The QEMU program.
pub const QEMU: &str = "qemu-system-x86_64";
/// OVMF as one image for `-bios` (Debian `ovmf`).
pub const OVMF_BIOS: &str = "/usr/share/ovmf/OVMF.fd";
/// OVMF code for pflash unit 0 (read-only).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template for pflash unit 1 (each VM gets a copy).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// How much of the serial log an error message shows.
const TAIL_BYTES: usize = 3000;
/// How often the serial log is polled.
const POLL: Duration = Duration::from_millis(50);

/// The firmware the VM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// `-bios OVMF.fd`: no persistent EFI variables; OVMF boots `\EFI\BOOT\BOOTX64.EFI`.
    Bios(PathBuf),
    /// OVMF code + a private copy of the variable store as pflash (EFI variables persist for
    /// the life of the [`Vm`], across guest reboots).
    Pflash {
        /// The read-only code image.
        code: PathBuf,
        /// The variable store template, copied per VM.
        vars: PathBuf,
    },
}

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Use KVM if [`kvm_usable`], else TCG.
    Auto,
    /// Software emulation.
    Tcg,
    /// KVM (fails to boot where KVM is broken).
    Kvm,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Names the serial log: `target/rig-logs/<name>.log` (overwritten per run).
    pub name: String,
    /// Guest memory; GRUB runs out below ~320 MiB.
    pub memory_mib: u32,
    /// The firmware.
    pub firmware: Firmware,
    /// Raw disk images, attached as virtio disks in order (`vda`, `vdb`, …).
    pub disks: Vec<PathBuf>,
    /// Pass `-no-reboot`: a guest reboot (or panic with `panic=-1`) ends QEMU. Turn it off for
    /// scenarios that reboot into the other slot within one run.
    pub no_reboot: bool,
    /// The accelerator.
    pub accel: Accel,
    /// The hard limit on the whole run; no wait goes beyond it.
    pub hard_timeout: Duration,
    /// More QEMU arguments, appended last.
    pub extra_args: Vec<OsString>,
}

impl VmConfig {
    /// The defaults: 512 MiB, `-bios OVMF.fd`, `-no-reboot`, automatic accelerator, a
    /// 300 s hard limit, and `disk` as the only disk.
    pub fn new(name: &str, disk: &Path) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            memory_mib: 512,
            firmware: Firmware::Bios(PathBuf::from(OVMF_BIOS)),
            disks: vec![disk.to_path_buf()],
            no_reboot: true,
            accel: Accel::Auto,
            hard_timeout: Duration::from_secs(300),
            extra_args: Vec::new(),
        }
    }
}

/// The QEMU command line for `cfg` with serial output to `serial_log`; `vars` is the VM's
/// copy of the variable store when the firmware is pflash.
pub fn qemu_args(
    cfg: &VmConfig,
    kvm: bool,
    serial_log: &Path,
    vars: Option<&Path>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    push("-nodefaults");
    push("-machine");
    push("q35");
    push("-accel");
    push(if kvm { "kvm" } else { "tcg" });
    push("-cpu");
    push(if kvm { "host" } else { "max" });
    push("-m");
    a.push(cfg.memory_mib.to_string().into());
    for s in ["-display", "none", "-monitor", "none"] {
        a.push(s.into());
    }
    a.push("-serial".into());
    let mut serial = OsString::from("file:");
    serial.push(serial_log);
    a.push(serial);
    if cfg.no_reboot {
        a.push("-no-reboot".into());
    }
    match (&cfg.firmware, vars) {
        (Firmware::Pflash { code, .. }, Some(vars)) => {
            a.push("-drive".into());
            a.push(drive_arg("if=pflash,format=raw,unit=0,readonly=on", code));
            a.push("-drive".into());
            a.push(drive_arg("if=pflash,format=raw,unit=1", vars));
        }
        (Firmware::Bios(path), _) | (Firmware::Pflash { code: path, .. }, None) => {
            a.push("-bios".into());
            a.push(path.into());
        }
    }
    for disk in &cfg.disks {
        a.push("-drive".into());
        a.push(drive_arg("format=raw,if=virtio", disk));
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

/// `OPTS,file=PATH` (a comma in PATH is doubled, QEMU's escape).
fn drive_arg(opts: &str, file: &Path) -> OsString {
    let mut s = OsString::from(opts);
    s.push(",file=");
    s.push(file.to_string_lossy().replace(',', ",,"));
    s
}

/// A line of serial output that matched, and when (since QEMU started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The whole line containing the pattern (without the line end).
    pub line: String,
    /// Time from QEMU's start to when the rig saw the line.
    pub at: Duration,
}

/// A running QEMU.
#[derive(Debug)]
pub struct Vm {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    stderr_log: PathBuf,
    reader: File,
    serial: String,
    /// Where the next `wait_for` starts searching in `serial`.
    cursor: usize,
    started: Instant,
    deadline: Instant,
    exit: Option<ExitStatus>,
    _vars: Option<tempfile::TempDir>,
    /// Held while QEMU runs: one VM at a time per test process (2 cores; TCG is CPU-bound).
    _turn: MutexGuard<'static, ()>,
}

/// Serialises VMs within one test process.
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Vm {
    /// Starts QEMU for `cfg`.
    pub fn start(cfg: &VmConfig) -> anyhow::Result<Vm> {
        for disk in &cfg.disks {
            if !disk.is_file() {
                bail!("disk image {} does not exist", disk.display());
            }
        }
        let kvm = match cfg.accel {
            Accel::Auto => kvm_usable(),
            Accel::Tcg => false,
            Accel::Kvm => true,
        };
        // A test that panicked while holding the turn poisons the lock; the turn is still free.
        let turn = ONE_VM_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let logs = paths::logs_dir()?;
        let log = logs.join(format!("{}.log", cfg.name));
        let stderr_log = logs.join(format!("{}.qemu-stderr", cfg.name));
        File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let stderr_file = File::create(&stderr_log)
            .with_context(|| format!("cannot create {}", stderr_log.display()))?;
        let vars_dir = match &cfg.firmware {
            Firmware::Pflash { vars, .. } => {
                let dir = paths::scratch_dir("ovmf-vars-")?;
                let copy = dir.path().join("OVMF_VARS.fd");
                std::fs::copy(vars, &copy).with_context(|| {
                    format!("cannot copy {} to {}", vars.display(), copy.display())
                })?;
                Some(dir)
            }
            Firmware::Bios(_) => None,
        };
        let vars = vars_dir.as_ref().map(|d| d.path().join("OVMF_VARS.fd"));
        let args = qemu_args(cfg, kvm, &log, vars.as_deref());
        let mut command = Command::new(QEMU);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        let shown = cmd::describe(&command);
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {shown} (install qemu-system-x86)"))?;
        let reader = File::open(&log).with_context(|| format!("cannot open {}", log.display()))?;
        std::fs::write(logs.join(format!("{}.cmdline", cfg.name)), shown.as_bytes())
            .with_context(|| format!("cannot write the command line next to {}", log.display()))?;
        Ok(Vm {
            name: cfg.name.clone(),
            child: Some(child),
            log,
            stderr_log,
            reader,
            serial: String::new(),
            cursor: 0,
            started,
            deadline: started + cfg.hard_timeout,
            exit: None,
            _vars: vars_dir,
            _turn: turn,
        })
    }

    /// The serial log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the guest printed so far.
    pub fn serial(&mut self) -> anyhow::Result<&str> {
        self.read_more()?;
        Ok(&self.serial)
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until a serial line after the previous match contains `pattern`. Fails (and
    /// kills QEMU) when `timeout` or the run's hard limit passes first, or when QEMU exits
    /// before printing it; the error carries the tail of the serial log.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<Match> {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            self.read_more()?;
            if let Some(found) = self.find_from_cursor(pattern) {
                return Ok(found);
            }
            if self.poll_exit()?.is_some() {
                // Read what QEMU wrote before exiting, then look once more.
                self.read_more()?;
                if let Some(found) = self.find_from_cursor(pattern) {
                    return Ok(found);
                }
                bail!(self.failure(&format!("QEMU exited before printing {pattern:?}")));
            }
            if Instant::now() >= until {
                self.kill()?;
                self.read_more()?;
                bail!(self.failure(&format!(
                    "timed out after {:.1} s waiting for {pattern:?}",
                    self.elapsed().as_secs_f64()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for QEMU to exit (the guest powered off, or rebooted under `-no-reboot`) and
    /// returns the whole serial log; kills QEMU and fails after `timeout`.
    pub fn run_to_poweroff(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let status = self.wait_exit(timeout)?;
        self.read_more()?;
        if !status.success() {
            bail!(self.failure(&format!("QEMU exited with {status}")));
        }
        Ok(self.serial.clone())
    }

    /// Waits for QEMU to exit, whatever its status; kills it and fails after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            if let Some(status) = self.poll_exit()? {
                return Ok(status);
            }
            if Instant::now() >= until {
                self.kill()?;
                self.read_more()?;
                bail!(self.failure(&format!(
                    "timed out after {:.1} s waiting for QEMU to exit",
                    self.elapsed().as_secs_f64()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills QEMU at once (SIGKILL): a power cut. Writes the guest completed are in the disk
    /// image file; nothing else is. Returns whether it killed a running QEMU: `false` when
    /// QEMU had already exited (then nothing was cut).
    pub fn kill(&mut self) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot poll QEMU of {}", self.name))?
        {
            self.exit = Some(status);
            return Ok(false);
        }
        child
            .kill()
            .with_context(|| format!("cannot kill QEMU of {}", self.name))?;
        let status = child
            .wait()
            .with_context(|| format!("cannot wait for QEMU of {}", self.name))?;
        self.exit = Some(status);
        Ok(true)
    }

    /// QEMU's exit status if it has exited, without waiting (for callers that stream the
    /// serial log themselves; they must enforce their own deadline, or use [`Vm::wait_exit`]).
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.poll_exit()
    }

    /// QEMU's exit status, once it has exited.
    fn poll_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if let Some(status) = self.exit {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(self.exit);
        };
        let status = child
            .try_wait()
            .with_context(|| format!("cannot poll QEMU of {}", self.name))?;
        if let Some(s) = status {
            self.exit = Some(s);
            self.child = None;
        }
        Ok(status)
    }

    fn read_more(&mut self) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        self.reader
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", self.log.display()))?;
        // The firmware prints bytes that are not UTF-8; they are not what tests look for.
        self.serial.push_str(&String::from_utf8_lossy(&bytes));
        Ok(())
    }

    fn find_from_cursor(&mut self, pattern: &str) -> Option<Match> {
        let rest = self.serial.get(self.cursor..)?;
        let at = rest.find(pattern)? + self.cursor;
        let line_start = self.serial[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.serial[at..]
            .find('\n')
            .map_or(self.serial.len(), |i| at + i);
        let line = self.serial[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        self.cursor = at + pattern.len();
        Some(Match {
            line,
            at: self.elapsed(),
        })
    }

    fn failure(&self, what: &str) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let stderr = stderr.trim();
        format!(
            "vm {}: {what}\n--- qemu stderr ---\n{}\n--- serial tail ({}) ---\n{}",
            self.name,
            if stderr.is_empty() { "(empty)" } else { stderr },
            self.log.display(),
            cmd::tail(&self.serial, TAIL_BYTES)
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("vm {}: {e:#}", self.name);
        }
    }
}

/// Whether KVM can boot OVMF here: `/dev/kvm` opens and a short OVMF run under KVM prints
/// its boot manager line without "KVM internal error". Probed once per process (~1–4 s);
/// `FLIPSLOT_RIG_ACCEL=tcg` or `=kvm` skips the probe.
pub fn kvm_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| match std::env::var("FLIPSLOT_RIG_ACCEL").as_deref() {
        Ok("tcg") => false,
        Ok("kvm") => true,
        _ => match probe_kvm() {
            Ok(usable) => usable,
            Err(e) => {
                eprintln!("rig: KVM probe failed ({e:#}); using TCG");
                false
            }
        },
    })
}

fn probe_kvm() -> anyhow::Result<bool> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok(false);
    }
    let dir = paths::scratch_dir("kvm-probe-")?;
    let blank = dir.path().join("blank.img");
    File::create(&blank)
        .and_then(|f| f.set_len(1 << 20))
        .with_context(|| format!("cannot create {}", blank.display()))?;
    let mut cfg = VmConfig::new("kvm-probe", &blank);
    cfg.accel = Accel::Kvm;
    cfg.memory_mib = 128;
    cfg.hard_timeout = Duration::from_secs(5);
    let mut vm = Vm::start(&cfg)?;
    let seen = vm.wait_for("BdsDxe", Duration::from_secs(4)).is_ok();
    vm.kill()?;
    let stderr = std::fs::read_to_string(&vm.stderr_log).unwrap_or_default();
    Ok(seen && !stderr.contains("KVM internal error"))
}

/// Reads the whole serial log of an earlier run, `target/rig-logs/<name>.log`.
pub fn read_log(name: &str) -> anyhow::Result<String> {
    let path = paths::logs_dir()?.join(format!("{name}.log"));
    let mut f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(0))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn tcg_bios_command_line() {
        let cfg = VmConfig::new("t", Path::new("/x/disk,1.img"));
        let a = strings(&qemu_args(&cfg, false, Path::new("/l/t.log"), None));
        let joined = a.join(" ");
        assert!(
            joined.contains("-machine q35 -accel tcg -cpu max -m 512"),
            "{joined}"
        );
        assert!(
            joined.contains("-serial file:/l/t.log -no-reboot"),
            "{joined}"
        );
        assert!(joined.contains("-bios /usr/share/ovmf/OVMF.fd"), "{joined}");
        assert!(
            joined.ends_with("-drive format=raw,if=virtio,file=/x/disk,,1.img"),
            "{joined}"
        );
    }

    #[test]
    fn pflash_and_reboot_allowed() {
        let mut cfg = VmConfig::new("t", Path::new("/d.img"));
        cfg.firmware = Firmware::Pflash {
            code: OVMF_CODE.into(),
            vars: OVMF_VARS.into(),
        };
        cfg.no_reboot = false;
        let a = strings(&qemu_args(
            &cfg,
            true,
            Path::new("/l"),
            Some(Path::new("/v.fd")),
        ));
        let joined = a.join(" ");
        assert!(joined.contains("-accel kvm -cpu host"), "{joined}");
        assert!(!joined.contains("-no-reboot"), "{joined}");
        assert!(
            joined.contains(
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
            ),
            "{joined}"
        );
        assert!(
            joined.contains("if=pflash,format=raw,unit=1,file=/v.fd"),
            "{joined}"
        );
    }
}
