//! Which format a bundle is in (flipslot `.fsb` or RAUC `.raucb`): the one place that
//! tells them apart, for the agent and `flipslot-image` alike.

use super::looks_like_rauc;

/// A bundle's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// A flipslot bundle (`.fsb`), read by `flipslot_format`.
    Flipslot,
    /// A RAUC bundle (`.raucb`), read by [`super::RaucBundle`].
    Rauc,
}

impl BundleKind {
    /// The format of a bundle from its first bytes (`head`, up to 8; fewer when the file
    /// is shorter) and its name: RAUC when it starts with a squashfs, or when it is named
    /// `*.raucb` and does not start with flipslot's magic (a crypt bundle, or damage that
    /// the RAUC reader then names); flipslot otherwise.
    pub fn detect(head: &[u8], name: &str) -> BundleKind {
        let rauc = looks_like_rauc(head)
            || (!head.starts_with(&flipslot_format::format::MAGIC) && name.ends_with(".raucb"));
        if rauc {
            BundleKind::Rauc
        } else {
            BundleKind::Flipslot
        }
    }

    /// The format of a bundle known only by name, e.g. a URL read as a stream that is
    /// opened once: RAUC when the path (before any `?` or `#`) ends in `.raucb`.
    pub fn from_name(name: &str) -> BundleKind {
        let path = name.split(['?', '#']).next().unwrap_or(name);
        if path.ends_with(".raucb") {
            BundleKind::Rauc
        } else {
            BundleKind::Flipslot
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_goes_by_the_magic_first() {
        assert_eq!(
            BundleKind::detect(b"hsqs\0\0\0\0", "b.fsb"),
            BundleKind::Rauc
        );
        assert_eq!(BundleKind::detect(b"hsqs\0\0\0\0", "b"), BundleKind::Rauc);
        assert_eq!(
            BundleKind::detect(b"FLIPSLOT", "b.raucb"),
            BundleKind::Flipslot
        );
        assert_eq!(
            BundleKind::detect(b"FLIPSLOT", "b.fsb"),
            BundleKind::Flipslot
        );
    }

    #[test]
    fn detect_falls_back_to_the_name() {
        // A crypt bundle or a damaged one: not squashfs, not flipslot, named .raucb.
        assert_eq!(
            BundleKind::detect(b"\0\0\0\0\0\0\0\0", "/x/b.raucb"),
            BundleKind::Rauc
        );
        assert_eq!(BundleKind::detect(b"", "b.raucb"), BundleKind::Rauc);
        assert_eq!(BundleKind::detect(b"hs", "b.raucb"), BundleKind::Rauc);
        assert_eq!(
            BundleKind::detect(b"\0\0\0\0\0\0\0\0", "b.fsb"),
            BundleKind::Flipslot
        );
        assert_eq!(BundleKind::detect(b"", "b"), BundleKind::Flipslot);
    }

    #[test]
    fn from_name_ignores_query_and_fragment() {
        assert_eq!(BundleKind::from_name("https://h/b.raucb"), BundleKind::Rauc);
        assert_eq!(
            BundleKind::from_name("https://h/b.raucb?token=1#x"),
            BundleKind::Rauc
        );
        assert_eq!(
            BundleKind::from_name("https://h/b.raucb#frag"),
            BundleKind::Rauc
        );
        assert_eq!(
            BundleKind::from_name("https://h/b.fsb?x=.raucb"),
            BundleKind::Flipslot
        );
        assert_eq!(BundleKind::from_name("https://h/b"), BundleKind::Flipslot);
    }
}
