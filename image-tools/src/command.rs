//! Runs every external program: argv only (never a shell), stdin null, output captured, typed errors.
//!
//! Every subprocess started by this crate goes through [`Cmd`]. A program is given as a bare
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
use std::process::{Command, ExitStatus, Output, Stdio};

/// How many trailing lines of standard error a [`CommandError::Failed`] keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// Directories searched after `PATH` for bare program names.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// `PATH` used when the variable is not set (the value of Debian's login shells for users).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why running an external program failed.
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
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program as given to [`Cmd::new`].
        program: String,
        /// The error from the operating system.
        source: io::Error,
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
/// Built with chained calls, run with [`Cmd::run`] or [`Cmd::run_stdout`]. Standard input is
/// always null; standard output and standard error are captured.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    /// `None` removes the variable.
    envs: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
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
        }
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

    /// Runs the program to completion and returns its captured output.
    ///
    /// Fails with [`CommandError::NotFound`] when the program is not installed,
    /// [`CommandError::Spawn`] when it cannot be started and [`CommandError::Failed`] when it
    /// exits unsuccessfully.
    pub fn run(&self) -> Result<Output, CommandError> {
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
            .stdout(Stdio::piped())
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
        let output = command.output().map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
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

/// The last `max_lines` non-empty-trailing lines of `stderr`, lossily decoded.
fn stderr_tail(stderr: &[u8], max_lines: usize) -> String {
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
}
