//! The kernel command line of the provisioning boot and the iPXE script (`boot.ipxe`) that
//! sets it. Pure: text in, text out.
//!
//! ```text
//! #!ipxe
//! kernel <base-url>vmlinuz initrd=initrd.img console=ttyS0 panic=-1 flipslot.provision=<url> flipslot.bundle=<url> [flipslot.disk=<dev>] [flipslot.wipe=1] [flipslot.report=<url>] [extra words]
//! initrd <base-url>initrd.img
//! boot
//! ```
//!
//! `initrd=initrd.img` is there because Debian's iPXE for UEFI hands the initrd to the
//! kernel only when the command line names it. `panic=-1` makes a panic reboot instead of
//! hanging. Every value is one word the kernel, iPXE and the initramfs's `/init` pass on
//! unchanged, so the characters that any of them would split on, unquote or expand are
//! refused: white space, control characters, non-ASCII, quotes (`"`, `'`, `` ` ``), `\` and
//! `$` (iPXE expands `${name}`).

use super::NetbootError;

/// The kernel file's name next to the script.
pub const KERNEL_NAME: &str = "vmlinuz";
/// The initramfs file's name next to the script.
pub const INITRD_NAME: &str = "initrd.img";
/// The script's file name.
pub const SCRIPT_NAME: &str = "boot.ipxe";
/// The words every command line starts with (after `initrd=`).
pub const FIXED_WORDS: [&str; 2] = ["console=ttyS0", "panic=-1"];
/// Longest kernel command line x86 Linux accepts (`COMMAND_LINE_SIZE` less the NUL).
pub const MAX_CMDLINE_LEN: usize = 2047;

/// Parameter names the command line gets from the options, refused among the extra words.
const RESERVED: [&str; 6] = [
    "initrd=",
    "flipslot.provision=",
    "flipslot.bundle=",
    "flipslot.disk=",
    "flipslot.wipe=",
    "flipslot.report=",
];

/// What the provisioning boot is told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// Where the PXE server serves `vmlinuz` and `initrd.img` (`http`, `https` or `tftp`);
    /// a missing final `/` is added.
    pub base_url: String,
    /// The signed provisioning description (`flipslot.provision=`).
    pub provision_url: String,
    /// The bundle (`flipslot.bundle=`).
    pub bundle_url: String,
    /// The target disk (`flipslot.disk=`), else the description's rule picks it.
    pub disk: Option<String>,
    /// Whether the disk may be wiped (`flipslot.wipe=1`; the description must allow it).
    pub wipe: bool,
    /// Where the agent posts its step reports (`flipslot.report=`).
    pub report_url: Option<String>,
    /// More kernel command line words, appended last (`flipslot.noreboot=1` powers the
    /// machine off after a successful provision instead of rebooting).
    pub extra: Vec<String>,
}

impl BootParams {
    /// The base URL with its final `/`, checked.
    pub fn base(&self) -> Result<String, NetbootError> {
        check_url("--base-url", &self.base_url, &["http", "https", "tftp"])?;
        let mut base = self.base_url.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(base)
    }

    /// The kernel command line, every value checked.
    pub fn kernel_cmdline(&self) -> Result<String, NetbootError> {
        const HTTP: &[&str] = &["http", "https"];
        check_url("--provision-url", &self.provision_url, HTTP)?;
        check_url("--bundle-url", &self.bundle_url, HTTP)?;
        let mut words = vec![format!("initrd={INITRD_NAME}")];
        words.extend(FIXED_WORDS.iter().map(|w| w.to_string()));
        words.push(format!("flipslot.provision={}", self.provision_url));
        words.push(format!("flipslot.bundle={}", self.bundle_url));
        if let Some(disk) = &self.disk {
            check_word("--disk", disk)?;
            if !disk.starts_with('/') {
                return Err(bad("--disk", disk, "is not an absolute device path"));
            }
            words.push(format!("flipslot.disk={disk}"));
        }
        if self.wipe {
            words.push("flipslot.wipe=1".into());
        }
        if let Some(report) = &self.report_url {
            check_url("--report-url", report, HTTP)?;
            words.push(format!("flipslot.report={report}"));
        }
        for word in &self.extra {
            check_word("--cmdline", word)?;
            if let Some(name) = RESERVED.iter().find(|r| word.starts_with(*r)) {
                return Err(bad(
                    "--cmdline",
                    word,
                    &format!("sets {name} which flipslot-image sets from its options"),
                ));
            }
            words.push(word.clone());
        }
        let line = words.join(" ");
        if line.len() > MAX_CMDLINE_LEN {
            return Err(bad(
                "the kernel command line",
                &line,
                &format!("is longer than Linux's {MAX_CMDLINE_LEN} bytes"),
            ));
        }
        Ok(line)
    }

    /// The text of `boot.ipxe`.
    pub fn ipxe_script(&self) -> Result<String, NetbootError> {
        let base = self.base()?;
        let cmdline = self.kernel_cmdline()?;
        Ok(format!(
            "#!ipxe\nkernel {base}{KERNEL_NAME} {cmdline}\ninitrd {base}{INITRD_NAME}\nboot\n"
        ))
    }
}

fn bad(what: &str, value: &str, reason: &str) -> NetbootError {
    NetbootError::BootParam {
        what: what.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that `value` is one word every stage passes on unchanged (see the module doc).
fn check_word(what: &str, value: &str) -> Result<(), NetbootError> {
    if value.is_empty() {
        return Err(bad(what, value, "is empty"));
    }
    for c in value.chars() {
        let reason = match c {
            ' ' | '\t' | '\n' | '\r' => "contains white space",
            c if c.is_control() => "contains a control character",
            c if !c.is_ascii() => "contains a non-ASCII character",
            '"' | '\'' | '`' => "contains a quote",
            '\\' => "contains a backslash",
            '$' => "contains $ (iPXE expands ${...})",
            _ => continue,
        };
        return Err(bad(what, value, reason));
    }
    Ok(())
}

/// Checks a URL: one word ([`check_word`]) of one of `schemes` with a host.
fn check_url(what: &str, value: &str, schemes: &[&str]) -> Result<(), NetbootError> {
    check_word(what, value)?;
    let scheme_ok = value.split_once("://").is_some_and(|(scheme, rest)| {
        schemes.iter().any(|s| scheme.eq_ignore_ascii_case(s))
            && !rest.is_empty()
            && !rest.starts_with('/')
    });
    if !scheme_ok {
        let list: Vec<String> = schemes.iter().map(|s| format!("{s}://HOST/...")).collect();
        return Err(bad(
            what,
            value,
            &format!("is not a URL of the form {}", list.join(" or ")),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    fn params() -> BootParams {
        BootParams {
            base_url: "http://10.0.2.2:8080/pxe".into(),
            provision_url: "http://10.0.2.2:8080/provision.json".into(),
            bundle_url: "http://10.0.2.2:8080/b.fsb?x=1&y=2".into(),
            ..BootParams::default()
        }
    }

    #[test]
    fn script_of_the_minimal_params() {
        assert_eq!(
            params().ipxe_script().unwrap(),
            "#!ipxe\n\
             kernel http://10.0.2.2:8080/pxe/vmlinuz initrd=initrd.img console=ttyS0 panic=-1 \
             flipslot.provision=http://10.0.2.2:8080/provision.json \
             flipslot.bundle=http://10.0.2.2:8080/b.fsb?x=1&y=2\n\
             initrd http://10.0.2.2:8080/pxe/initrd.img\n\
             boot\n"
        );
    }

    #[test]
    fn optional_words_in_order() {
        let p = BootParams {
            disk: Some("/dev/vda".into()),
            wipe: true,
            report_url: Some("https://r.example/report".into()),
            extra: vec!["flipslot.noreboot=1".into(), "quiet".into()],
            ..params()
        };
        let line = p.kernel_cmdline().unwrap();
        assert!(
            line.ends_with(
                " flipslot.disk=/dev/vda flipslot.wipe=1 \
                 flipslot.report=https://r.example/report flipslot.noreboot=1 quiet"
            ),
            "{line}"
        );
    }

    #[test]
    fn refuses_what_a_stage_would_change() {
        for url in [
            "http://h/a b",
            "http://h/a\"b",
            "http://h/a'b",
            "http://h/a\tb",
            "http://h/\u{7f}",
            "http://h/ä",
            "http://h/${x}",
            "http://h/a\\b",
            "ftp://h/x",
            "http:///x",
            "h/x",
            "",
        ] {
            let p = BootParams {
                bundle_url: url.into(),
                ..params()
            };
            let err = p.ipxe_script().unwrap_err().to_string();
            assert!(err.contains("--bundle-url"), "{url:?}: {err}");
        }
        let p = BootParams {
            base_url: "http://h/pxe dir/".into(),
            ..params()
        };
        let err = p.ipxe_script().unwrap_err().to_string();
        assert!(err.contains("white space"), "{err}");
        assert!(BootParams {
            base_url: "tftp://10.0.2.2/".into(),
            ..params()
        }
        .ipxe_script()
        .is_ok());
    }

    #[test]
    fn extra_words_cannot_override_the_options() {
        for word in ["flipslot.bundle=http://x/y", "initrd=other.img", "a\"b"] {
            let p = BootParams {
                extra: vec![word.into()],
                ..params()
            };
            assert!(p.kernel_cmdline().is_err(), "{word}");
        }
        let p = BootParams {
            disk: Some("vda".into()),
            ..params()
        };
        assert!(p.kernel_cmdline().is_err());
        let p = BootParams {
            extra: vec!["x".repeat(MAX_CMDLINE_LEN)],
            ..params()
        };
        assert!(p.kernel_cmdline().unwrap_err().to_string().contains("2047"));
    }
}
