//! Parsing the kernel command line (`/proc/cmdline`) and the booted-slot hints in it.
//!
//! Pure: callers read the file (through [`crate::host::paths::Root`]) and pass the text in.

/// One kernel parameter: `key=value` or a bare flag (`value` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Text before the first `=` (quotes removed).
    pub key: String,
    /// Text after the first `=`, quotes removed; `None` for a bare flag.
    pub value: Option<String>,
}

/// What the command line says about the booted slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootHint {
    /// The bootname: `flipslot.slot=` if present, else `rauc.slot=`.
    pub bootname: Option<String>,
    /// The `root=` argument as written (`PARTUUID=…`, `/dev/sda2`, …).
    pub root: Option<String>,
}

/// Splits a command line into parameters.
///
/// Whitespace separates parameters except inside double quotes; double quote characters
/// themselves are dropped, so both `key="a b"` and `"key=a b"` give `key` = `a b`.
/// Parsing stops at a lone `--`: what follows is for init, not the kernel.
pub fn parse(cmdline: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut token = String::new();
        let mut quoted = false;
        let mut had_quote = false;
        while let Some(c) = chars.next_if(|c| quoted || !c.is_whitespace()) {
            if c == '"' {
                quoted = !quoted;
                had_quote = true;
            } else {
                token.push(c);
            }
        }
        if token == "--" && !had_quote {
            break;
        }
        let param = match token.split_once('=') {
            Some((k, v)) => Param {
                key: k.to_string(),
                value: Some(v.to_string()),
            },
            None => Param {
                key: token,
                value: None,
            },
        };
        params.push(param);
    }
    params
}

/// The value of the last `key=` parameter (the kernel lets a later one override).
pub fn value_of<'a>(params: &'a [Param], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|p| p.key == key)
        .and_then(|p| p.value.as_deref())
}

/// Extracts the booted-slot hints from a command line.
pub fn booted_hint(cmdline: &str) -> BootHint {
    let params = parse(cmdline);
    let non_empty = |key: &str| {
        value_of(&params, key)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    BootHint {
        bootname: non_empty("flipslot.slot").or_else(|| non_empty("rauc.slot")),
        root: non_empty("root"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Param {
        Param {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn parses_flags_values_and_quotes() {
        let params = parse(
            "BOOT_IMAGE=/vmlinuz-6.1 root=PARTUUID=ab-02 ro quiet  dyndbg=\"file x.c +p\" \"foo=a b\"\n",
        );
        assert_eq!(
            params,
            vec![
                p("BOOT_IMAGE", Some("/vmlinuz-6.1")),
                p("root", Some("PARTUUID=ab-02")),
                p("ro", None),
                p("quiet", None),
                p("dyndbg", Some("file x.c +p")),
                p("foo", Some("a b")),
            ]
        );
    }

    #[test]
    fn empty_and_edge_cases() {
        assert!(parse("").is_empty());
        assert!(parse("   \n").is_empty());
        assert_eq!(parse("a= b"), vec![p("a", Some("")), p("b", None)]);
        // An unterminated quote runs to the end of the line.
        assert_eq!(parse("a=\"x y"), vec![p("a", Some("x y"))]);
        // Everything after `--` is for init.
        assert_eq!(parse("ro -- rauc.slot=A"), vec![p("ro", None)]);
    }

    #[test]
    fn hint_prefers_flipslot_over_rauc() {
        let h = booted_hint("root=/dev/sda2 rauc.slot=B flipslot.slot=A");
        assert_eq!(h.bootname.as_deref(), Some("A"));
        assert_eq!(h.root.as_deref(), Some("/dev/sda2"));
        let h = booted_hint("rauc.slot=B root=PARTLABEL=rootfs-b");
        assert_eq!(h.bootname.as_deref(), Some("B"));
        assert_eq!(h.root.as_deref(), Some("PARTLABEL=rootfs-b"));
    }

    #[test]
    fn hint_absent() {
        assert_eq!(booted_hint("quiet splash"), BootHint::default());
        // An empty value is no hint.
        assert_eq!(booted_hint("flipslot.slot= root=").bootname, None);
        assert_eq!(
            booted_hint("flipslot.slot= rauc.slot=A")
                .bootname
                .as_deref(),
            Some("A")
        );
    }

    #[test]
    fn last_root_wins() {
        assert_eq!(
            booted_hint("root=/dev/sda1 root=/dev/sda2").root.as_deref(),
            Some("/dev/sda2")
        );
    }
}
