//! Errors print each cause once: the line `flipslot` prints on failure (the error chain,
//! as `flipslot_cli_support::error_chain` and anyhow's `{:#}` format it) names the file
//! and shows the operating system's or the parser's message exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use anyhow::Context as _;
use flipslot::config::SystemConfig;
use flipslot::slot::status::StatusFile;
use flipslot_cli_support::error_chain;
use flipslot_os::process::Cmd;

/// Both ways an error chain is printed, each checked to hold `needle` exactly once.
fn printed_once(e: &anyhow::Error, needle: &str) -> String {
    let chain = error_chain(e);
    let alternate = format!("{e:#}");
    for text in [&chain, &alternate] {
        assert_eq!(text.matches(needle).count(), 1, "{needle:?} in {text:?}");
    }
    assert_eq!(chain, alternate);
    chain
}

const ENOENT: &str = "No such file or directory (os error 2)";
const ENOEXEC: &str = "Exec format error (os error 8)";

#[test]
fn a_missing_config_shows_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("system.toml");
    let e = anyhow::Error::new(SystemConfig::load(&path).unwrap_err()).context("load config");
    let line = printed_once(&e, ENOENT);
    assert!(
        line.starts_with(&format!(
            "load config: cannot read config {}: ",
            path.display()
        )),
        "{line}"
    );
}

#[test]
fn a_config_syntax_error_is_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("system.toml");
    std::fs::write(&path, "compatible = \n").unwrap();
    let e = anyhow::Error::new(SystemConfig::load(&path).unwrap_err());
    let line = printed_once(&e, "line 1");
    assert!(line.starts_with("cannot parse config "), "{line}");

    let path = dir.path().join("system.conf");
    std::fs::write(&path, "[system]\ncompatible=a\ncompatible=b\n").unwrap();
    let e = anyhow::Error::new(SystemConfig::load(&path).unwrap_err());
    let line = printed_once(&e, "is set again");
    assert!(line.starts_with("cannot parse RAUC config "), "{line}");
}

#[test]
fn a_corrupt_status_file_shows_the_json_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    std::fs::write(&path, "{\"format\": 1,").unwrap();
    let e = anyhow::Error::new(StatusFile::load(&path).unwrap_err());
    let line = printed_once(&e, "EOF while parsing");
    assert!(
        line.starts_with(&format!("corrupt status file {}: ", path.display())),
        "{line}"
    );
}

#[test]
fn an_unwritable_status_file_shows_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("status.json");
    let e = StatusFile::default().save(&path).unwrap_err();
    let e = anyhow::Error::new(e).context("record the install");
    let line = printed_once(&e, ENOENT);
    assert!(line.contains("cannot write status file "), "{line}");
    assert!(line.contains("missing-dir"), "{line}");
}

#[test]
fn a_program_that_cannot_start_shows_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-a-program");
    std::fs::write(&script, b"\x7fELF, but not really").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let e = Cmd::new(&script)
        .run()
        .context("run the backend")
        .unwrap_err();
    let line = printed_once(&e, ENOEXEC);
    assert!(
        line.contains(&format!("cannot run {}", script.display())),
        "{line}"
    );
    // The message is complete on its own, so `{}` shows the cause too.
    let e = Cmd::new(&script).run().unwrap_err();
    assert_eq!(e.to_string().matches(ENOEXEC).count(), 1, "{e}");
}
