//! The one way the rig runs a host program: argv only (never a shell), stdin null unless
//! input is given, and a failure that names the program, its exit status and the tail of
//! its standard error.

use anyhow::{bail, Context as _};
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// How many bytes of standard error a failure message keeps.
const STDERR_TAIL: usize = 2000;

/// Runs `cmd` to completion with stdin null and returns its output; a non-zero exit is an
/// error carrying the command line and the stderr tail.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    run_with_input(cmd, None)
}

/// Like [`run`], and returns standard output as (lossy) UTF-8 text.
pub fn run_text(cmd: &mut Command) -> anyhow::Result<String> {
    let out = run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` written to its standard input (or stdin null when `None`).
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>) -> anyhow::Result<Output> {
    let shown = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot run {shown}"))?;
    if let Some(bytes) = input {
        let mut stdin = child
            .stdin
            .take()
            .with_context(|| format!("no stdin pipe for {shown}"))?;
        stdin
            .write_all(bytes)
            .with_context(|| format!("cannot write the standard input of {shown}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot wait for {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), STDERR_TAIL).trim()
        );
    }
    Ok(out)
}

/// Runs `cmd` to completion with stdin null and returns its output whatever its exit
/// status, for callers that check a failure themselves; only a program that cannot be
/// started is an error.
pub fn run_any_status(cmd: &mut Command) -> anyhow::Result<Output> {
    let shown = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {shown}"))
}

/// Whether `program` can be started at all (found on `PATH` and executable).
pub fn exists(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `program arg arg …` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last `max` bytes of `text` (cut at a character boundary), prefixed with `…` when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn failure_names_program_and_stderr() {
        let err = run(Command::new("ls").arg("/definitely/not/here"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ls /definitely/not/here failed"), "{err}");
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn any_status_returns_failures() {
        let out = run_any_status(Command::new("sh").args(["-c", "echo no >&2; exit 3"])).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stderr, b"no\n");
        assert!(run_any_status(&mut Command::new("/definitely/not/here")).is_err());
    }

    #[test]
    fn input_reaches_stdin() {
        let out = run_with_input(&mut Command::new("cat"), Some(b"hello")).unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn tail_cuts_at_char_boundary() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("aé", 1), "…");
    }
}
