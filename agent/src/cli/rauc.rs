//! The `rauc` drop-in: when the binary is invoked as `rauc` (a symlink to `flipslot`),
//! it answers the common subset of RAUC's command line, so scripts written for RAUC keep
//! working: `install`, `info`, `status [--detailed] [--output-format=…]` and
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
use serde_json::{json, Value};

use crate::bootloader::SlotBootState;
use crate::host::paths::Root;
use crate::install::InstallOptions;
use crate::ops::{self, Agent, Mark, SlotState};
use crate::slot::status::InstallResult;

/// Whether the program was invoked under the name `rauc`.
pub fn invoked_as_rauc(argv0: &OsString) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "rauc")
}

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

/// Runs the drop-in with the process arguments.
pub fn run() -> Result<()> {
    run_from(std::env::args_os())
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
            println!("Installing `{name}` succeeded");
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
                OutputFormat::Readable => print!("{}", info_text(&v)),
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
                    let v = status_json(&agent, detailed)?;
                    match output_format {
                        OutputFormat::Readable => print!("{}", status_text(&v)),
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
                    match how {
                        Mark::Good => println!("rauc status: marked slot {} as good", out.slot),
                        Mark::Bad => println!("rauc status: marked slot {} as bad", out.slot),
                        Mark::Active => println!("rauc status: activated slot {}", out.slot),
                    }
                }
            }
        }
    }
    Ok(())
}

/// `rauc status --output-format=json` for this system, in RAUC 1.8's shape.
pub fn status_json(agent: &Agent, detailed: bool) -> Result<Value> {
    let report = ops::status(agent)?;
    let booted_bootname = report
        .booted
        .as_deref()
        .and_then(|n| agent.cfg.slot_by_name(n))
        .map(|s| s.bootname.clone());
    let slots: Vec<Value> = report
        .slots
        .iter()
        .map(|s| {
            let cfg = agent.cfg.slot_by_name(&s.name);
            let state = if s.state == SlotState::Booted {
                "booted"
            } else if s.primary {
                "active"
            } else {
                "inactive"
            };
            let mut o = json!({
                "class": s.class,
                "device": s.device.display().to_string(),
                "type": cfg.map_or("raw", |c| c.slot_type.as_str()),
                "bootname": s.bootname,
                "state": state,
                "parent": null,
                "mountpoint": if s.state == SlotState::Booted { json!("/") } else { Value::Null },
                "boot_status": if s.boot_status == SlotBootState::Bad { "bad" } else { "good" },
            });
            if detailed {
                if let (Some(rec), Some(obj)) = (&s.installed, o.as_object_mut()) {
                    let mut st = json!({
                        "bundle": {
                            "compatible": rec.compatible,
                            "version": rec.bundle_version,
                        },
                        "status": if rec.result == InstallResult::Ok { "ok" } else { "failed" },
                    });
                    if let (Some(sha), Some(o2)) = (&rec.image_sha256, st.as_object_mut()) {
                        o2.insert("checksum".into(), json!({ "sha256": sha }));
                    }
                    if let (Some(t), Some(o2)) = (rec.installed_at, st.as_object_mut()) {
                        o2.insert(
                            "installed".into(),
                            json!({ "timestamp": flipslot_format::timefmt::rfc3339(t) }),
                        );
                    }
                    obj.insert("slot_status".into(), st);
                }
            }
            json!({ s.name.clone(): o })
        })
        .collect();
    Ok(json!({
        "compatible": report.compatible,
        "variant": "",
        "booted": booted_bootname,
        "boot_primary": report.primary,
        "slots": slots,
    }))
}

fn status_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let mut out = format!(
        "=== System Info ===\nCompatible:  {}\nVariant:     {}\nBooted from: {}\n\n\
         === Bootloader ===\nActivated: {}\n\n=== Slot States ===\n",
        s("compatible"),
        s("variant"),
        s("booted"),
        s("boot_primary"),
    );
    for slot in v["slots"].as_array().into_iter().flatten() {
        if let Some((name, o)) = slot.as_object().and_then(|m| m.iter().next()) {
            let g = |k: &str| o[k].as_str().unwrap_or("-").to_string();
            let mark = if g("state") == "booted" { "x" } else { " " };
            out.push_str(&format!(
                "{mark} [{name}] ({}, {}, {})\n      bootname: {}\n      boot status: {}\n",
                g("device"),
                g("type"),
                g("state"),
                g("bootname"),
                g("boot_status"),
            ));
        }
    }
    out
}

fn info_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = format!(
        "Compatible: \t'{}'\nVersion:    \t'{}'\nDescription:\t'{}'\nBuild:      \t'{}'\nHooks:      \t''\n",
        s("compatible"),
        s("version"),
        s("description"),
        s("build"),
    );
    let images = v["images"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "{} Image{}:\n",
        images.len(),
        if images.len() == 1 { "" } else { "s" }
    ));
    for (i, img) in images.iter().enumerate() {
        if let Some((class, o)) = img.as_object().and_then(|m| m.iter().next()) {
            out.push_str(&format!(
                "  [{}] {class}\n\tFilename:  {}\n\tChecksum:  {}\n\tSize:      {}\n",
                i + 1,
                o["filename"].as_str().unwrap_or(""),
                o["checksum"].as_str().unwrap_or(""),
                o["size"],
            ));
        }
    }
    out
}
