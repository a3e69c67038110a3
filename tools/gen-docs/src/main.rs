//! `flipslot-gen-docs`: writes the man pages and shell completions of flipslot and
//! flipslot-image (see the library doc for the layout). Run by `packaging/build-debs.sh`.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes the man pages and shell completions of flipslot and flipslot-image from their
/// clap definitions: OUT/<package>/man/*.1 and OUT/<package>/completions/{bash,zsh,fish}/.
#[derive(Debug, Parser)]
#[command(name = "flipslot-gen-docs", version)]
struct Args {
    /// The output directory (each package's tree in it is replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Gzip the man pages (NAME.1.gz, reproducibly), as Debian ships them.
    #[arg(long)]
    gzip: bool,
    /// The date every page's footer shows, YYYY-MM-DD: the release's (the build script
    /// takes the Debian changelog's), so that a rebuild is byte-identical.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    date: String,
}

fn parse_date(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a date like 2026-12-07"))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = flipslot_gen_docs::Options {
        gzip: args.gzip,
        date: args.date,
    };
    match flipslot_gen_docs::write_all(&args.out, flipslot_gen_docs::programs(), &opts) {
        Ok(w) => {
            println!(
                "wrote {} man pages and {} completion scripts under {}",
                w.pages.len(),
                w.scripts.len(),
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
