//! `flipslot-image disk`: a bootable A/B GPT disk image for x86_64 UEFI from a layout file and
//! a bundle, built without root, loop devices or mounts (see [`crate::disk`]).

use crate::disk::{self, DiskOptions, DiskSummary, Layout};
use anyhow::Context as _;
use flipslot_cli_support::progress::{format_bytes, ProgressMode, Reporter};
use flipslot_format::keys::Keyring;
use flipslot_format::reader::{Bundle, VerifyPolicy};
use flipslot_format::source::FileSource;
use std::path::PathBuf;

/// The long help of `disk`.
const LONG_ABOUT: &str = "Build a bootable A/B GPT disk image for x86_64 UEFI.\n\n\
    The layout file (TOML) lists the partitions: one esp, the slots (class, bootname) and \
    optional data partitions; see docs/reference-grub.cfg.md and the flipslot_image::disk \
    documentation for every key. The bundle is verified against --keyring (or opened without \
    verification with --no-verify, with a warning); its image for the slots' class is written \
    to the first slot, every chunk checked as it is read. The ESP gets GRUB \
    (EFI/BOOT/BOOTX64.EFI), a grub.cfg doing RAUC-style A/B counting and a grubenv with \
    ORDER=<bootnames>, the first slot OK=1 and the others OK=0. No root, loop device or \
    mount is used: sgdisk, mkfs.vfat, mtools, grub-mkimage and mke2fs work on plain files. \
    The same inputs give a byte-identical image (timestamps come from SOURCE_DATE_EPOCH or \
    the bundle's build time).\n\n\
    With --json, standard output carries JSON lines: progress events (phases \"esp\", \
    \"write\", \"data\") and a final {\"v\":1,\"event\":\"done\",\"ok\":true,\"path\":PATH,\
    \"size\":N,\"disk_guid\":S,\"boot_slot\":S,\"version\":S,\"compatible\":S,\"timestamp\":N,\
    \"reproducible\":B,\"partitions\":[{\"number\":N,\"label\":S,\"role\":S,\"start\":N,\
    \"size\":N,\"guid\":S,\"bootname\":S,\"contents\":S}]} or {\"v\":1,\"event\":\"done\",\
    \"ok\":false,\"error\":S}.";

/// Arguments of `disk`.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct DiskArgs {
    /// The layout file (TOML)
    #[arg(long, value_name = "LAYOUT.toml")]
    layout: PathBuf,
    /// The bundle whose image goes into the first slot
    #[arg(long, value_name = "BUNDLE.fsb")]
    bundle: PathBuf,
    /// Trusted public keys: one PEM public key file, or a directory whose *.pub files are
    /// all trusted
    #[arg(long, value_name = "PATH", required_unless_present = "no_verify")]
    keyring: Option<PathBuf>,
    /// How many valid signatures by distinct trusted keys the bundle needs [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "no_verify",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(flipslot_format::format::MAX_SIGNATURES)))]
    min_signatures: Option<u32>,
    /// Do not check the bundle's signatures (chunk hashes are still checked)
    #[arg(long, conflicts_with = "keyring")]
    no_verify: bool,
    /// The directory filling the data partition that has from = "dir"
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The disk image to write (a regular file, replaced if it exists)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print progress and the result as JSON lines on standard output
    #[arg(long)]
    json: bool,
}

/// Runs `disk`.
pub fn run(args: DiskArgs) -> anyhow::Result<()> {
    let mut reporter = Reporter::new(if args.json {
        ProgressMode::Json
    } else {
        ProgressMode::Auto
    });
    let result = build(&args, &mut reporter);
    reporter.finish();
    match result {
        Ok(summary) => {
            if reporter.is_json() {
                let mut json = serde_json::to_value(&summary)?;
                if let Some(map) = json.as_object_mut() {
                    map.insert("ok".into(), serde_json::json!(true));
                }
                reporter.event("done", json);
            } else {
                print!("{}", human_summary(&summary));
            }
            Ok(())
        }
        Err(e) => {
            reporter.event(
                "done",
                serde_json::json!({ "ok": false, "error": flipslot_cli_support::error_chain(&e) }),
            );
            Err(e)
        }
    }
}

fn build(args: &DiskArgs, reporter: &mut Reporter) -> anyhow::Result<DiskSummary> {
    let origin = args.layout.display().to_string();
    let text = std::fs::read_to_string(&args.layout)
        .with_context(|| format!("cannot read layout {origin}"))?;
    let layout = Layout::parse(&text, &origin)?;
    let source = FileSource::open(&args.bundle)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    let mut bundle = match &args.keyring {
        Some(keyring) if !args.no_verify => {
            let keyring = Keyring::load(keyring)?;
            let policy = VerifyPolicy {
                min_signatures: args.min_signatures.unwrap_or(1),
            };
            Bundle::open(source, &keyring, &policy)
        }
        _ => {
            log::warn!(
                "--no-verify: the signatures of {} are not checked",
                args.bundle.display()
            );
            Bundle::open_unverified(source)
        }
    }
    .with_context(|| args.bundle.display().to_string())?;
    let mut opts = DiskOptions::new(&args.out);
    opts.data_dir = args.data_dir.clone();
    opts.timestamp = crate::mkfs::source_date_epoch()?;
    let summary = disk::build_disk(&layout, &mut bundle, &opts, &mut |phase, done, total| {
        reporter.update(phase, done, total)
    })
    .with_context(|| format!("cannot build disk image {}", args.out.display()))?;
    Ok(summary)
}

/// The summary for people: one line for the disk, one per partition.
fn human_summary(s: &DiskSummary) -> String {
    let mut out = format!(
        "{}: {} GPT disk, bundle {} for {}, boots slot {} first{}\n",
        s.path.display(),
        format_bytes(s.size),
        s.version,
        s.compatible,
        s.boot_slot,
        if s.reproducible {
            ""
        } else {
            " (ESP not reproducible: mkfs.vfat lacks --invariant)"
        }
    );
    out.push_str("  #  label             role  start        size         contents\n");
    for p in &s.partitions {
        out.push_str(&format!(
            "  {:<2} {:<17} {:<5} {:<12} {:<12} {}\n",
            p.number,
            p.label,
            p.role,
            p.start,
            format_bytes(p.size),
            p.contents
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: DiskArgs,
    }

    fn parse(argv: &[&str]) -> Result<DiskArgs, clap::Error> {
        let m = Wrapper::command().try_get_matches_from(argv)?;
        Ok(Wrapper::from_arg_matches(&m)?.args)
    }

    #[test]
    fn trust_options_are_exclusive_and_required() {
        Wrapper::command().debug_assert();
        let base = [
            "x", "--layout", "l.toml", "--bundle", "b.fsb", "--out", "d.img",
        ];
        assert!(parse(&base).is_err());
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(with(&["--keyring", "k.pub"]).is_ok());
        assert!(with(&["--no-verify"]).unwrap().no_verify);
        assert!(with(&["--keyring", "k.pub", "--no-verify"]).is_err());
        assert!(with(&["--no-verify", "--min-signatures", "2"]).is_err());
    }

    #[test]
    fn summary_lists_partitions() {
        let s = DiskSummary {
            path: "d.img".into(),
            size: 3 << 20,
            disk_guid: "g".into(),
            boot_slot: "A".into(),
            version: "1.0.0".into(),
            compatible: "box".into(),
            timestamp: 0,
            reproducible: true,
            partitions: vec![disk::PartitionSummary {
                number: 1,
                label: "esp".into(),
                role: "esp".into(),
                start: 1 << 20,
                size: 2 << 20,
                guid: "p".into(),
                bootname: None,
                contents: "FAT".into(),
            }],
        };
        let text = human_summary(&s);
        assert!(text.starts_with("d.img: 3.0 MiB GPT disk"), "{text}");
        assert!(text.contains("boots slot A first\n"), "{text}");
        assert!(text.contains("  1  esp "), "{text}");
    }
}
