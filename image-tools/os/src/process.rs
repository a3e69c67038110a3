//! Runs every external program: argv only (never a shell), stdin null, output captured, an
//! optional timeout, typed errors.
//!
//! Every subprocess flipslot starts (mkfs tools, health-check commands, the custom
//! bootloader script, the daemon's reboot command) goes through [`Cmd`]. A program is given as a bare
//! name (looked up on `PATH`, then in `/usr/sbin` and `/sbin`, where Debian installs `mke2fs` and
//! `debugfs` but which are not on a normal user's `PATH`) or as a path. A missing program is
//! reported as [`CommandError::NotFound`], naming the Debian package that ships it when known.
//! A program that exits unsuccessfully is reported as [`CommandError::Failed`] with its argv, its
//! exit status and the last [`STDERR_TAIL_LINES`] lines of its standard error.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How many trailing lines of standard error a [`CommandError::Failed`] keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// Directories searched after `PATH` for bare program names.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// `PATH` used when the variable is not set (the value of Debian's login shells for users).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why running an external program failed.
///
/// Each message is complete on its own: the operating system's error is part of the text
/// of [`Spawn`](CommandError::Spawn) and [`Wait`](CommandError::Wait), not a `source`, since
/// callers also show this error with `{}` (a health check's reason, a reboot failure).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The program is not installed (not on `PATH`, nor in `/usr/sbin` or `/sbin`).
    #[error("program {program} not found{}", package_hint(.package))]
    NotFound {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// The Debian package that ships it, when known.
        package: Option<&'static str>,
    },
    /// The program exists but could not be started.
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// The error from the operating system (in the message, not a `source`).
        error: io::Error,
    },
    /// The program ran and exited unsuccessfully (or was killed by a signal).
    #[error("{} failed with {status}{}", display_argv(.program, .args), stderr_suffix(.stderr_tail))]
    Failed {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// Its arguments (lossily converted to UTF-8 for display).
        args: Vec<String>,
        /// How it exited.
        status: ExitStatus,
        /// The last [`STDERR_TAIL_LINES`] lines of its standard error, lossily decoded.
        stderr_tail: String,
    },
    /// The program ran longer than its [`Cmd::timeout`] (or kept its standard output open
    /// past it) and was killed.
    #[error("{} did not finish within {timeout:?} and was killed", display_argv(.program, .args))]
    TimedOut {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// Its arguments (lossily converted to UTF-8 for display).
        args: Vec<String>,
        /// The time it was given.
        timeout: Duration,
    },
    /// Waiting for the program failed.
    #[error("cannot wait for {program}: {error}")]
    Wait {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// The error from the operating system (in the message, not a `source`).
        error: io::Error,
    },
    /// [`Cmd::run_stdout`] got standard output that is not UTF-8.
    #[error("{program} wrote standard output that is not UTF-8")]
    NonUtf8Stdout {
        /// The program as given to [`Cmd::new`].
        program: String,
    },
}

fn package_hint(package: &Option<&'static str>) -> String {
    match package {
        Some(p) => format!(" (install the Debian package {p})"),
        None => String::new(),
    }
}

fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(", stderr:\n{tail}")
    }
}

/// Formats an argv for humans: arguments that a shell would split or interpret are quoted.
/// For display only; nothing is ever passed to a shell.
fn display_argv(program: &str, args: &[String]) -> String {
    let mut out = String::from(program);
    for arg in args {
        out.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
        if plain {
            out.push_str(arg);
        } else {
            out.push_str(&format!("{arg:?}"));
        }
    }
    out
}

/// The Debian package that ships `program` (a bare name or a path), for the tools this crate uses.
pub fn debian_package(program: &str) -> Option<&'static str> {
    let name = Path::new(program).file_name()?.to_str()?;
    match name {
        "mksquashfs" | "unsquashfs" => Some("squashfs-tools"),
        "mkfs.erofs" | "fsck.erofs" | "dump.erofs" => Some("erofs-utils"),
        "mke2fs" | "mkfs.ext4" | "debugfs" | "e2fsck" | "dumpe2fs" | "tune2fs" => Some("e2fsprogs"),
        "fakeroot" => Some("fakeroot"),
        "depmod" | "modprobe" => Some("kmod"),
        "dpkg-deb" => Some("dpkg"),
        "busybox" => Some("busybox-static"),
        "ldd" => Some("libc-bin"),
        "xz" => Some("xz-utils"),
        "zstd" => Some("zstd"),
        _ => None,
    }
}

/// Finds a bare program name on `PATH`, then in `/usr/sbin` and `/sbin`.
///
/// A name containing a `/` is returned as is when it names an executable file.
pub fn find_program(program: &OsStr) -> Option<PathBuf> {
    let as_path = Path::new(program);
    if as_path.components().count() != 1 || program.is_empty() {
        return is_executable(as_path).then(|| as_path.to_path_buf());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    std::env::split_paths(&path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A program invocation: program, arguments, environment changes and working directory.
///
/// Built with chained calls, run with [`Cmd::run`], [`Cmd::run_stdout`] or [`Cmd::output`].
/// Standard input is always null; standard error is captured, and so is standard output
/// unless [`Cmd::discard_stdout`] is set.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    /// `None` removes the variable.
    envs: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
    timeout: Option<Duration>,
    capture_stdout: bool,
    output_limit: Option<u64>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_argv(&self.program_lossy(), &self.args_lossy()))
    }
}

impl Cmd {
    /// Starts an invocation of `program` (a bare name or a path).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            current_dir: None,
            timeout: None,
            capture_stdout: true,
            output_limit: None,
        }
    }

    /// Builds an invocation from an argv (`argv[0]` is the program); `None` when empty.
    pub fn from_argv<S: AsRef<OsStr>>(argv: &[S]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Self::new(program).args(args))
    }

    /// Kills the program (and fails with [`CommandError::TimedOut`]) when it has not exited
    /// and closed its standard output after `timeout`. Only the program itself is killed,
    /// not processes it started.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends standard output to `/dev/null` instead of capturing it.
    #[must_use]
    pub fn discard_stdout(mut self) -> Self {
        self.capture_stdout = false;
        self
    }

    /// Keeps at most the first `bytes` of standard output and of standard error (the rest is
    /// read and dropped, so the program never blocks on a full pipe).
    #[must_use]
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.output_limit = Some(bytes);
        self
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends several arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the program (the rest of the environment is inherited).
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        ));
        self
    }

    /// Removes an inherited environment variable for the program.
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Runs the program in `dir` instead of the current directory.
    #[must_use]
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The program as given to [`Cmd::new`].
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments so far.
    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    fn program_lossy(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    fn args_lossy(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// Runs the program to completion and returns its captured output, whatever its exit
    /// status.
    ///
    /// Fails with [`CommandError::NotFound`] when the program is not installed,
    /// [`CommandError::Spawn`] when it cannot be started and [`CommandError::TimedOut`] when
    /// it outlives its [`Cmd::timeout`].
    pub fn output(&self) -> Result<Output, CommandError> {
        let program = self.program_lossy();
        let resolved = find_program(&self.program).ok_or_else(|| CommandError::NotFound {
            program: program.clone(),
            package: debian_package(&program),
        })?;
        log::debug!("running {self:?}");
        let mut command = Command::new(&resolved);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(if self.capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|error| CommandError::Spawn {
            program: program.clone(),
            error,
        })?;
        let limit = self.output_limit.unwrap_or(u64::MAX);
        let stdout = child.stdout.take().map(|pipe| read_in_thread(pipe, limit));
        let stderr = child.stderr.take().map(|pipe| read_in_thread(pipe, limit));
        let wait_err = |error| CommandError::Wait {
            program: program.clone(),
            error,
        };
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let status = match deadline {
            None => child.wait().map_err(wait_err)?,
            Some(deadline) => match wait_until(&mut child, deadline).map_err(wait_err)? {
                Some(status) => status,
                None => return Err(self.timed_out()),
            },
        };
        // Output a grandchild keeps open past the deadline counts as a timeout; missing
        // standard error only loses the message.
        let stdout = match stdout {
            Some(rx) => receive(&rx, deadline).ok_or_else(|| self.timed_out())?,
            None => Vec::new(),
        };
        let stderr = stderr
            .and_then(|rx| receive(&rx, deadline))
            .unwrap_or_default();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn timed_out(&self) -> CommandError {
        CommandError::TimedOut {
            program: self.program_lossy(),
            args: self.args_lossy(),
            timeout: self.timeout.unwrap_or_default(),
        }
    }

    /// Runs the program to completion and returns its captured output.
    ///
    /// Fails as [`Cmd::output`] does, and with [`CommandError::Failed`] when the program exits
    /// unsuccessfully.
    pub fn run(&self) -> Result<Output, CommandError> {
        let output = self.output()?;
        let program = self.program_lossy();
        if !output.status.success() {
            return Err(CommandError::Failed {
                program,
                args: self.args_lossy(),
                status: output.status,
                stderr_tail: stderr_tail(&output.stderr, STDERR_TAIL_LINES),
            });
        }
        if !output.stderr.is_empty() {
            log::debug!(
                "{program} stderr: {}",
                stderr_tail(&output.stderr, STDERR_TAIL_LINES)
            );
        }
        Ok(output)
    }

    /// Runs the program to completion and returns its standard output as a string.
    pub fn run_stdout(&self) -> Result<String, CommandError> {
        let output = self.run()?;
        String::from_utf8(output.stdout).map_err(|_| CommandError::NonUtf8Stdout {
            program: self.program_lossy(),
        })
    }
}

/// Reads `pipe` to its end on a thread: the first `limit` bytes are kept, the rest dropped.
fn read_in_thread(pipe: impl io::Read + Send + 'static, limit: u64) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut buf = Vec::new();
        // Reading stops at end of file: when the program (and whatever inherited the pipe)
        // has closed it. Errors end the read; the program's status tells what happened.
        if io::Read::read_to_end(&mut io::Read::take(&mut pipe, limit), &mut buf).is_ok() {
            io::copy(&mut pipe, &mut io::sink()).ok();
        }
        tx.send(buf).ok();
    });
    rx
}

/// What a reader thread collected, waiting at most until `deadline`.
fn receive(rx: &mpsc::Receiver<Vec<u8>>, deadline: Option<Instant>) -> Option<Vec<u8>> {
    match deadline {
        None => rx.recv().ok(),
        Some(d) => rx
            .recv_timeout(d.saturating_duration_since(Instant::now()))
            .ok(),
    }
}

/// Waits for `child` to exit until `deadline`, without polling: a thread blocks in
/// `waitid(WNOWAIT)` (which leaves the child unreaped, so its pid cannot be reused) and
/// reports through a channel. At the deadline the child is killed and reaped, and `None`
/// is returned.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        // Until it exited, or cannot be waited for here (the caller's `wait` tells).
        while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
        tx.send(()).ok();
    });
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => child.wait().map(Some),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The child is not reaped before this `kill`, so the pid is still its own.
            child.kill().ok();
            child.wait()?;
            Ok(None)
        }
    }
}

/// The last `max_lines` lines of `stderr` (trailing blank lines dropped), lossily decoded.
pub fn stderr_tail(stderr: &[u8], max_lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let input: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(input.as_bytes(), 20);
        assert!(tail.starts_with("line 11\n"));
        assert!(tail.ends_with("line 30"));
        assert_eq!(tail.lines().count(), 20);
        assert_eq!(stderr_tail(b"", 20), "");
        assert_eq!(stderr_tail(b"one\n\n", 20), "one");
    }

    #[test]
    fn argv_display_quotes_odd_arguments() {
        let args = vec!["-q".to_string(), "a b".to_string(), String::new()];
        assert_eq!(display_argv("prog", &args), r#"prog -q "a b" """#);
    }

    #[test]
    fn packages_are_known_by_file_name() {
        assert_eq!(debian_package("/sbin/mke2fs"), Some("e2fsprogs"));
        assert_eq!(debian_package("mksquashfs"), Some("squashfs-tools"));
        assert_eq!(debian_package("mkfs.erofs"), Some("erofs-utils"));
        assert_eq!(debian_package("/usr/sbin/depmod"), Some("kmod"));
        assert_eq!(debian_package("frobnicate"), None);
    }

    #[test]
    fn missing_program_names_package() {
        let err = Cmd::new("/nonexistent/mksquashfs").run().unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/mksquashfs"), "{msg}");
        assert!(msg.contains("squashfs-tools"), "{msg}");
    }

    #[test]
    fn success_captures_stdout_and_env() {
        let out = Cmd::new("sh")
            .args(["-c", "printf '%s' \"$FLIPSLOT_TEST_VAR\"; echo err >&2"])
            .env("FLIPSLOT_TEST_VAR", "hello world")
            .run()
            .unwrap();
        assert_eq!(out.stdout, b"hello world");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn stdin_is_null() {
        let out = Cmd::new("cat").run_stdout().unwrap();
        assert_eq!(out, "");
    }

    #[test]
    fn current_dir_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let out = Cmd::new("pwd")
            .current_dir(dir.path())
            .run_stdout()
            .unwrap();
        let expected = dir.path().canonicalize().unwrap();
        assert_eq!(Path::new(out.trim_end()), expected);
    }

    #[test]
    fn failure_carries_status_and_stderr_tail() {
        let err = Cmd::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 25); do echo \"e$i\" >&2; done; exit 3",
            ])
            .run()
            .unwrap_err();
        match &err {
            CommandError::Failed {
                program,
                args,
                status,
                stderr_tail,
            } => {
                assert_eq!(program, "sh");
                assert_eq!(args[0], "-c");
                assert_eq!(status.code(), Some(3));
                assert!(stderr_tail.starts_with("e6\n"), "{stderr_tail}");
                assert!(stderr_tail.ends_with("e25"), "{stderr_tail}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.starts_with("sh -c "), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[test]
    fn env_remove_removes() {
        let out = Cmd::new("sh")
            .args(["-c", "printf '%s' \"${HOME-unset}\""])
            .env_remove("HOME")
            .run_stdout()
            .unwrap();
        assert_eq!(out, "unset");
    }

    #[test]
    fn output_keeps_a_failed_status_stdout_and_stderr() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(stderr_tail(&out.stderr, 5), "err");
        assert!(Cmd::new("/nonexistent/x")
            .timeout(Duration::from_secs(1))
            .output()
            .is_err());
    }

    #[test]
    fn kills_at_the_timeout() {
        let start = Instant::now();
        let err = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30"])
            .timeout(Duration::from_millis(200))
            .output()
            .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("killed"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn output_held_open_by_a_grandchild_is_a_timeout() {
        let start = Instant::now();
        let err = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30 & echo started"])
            .timeout(Duration::from_millis(300))
            .output()
            .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_fast_program_returns_before_its_timeout() {
        let start = Instant::now();
        let out = Cmd::new("true")
            .discard_stdout()
            .timeout(Duration::from_secs(30))
            .run()
            .unwrap();
        assert!(out.status.success());
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_limit_keeps_the_head_and_drains_the_rest() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "head -c 100000 /dev/zero"])
            .output_limit(10)
            .run()
            .unwrap();
        assert_eq!(out.stdout, vec![0u8; 10]);
    }

    #[test]
    fn from_argv_splits_program_and_arguments() {
        let argv = ["sh".to_string(), "-c".to_string(), "exit 0".to_string()];
        let cmd = Cmd::from_argv(&argv).unwrap();
        assert_eq!(cmd.program(), "sh");
        assert_eq!(cmd.get_args().len(), 2);
        assert!(Cmd::from_argv::<&str>(&[]).is_none());
    }
}
