//! Man pages with `clap_mangen`: one for a command and one for each visible subcommand,
//! named `<page>-<subcommand>.1`, and their gzip form.

use clap::Command;
use clap_mangen::Man;
use std::io::Write as _;

/// The manual the pages say they belong to (the centre of the page footer).
const MANUAL: &str = "flipslot";

/// One man page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Its file name, `flipslot-install.1`.
    pub name: String,
    /// The roff source.
    pub roff: Vec<u8>,
}

/// What the footer of every page shows.
#[derive(Debug, Clone)]
pub struct Footer {
    /// The date of the release (`2026-12-07`); a fixed date keeps rebuilds identical.
    pub date: String,
    /// The package and version (`flipslot 0.1.0`).
    pub source: String,
}

/// The pages of `cmd`, filed under `page_name` (the command's own page is `page_name.1`, a
/// subcommand's `page_name-sub.1`, recursively). clap's `help` subcommand gets no page:
/// `--help` is on every page.
pub fn pages(cmd: Command, page_name: &str, footer: &Footer) -> std::io::Result<Vec<Page>> {
    let mut cmd = without_help_subcommand(cmd.display_name(page_name.to_owned()));
    cmd.build();
    let mut out = Vec::new();
    collect(&cmd, footer, &mut out)?;
    Ok(out)
}

fn collect(cmd: &Command, footer: &Footer, out: &mut Vec<Page>) -> std::io::Result<()> {
    let man = Man::new(cmd.clone())
        .section(crate::SECTION)
        .date(footer.date.clone())
        .source(footer.source.clone())
        .manual(MANUAL);
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    out.push(Page {
        name: man.get_filename(),
        roff: left_aligned(roff),
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, footer, out)?;
    }
    Ok(())
}

/// `roff` with `.ad l` after the `.TH` line: text left-aligned instead of justified. The
/// long descriptions hold words that cannot be spread or broken (JSON examples), on which
/// justifying groff warns "cannot adjust line" (lintian's `groff-message`).
fn left_aligned(roff: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&roff);
    let mut out = String::with_capacity(text.len() + 6);
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with(".TH ") {
            out.push_str(".ad l\n");
        }
    }
    out.into_bytes()
}

fn without_help_subcommand(cmd: Command) -> Command {
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut cmd = cmd.disable_help_subcommand(true);
    for name in subs {
        cmd = cmd.mut_subcommand(name, without_help_subcommand);
    }
    cmd
}

/// `bytes` gzipped at the best level, with no file name and time stamp 0 (what `gzip -9n`
/// makes), so the same page always compresses to the same bytes.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs;
    use std::io::Read as _;

    fn footer() -> Footer {
        Footer {
            date: "2026-12-07".into(),
            source: "flipslot 0.1.0".into(),
        }
    }

    fn page_text(page: &Page) -> String {
        String::from_utf8(page.roff.clone()).unwrap()
    }

    #[test]
    fn a_page_per_subcommand_and_the_top_page_names_them() {
        for p in programs() {
            let subs: Vec<String> = p
                .command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_owned())
                .collect();
            assert!(!subs.is_empty(), "{}", p.page_name);
            let pages = pages(p.command, p.page_name, &footer()).unwrap();
            let top = &pages[0];
            assert_eq!(top.name, format!("{}.1", p.page_name));
            let top_text = page_text(top);
            for sub in &subs {
                let name = format!("{}-{sub}", p.page_name);
                assert!(
                    pages.iter().any(|pg| pg.name == format!("{name}.1")),
                    "no page for {name}"
                );
                // Roff escapes the hyphens of the cross-reference.
                let reference = format!("{}(1)", name.replace('-', "\\-"));
                assert!(
                    top_text.contains(&reference),
                    "{} lacks {reference}",
                    top.name
                );
            }
            assert!(pages.iter().all(|pg| !pg.name.ends_with("-help.1")));
            assert_eq!(pages.len(), subs.len() + 1, "{}", p.page_name);
        }
    }

    #[test]
    fn the_drop_in_is_filed_as_flipslot_rauc_and_shows_rauc_usage() {
        let p = programs()
            .into_iter()
            .find(|p| p.page_name == "flipslot-rauc")
            .unwrap();
        let pages = pages(p.command, p.page_name, &footer()).unwrap();
        let install = pages
            .iter()
            .find(|pg| pg.name == "flipslot-rauc-install.1")
            .unwrap();
        let text = page_text(install);
        assert!(
            text.contains(
                ".TH flipslot-rauc-install 1 2026-12-07 \"flipslot 0.1.0\" flipslot\n.ad l\n"
            ),
            "{text}"
        );
        assert!(text.contains("\\fBrauc install\\fR"), "{text}");
    }

    #[test]
    fn gzip_round_trips_without_a_time_stamp() {
        let z = gzip(b".TH X 1\n").unwrap();
        assert_eq!(&z[4..8], &[0, 0, 0, 0], "mtime");
        assert_eq!(z[3] & 0x08, 0, "no file name");
        let mut back = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, ".TH X 1\n");
    }
}
