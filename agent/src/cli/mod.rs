//! The command lines: [`main`] picks `flipslot`'s (here) or the `rauc` drop-in's
//! (`rauc`) from the name the binary was invoked under, then parses the arguments and
//! dispatches. Every subcommand is one call into [`crate::ops`]; what it prints comes from
//! [`crate::ops::render`].

pub mod provision;
pub mod rauc;

use crate::daemon::client;
use crate::host::paths::{self, Root};
use crate::install::InstallOptions;
use crate::net::{HttpOptions, RetryPolicy, StallPolicy};
use crate::ops::{self, render, Agent, Mark};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flipslot_cli_support::progress::{ProgressMode, Reporter};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// flipslot: installs signed images into the inactive A/B slot and manages which slot boots.
#[derive(Debug, Parser)]
#[command(name = "flipslot", version, about, long_about = None)]
pub struct Cli {
    /// System config file: a flipslot system.toml, or a RAUC system.conf (`*.conf`).
    /// Default: /etc/flipslot/system.toml, or when that does not exist the first RAUC
    /// system.conf in /etc/rauc, /run/rauc, /usr/lib/rauc.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Resolve every configured path under this directory (for tests and image builds).
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Read the kernel command line from this file instead of /proc/cmdline (rescue
    /// systems, tests).
    #[arg(long, global = true, value_name = "PATH")]
    pub cmdline_file: Option<PathBuf>,
    /// The daemon's socket (default /run/flipslot/flipslot.sock under --root).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the booted and primary slot and every slot's boot and install state.
    ///
    /// Warns about a slot whose device does not exist (`device_exists: false` in
    /// `--json`), and lists the config settings flipslot reads but ignores
    /// (`config_notices`; other commands log them at debug level only).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Read the state here even when a daemon runs.
        #[arg(long)]
        no_daemon: bool,
    },
    /// Install a bundle into the inactive slot and make the bootloader try it once.
    ///
    /// Verifies the signatures, checks compatible and version, marks the target slot bad,
    /// writes every chunk after checking its hash, reads the slot back, records the result
    /// in the status file, then makes the slot primary for the next boot.
    ///
    /// RAUC bundles (.raucb, plain or verity) are verified against the X.509 keyring
    /// (`[x509-keyring]`, or `[keyring]` of a RAUC system.conf) and installed the same way;
    /// see docs/migrating-from-rauc.md.
    Install {
        /// The bundle file (.fsb or .raucb), or an http:// or https:// URL to stream it
        /// from (a URL ending in .raucb is read as a RAUC bundle). A path must be a
        /// regular file or a block device: anything else (a FIFO, a directory) is refused
        /// before the install lock is taken.
        bundle: PathBuf,
        /// Install even if the bundle is older than the booted slot's version.
        #[arg(long)]
        allow_downgrade: bool,
        /// Skip reading the slot back after writing (each chunk is still verified
        /// before it is written).
        #[arg(long)]
        no_read_back: bool,
        /// Write through the page cache instead of direct I/O.
        #[arg(long)]
        buffered_io: bool,
        /// Do nothing, and exit 0, when the slot that boots next already holds this
        /// bundle (the same signed manifest): the booted slot, or a slot waiting for the
        /// reboot. The bundle's signatures are still checked. With --json the summary says
        /// `"skipped": true` and `"skip_reason": "booted"` or `"pending"` (otherwise
        /// `"skipped": false`). For idempotent runs from configuration management; see
        /// docs/ansible.md.
        #[arg(long)]
        if_needed: bool,
        /// Progress as JSON lines and a final JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Install from this process even when a daemon runs (by default a running
        /// daemon does the install and this command shows its progress).
        #[arg(long)]
        no_daemon: bool,
        /// Options for a bundle URL.
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Turn a blank disk into an A/B flipslot disk (bare-metal provisioning).
    ///
    /// Runs from a netbooted initramfs or a rescue system and needs no system config. It
    /// verifies the signed provisioning description (the disk layout, the bootloader's ESP
    /// image, the files of the data partition and which disks may be written) and the
    /// bundle against --keyring, picks the disk, and writes: the ESP, slot A from the
    /// bundle (every chunk verified, then read back; every slot with `write_all_slots`),
    /// the data partition (ext4 with the agent config, keyring and the factory status
    /// record), and last the GPT, so an interrupted run leaves a disk without a partition
    /// table that the next run provisions again. A disk already provisioned with the same
    /// description is left alone ("nothing to do", exit 0). A disk holding data is refused
    /// unless --wipe is given and the description allows wiping. See
    /// docs/provisioning.md.
    Provision(provision::ProvisionArgs),
    /// Assess this boot (run once per boot by flipslot-health.service).
    ///
    /// Records earlier trials that never committed as rollbacks, runs the configured
    /// health checks, then commits the booted slot (a trial that passed), or marks it bad
    /// and reboots into the previous slot (a trial that failed). Exits 1 when a check
    /// failed.
    Health {
        /// Do not reboot after a failed trial (the bootloader still falls back at the
        /// next boot).
        #[arg(long)]
        no_reboot: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the update daemon: poll the signed channel of the `[update]` config section,
    /// install what it offers, reboot per policy, report, and serve the local socket API.
    Daemon {
        /// Poll once, act on it, print the result as JSON and exit (no socket).
        #[arg(long)]
        once: bool,
        /// Run this program (no arguments, no shell) instead of rebooting (tests, custom
        /// reboot flows).
        #[arg(long, value_name = "PATH")]
        reboot_command: Option<PathBuf>,
    },
    /// Ask the running daemon to poll its channel now and print the result.
    Check,
    /// Make the other, still good slot primary so that the next boot runs it.
    Rollback {
        /// The slot to return to (default: the other slot of the booted class).
        #[arg(long, value_name = "SLOT")]
        to: Option<String>,
        /// Reboot right away.
        #[arg(long)]
        reboot: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Commit a slot: the bootloader keeps booting it (OK=1, TRY=0).
    ///
    /// Takes the install lock without waiting: while an install or health run holds it,
    /// the command changes nothing and exits 1, naming the lock file.
    MarkGood(MarkArgs),
    /// Take a slot out of the boot rotation (OK=0, TRY=0).
    ///
    /// Takes the install lock without waiting: while an install or health run holds it,
    /// the command changes nothing and exits 1, naming the lock file.
    MarkBad(MarkArgs),
    /// Make a slot the one to boot next (first in ORDER, OK=1, TRY=0).
    ///
    /// Refused, with the bootloader untouched, when the slot's device does not exist.
    /// Takes the install lock without waiting: while an install or health run holds it,
    /// the command changes nothing and exits 1, naming the lock file.
    MarkActive(MarkArgs),
}

/// How `install` reaches a bundle URL (see docs/network-install.md).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Bundle URL options")]
pub struct HttpArgs {
    /// PEM file of CA certificates to trust in addition to the system store.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Extra request header, e.g. a device token (repeatable; the value is never shown).
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// File of extra request headers, one `Name: value` a line (keeps secrets out of the
    /// process list; `#` starts a comment line).
    #[arg(long, value_name = "PATH")]
    pub header_file: Option<PathBuf>,
    /// Longest wait for a TCP connection, in seconds.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// A download that receives fewer than --stall-min-bytes in this many seconds of
    /// waiting is resumed on a new connection.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub stall_timeout: Duration,
    /// See --stall-timeout.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub stall_min_bytes: u64,
    /// Consecutive failed attempts without progress before the install gives up.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_retries: u32,
}

impl HttpArgs {
    /// Whether an option that only a URL can use was given.
    fn any_url_only(&self) -> bool {
        self.ca_file.is_some()
            || self.client_cert.is_some()
            || !self.headers.is_empty()
            || self.header_file.is_some()
    }

    /// The options, with `--header-file` read.
    pub fn to_options(&self) -> Result<HttpOptions> {
        let mut headers = Vec::new();
        if let Some(path) = &self.header_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read header file {}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // The line is not echoed: it may hold a secret.
                let h = crate::net::headers::parse_header_line(line).map_err(|e| {
                    anyhow::anyhow!("header file {} line {}: {e}", path.display(), i + 1)
                })?;
                headers.push(h);
            }
        }
        headers.extend(self.headers.iter().cloned());
        Ok(HttpOptions {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            headers,
            connect_timeout: Some(self.connect_timeout),
            stall: StallPolicy {
                window: self.stall_timeout,
                min_bytes: self.stall_min_bytes,
            },
            retry: RetryPolicy {
                max_retries: self.max_retries,
                ..RetryPolicy::default()
            },
        })
    }
}

fn parse_header(s: &str) -> std::result::Result<(String, String), String> {
    crate::net::headers::parse_header_line(s)
}

fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.001..=86_400.0).contains(&v) {
        return Err("expected between 0.001 and 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// Arguments of the mark commands.
#[derive(Debug, clap::Args)]
pub struct MarkArgs {
    /// `booted`, `other`, a slot name (`rootfs.1`) or a bootname (`B`).
    #[arg(default_value = "booted")]
    pub slot: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which command line the binary answers, told by the name it was invoked under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// `flipslot`'s own ([`Cli`]).
    Flipslot,
    /// The `rauc` drop-in (`rauc::RaucCli`), when invoked as `rauc` (a symlink).
    Rauc,
}

impl Personality {
    /// The personality for `argv0`, the program name (a path or a bare name).
    pub fn from_argv0(argv0: Option<&OsStr>) -> Personality {
        match argv0.and_then(|a| Path::new(a).file_name()) {
            Some(name) if name == "rauc" => Personality::Rauc,
            _ => Personality::Flipslot,
        }
    }

    /// This personality's command line definition: what it parses, and what the man pages
    /// and shell completions of the packages are generated from.
    pub fn command(self) -> clap::Command {
        match self {
            Personality::Flipslot => <Cli as clap::CommandFactory>::command(),
            Personality::Rauc => <rauc::RaucCli as clap::CommandFactory>::command(),
        }
    }
}

/// The binary's entry point: runs the command line named by `argv[0]` with the process
/// arguments.
pub fn main() -> Result<()> {
    run_from(std::env::args_os())
}

/// Runs the command line that `args` (the first is the program name) asks for.
pub fn run_from<I: IntoIterator<Item = OsString>>(args: I) -> Result<()> {
    let args: Vec<OsString> = args.into_iter().collect();
    match Personality::from_argv0(args.first().map(OsString::as_os_str)) {
        Personality::Flipslot => run_flipslot(args),
        Personality::Rauc => rauc::run_from(args),
    }
}

/// Parses `flipslot`'s arguments and runs the command.
fn run_flipslot(args: Vec<OsString>) -> Result<()> {
    let mut cli = Cli::parse_from(args);
    if let Command::Provision(args) = cli.command {
        // Provisioning runs before there is a system config to load.
        return provision::run(&cli.root, args);
    }
    // Paths given on the command line are relative to the working directory, not to
    // --root (which only applies to the paths inside the config).
    let config = match &cli.config {
        Some(c) => absolute(c)?,
        None => default_config(&Root::new(&cli.root)),
    };
    cli.cmdline_file = cli.cmdline_file.as_deref().map(absolute).transpose()?;
    cli.socket = cli.socket.as_deref().map(absolute).transpose()?;
    let mut agent = Agent::load(Root::new(&cli.root), &config, cli.cmdline_file.as_deref())?;
    let socket = cli.socket.clone().unwrap_or_else(|| {
        agent
            .root
            .resolve(std::path::Path::new(paths::DAEMON_SOCKET))
    });
    match cli.command {
        Command::Status { json, no_daemon } => {
            if !no_daemon {
                if let Some(mut c) = client::connect(&socket) {
                    let v = c.status(!json)?;
                    if json {
                        print_json(&v)?;
                    } else {
                        print!("{}", v["text"].as_str().unwrap_or_default());
                    }
                    return Ok(());
                }
            }
            let report = ops::status(&agent)?;
            if json {
                print_json(&report)?;
            } else {
                print!("{}", render::status_text(&report));
            }
        }
        Command::Install {
            bundle,
            allow_downgrade,
            no_read_back,
            buffered_io,
            if_needed,
            json,
            no_daemon,
            http,
        } => {
            let opts = InstallOptions {
                allow_downgrade,
                read_back: !no_read_back,
                if_needed,
                ..InstallOptions::default()
            };
            if !no_daemon && !http.any_url_only() {
                if let Some(c) = client::connect(&socket) {
                    let req = client::install_request(&bundle, &opts, !buffered_io)?;
                    return install_via_daemon(c, &req, json);
                }
            }
            agent.direct_io = !buffered_io;
            let mut progress = Reporter::new(if json {
                ProgressMode::Json
            } else {
                ProgressMode::Auto
            });
            let started = std::time::Instant::now();
            let url = bundle.to_str().filter(|b| crate::net::is_url(b));
            if url.is_none() && http.any_url_only() {
                bail!("--ca-file, --client-cert, --header and --header-file need a bundle URL");
            }
            let out = match url {
                Some(url) => {
                    let http_opts = http.to_options()?;
                    ops::install_url(&agent, url, &http_opts, &opts, &mut progress)
                }
                None => ops::install_file(&agent, &bundle, &opts, &mut progress),
            };
            progress.finish();
            let out = out?;
            if json {
                let v = render::install_done_json(&out, started.elapsed())?;
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{}", render::install_summary(&out, started.elapsed()));
            }
        }
        Command::Health { no_reboot, json } => {
            let update_server = match &agent.cfg.update {
                Some(u) if agent.cfg.health.update_server => match &u.channel_url {
                    Some(url) => Some((
                        url.clone(),
                        crate::daemon::fetch::http_options(u, &agent.root)?,
                    )),
                    None => None,
                },
                _ => None,
            };
            let checks = crate::health::host::HostChecks { update_server };
            let rebooter = crate::health::host::HostReboot {
                root: agent.root.clone(),
            };
            let env = ops::HealthEnv {
                checks: &checks,
                clock: &crate::host::clock::SystemClock,
                allow_reboot: !no_reboot,
            };
            let out = ops::health(&agent, &env)?;
            if json {
                print_json(&out)?;
            } else {
                print!("{}", render::health_text(&out));
            }
            if out.rebooting {
                use crate::health::host::Rebooter;
                rebooter.reboot()?;
            }
            if out.failed() {
                std::process::exit(1);
            }
        }
        Command::Daemon {
            once,
            reboot_command,
        } => {
            crate::daemon::run(
                agent,
                crate::daemon::DaemonOptions {
                    once,
                    socket,
                    reboot_command,
                },
            )?;
        }
        Command::Check => {
            let mut c = client::connect(&socket)
                .with_context(|| format!("no flipslot daemon listens on {}", socket.display()))?;
            let v = c.check()?;
            println!("{v}");
            client::error_line(&v)?;
        }
        Command::Rollback { to, reboot, json } => {
            let out = ops::rollback(&agent, to.as_deref(), &crate::host::clock::SystemClock)?;
            if json {
                print_json(&out)?;
            } else {
                print!("{}", render::rollback_text(&out, reboot));
            }
            if reboot {
                use crate::health::host::Rebooter;
                crate::health::host::HostReboot {
                    root: agent.root.clone(),
                }
                .reboot()?;
            }
        }
        Command::MarkGood(a) => mark(&agent, a, Mark::Good)?,
        Command::MarkBad(a) => mark(&agent, a, Mark::Bad)?,
        Command::MarkActive(a) => mark(&agent, a, Mark::Active)?,
        Command::Provision(_) => bail!("provision runs before the config is loaded"),
    }
    Ok(())
}

/// Lets the daemon install and shows its progress like a local install would.
fn install_via_daemon(mut c: client::Client, req: &serde_json::Value, json: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let mut bar = Reporter::new(ProgressMode::Auto);
    let done = c.install(req, &mut |line| {
        if json {
            println!("{line}");
        } else if line["event"] == "progress" {
            if let (Some(phase), Some(d), Some(t)) = (
                line["phase"].as_str(),
                line["done"].as_u64(),
                line["total"].as_u64(),
            ) {
                bar.update(phase, d, t);
            }
        }
    });
    bar.finish();
    let done = done?;
    if !json {
        let out: crate::install::InstallOutcome = serde_json::from_value(done)
            .context("the daemon's done line is not an install outcome")?;
        println!("{}", render::install_summary(&out, started.elapsed()));
    }
    Ok(())
}

fn mark(agent: &Agent, args: MarkArgs, how: Mark) -> Result<()> {
    let out = ops::mark(agent, &args.slot, how)?;
    if args.json {
        print_json(&out)?;
    } else {
        print!("{}", render::mark_text(&out));
    }
    Ok(())
}

/// flipslot's own config when it exists, else a RAUC system.conf, else flipslot's path
/// (so the error names the file flipslot looked for first).
pub(crate) fn default_config(root: &Root) -> PathBuf {
    let own = std::path::Path::new(paths::DEFAULT_CONFIG);
    if root.resolve(own).exists() {
        return own.to_path_buf();
    }
    crate::config::rauc::discover(root).unwrap_or_else(|| own.to_path_buf())
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve path {}", p.display()))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn argv0_picks_the_command_line() {
        let p = |s: &str| Personality::from_argv0(Some(OsStr::new(s)));
        assert_eq!(p("rauc"), Personality::Rauc);
        assert_eq!(p("/usr/bin/rauc"), Personality::Rauc);
        assert_eq!(p("./rauc"), Personality::Rauc);
        assert_eq!(p("flipslot"), Personality::Flipslot);
        assert_eq!(p("/usr/bin/flipslot"), Personality::Flipslot);
        assert_eq!(p("/usr/lib/rauc/flipslot"), Personality::Flipslot);
        assert_eq!(p("rauc-helper"), Personality::Flipslot);
        assert_eq!(Personality::from_argv0(None), Personality::Flipslot);
    }

    #[test]
    fn flipslot_parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rauc_parser_is_consistent() {
        rauc::RaucCli::command().debug_assert();
    }
}
