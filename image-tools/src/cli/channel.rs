//! `flipslot-image channel` and `channel-verify`: write a signed update channel file for a
//! bundle, and check one as a device would.

use anyhow::Context as _;
use flipslot_format::channel::{
    self, Channel, ChannelBundle, ChannelError, CHANNEL_FORMAT, MAX_CHANNEL_LEN,
};
use flipslot_format::digest::Sha256Digest;
use flipslot_format::keys::{self, Keyring};
use flipslot_format::reader::{Bundle, VerifyPolicy};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The long help of `channel`.
pub(super) const LONG_ABOUT: &str =
    "Write a signed update channel file: a small JSON document, published next to the \
    bundles on any web server, that names the current release of a channel (stable, beta, \
    ...), the URLs of its bundle, the bundle's manifest SHA-256 and size, a serial number \
    and an expiry time. Devices follow a channel only if it is signed by enough keys of \
    their keyring, has not expired, its serial is not lower than the last they accepted, and \
    its compatible string is theirs.\n\n\
    With --bundle, the manifest SHA-256, the size, the compatible string and the version are \
    read from the bundle (its signatures are not checked here; devices check them). Without \
    it, give --manifest-sha256, --size, --compatible and --version.\n\n\
    issued_at is SOURCE_DATE_EPOCH when set, otherwise now; the serial defaults to issued_at, \
    so channels signed later get higher serials. Re-sign the channel before it expires, or \
    devices stop updating from it. The file is written through a temporary file and renamed.\n\n\
    With --json, prints one JSON object: {\"v\":1, \"file\":PATH, \"name\":S, \"compatible\":S, \
    \"version\":S, \"serial\":N, \"issued_at\":N, \"expires_at\":N, \"expires_at_rfc3339\":S, \
    \"rollout_percent\":N, \"bundle\":{\"urls\":[S], \"manifest_sha256\":HEX, \"size\":N}, \
    \"signatures\":[HEX]}. See docs/channel-format.md.";

/// The long help of `channel-verify`.
pub(super) const LONG_ABOUT_VERIFY: &str =
    "Verify a channel file as a device does: size, envelope, signatures against the keyring \
    (at least --min-signatures), payload fields, expiry against the clock (or --now), the \
    serial against --last-serial and, when given, the compatible string and the channel \
    name. Prints the verified channel, or the error and exit status 1.\n\n\
    With --json, prints one JSON object: on success {\"v\":1, \"file\":PATH, \"valid\":true, \
    ...the fields of `channel --json` but \"signatures\"}; on failure {\"v\":1, \"file\":PATH, \
    \"valid\":false, \"error\":S} (and the error on standard error).";

/// Arguments of `channel`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    /// Channel name: 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-' (e.g. stable)
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The system kind the release is for (default: the bundle's)
    #[arg(long, value_name = "STR", required_unless_present = "bundle")]
    compatible: Option<String>,
    /// Release version (default: the bundle's)
    #[arg(long, value_name = "SEMVER", required_unless_present = "bundle")]
    version: Option<semver::Version>,
    /// The bundle the channel points at (read for its manifest SHA-256, size, compatible and
    /// version)
    #[arg(long, value_name = "FILE", required_unless_present = "manifest_sha256",
          conflicts_with_all = ["manifest_sha256", "size"])]
    bundle: Option<PathBuf>,
    /// SHA-256 of the bundle's manifest (64 hex digits), instead of --bundle
    #[arg(long, value_name = "HEX", requires = "size", value_parser = parse_digest)]
    manifest_sha256: Option<Sha256Digest>,
    /// Exact bundle size in bytes, with --manifest-sha256
    #[arg(long, value_name = "BYTES", requires = "manifest_sha256")]
    size: Option<u64>,
    /// Absolute http:// or https:// URL of the bundle; repeat for mirrors (at most 8)
    #[arg(long = "url", value_name = "URL", required = true)]
    urls: Vec<String>,
    /// Serial number; must never decrease (default: issued_at)
    #[arg(long, value_name = "N")]
    serial: Option<u64>,
    /// How long the channel is valid: seconds or a number with suffix s, m, h, d or w
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    expires_in: u64,
    /// Percentage of devices that should install the release (staged rollout)
    #[arg(long, value_name = "P", default_value_t = 100,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    rollout_percent: u8,
    /// Secret key to sign with (PKCS#8 PEM); repeat for several signatures
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// Where to write the channel file
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// Arguments of `channel-verify`.
#[derive(Debug, clap::Args)]
pub struct ChannelVerifyArgs {
    /// Trusted public keys: one PEM public key file, or a directory whose *.pub files are
    /// all trusted
    #[arg(long, value_name = "PATH")]
    keyring: PathBuf,
    /// How many valid signatures by distinct trusted keys the channel needs
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(flipslot_format::format::MAX_SIGNATURES)))]
    min_signatures: u32,
    /// The device's compatible string (not checked when absent)
    #[arg(long, value_name = "STR")]
    compatible: Option<String>,
    /// The channel name the device follows (not checked when absent)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The last serial the device accepted; a lower serial is refused
    #[arg(long, value_name = "N")]
    last_serial: Option<u64>,
    /// Check expiry as of this time (seconds since the epoch) instead of now
    #[arg(long, value_name = "SECONDS")]
    now: Option<u64>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// The channel file
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Parses a duration: seconds, or a number with suffix s, m, h, d or w (`7d`, `12h`).
fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 3600, 12h, 7d)"))?;
    let unit: u64 = match suffix {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{s:?} has an unknown duration suffix {suffix:?} (use s, m, h, d or w)"
            ))
        }
    };
    match n.checked_mul(unit) {
        Some(0) => Err(format!("duration {s:?} must be more than zero")),
        Some(v) => Ok(v),
        None => Err(format!("duration {s:?} is too large")),
    }
}

/// Parses 64 hex digits.
fn parse_digest(s: &str) -> Result<Sha256Digest, String> {
    Sha256Digest::from_hex(s).ok_or_else(|| format!("{s:?} is not 64 hex digits (a SHA-256)"))
}

/// What `channel` learns about the bundle: manifest hash, size, compatible, version.
fn bundle_facts(
    args: &ChannelArgs,
) -> anyhow::Result<(Sha256Digest, u64, String, semver::Version)> {
    let Some(path) = &args.bundle else {
        // clap enforces --manifest-sha256 with --size, and --compatible and --version,
        // when --bundle is absent.
        let missing = || {
            anyhow::anyhow!(
                "without --bundle, give --manifest-sha256, --size, --compatible and --version"
            )
        };
        return Ok((
            args.manifest_sha256.ok_or_else(missing)?,
            args.size.ok_or_else(missing)?,
            args.compatible.clone().ok_or_else(missing)?,
            args.version.clone().ok_or_else(missing)?,
        ));
    };
    let bundle = Bundle::open_unverified(super::open_file(path)?)
        .with_context(|| path.display().to_string())?;
    if bundle.signatures().is_empty() {
        eprintln!(
            "warning: {} is not signed: devices will refuse it until it is signed with `flipslot-image sign`",
            path.display()
        );
    }
    let m = bundle.manifest();
    if let Some(c) = &args.compatible {
        anyhow::ensure!(
            *c == m.compatible,
            "--compatible {c:?} differs from the compatible {:?} of {}",
            m.compatible,
            path.display()
        );
    }
    if let Some(v) = &args.version {
        anyhow::ensure!(
            *v == m.version,
            "--version {v} differs from the version {} of {}",
            m.version,
            path.display()
        );
    }
    Ok((
        bundle.manifest_sha256(),
        bundle.total_len(),
        m.compatible.clone(),
        m.version.clone(),
    ))
}

/// Runs `channel`.
pub fn run(args: &ChannelArgs) -> anyhow::Result<()> {
    let mut signing_keys = Vec::new();
    for k in &args.keys {
        signing_keys.push(keys::load_secret_key(k)?);
    }
    let (manifest_sha256, size, compatible, version) = bundle_facts(args)?;
    let issued_at = match crate::mkfs::source_date_epoch()? {
        Some(t) => t,
        None => super::now_secs()?,
    };
    let expires_at = issued_at
        .checked_add(args.expires_in)
        .context("--expires-in is too large")?;
    let ch = Channel {
        format: CHANNEL_FORMAT,
        name: args.name.clone(),
        compatible,
        version,
        serial: args.serial.unwrap_or(issued_at),
        issued_at,
        expires_at,
        bundle: ChannelBundle {
            urls: args.urls.clone(),
            manifest_sha256,
            size,
        },
        rollout_percent: args.rollout_percent,
    };
    let bytes = channel::sign_channel(&ch, &signing_keys)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let now = super::now_secs()?;
    if now >= expires_at {
        eprintln!(
            "warning: {} expired at {} (issued_at {issued_at} from SOURCE_DATE_EPOCH): devices will refuse it",
            args.out.display(),
            flipslot_format::timefmt::rfc3339(expires_at)
        );
    }
    flipslot_os::fs::atomic_write(&args.out, &bytes)?;
    let ids: Vec<String> = signing_keys
        .iter()
        .map(|k| keys::key_id(&k.verifying_key()).to_string())
        .fold(Vec::new(), |mut v, id| {
            if !v.contains(&id) {
                v.push(id);
            }
            v
        });
    if args.json {
        let mut v = to_json(&args.out, &ch);
        if let Some(map) = v.as_object_mut() {
            map.insert("signatures".into(), serde_json::json!(ids));
        }
        super::print_json(v);
    } else {
        print!("{}", to_text(&args.out, &ch));
        println!("{:<16} {}", "signed by:", ids.join(", "));
    }
    Ok(())
}

/// Runs `channel-verify`.
pub fn run_verify(args: &ChannelVerifyArgs) -> anyhow::Result<()> {
    let result = verify(args);
    match (&result, args.json) {
        (Ok(ch), true) => {
            let mut v = to_json(&args.file, ch);
            if let Some(map) = v.as_object_mut() {
                map.insert("valid".into(), serde_json::json!(true));
            }
            super::print_json(v);
        }
        (Ok(ch), false) => {
            print!("{}", to_text(&args.file, ch));
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

fn verify(args: &ChannelVerifyArgs) -> anyhow::Result<Channel> {
    let path = &args.file;
    let keyring = Keyring::load(&args.keyring)?;
    let policy = VerifyPolicy {
        min_signatures: args.min_signatures,
    };
    let now = match args.now {
        Some(t) => t,
        None => super::now_secs()?,
    };
    let bytes = read_bounded(path)?;
    let checked = match &args.compatible {
        Some(c) => channel::verify_channel(&bytes, &keyring, &policy, now, args.last_serial, c),
        None => channel::verify_signed(&bytes, &keyring, &policy)
            .and_then(|ch| ch.check_fresh(now, args.last_serial).map(|()| ch)),
    };
    let ch = checked
        .and_then(|ch| match &args.name {
            Some(n) => ch.check_name(n).map(|()| ch),
            None => Ok(ch),
        })
        .with_context(|| path.display().to_string())?;
    Ok(ch)
}

/// Reads a channel file, at most [`MAX_CHANNEL_LEN`] bytes of it.
pub(super) fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_CHANNEL_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| path.display().to_string())?;
    if bytes.len() > MAX_CHANNEL_LEN {
        let len = std::fs::metadata(path)
            .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
            .unwrap_or(bytes.len());
        return Err(ChannelError::TooLarge {
            len,
            max: MAX_CHANNEL_LEN,
        })
        .with_context(|| path.display().to_string());
    }
    Ok(bytes)
}

/// A channel as `channel --json` and `channel-verify --json` show it.
pub(super) fn to_json(path: &Path, ch: &Channel) -> serde_json::Value {
    serde_json::json!({
        "file": path.display().to_string(),
        "name": ch.name,
        "compatible": ch.compatible,
        "version": ch.version.to_string(),
        "serial": ch.serial,
        "issued_at": ch.issued_at,
        "expires_at": ch.expires_at,
        "expires_at_rfc3339": flipslot_format::timefmt::rfc3339(ch.expires_at),
        "rollout_percent": ch.rollout_percent,
        "bundle": {
            "urls": ch.bundle.urls,
            "manifest_sha256": ch.bundle.manifest_sha256.to_hex(),
            "size": ch.bundle.size,
        },
    })
}

fn to_text(path: &Path, ch: &Channel) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<16} {v}\n"));
    line("file:", path.display().to_string());
    line("channel:", ch.name.clone());
    line("compatible:", ch.compatible.clone());
    line("version:", ch.version.to_string());
    line("serial:", ch.serial.to_string());
    line(
        "issued at:",
        flipslot_format::timefmt::rfc3339(ch.issued_at),
    );
    line(
        "expires at:",
        flipslot_format::timefmt::rfc3339(ch.expires_at),
    );
    line("rollout:", format!("{} %", ch.rollout_percent));
    line("manifest sha256:", ch.bundle.manifest_sha256.to_hex());
    line("bundle size:", format!("{} bytes", ch.bundle.size));
    for (i, url) in ch.bundle.urls.iter().enumerate() {
        line(if i == 0 { "urls:" } else { "" }, url.clone());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        for bad in [
            "",
            "d",
            "0",
            "0d",
            "7x",
            "-1",
            "7 d",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn digests_parse() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_digest(&hex).map(|d| d.to_hex()), Ok(hex));
        assert!(parse_digest("abc").is_err());
    }
}
