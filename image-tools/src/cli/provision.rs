//! `flipslot-image provision` and `provision-info`: build the signed provisioning set
//! (`provision.json` and `esp.img`, see [`crate::provision`]) from a layout file, and check
//! a description as a machine would.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use flipslot_cli_support::progress::format_bytes;
use flipslot_format::keys::{self, Keyring};
use flipslot_format::provision::{
    self, DiskSelect, PartitionRole, Provision, TargetRule, MAX_PROVISION_LEN,
};
use flipslot_format::reader::VerifyPolicy;

use crate::disk::layout::{Layout, LayoutKind};
use crate::provision::{build_provision, check_esp_image, EspImageCheck, PackOptions, PackSummary};

/// The long help of `provision`.
pub(super) const LONG_ABOUT: &str =
    "Build the provisioning set a network-booted machine installs itself from with \
    `flipslot provision`: OUT-DIR/esp.img, the ESP (GRUB, grub.cfg, grubenv) as a FAT image, \
    and OUT-DIR/provision.json, the description signed with --key: which disk the machine \
    may take, the partition table, the ESP image's size and SHA-256, which slots receive the \
    bundle's image, and the files of the data partition. The bundle itself is not read here; \
    the machine checks that its compatible string equals --compatible.\n\n\
    The layout file is the one `flipslot-image disk` reads (see its help and \
    docs/provisioning.md), except that the last partition may have size = \"rest\" (the rest \
    of the machine's disk) and start is refused (the machine places the partitions). A data \
    partition is made ext4. When it has from = \"dir\", every regular file under --data-dir \
    goes into the description as UTF-8 text with its permission bits (symbolic links, \
    special files, non-UTF-8 names or contents and more than 256 files are refused, naming \
    the file; the whole description must fit in 1 MiB). The layout's status-file is where the \
    machine writes its factory status record.\n\n\
    The disk rule: --select picks the smallest, the largest or the only disk among those \
    matching --by-id (a glob over /dev/disk/by-id names) and --serial. A disk that already \
    holds data is only overwritten when this description has --allow-wipe AND the machine \
    runs with --wipe. With --write-all-slots every slot receives the image and the grubenv \
    marks them all good; otherwise only the first slot is written and marked good.\n\n\
    The output is reproducible: the same inputs, keys and tool versions give byte-identical \
    files (times on the ESP are SOURCE_DATE_EPOCH, or 0 when unset; FAT stamps times before \
    1980 as 1980-01-01). Both files are written through temporary files and renamed.\n\n\
    With --json, prints one JSON object: {\"v\":1, \"file\":PATH, \"esp_image\":PATH, \
    \"timestamp\":N, \"reproducible\":B, \"signed_by\":[HEX], \"provision\":{...the signed \
    payload...}}.";

/// The long help of `provision-info`.
pub(super) const LONG_ABOUT_INFO: &str =
    "Verify a provisioning description as a machine does (size, envelope, signatures against \
    --keyring, then the payload and its rules) and print it. When the ESP image it names is \
    next to it, its size and SHA-256 are checked too (a difference is an error); a missing \
    image is reported, not an error.\n\n\
    With --json, prints one JSON object: on success {\"v\":1, \"file\":PATH, \"valid\":true, \
    \"esp_image\":PATH, \"esp_image_check\":\"ok\"|\"missing\", \"provision\":{...}}; on failure \
    {\"v\":1, \"file\":PATH, \"valid\":false, \"error\":S} (and the error on standard error).";

/// How the machine picks its disk (`--select`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SelectArg {
    /// The smallest matching disk
    Smallest,
    /// The largest matching disk
    Largest,
    /// The only matching disk (several are an error)
    Only,
}

impl From<SelectArg> for DiskSelect {
    fn from(s: SelectArg) -> Self {
        match s {
            SelectArg::Smallest => DiskSelect::Smallest,
            SelectArg::Largest => DiskSelect::Largest,
            SelectArg::Only => DiskSelect::Only,
        }
    }
}

/// Arguments of `provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The layout file (TOML), as for `flipslot-image disk`; the last partition may have
    /// size = "rest"
    #[arg(long, value_name = "LAYOUT.toml")]
    layout: PathBuf,
    /// The system kind; the bundle's compatible string must equal it
    #[arg(long, value_name = "STR")]
    compatible: String,
    /// Secret key to sign with (PKCS#8 PEM); repeat for several signatures
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// The directory whose files go into the data partition that has from = "dir"
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How the machine picks its disk among those matching --by-id and --serial
    #[arg(long, value_enum, value_name = "HOW", default_value_t = SelectArg::Largest)]
    select: SelectArg,
    /// Only disks with a /dev/disk/by-id name matching this glob (* and ?)
    #[arg(long, value_name = "GLOB")]
    by_id: Option<String>,
    /// Only the disk with this serial number
    #[arg(long, value_name = "SERIAL")]
    serial: Option<String>,
    /// Allow the machine to overwrite a disk that holds data when it runs with --wipe
    #[arg(long)]
    allow_wipe: bool,
    /// Write the bundle's image into every slot (all marked good), not only the first
    #[arg(long)]
    write_all_slots: bool,
    /// Where to write provision.json and esp.img (created if missing)
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// Arguments of `provision-info`.
#[derive(Debug, clap::Args)]
pub struct ProvisionInfoArgs {
    /// Trusted public keys: one PEM public key file, or a directory whose *.pub files are
    /// all trusted
    #[arg(long, value_name = "PATH")]
    keyring: PathBuf,
    /// How many valid signatures by distinct trusted keys the description needs
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(flipslot_format::format::MAX_SIGNATURES)))]
    min_signatures: u32,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// The description (provision.json)
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Runs `provision`.
pub fn run(args: &ProvisionArgs) -> anyhow::Result<()> {
    let mut signing_keys = Vec::new();
    for k in &args.keys {
        signing_keys.push(keys::load_secret_key(k)?);
    }
    let origin = args.layout.display().to_string();
    let text = std::fs::read_to_string(&args.layout)
        .with_context(|| format!("cannot read layout {origin}"))?;
    let layout = Layout::parse_for(&text, &origin, LayoutKind::Provisioning)?;
    let target = TargetRule {
        select: args.select.into(),
        by_id: args.by_id.clone(),
        serial: args.serial.clone(),
        allow_wipe: args.allow_wipe,
    };
    let mut opts = PackOptions::new(&args.out_dir, &args.compatible, target);
    opts.write_all_slots = args.write_all_slots;
    opts.data_dir = args.data_dir.clone();
    opts.timestamp = crate::mkfs::source_date_epoch()?.unwrap_or(0);
    let summary = build_provision(&layout, &signing_keys, &opts).with_context(|| {
        format!(
            "cannot build the provisioning set in {}",
            args.out_dir.display()
        )
    })?;
    if args.json {
        let mut v = to_json(&summary.description, &summary.esp_image, &summary.provision);
        if let Some(map) = v.as_object_mut() {
            map.insert("timestamp".into(), serde_json::json!(summary.timestamp));
            map.insert(
                "reproducible".into(),
                serde_json::json!(summary.reproducible),
            );
            map.insert("signed_by".into(), serde_json::json!(summary.signed_by));
        }
        super::print_json(v);
    } else {
        print!("{}", built_text(&summary));
    }
    Ok(())
}

/// Runs `provision-info`.
pub fn run_info(args: &ProvisionInfoArgs) -> anyhow::Result<()> {
    let result = inspect(args);
    match (&result, args.json) {
        (Ok((p, check)), true) => {
            let esp = esp_path(&args.file, p);
            let mut v = to_json(&args.file, &esp, p);
            if let Some(map) = v.as_object_mut() {
                map.insert("valid".into(), serde_json::json!(true));
                let c = match check {
                    EspImageCheck::Missing => "missing",
                    _ => "ok",
                };
                map.insert("esp_image_check".into(), serde_json::json!(c));
            }
            super::print_json(v);
        }
        (Ok((p, check)), false) => {
            print!("{}", description_text(&args.file, p));
            let esp = esp_path(&args.file, p);
            let line = match check {
                EspImageCheck::Missing => format!("{} not found (not checked)", esp.display()),
                _ => format!("{} matches", esp.display()),
            };
            println!("{:<16} {line}", "esp image:");
            println!("{:<16} ok", "verified:");
        }
        (Err(e), true) => super::print_json(serde_json::json!({
            "file": args.file.display().to_string(),
            "valid": false,
            "error": flipslot_cli_support::error_chain(e),
        })),
        (Err(_), false) => {}
    }
    result.map(|_| ())
}

fn inspect(args: &ProvisionInfoArgs) -> anyhow::Result<(Provision, EspImageCheck)> {
    let path = &args.file;
    let keyring = Keyring::load(&args.keyring)?;
    let policy = VerifyPolicy {
        min_signatures: args.min_signatures,
    };
    let bytes = read_bounded(path)?;
    let p = provision::verify_provision(&bytes, &keyring, &policy)
        .with_context(|| path.display().to_string())?;
    let check = check_esp_image(path, &p)?;
    if let EspImageCheck::Differs(why) = &check {
        anyhow::bail!("{}: the ESP image does not match: {why}", path.display());
    }
    Ok((p, check))
}

/// Reads a description, at most [`MAX_PROVISION_LEN`] bytes of it (one more shows that it
/// is too large, which the verification then reports).
fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PROVISION_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| path.display().to_string())?;
    Ok(bytes)
}

/// The ESP image's path next to the description at `file`.
fn esp_path(file: &Path, p: &Provision) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).join(&p.esp.file)
}

fn to_json(file: &Path, esp_image: &Path, p: &Provision) -> serde_json::Value {
    serde_json::json!({
        "file": file.display().to_string(),
        "esp_image": esp_image.display().to_string(),
        "provision": p,
    })
}

/// The target rule for people: `the largest disk matching by-id "nvme-*", wipe allowed`.
fn target_text(t: &TargetRule) -> String {
    let mut s = match t.select {
        DiskSelect::Smallest => "the smallest disk".to_string(),
        DiskSelect::Largest => "the largest disk".to_string(),
        DiskSelect::Only => "the only disk".to_string(),
    };
    let mut filters = Vec::new();
    if let Some(g) = &t.by_id {
        filters.push(format!("by-id {g:?}"));
    }
    if let Some(serial) = &t.serial {
        filters.push(format!("serial {serial:?}"));
    }
    if !filters.is_empty() {
        s.push_str(" matching ");
        s.push_str(&filters.join(" and "));
    }
    s.push_str(if t.allow_wipe {
        "; a disk holding data may be wiped (with --wipe)"
    } else {
        "; a disk holding data is never written"
    });
    s
}

/// What the machine puts into each partition, for people.
fn contents_text(p: &Provision, spec: &provision::PartitionSpec) -> String {
    match spec.role {
        PartitionRole::Esp => format!("{} (GRUB, grub.cfg, grubenv)", p.esp.file),
        PartitionRole::Slot => {
            let first = p.slots().next().map(|s| &s.label) == Some(&spec.label);
            let class = spec.class.as_deref().unwrap_or_default();
            let bootname = spec.bootname.as_deref().unwrap_or_default();
            if first {
                format!("{class} image, slot {bootname}, boots first")
            } else if p.write_all_slots {
                format!("{class} image, slot {bootname}, fallback")
            } else {
                format!("empty, slot {bootname}")
            }
        }
        PartitionRole::Data => {
            let mut s = format!("ext4, {} file(s)", p.data_files.len());
            if let Some(f) = &p.status_file {
                s.push_str(&format!(", status file {f}"));
            }
            s
        }
    }
}

/// The description for people: the fields, the partitions, the data files.
fn description_text(file: &Path, p: &Provision) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<16} {v}\n"));
    line("file:", file.display().to_string());
    line("compatible:", p.compatible.clone());
    line("target:", target_text(&p.target));
    line("bootloader:", "grub-efi".into());
    line(
        "esp:",
        format!(
            "{}, {} bytes, sha256 {}",
            p.esp.file, p.esp.size, p.esp.sha256
        ),
    );
    line(
        "slots written:",
        if p.write_all_slots {
            "all".into()
        } else {
            "the first".into()
        },
    );
    s.push_str("  #  label             role  size         type guid                             contents\n");
    for (i, spec) in p.partitions.iter().enumerate() {
        s.push_str(&format!(
            "  {:<2} {:<17} {:<5} {:<12} {:<37} {}\n",
            i + 1,
            spec.label,
            spec.role.as_str(),
            spec.size.map_or("rest".into(), format_bytes),
            spec.type_guid(),
            contents_text(p, spec)
        ));
    }
    for f in &p.data_files {
        s.push_str(&format!(
            "  data file {:04o} {:>8} {}\n",
            f.mode,
            f.contents.len(),
            f.path
        ));
    }
    s
}

fn built_text(summary: &PackSummary) -> String {
    let mut s = description_text(&summary.description, &summary.provision);
    s.push_str(&format!(
        "{:<16} {}{}\n",
        "esp image:",
        summary.esp_image.display(),
        if summary.reproducible {
            ""
        } else {
            " (not reproducible: mkfs.vfat lacks --invariant)"
        }
    ));
    s.push_str(&format!(
        "{:<16} {}\n",
        "signed by:",
        summary.signed_by.join(", ")
    ));
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ProvisionArgs,
    }

    fn parse(argv: &[&str]) -> Result<ProvisionArgs, clap::Error> {
        let m = Wrapper::command().try_get_matches_from(argv)?;
        Ok(Wrapper::from_arg_matches(&m)?.args)
    }

    #[test]
    fn options_and_defaults() {
        Wrapper::command().debug_assert();
        let base = [
            "x",
            "--layout",
            "l.toml",
            "--compatible",
            "box",
            "--key",
            "k.key",
            "--out-dir",
            "out",
        ];
        let a = parse(&base).unwrap();
        assert_eq!(a.select, SelectArg::Largest);
        assert!(!a.allow_wipe && !a.write_all_slots && a.by_id.is_none());
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert_eq!(with(&["--select", "only"]).unwrap().select, SelectArg::Only);
        assert!(with(&["--select", "biggest"]).is_err());
        assert!(parse(&base[..7]).is_err(), "--out-dir is required");
        assert!(parse(&["x", "--layout", "l", "--compatible", "c", "--out-dir", "o"]).is_err());
    }

    #[test]
    fn target_rules_read_well() {
        let mut t = TargetRule {
            select: DiskSelect::Largest,
            by_id: Some("nvme-*".into()),
            serial: Some("S1".into()),
            allow_wipe: false,
        };
        assert_eq!(
            target_text(&t),
            "the largest disk matching by-id \"nvme-*\" and serial \"S1\"; a disk holding data \
             is never written"
        );
        t.by_id = None;
        t.serial = None;
        t.allow_wipe = true;
        t.select = DiskSelect::Only;
        assert_eq!(
            target_text(&t),
            "the only disk; a disk holding data may be wiped (with --wipe)"
        );
    }
}
