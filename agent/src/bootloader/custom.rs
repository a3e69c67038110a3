//! RAUC's custom bootloader backend: an executable that implements the boot selection.
//!
//! The executable is called with argv only (never through a shell), stdin null, one
//! command per call, as RAUC does (`src/bootloaders/custom.c`):
//!
//! | call | prints |
//! |---|---|
//! | `get-primary` | the bootname booted next (nothing: none) |
//! | `set-primary <bootname>` | |
//! | `get-state <bootname>` | `good` or `bad` |
//! | `set-state <bootname> good\|bad` | |
//! | `get-current` | the booted bootname |
//!
//! Output is trimmed; any other output, a non-zero exit or a run longer than the timeout is
//! an error naming the script and the command. The mapping follows RAUC's mark commands:
//! mark-good and mark-bad are `set-state`, mark-active is `set-primary` alone. The script
//! knows no "trying" state, so slots are only good or bad.
//!
//! Processes are started through the [`ScriptRunner`] trait ([`ProcessRunner`] in
//! production), so the protocol is tested without them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::abstate::{AbState, SlotBootState};
use super::Bootloader;
use flipslot_os::process::{stderr_tail, Cmd, CommandError};

/// How long one call of the script may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How one call of the script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// It exited.
    Exited {
        /// Whether it exited with status 0.
        success: bool,
        /// How it exited, for messages (`exit status: 1`).
        status: String,
        /// Its standard output (lossily decoded).
        stdout: String,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// It did not finish in time and was killed.
    TimedOut,
}

/// Runs the script.
pub trait ScriptRunner {
    /// Runs `script` with `args` and at most `timeout`.
    fn run(
        &mut self,
        script: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> std::io::Result<ScriptOutcome>;
}

/// How much of the script's standard output and standard error is kept.
const OUTPUT_LIMIT: u64 = 1 << 20;

/// Runs the script as a process ([`flipslot_os::process::Cmd`], its standard output capped
/// at 1 MiB).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessRunner;

impl ScriptRunner for ProcessRunner {
    fn run(
        &mut self,
        script: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> std::io::Result<ScriptOutcome> {
        let cmd = Cmd::new(script)
            .args(args)
            .timeout(timeout)
            .output_limit(OUTPUT_LIMIT);
        match cmd.output() {
            Ok(out) => Ok(ScriptOutcome::Exited {
                success: out.status.success(),
                status: out.status.to_string(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr_tail: stderr_tail(&out.stderr, 5),
            }),
            Err(CommandError::TimedOut { .. }) => Ok(ScriptOutcome::TimedOut),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// [`Bootloader`] delegating to a custom script.
#[derive(Debug)]
pub struct CustomBackend<R: ScriptRunner = ProcessRunner> {
    script: PathBuf,
    bootnames: Vec<String>,
    runner: R,
    timeout: Duration,
}

impl CustomBackend<ProcessRunner> {
    /// A backend running `script` (a resolved path) for the configured `bootnames` (in
    /// config order).
    pub fn new(script: PathBuf, bootnames: Vec<String>) -> Self {
        CustomBackend::with_runner(script, bootnames, ProcessRunner)
    }
}

impl<R: ScriptRunner> CustomBackend<R> {
    /// A backend whose script calls go through `runner`.
    pub fn with_runner(script: PathBuf, bootnames: Vec<String>, runner: R) -> Self {
        CustomBackend {
            script,
            bootnames,
            runner,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes the time one call may take ([`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The runner (for tests).
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// The script.
    pub fn script(&self) -> &Path {
        &self.script
    }

    /// `get-current`: the bootname the script says is booted (the first line of its
    /// output, trimmed, as RAUC reads it).
    pub fn current_bootname(&mut self) -> Result<String> {
        let out = self.call_raw(&["get-current"])?;
        match out.lines().next().map(str::trim) {
            Some(line) if !line.is_empty() => Ok(line.to_string()),
            _ => bail!(
                "custom bootloader script {} get-current printed nothing",
                self.script.display()
            ),
        }
    }

    fn check_bootname(&self, bootname: &str) -> Result<()> {
        if !self.bootnames.iter().any(|b| b == bootname) {
            bail!(
                "unknown bootname {bootname:?} (configured bootnames: {})",
                self.bootnames.join(", ")
            );
        }
        Ok(())
    }

    /// Runs one command; its trimmed output.
    fn call(&mut self, args: &[&str]) -> Result<String> {
        Ok(self.call_raw(args)?.trim().to_string())
    }

    /// Runs one command; its output.
    fn call_raw(&mut self, args: &[&str]) -> Result<String> {
        let script = self.script.display();
        let command = args.join(" ");
        log::debug!("running custom bootloader script {script} {command}");
        let outcome = self
            .runner
            .run(&self.script, args, self.timeout)
            .with_context(|| format!("cannot run custom bootloader script {script} {command}"))?;
        match outcome {
            ScriptOutcome::TimedOut => bail!(
                "custom bootloader script {script} {command} did not finish within {} s and \
                 was killed",
                self.timeout.as_secs()
            ),
            ScriptOutcome::Exited {
                success: false,
                status,
                stderr_tail,
                ..
            } => {
                let stderr = if stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!(", stderr:\n{stderr_tail}")
                };
                bail!("custom bootloader script {script} {command} failed with {status}{stderr}")
            }
            ScriptOutcome::Exited { stdout, .. } => Ok(stdout),
        }
    }

    fn unexpected(&self, command: &str, output: &str, expected: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "custom bootloader script {} {command} printed {output:?}; expected {expected}",
            self.script.display()
        )
    }

    fn get_state(&mut self, bootname: &str) -> Result<bool> {
        let out = self.call(&["get-state", bootname])?;
        match out.as_str() {
            "good" => Ok(true),
            "bad" => Ok(false),
            _ => Err(self.unexpected(
                &format!("get-state {bootname}"),
                &out,
                "\"good\" or \"bad\"",
            )),
        }
    }

    fn set_state(&mut self, bootname: &str, good: bool) -> Result<()> {
        self.check_bootname(bootname)?;
        let state = if good { "good" } else { "bad" };
        self.call(&["set-state", bootname, state])?;
        log::info!(
            "custom bootloader script {}: set-state {bootname} {state}",
            self.script.display()
        );
        Ok(())
    }
}

impl<R: ScriptRunner> Bootloader for CustomBackend<R> {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn bootnames(&self) -> &[String] {
        &self.bootnames
    }

    /// `order` is the primary, then the other bootnames in config order; `ok` is
    /// `get-state` of each configured bootname; nothing is ever tried.
    fn state(&mut self) -> Result<AbState> {
        let primary = self.primary()?;
        let mut state = AbState::default();
        state.order.extend(primary);
        for b in self.bootnames.clone() {
            if !state.order.contains(&b) {
                state.order.push(b.clone());
            }
            let good = self.get_state(&b)?;
            state.ok.insert(b.clone(), good);
            state.tried.insert(b, false);
        }
        Ok(state)
    }

    fn primary(&mut self) -> Result<Option<String>> {
        let out = self.call(&["get-primary"])?;
        if out.is_empty() {
            return Ok(None);
        }
        if !self.bootnames.contains(&out) {
            let expected = format!("a configured bootname ({})", self.bootnames.join(", "));
            return Err(self.unexpected("get-primary", &out, &expected));
        }
        Ok(Some(out))
    }

    fn slot_state(&mut self, bootname: &str) -> Result<SlotBootState> {
        self.check_bootname(bootname)?;
        Ok(if self.get_state(bootname)? {
            SlotBootState::Good
        } else {
            SlotBootState::Bad
        })
    }

    fn mark_good(&mut self, bootname: &str) -> Result<()> {
        self.set_state(bootname, true)
    }

    fn mark_bad(&mut self, bootname: &str) -> Result<()> {
        self.set_state(bootname, false)
    }

    /// `set-state <bn> good`, then `set-primary <bn>`. RAUC calls only `set-primary`
    /// and leaves it to the script to make the slot bootable; after an install the slot
    /// was set bad, so flipslot sets it good first, which changes nothing for scripts
    /// whose `set-primary` already does so.
    fn mark_active(&mut self, bootname: &str) -> Result<()> {
        self.check_bootname(bootname)?;
        self.set_state(bootname, true)?;
        self.call(&["set-primary", bootname])?;
        log::info!(
            "custom bootloader script {}: set-primary {bootname}",
            self.script.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A script in memory: keeps the state the protocol describes and records every call.
    #[derive(Debug, Default)]
    struct FakeScript {
        primary: String,
        states: BTreeMap<String, String>,
        current: String,
        calls: Vec<String>,
        /// When set, every call returns this instead.
        canned: Option<ScriptOutcome>,
    }

    fn ok(stdout: &str) -> ScriptOutcome {
        ScriptOutcome::Exited {
            success: true,
            status: "exit status: 0".into(),
            stdout: stdout.into(),
            stderr_tail: String::new(),
        }
    }

    impl ScriptRunner for FakeScript {
        fn run(
            &mut self,
            script: &Path,
            args: &[&str],
            timeout: Duration,
        ) -> std::io::Result<ScriptOutcome> {
            assert_eq!(script, Path::new("/usr/lib/bl-script"));
            assert_eq!(timeout, DEFAULT_TIMEOUT);
            self.calls.push(args.join(" "));
            if let Some(c) = &self.canned {
                return Ok(c.clone());
            }
            Ok(match args {
                ["get-primary"] => ok(&format!("{}\n", self.primary)),
                ["set-primary", b] => {
                    self.primary = b.to_string();
                    ok("")
                }
                ["get-state", b] => ok(&format!(
                    "  {}\n",
                    self.states.get(*b).cloned().unwrap_or_default()
                )),
                ["set-state", b, s] => {
                    self.states.insert(b.to_string(), s.to_string());
                    ok("")
                }
                ["get-current"] => ok(&format!("{}\nmore\n", self.current)),
                _ => ScriptOutcome::Exited {
                    success: false,
                    status: "exit status: 2".into(),
                    stdout: String::new(),
                    stderr_tail: "usage".into(),
                },
            })
        }
    }

    fn backend(fake: FakeScript) -> CustomBackend<FakeScript> {
        CustomBackend::with_runner(
            PathBuf::from("/usr/lib/bl-script"),
            vec!["A".into(), "B".into()],
            fake,
        )
    }

    fn ab() -> FakeScript {
        FakeScript {
            primary: "A".into(),
            states: [("A", "good"), ("B", "good")]
                .map(|(b, s)| (b.to_string(), s.to_string()))
                .into(),
            current: "A".into(),
            ..FakeScript::default()
        }
    }

    #[test]
    fn update_cycle() {
        let mut b = backend(ab());
        assert_eq!(b.name(), "custom");
        assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
        assert_eq!(b.current_bootname().unwrap(), "A");
        b.mark_bad("B").unwrap();
        assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Bad);
        b.mark_active("B").unwrap();
        assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
        // Activation sets the state good, then the primary.
        assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);
        b.mark_good("B").unwrap();
        assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);
        assert_eq!(
            b.runner().calls,
            [
                "get-primary",
                "get-current",
                "set-state B bad",
                "get-state B",
                "set-state B good",
                "set-primary B",
                "get-primary",
                "get-state B",
                "set-state B good",
                "get-state B",
            ]
        );
    }

    #[test]
    fn synthesized_state() {
        let mut fake = ab();
        fake.primary = "B".into();
        fake.states.insert("A".into(), "bad".into());
        let mut b = backend(fake);
        let s = b.state().unwrap();
        assert_eq!(s.order, ["B".to_string(), "A".to_string()]);
        assert_eq!(s.state("A"), SlotBootState::Bad);
        assert_eq!(s.state("B"), SlotBootState::Good);
        assert_eq!(s.primary(), Some("B"));

        let mut fake = ab();
        fake.primary = String::new();
        let mut b = backend(fake);
        assert_eq!(b.primary().unwrap(), None);
        assert_eq!(b.state().unwrap().order, ["A".to_string(), "B".to_string()]);
    }

    #[test]
    fn unknown_bootnames_are_refused_without_calling() {
        let mut b = backend(ab());
        for e in [
            b.mark_active("C").unwrap_err(),
            b.mark_good("C").unwrap_err(),
            b.mark_bad("C").unwrap_err(),
            b.slot_state("C").unwrap_err(),
        ] {
            assert!(e.to_string().contains("\"C\""), "{e}");
        }
        assert!(b.runner().calls.is_empty());
        let mut fake = ab();
        fake.primary = "C".into();
        let e = backend(fake).primary().unwrap_err().to_string();
        assert!(
            e.contains("/usr/lib/bl-script get-primary printed \"C\"") && e.contains("A, B"),
            "{e}"
        );
    }

    #[test]
    fn bad_output_names_script_command_and_output() {
        let mut fake = ab();
        fake.states.insert("A".into(), "fine".into());
        let e = backend(fake).slot_state("A").unwrap_err().to_string();
        assert_eq!(
            e,
            "custom bootloader script /usr/lib/bl-script get-state A printed \"fine\"; \
             expected \"good\" or \"bad\""
        );
        // Only the first line counts, as in RAUC.
        let mut fake = ab();
        fake.current = " B ".into();
        assert_eq!(backend(fake).current_bootname().unwrap(), "B");
        let mut fake = ab();
        fake.current = String::new();
        let e = backend(fake).current_bootname().unwrap_err().to_string();
        assert!(e.contains("get-current printed nothing"), "{e}");
    }

    #[test]
    fn failures_carry_status_and_stderr() {
        let mut b = backend(FakeScript {
            canned: Some(ScriptOutcome::Exited {
                success: false,
                status: "exit status: 1".into(),
                stdout: "partial".into(),
                stderr_tail: "fw_setenv: cannot write".into(),
            }),
            ..FakeScript::default()
        });
        let e = b.mark_active("A").unwrap_err().to_string();
        assert_eq!(
            e,
            "custom bootloader script /usr/lib/bl-script set-state A good failed with \
             exit status: 1, stderr:\nfw_setenv: cannot write"
        );
        let mut b = backend(FakeScript {
            canned: Some(ScriptOutcome::TimedOut),
            ..FakeScript::default()
        });
        let e = b.mark_good("B").unwrap_err().to_string();
        assert!(
            e.contains("set-state B good did not finish within 60 s"),
            "{e}"
        );
    }

    #[test]
    fn process_runner_runs_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut b = CustomBackend::new(missing.clone(), vec!["A".into()]);
        let e = format!("{:#}", b.primary().unwrap_err());
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("get-primary"),
            "{e}"
        );
        // An argument with shell syntax arrives verbatim.
        let out = ProcessRunner
            .run(Path::new("/bin/echo"), &["$(id)", "a;b"], DEFAULT_TIMEOUT)
            .unwrap();
        assert_eq!(out, ok("$(id) a;b\n"));
    }
}
