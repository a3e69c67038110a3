//! The `rauc` drop-in: when the binary is invoked as `rauc` (a symlink to `flipslot`, see
//! [`super::Personality`]), it answers the common subset of RAUC's command line, so
//! scripts written for RAUC keep working: `install`, `info`, `status [--detailed] [--output-format=…]` and
//! `status mark-good|mark-bad|mark-active [booted|other|SLOT]`.
//!
//! Output follows RAUC 1.8: the JSON of `status` has RAUC's shape (`slots` is an array
//! of single-key objects), `info` prints the object of `rauc info`, and the messages of
//! `mark-*` and `install` are RAUC's. The work is done by the same operations as
//! `flipslot`'s own commands ([`crate::ops`]); there is no D-Bus service.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flipslot_cli_support::progress::{ProgressMode, Reporter};

use crate::host::paths::Root;
use crate::install::InstallOptions;
use crate::ops::render::rauc as render;
use crate::ops::{self, Agent, Mark};

/// RAUC's output formats (`shell` is not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Text for people.
    Readable,
    /// One line of JSON.
    Json,
    /// Indented JSON.
    JsonPretty,
}

/// flipslot answering as `rauc`: the common subset of RAUC's command line.
#[derive(Debug, Parser)]
#[command(
    name = "rauc",
    version,
    about = "flipslot answering RAUC's command line (install, info, status, mark-*)",
    long_about = "flipslot answering RAUC's command line: install, info, status and \
                  status mark-good|mark-bad|mark-active. The system config is --conf, \
                  else /etc/flipslot/system.toml if it exists, else the first RAUC \
                  system.conf found in /etc/rauc, /run/rauc, /usr/lib/rauc. RAUC commands \
                  not listed here (bundle, resign, extract, convert, encrypt, mount, \
                  service, write-slot) are not provided: use `rauc` itself on a build \
                  host, or `flipslot-image`."
)]
pub struct RaucCli {
    /// The system config (a RAUC system.conf or a flipslot system.toml).
    #[arg(short = 'c', long = "conf", global = true, value_name = "FILENAME")]
    pub conf: Option<PathBuf>,
    /// PEM keyring for `info` (default: the config's keyring).
    #[arg(long, global = true, value_name = "PEMFILE")]
    pub keyring: Option<PathBuf>,
    /// Read the kernel command line from this file instead of /proc/cmdline.
    #[arg(long, global = true, value_name = "PATH", hide = true)]
    pub cmdline_file: Option<PathBuf>,
    /// Resolve configured paths under this directory (tests).
    #[arg(
        long,
        global = true,
        default_value = "/",
        value_name = "DIR",
        hide = true
    )]
    pub root: PathBuf,
    /// Print debug output (accepted for compatibility; flipslot takes its log level from FLIPSLOT_LOG).
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
    /// The command.
    #[command(subcommand)]
    pub command: RaucCommand,
}

/// RAUC's commands that flipslot answers.
#[derive(Debug, Subcommand)]
pub enum RaucCommand {
    /// Install a bundle (RAUC or flipslot) into the inactive slot and activate it.
    Install {
        /// RAUC's switch to skip the compatible check: refused (flipslot always checks).
        #[arg(long)]
        ignore_compatible: bool,
        /// The bundle file (a regular file or block device) or URL.
        bundle: PathBuf,
    },
    /// Verify a bundle and print its manifest.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value = "readable")]
        output_format: OutputFormat,
        /// Do not verify the signature (refused: flipslot always verifies).
        #[arg(long)]
        no_verify: bool,
        /// The bundle file.
        bundle: PathBuf,
    },
    /// Show the system status, or mark a slot.
    ///
    /// `mark-*` takes flipslot's install lock without waiting: while an install or health
    /// run holds it, nothing is changed and the command exits 1, naming the lock file.
    Status {
        /// Also show each slot's installed bundle.
        #[arg(long)]
        detailed: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "readable")]
        output_format: OutputFormat,
        /// `mark-good`, `mark-bad` or `mark-active`.
        action: Option<String>,
        /// `booted` (default), `other` or a slot name.
        slot: Option<String>,
    },
}

/// The config to use: `--conf`, else flipslot's default if present, else RAUC's.
fn config_path(conf: Option<&Path>, root: &Root) -> Result<PathBuf> {
    match conf {
        Some(c) => {
            std::path::absolute(c).with_context(|| format!("cannot resolve {}", c.display()))
        }
        None => Ok(crate::cli::default_config(root)),
    }
}

/// Runs the drop-in with `args` (the first is the program name).
pub fn run_from<I: IntoIterator<Item = OsString>>(args: I) -> Result<()> {
    let cli = RaucCli::parse_from(args);
    let root = Root::new(&cli.root);
    let cmdline = cli
        .cmdline_file
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("cannot resolve --cmdline-file")?;
    let config = config_path(cli.conf.as_deref(), &root)?;
    let load = || Agent::load(Root::new(&cli.root), &config, cmdline.as_deref());
    match cli.command {
        RaucCommand::Install {
            ignore_compatible,
            bundle,
        } => {
            if ignore_compatible {
                bail!("--ignore-compatible is not supported: flipslot always checks compatible");
            }
            let agent = load()?;
            let opts = InstallOptions::default();
            let mut progress = Reporter::new(ProgressMode::Auto);
            let name = bundle.display().to_string();
            if name.starts_with("http://") || name.starts_with("https://") {
                let http = crate::net::HttpOptions::default();
                ops::install_url(&agent, &name, &http, &opts, &mut progress)?;
            } else {
                let path = std::path::absolute(&bundle)
                    .with_context(|| format!("cannot resolve {}", bundle.display()))?;
                ops::install_file(&agent, &path, &opts, &mut progress)?;
            }
            print!("{}", render::install_text(&name));
        }
        RaucCommand::Info {
            output_format,
            no_verify,
            bundle,
        } => {
            if no_verify {
                bail!("--no-verify is not supported: flipslot always verifies the signature");
            }
            // With --keyring no system config is needed (as on a build host).
            let (store, options) = match &cli.keyring {
                Some(k) => (
                    flipslot_rauc::x509::TrustStore::load(Some(k), None)
                        .with_context(|| format!("cannot load keyring {}", k.display()))?,
                    flipslot_rauc::x509::VerifyOptions::default(),
                ),
                None => load()?.x509_trust()?,
            };
            let source = flipslot_format::source::FileSource::open(&bundle)
                .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let b = flipslot_rauc::bundle::RaucBundle::open(
                source,
                &store,
                &options,
                flipslot_rauc::bundle::AllowedFormats::default(),
                now,
                &mut |_, _| {},
            )?;
            let v = flipslot_rauc::bundle::info_json(b.manifest());
            match output_format {
                OutputFormat::Readable => print!("{}", render::info_text(&v)),
                OutputFormat::Json => println!("{v}"),
                OutputFormat::JsonPretty => println!("{}", serde_json::to_string_pretty(&v)?),
            }
        }
        RaucCommand::Status {
            detailed,
            output_format,
            action,
            slot,
        } => {
            let agent = load()?;
            match action.as_deref() {
                None => {
                    if slot.is_some() {
                        bail!("too many arguments");
                    }
                    let report = ops::status(&agent)?;
                    let v = render::status_json(&report, &agent.cfg, detailed);
                    match output_format {
                        OutputFormat::Readable => print!("{}", render::status_text(&v)),
                        OutputFormat::Json => println!("{v}"),
                        OutputFormat::JsonPretty => {
                            println!("{}", serde_json::to_string_pretty(&v)?);
                        }
                    }
                }
                Some(a) => {
                    let how = match a {
                        "mark-good" => Mark::Good,
                        "mark-bad" => Mark::Bad,
                        "mark-active" => Mark::Active,
                        other => bail!("unknown subcommand {other}"),
                    };
                    let which = slot.as_deref().unwrap_or("booted");
                    let out = ops::mark(&agent, which, how).map_err(|e| e.context("rauc mark"))?;
                    print!("{}", render::mark_text(how, &out.slot));
                }
            }
        }
    }
    Ok(())
}
