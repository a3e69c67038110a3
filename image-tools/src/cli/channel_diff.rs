//! `flipslot-image channel-diff OLD NEW`: reads two states of a channel (verified against
//! a keyring, or explicitly unverified) and shows the plan [`crate::channel_diff`] makes
//! of the change, as text or JSON.

use crate::channel_diff::{self, pct, Cohort, Effect, Plan, VersionChange};
use anyhow::Context as _;
use flipslot_format::channel::{self, Channel};
use flipslot_format::keys::Keyring;
use flipslot_format::reader::VerifyPolicy;
use std::path::{Path, PathBuf};

/// The long help of `channel-diff`.
pub(super) const LONG_ABOUT: &str =
    "Show what replacing channel file OLD by NEW will do to the fleet, before NEW is \
    published: a channel file is the desired state of the devices that follow it (which \
    release, for which share of them, until when), and this is the plan of a change of it.\n\n\
    Prints every field that changes; the cohorts (rollout buckets as percentage ranges, \
    docs/channel-format.md) and the release each moves from and to (held back: not offered \
    a release); whether the devices that already installed OLD's release are affected \
    (devices install only newer versions, so lowering the rollout, a downgrade or a \
    rebuilt bundle under the same version leaves them alone); and warnings: a downgrade, a \
    rebuild under the same version, a serial that did not increase, an expiry that is past \
    or earlier than OLD's. For the same release the shares are exact; for two releases, \
    whose buckets are drawn independently, they are expected values.\n\n\
    Refused (exit status 1): channels with different names or compatibles, and a NEW \
    serial lower than OLD's (devices would refuse NEW).\n\n\
    With --keyring both files are verified first (signatures, then the payload rules); \
    without it they are only parsed, and the output says they are unverified.\n\n\
    With --json, prints one JSON object: {\"v\":1, \"old\":{...}, \"new\":{...} (each as \
    `channel-verify --json` shows a channel, with \"verified\"), \"verified\":B, \"name\":S, \
    \"compatible\":S, \"no_changes\":B, \"changes\":[{\"field\",\"old\",\"new\"}], \
    \"version_change\":\"same\"|\"upgrade\"|\"downgrade\", \"bundle_changed\":B, \
    \"cohorts\":[{\"old_buckets\":{\"from\",\"to\"}, \"new_buckets\":{...}, \
    \"share_percent\":F, \"exact\":B, \"from\":S|null, \"to\":S|null, \"effect\":S}], \
    \"old_release_devices\":{\"share_percent\", \"moving_percent\", \"affected\", \"text\"}, \
    \"warnings\":[{\"kind\":S, \"message\":S, ...}], \"summary\":S}; on an error \
    {\"v\":1, \"error\":S} (and the error on standard error).";

/// Arguments of `channel-diff`.
#[derive(Debug, clap::Args)]
pub struct ChannelDiffArgs {
    /// Trusted public keys to verify both files with: one PEM public key file, or a
    /// directory whose *.pub files are all trusted (without it the files are read
    /// unverified, and the output says so)
    #[arg(long, value_name = "PATH")]
    keyring: Option<PathBuf>,
    /// How many valid signatures by distinct trusted keys each file needs
    #[arg(long, value_name = "N", default_value_t = 1, requires = "keyring",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(flipslot_format::format::MAX_SIGNATURES)))]
    min_signatures: u32,
    /// Judge expiry as of this time (seconds since the epoch) instead of now
    #[arg(long, value_name = "SECONDS")]
    now: Option<u64>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// The channel file devices follow now
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The channel file to publish instead
    #[arg(value_name = "NEW")]
    new: PathBuf,
}

/// Runs `channel-diff`.
pub fn run(args: &ChannelDiffArgs) -> anyhow::Result<()> {
    let result = diff(args);
    match (&result, args.json) {
        (Ok((old, new, plan)), true) => super::print_json(to_json(args, old, new, plan)),
        (Ok((_, _, plan)), false) => print!("{}", to_text(args, plan)),
        (Err(e), true) => super::print_json(serde_json::json!({
            "error": flipslot_cli_support::error_chain(e),
        })),
        (Err(_), false) => {}
    }
    result.map(|_| ())
}

fn diff(args: &ChannelDiffArgs) -> anyhow::Result<(Channel, Channel, Plan)> {
    let keyring = args.keyring.as_deref().map(Keyring::load).transpose()?;
    let policy = VerifyPolicy {
        min_signatures: args.min_signatures,
    };
    let read = |path: &Path| -> anyhow::Result<Channel> {
        let bytes = super::channel::read_bounded(path)?;
        let ch = match &keyring {
            Some(k) => channel::verify_signed(&bytes, k, &policy),
            None => channel::read_unverified(&bytes),
        };
        ch.with_context(|| path.display().to_string())
    };
    let old = read(&args.old)?;
    let new = read(&args.new)?;
    let now = match args.now {
        Some(t) => t,
        None => super::now_secs()?,
    };
    let plan = channel_diff::plan(&old, &new, now).with_context(|| {
        format!(
            "cannot plan {} -> {}",
            args.old.display(),
            args.new.display()
        )
    })?;
    Ok((old, new, plan))
}

/// The line that says whether the files were verified.
fn verified_line(args: &ChannelDiffArgs) -> String {
    match &args.keyring {
        Some(k) => format!(
            "both verified against {} ({} signature(s) by trusted keys each)",
            k.display(),
            args.min_signatures
        ),
        None => "UNVERIFIED (no --keyring): this is what the files say, not that a trusted \
                 key signed them"
            .into(),
    }
}

/// The mark of a cohort: `+` offered, `~` upgraded or rebuilt, `-` withdrawn, `!` a
/// downgrade devices ignore, blank unchanged.
fn mark(e: Effect) -> char {
    match e {
        Effect::Offered => '+',
        Effect::Upgraded | Effect::Rebuilt => '~',
        Effect::Withdrawn => '-',
        Effect::DowngradeIgnored => '!',
        Effect::Unchanged => ' ',
    }
}

fn cohort_note(c: &Cohort) -> String {
    let from = c.from.as_deref().unwrap_or("held back");
    let to = c.to.as_deref().unwrap_or("held back");
    match c.effect {
        Effect::Unchanged => format!("{from}, unchanged"),
        Effect::Offered => format!("held back -> {to}: offered {to}"),
        Effect::Upgraded => format!("{from} -> {to}: upgraded"),
        Effect::Withdrawn => {
            format!("{from} -> held back: withdrawn, devices that installed {from} keep it")
        }
        Effect::DowngradeIgnored => format!(
            "{from} -> {to}: downgrade, devices that installed {from} keep it, the others \
             take {to} if it is newer than theirs"
        ),
        Effect::Rebuilt => {
            format!("{from} -> {to} (another bundle): devices that installed {from} keep theirs")
        }
    }
}

/// One line: what the plan does, by effect.
pub fn summary(plan: &Plan) -> String {
    if plan.no_changes {
        return "No changes: OLD and NEW say the same.".into();
    }
    let to = plan
        .cohorts
        .iter()
        .find_map(|c| c.to.clone())
        .unwrap_or_default();
    let from = plan
        .cohorts
        .iter()
        .find_map(|c| c.from.clone())
        .unwrap_or_default();
    let mut parts = Vec::new();
    let mut part = |effect: Effect, what: String| {
        let share = plan.share(effect);
        if share > 0.0 {
            parts.push(format!("{} % {what}", pct(share)));
        }
    };
    part(Effect::Upgraded, format!("move from {from} to {to}"));
    part(Effect::Offered, format!("newly offered {to}"));
    part(Effect::Rebuilt, format!("offered another bundle of {to}"));
    part(
        Effect::DowngradeIgnored,
        format!("offered the older {to} (ignored where {from} is installed)"),
    );
    part(Effect::Withdrawn, format!("no longer offered {from}"));
    part(Effect::Unchanged, "unchanged".into());
    let exact = plan.cohorts.iter().all(|c| c.exact);
    format!(
        "Plan ({} of the fleet): {}.",
        if exact { "shares" } else { "expected shares" },
        parts.join(", ")
    )
}

fn to_text(args: &ChannelDiffArgs, plan: &Plan) -> String {
    let mut s = format!(
        "channel {} ({}): {} -> {}\nsignatures: {}\n",
        plan.name,
        plan.compatible,
        args.old.display(),
        args.new.display(),
        verified_line(args)
    );
    if plan.no_changes {
        s += &format!("\n{}\n", summary(plan));
        return s;
    }
    s += "\nchanges:\n";
    for c in &plan.changes {
        let note = match (c.field, plan.version_change) {
            ("version", VersionChange::Upgrade) => " (upgrade)",
            ("version", VersionChange::Downgrade) => " (DOWNGRADE)",
            _ => "",
        };
        s += &format!("  ~ {:<23} {} -> {}{note}\n", c.field, c.old, c.new);
    }
    let (o, n) = plan
        .cohorts
        .first()
        .map_or((String::new(), String::new()), |c| {
            (
                c.from.clone().unwrap_or_default(),
                c.to.clone().unwrap_or_default(),
            )
        });
    let exact = plan.cohorts.iter().all(|c| c.exact);
    s += "\ncohorts (share of the fleet, rollout buckets; docs/channel-format.md):\n";
    let one_space = plan.cohorts.iter().all(|c| c.old_buckets == c.new_buckets);
    let buckets: Vec<String> = plan
        .cohorts
        .iter()
        .map(|c| {
            if one_space {
                format!("buckets {}", c.old_buckets)
            } else {
                format!("buckets {} of OLD, {} of NEW", c.old_buckets, c.new_buckets)
            }
        })
        .collect();
    let width = buckets.iter().map(String::len).max().unwrap_or(0);
    for (c, b) in plan.cohorts.iter().zip(&buckets) {
        s += &format!(
            "  {} {:>5} %  {b:<width$}  {}\n",
            mark(c.effect),
            pct(c.share_percent),
            cohort_note(c)
        );
    }
    if !exact {
        s += &format!(
            "  (expected shares: {} and {} draw their buckets independently)\n",
            if o.is_empty() { "OLD" } else { &o },
            if n.is_empty() { "NEW" } else { &n }
        );
    }
    s += &format!(
        "\ndevices that installed OLD's release: {}\n",
        plan.old_release_devices.text
    );
    for w in &plan.warnings {
        s += &format!("\nwarning: {w}");
    }
    if !plan.warnings.is_empty() {
        s.push('\n');
    }
    s += &format!("\n{}\n", summary(plan));
    s
}

fn side_json(path: &Path, ch: &Channel, verified: bool) -> serde_json::Value {
    let mut v = super::channel::to_json(path, ch);
    if let Some(map) = v.as_object_mut() {
        map.insert("verified".into(), verified.into());
    }
    v
}

fn to_json(args: &ChannelDiffArgs, old: &Channel, new: &Channel, plan: &Plan) -> serde_json::Value {
    let verified = args.keyring.is_some();
    let mut v = serde_json::to_value(plan).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("old".into(), side_json(&args.old, old, verified));
        map.insert("new".into(), side_json(&args.new, new, verified));
        map.insert("verified".into(), verified.into());
        let warnings: Vec<serde_json::Value> = plan
            .warnings
            .iter()
            .map(|w| {
                let mut j = serde_json::to_value(w).unwrap_or_default();
                if let Some(m) = j.as_object_mut() {
                    m.insert("message".into(), w.to_string().into());
                }
                j
            })
            .collect();
        map.insert("warnings".into(), warnings.into());
        map.insert("summary".into(), summary(plan).into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use flipslot_format::channel::ChannelBundle;
    use flipslot_format::digest::Sha256Digest;

    fn ch(version: &str, percent: u8, serial: u64) -> Channel {
        Channel {
            format: 1,
            name: "stable".into(),
            compatible: "acme-box".into(),
            version: semver::Version::parse(version).unwrap(),
            serial,
            issued_at: 0,
            expires_at: 2_000_000_000,
            bundle: ChannelBundle {
                urls: vec!["https://u.example/b.fsb".into()],
                manifest_sha256: Sha256Digest::of(version.as_bytes()),
                size: 1 << 20,
            },
            rollout_percent: percent,
        }
    }

    fn args() -> ChannelDiffArgs {
        ChannelDiffArgs {
            keyring: None,
            min_signatures: 1,
            now: Some(1),
            json: false,
            old: "old.json".into(),
            new: "new.json".into(),
        }
    }

    #[test]
    fn text_of_an_upgrade() {
        let p = channel_diff::plan(&ch("1.4.0", 20, 1), &ch("1.5.0", 10, 2), 1).unwrap();
        let t = to_text(&args(), &p);
        assert!(t.contains("signatures: UNVERIFIED"), "{t}");
        assert!(
            t.contains("~ version                 1.4.0 -> 1.5.0 (upgrade)"),
            "{t}"
        );
        assert!(
            t.contains("~     2 %  buckets 0-19 of OLD, 0-9 of NEW"),
            "{t}"
        );
        assert!(t.contains("1.4.0 -> 1.5.0: upgraded"), "{t}");
        assert!(
            t.contains("+     8 %  buckets 20-99 of OLD, 0-9 of NEW"),
            "{t}"
        );
        assert!(t.contains("-    18 %"), "{t}");
        assert!(t.contains("(expected shares: 1.4.0 and 1.5.0"), "{t}");
        assert_eq!(
            summary(&p),
            "Plan (expected shares of the fleet): 2 % move from 1.4.0 to 1.5.0, 8 % newly \
             offered 1.5.0, 18 % no longer offered 1.4.0, 72 % unchanged."
        );
    }

    #[test]
    fn text_of_a_raised_rollout_and_of_no_change() {
        let p = channel_diff::plan(&ch("1.4.0", 10, 1), &ch("1.4.0", 50, 2), 1).unwrap();
        let t = to_text(&args(), &p);
        assert!(t.contains("+    40 %  buckets 10-49"), "{t}");
        assert!(t.contains("held back -> 1.4.0: offered 1.4.0"), "{t}");
        assert!(!t.contains("expected shares"), "{t}");
        assert_eq!(
            summary(&p),
            "Plan (shares of the fleet): 40 % newly offered 1.4.0, 60 % unchanged."
        );
        let same = ch("1.4.0", 10, 1);
        let p = channel_diff::plan(&same, &same, 1).unwrap();
        assert!(to_text(&args(), &p).ends_with("\nNo changes: OLD and NEW say the same.\n"));
    }

    #[test]
    fn json_carries_the_plan_and_messages() {
        let old = ch("1.5.0", 100, 1);
        let new = ch("1.4.0", 100, 2);
        let p = channel_diff::plan(&old, &new, 1).unwrap();
        let v = to_json(&args(), &old, &new, &p);
        assert_eq!(v["verified"], false);
        assert_eq!(v["old"]["verified"], false);
        assert_eq!(v["new"]["version"], "1.4.0");
        assert_eq!(v["version_change"], "downgrade");
        assert_eq!(v["cohorts"][0]["effect"], "downgrade-ignored");
        assert_eq!(v["cohorts"][0]["old_buckets"]["to"], 99);
        assert_eq!(v["warnings"][0]["kind"], "downgrade");
        assert!(v["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("keep it"));
        assert!(v["summary"]
            .as_str()
            .unwrap()
            .starts_with("Plan (shares of the fleet): 100 %"));
    }
}
