//! The `flipslot` command line: argument parsing and output formatting. Every subcommand
//! is one call into [`crate::ops`].

use crate::install::InstallOptions;
use crate::ops::{self, Agent, Mark};
use crate::paths::{self, Root};
use anyhow::Result;
use clap::{Parser, Subcommand};
use flipslot_image::progress::{ProgressMode, Reporter};
use std::path::PathBuf;

/// flipslot: installs signed images into the inactive A/B slot and manages which slot boots.
#[derive(Debug, Parser)]
#[command(name = "flipslot", version, about, long_about = None)]
pub struct Cli {
    /// System config file.
    #[arg(long, global = true, default_value = paths::DEFAULT_CONFIG, value_name = "PATH")]
    pub config: PathBuf,
    /// Resolve every configured path under this directory (for tests and image builds).
    #[arg(long, global = true, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Read the kernel command line from this file instead of /proc/cmdline (rescue
    /// systems, tests).
    #[arg(long, global = true, value_name = "PATH")]
    pub cmdline_file: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the booted and primary slot and every slot's boot and install state.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Install a bundle into the inactive slot and make the bootloader try it once.
    ///
    /// Verifies the signatures, checks compatible and version, marks the target slot bad,
    /// writes every chunk after checking its hash, reads the slot back, records the result
    /// in the status file, then makes the slot primary for the next boot.
    Install {
        /// The bundle file (.fsb).
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
        /// Progress as JSON lines and a final JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Commit a slot: the bootloader keeps booting it (OK=1, TRY=0).
    MarkGood(MarkArgs),
    /// Take a slot out of the boot rotation (OK=0, TRY=0).
    MarkBad(MarkArgs),
    /// Make a slot the one to boot next (first in ORDER, OK=1, TRY=0).
    MarkActive(MarkArgs),
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

/// Parses the arguments and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut agent = Agent::load(
        Root::new(&cli.root),
        &cli.config,
        cli.cmdline_file.as_deref(),
    )?;
    match cli.command {
        Command::Status { json } => {
            let report = ops::status(&agent)?;
            if json {
                print_json(&report)?;
            } else {
                print!("{}", crate::report::status_text(&report));
            }
        }
        Command::Install {
            bundle,
            allow_downgrade,
            no_read_back,
            buffered_io,
            json,
        } => {
            agent.direct_io = !buffered_io;
            let mut progress = Reporter::new(if json {
                ProgressMode::Json
            } else {
                ProgressMode::Auto
            });
            let opts = InstallOptions {
                allow_downgrade,
                read_back: !no_read_back,
            };
            let started = std::time::Instant::now();
            let out = ops::install_file(&agent, &bundle, &opts, &mut progress);
            progress.finish();
            let out = out?;
            if json {
                let mut v = serde_json::to_value(&out)?;
                v["v"] = 1.into();
                v["event"] = "done".into();
                v["seconds"] = started.elapsed().as_secs_f64().into();
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!(
                    "{}",
                    crate::report::install_summary(&out, started.elapsed())
                );
            }
        }
        Command::MarkGood(a) => mark(&agent, a, Mark::Good)?,
        Command::MarkBad(a) => mark(&agent, a, Mark::Bad)?,
        Command::MarkActive(a) => mark(&agent, a, Mark::Active)?,
    }
    Ok(())
}

fn mark(agent: &Agent, args: MarkArgs, how: Mark) -> Result<()> {
    let out = ops::mark(agent, &args.slot, how)?;
    if args.json {
        print_json(&out)?;
    } else {
        println!(
            "marked slot {} ({}) {}; primary is now {}",
            out.slot,
            out.bootname,
            out.mark,
            out.primary.as_deref().unwrap_or("none")
        );
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
