#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Debian packages, built by `packaging/build-debs.sh` (the script a release runs:
//! cargo-deb, release binaries, man pages and completions from the clap definitions) and
//! checked the way a distribution would:
//!
//! - `dpkg-deb -f`/`-c`/`-e`/`-x`: the fields (version from the Debian changelog, section,
//!   `Depends` from the binaries' libraries), the binary, the units and every path they
//!   name, the tmpfiles entry, docs, exactly one man page per command and subcommand the
//!   packaged binary's `--help` lists (`rauc`'s too, as `flipslot-rauc*`), the three
//!   completions, and no `/usr/bin/rauc`: the drop-in is an opt-in alternative (debconf
//!   question, default no) set up by the maintainer scripts;
//! - `lintian`: no error and no warning; the overrides the packages ship each carry a
//!   comment saying why;
//! - `man --warnings` renders every page without a warning (what lintian runs), and each
//!   top page names every subcommand's page; `bash -n` (and `zsh -n`, `fish -n` where
//!   installed) parse the completions;
//! - under `CI=true` as root (a fresh CI machine): `apt-get install` of both packages, the
//!   programs and `man -w` run, the rauc alternative is not taken until debconf says so,
//!   then `apt-get purge`. Elsewhere that step says it is skipped: it changes the machine.
//!
//! Prerequisites are Debian packages (`tests/deps.sh`); without them the tests are skipped
//! with a message (a failure under `CI=true`). cargo-deb comes from `tests/tooldeps.sh`,
//! which the build script runs. The packages land in `target/debian/`, unpacked copies in
//! `target/debian/unpacked/`.

use flipslot_e2e::deb::{self, Deb};
use flipslot_e2e::host::{self, Need};
use flipslot_e2e::{cmd, paths};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const NEEDS: &[Need] = &[
    Need {
        what: "dpkg-deb",
        package: "dpkg",
    },
    Need {
        what: "dpkg-shlibdeps",
        package: "dpkg-dev",
    },
    Need {
        what: "strip",
        package: "binutils",
    },
    Need {
        what: "lintian",
        package: "lintian",
    },
    Need {
        what: "man",
        package: "man-db",
    },
    Need {
        what: "groff",
        package: "groff-base",
    },
];

const MAN1: &str = "/usr/share/man/man1/";

struct Packages {
    agent: Deb,
    image: Deb,
}

/// Both packages, built once per test process; `None` when a prerequisite is missing.
fn packages(test: &str) -> Option<&'static Packages> {
    static BUILT: OnceLock<Result<Packages, String>> = OnceLock::new();
    if !host::can_run(test, NEEDS) {
        return None;
    }
    match BUILT.get_or_init(|| build().map_err(|e| format!("{e:#}"))) {
        Ok(p) => Some(p),
        Err(e) => panic!("{test}: building the packages failed: {e}"),
    }
}

fn build() -> anyhow::Result<Packages> {
    let started = Instant::now();
    let script = paths::workspace_root().join("packaging/build-debs.sh");
    let mut c = Command::new(&script);
    // The script runs as from a shell: without the CARGO_* variables `cargo test` sets for
    // this process. Build scripts that read one (ring reads CARGO_MANIFEST_DIR) would
    // otherwise see it change between this run and a build by hand, and cargo would
    // rebuild them and everything above them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_") && name != "CARGO_HOME" {
            c.env_remove(&*name);
        }
    }
    let out = cmd::run_text(c.env("CARGO_TARGET_DIR", paths::target_dir()))?;
    let debs: Vec<PathBuf> = out
        .lines()
        .filter(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .collect();
    eprintln!(
        "packaging/build-debs.sh: {} in {:.1} s",
        debs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    let pick = |prefix: &str| {
        debs.iter()
            .find(|d| file_name(d).starts_with(prefix))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no {prefix}*.deb in the script's output:\n{out}"))
    };
    let unpacked = paths::target_dir().join("debian/unpacked");
    Ok(Packages {
        agent: Deb::open(&pick("flipslot_")?, &unpacked.join("flipslot"))?,
        image: Deb::open(&pick("flipslot-image_")?, &unpacked.join("flipslot-image"))?,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn run(cmd: &mut Command) -> String {
    cmd::run_text(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs `cmd` and returns its output whatever its exit status.
fn output(cmd: &mut Command) -> Output {
    let shown = cmd::describe(cmd);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The subcommands the packaged binary lists, run as `argv0` (a symlink for `rauc`).
fn subcommands(deb: &Deb, binary: &str, argv0: &str) -> Vec<String> {
    let program = deb.file_at(binary);
    let dir = deb.root.parent().unwrap().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(argv0);
    if std::fs::symlink_metadata(&link).is_ok() {
        std::fs::remove_file(&link).unwrap();
    }
    std::os::unix::fs::symlink(&program, &link).unwrap();
    let help = run(Command::new(&link).arg("--help"));
    let subs = deb::help_subcommands(&help);
    assert!(
        !subs.is_empty(),
        "{argv0} --help lists no commands:\n{help}"
    );
    subs
}

/// The man pages a program must have: `page.1.gz` and `page-SUB.1.gz` for each subcommand.
fn expected_pages(page: &str, subs: &[String]) -> BTreeSet<String> {
    std::iter::once(format!("{page}.1.gz"))
        .chain(subs.iter().map(|s| format!("{page}-{s}.1.gz")))
        .collect()
}

fn check_common_fields(deb: &Deb, package: &str) {
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    let changelog = text(&paths::workspace_root().join("packaging/debian/changelog"));
    assert_eq!(deb.field("Package").unwrap(), package);
    assert_eq!(deb.field("Version").unwrap(), version);
    assert_eq!(
        deb::changelog_version(&changelog),
        Some(version.as_str()),
        "packaging/debian/changelog's newest entry is not the package version"
    );
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(deb.field("Architecture").unwrap(), arch.trim());
    assert_eq!(deb.field("Section").unwrap(), "admin");
    assert_eq!(deb.field("Priority").unwrap(), "optional");
    assert!(deb.field("Maintainer").unwrap().contains('@'));
    assert!(
        deb.field("Depends").unwrap().contains("libc6"),
        "Depends lacks libc6 (dpkg-shlibdeps): {}",
        deb.field("Depends").unwrap()
    );
    let description = deb.field("Description").unwrap();
    assert!(
        description.lines().count() > 3,
        "no extended description: {description}"
    );
    let doc = format!("/usr/share/doc/{package}/");
    for f in ["copyright", "changelog.Debian.gz", "README.md"] {
        assert!(
            deb.entry(&format!("{doc}{f}")).is_some(),
            "{doc}{f} missing"
        );
    }
    assert_eq!(
        text(&deb.file_at(&format!("{doc}copyright"))),
        text(&paths::workspace_root().join("packaging/debian/copyright")),
        "{doc}copyright is not packaging/debian/copyright"
    );
    assert_eq!(
        deb.names_in("/usr/share/lintian/overrides/"),
        [package],
        "the lintian overrides"
    );
    let bin = deb
        .entry(&format!("/usr/bin/{package}"))
        .unwrap_or_else(|| panic!("/usr/bin/{package} missing"));
    assert_eq!(bin.mode, "-rwxr-xr-x");
    for (dir, name) in [
        (
            "/usr/share/bash-completion/completions/",
            package.to_string(),
        ),
        ("/usr/share/zsh/vendor-completions/", format!("_{package}")),
        (
            "/usr/share/fish/vendor_completions.d/",
            format!("{package}.fish"),
        ),
    ] {
        assert_eq!(deb.names_in(dir), [name], "{dir}");
    }
}

#[test]
fn agent_package_holds_binary_units_docs_and_man_pages() {
    let Some(p) = packages("agent_package_holds_binary_units_docs_and_man_pages") else {
        return;
    };
    let deb = &p.agent;
    check_common_fields(deb, "flipslot");
    assert!(
        deb.field("Depends").unwrap().contains("debconf"),
        "the rauc question needs debconf"
    );

    // The `rauc` drop-in is not installed by the package: no file or link named rauc.
    for e in &deb.entries {
        let name = e.path.trim_end_matches('/').rsplit('/').next().unwrap();
        assert!(
            name != "rauc" && name != "rauc.1.gz",
            "{} is shipped: the rauc drop-in must stay an opt-in alternative",
            e.path
        );
    }

    // Units, the tmpfiles entry, and every path the units name.
    let units = deb.names_in("/usr/lib/systemd/system/");
    assert_eq!(units, ["flipslot-health.service", "flipslot.service"]);
    assert!(deb.entry("/usr/lib/tmpfiles.d/flipslot.conf").is_some());
    for unit in &units {
        let body = text(&deb.file_at(&format!("/usr/lib/systemd/system/{unit}")));
        let repo = text(&paths::workspace_root().join("systemd").join(unit));
        assert_eq!(body, repo, "{unit} differs from systemd/{unit}");
        let named = deb::unit_paths(&body);
        assert!(!named.is_empty(), "{unit} names no paths");
        for path in named {
            assert!(
                deb.entry(&path).is_some(),
                "{unit} names {path}, not in the package"
            );
        }
    }

    // Man pages: exactly one per command and subcommand, rauc's filed as flipslot-rauc.
    let mut want = expected_pages(
        "flipslot",
        &subcommands(deb, "/usr/bin/flipslot", "flipslot"),
    );
    want.extend(expected_pages(
        "flipslot-rauc",
        &subcommands(deb, "/usr/bin/flipslot", "rauc"),
    ));
    let have: BTreeSet<String> = deb.names_in(MAN1).into_iter().collect();
    assert_eq!(have, want, "man pages in {MAN1}");

    // The maintainer scripts: the rauc alternative only when debconf says yes (default
    // no); units enabled, never started by the package; debconf forgotten on purge.
    let control = |name: &str| text(&deb.control_dir.join(name));
    let templates = control("templates");
    assert!(templates.contains("Template: flipslot/rauc-alternative"));
    assert!(templates.contains("Default: false"), "{templates}");
    assert!(control("config").contains("db_input low flipslot/rauc-alternative"));
    let postinst = control("postinst");
    let gate = postinst
        .find("if [ \"$RET\" = true ]")
        .expect("postinst asks debconf before taking /usr/bin/rauc");
    let install = postinst
        .find("update-alternatives --install /usr/bin/rauc rauc /usr/bin/flipslot")
        .expect("postinst offers /usr/bin/rauc as an alternative");
    assert!(
        gate < install,
        "the alternative is set up only under the debconf gate"
    );
    assert!(
        postinst.contains("deb-systemd-helper"),
        "units enabled:\n{postinst}"
    );
    assert!(
        !postinst.contains("deb-systemd-invoke"),
        "the package must not start or restart units:\n{postinst}"
    );
    assert!(control("prerm").contains("update-alternatives --remove rauc /usr/bin/flipslot"));
    assert!(control("postrm").contains("db_purge"));
    for script in ["config", "postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(deb.control_dir.join(script)));
    }
}

#[test]
fn image_tools_package_holds_binary_docs_and_man_pages() {
    let Some(p) = packages("image_tools_package_holds_binary_docs_and_man_pages") else {
        return;
    };
    let deb = &p.image;
    check_common_fields(deb, "flipslot-image");
    assert!(deb.field("Recommends").unwrap().contains("squashfs-tools"));
    let want = expected_pages(
        "flipslot-image",
        &subcommands(deb, "/usr/bin/flipslot-image", "flipslot-image"),
    );
    let have: BTreeSet<String> = deb.names_in(MAN1).into_iter().collect();
    assert_eq!(have, want, "man pages in {MAN1}");
    assert!(
        deb.entries
            .iter()
            .all(|e| !e.path.starts_with("/usr/lib/systemd")),
        "the image tools ship no units"
    );
    for doc in [
        "bundle-format.md",
        "channel-format.md",
        "oci.md",
        "provisioning.md",
    ] {
        let path = format!("/usr/share/doc/flipslot-image/{doc}");
        assert!(deb.entry(&path).is_some(), "{path} missing");
    }
}

#[test]
fn man_pages_render_without_warnings_and_name_their_subcommands() {
    let Some(p) = packages("man_pages_render_without_warnings_and_name_their_subcommands") else {
        return;
    };
    for deb in [&p.agent, &p.image] {
        let dir = deb.file_at(MAN1);
        for name in deb.names_in(MAN1) {
            let page = dir.join(&name);
            // What lintian runs for its groff-message check.
            let out = output(
                Command::new("man")
                    .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
                    .arg(&page)
                    .env("LC_ALL", "C.UTF-8")
                    .env("MANROFFSEQ", ""),
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.trim().is_empty(),
                "{name}: man reports: {stderr}"
            );
        }
    }
    // A top page names every subcommand's page, as rendered.
    for (deb, page) in [
        (&p.agent, "flipslot"),
        (&p.agent, "flipslot-rauc"),
        (&p.image, "flipslot-image"),
    ] {
        let rendered = run(Command::new("man")
            .args(["-l", "-E", "UTF-8"])
            .arg(deb.file_at(&format!("{MAN1}{page}.1.gz")))
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "120")
            .env("MAN_KEEP_FORMATTING", "")
            .env("MANPAGER", "cat"));
        for other in deb.names_in(MAN1) {
            let Some(sub) = other
                .strip_suffix(".1.gz")
                .and_then(|n| n.strip_prefix(&format!("{page}-")))
            else {
                continue;
            };
            if page == "flipslot" && sub.starts_with("rauc") {
                continue;
            }
            let reference = format!("{page}-{sub}(1)");
            assert!(
                rendered.contains(&reference),
                "{page}(1) does not name {reference}:\n{rendered}"
            );
        }
    }
}

#[test]
fn completions_parse() {
    let Some(p) = packages("completions_parse") else {
        return;
    };
    for (deb, name) in [(&p.agent, "flipslot"), (&p.image, "flipslot-image")] {
        run(Command::new("bash")
            .arg("-n")
            .arg(deb.file_at(&format!("/usr/share/bash-completion/completions/{name}"))));
        for (shell, path) in [
            ("zsh", format!("/usr/share/zsh/vendor-completions/_{name}")),
            (
                "fish",
                format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
            ),
        ] {
            if cmd::exists(shell) {
                run(Command::new(shell).arg("-n").arg(deb.file_at(&path)));
            } else {
                eprintln!("completions_parse: no {shell} here; {path} not parsed");
            }
        }
    }
}

#[test]
fn lintian_finds_no_errors_or_warnings() {
    let Some(p) = packages("lintian_finds_no_errors_or_warnings") else {
        return;
    };
    // The allow-list: every override shipped says why, in a comment above it.
    for deb in [&p.agent, &p.image] {
        for name in deb.names_in("/usr/share/lintian/overrides/") {
            let t = text(&deb.file_at(&format!("/usr/share/lintian/overrides/{name}")));
            let bare = deb::unexplained_overrides(&t);
            assert!(
                bare.is_empty(),
                "{name}: overrides without a comment saying why: {bare:?}"
            );
        }
    }
    let started = Instant::now();
    // Infos are shown (they are advice); errors and warnings fail the test.
    let out = output(
        Command::new("lintian")
            .args([
                "--display-info",
                "--show-overrides",
                "--tag-display-limit",
                "0",
            ])
            .arg(&p.agent.file)
            .arg(&p.image.file),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "lintian ({:.1} s):\n{stdout}{stderr}",
        started.elapsed().as_secs_f64()
    );
    let complaints = deb::lintian_complaints(&stdout);
    assert!(
        complaints.is_empty(),
        "lintian errors or warnings:\n{}",
        complaints.join("\n")
    );
    assert!(
        out.status.success(),
        "lintian failed ({}): {stderr}",
        out.status
    );
}

/// Purges both packages when dropped, so a failed assertion leaves the machine as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = output(&mut apt(&["purge", "-y", "flipslot", "flipslot-image"]));
        if !out.status.success() {
            eprintln!(
                "apt-get purge failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn apt(args: &[&str]) -> Command {
    let mut c = Command::new("apt-get");
    c.args(["-q", "-o", "Dpkg::Use-Pty=0"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// What `update-alternatives` has registered for `rauc` (empty when nothing).
fn rauc_alternatives() -> Vec<String> {
    let out = output(Command::new("update-alternatives").args(["--query", "rauc"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Alternative: "))
        .map(str::to_string)
        .collect()
}

fn set_rauc_alternative(yes: bool) {
    let answer = format!(
        "flipslot flipslot/rauc-alternative boolean {}\n",
        if yes { "true" } else { "false" }
    );
    cmd::run_with_input(
        &mut Command::new("debconf-set-selections"),
        Some(answer.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    run(Command::new("dpkg-reconfigure")
        .args(["-f", "noninteractive", "flipslot"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
}

#[test]
fn installs_on_a_fresh_debian() {
    let test = "installs_on_a_fresh_debian";
    let Some(p) = packages(test) else {
        return;
    };
    let root = run(Command::new("id").arg("-u")).trim() == "0";
    if std::env::var("CI").as_deref() != Ok("true") || !root {
        eprintln!(
            "{test}: skipped installing the packages: that step runs under CI=true as root \
             only (it installs them on this machine, then purges them); the package \
             contents were checked"
        );
        return;
    }
    let rauc = Path::new("/usr/bin/rauc");
    let rauc_before = std::fs::symlink_metadata(rauc).ok();
    let started = Instant::now();
    let _purge = Installed;
    run(apt(&["install", "-y", "--no-install-recommends"])
        .arg(&p.agent.file)
        .arg(&p.image.file));
    eprintln!(
        "{test}: apt-get install took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let help = run(Command::new("/usr/bin/flipslot").arg("--help"));
    assert!(help.contains("Commands:"), "{help}");
    let version = run(Command::new("/usr/bin/flipslot-image").arg("--version"));
    assert_eq!(
        version.trim(),
        format!("flipslot-image {}", env!("CARGO_PKG_VERSION"))
    );
    for page in [
        "flipslot",
        "flipslot-install",
        "flipslot-rauc",
        "flipslot-image",
    ] {
        let path = run(Command::new("man").args(["-w", page]));
        assert_eq!(path.trim(), format!("{MAN1}{page}.1.gz"), "man -w {page}");
    }

    // Not taken by default: /usr/bin/rauc is what it was (RAUC's, or nothing).
    assert!(rauc_alternatives().is_empty(), "{:?}", rauc_alternatives());
    assert_eq!(
        std::fs::symlink_metadata(rauc).ok().map(|m| m.file_type()),
        rauc_before.as_ref().map(|m| m.file_type())
    );

    // Asked for through debconf: offered as an alternative; RAUC's own binary wins.
    set_rauc_alternative(true);
    assert_eq!(rauc_alternatives(), ["/usr/bin/flipslot"]);
    match &rauc_before {
        Some(m) if !m.file_type().is_symlink() => {
            let now = std::fs::symlink_metadata(rauc).unwrap();
            assert!(
                now.file_type().is_file(),
                "RAUC's /usr/bin/rauc was replaced"
            );
        }
        _ => {
            let help = run(Command::new(rauc).arg("--help"));
            assert!(
                help.contains("flipslot answering RAUC's command line"),
                "{help}"
            );
            let page = run(Command::new("man").args(["-w", "rauc"]));
            assert_eq!(page.trim(), format!("{MAN1}rauc.1.gz"));
        }
    }
    set_rauc_alternative(false);
    assert!(rauc_alternatives().is_empty(), "{:?}", rauc_alternatives());
    assert_eq!(
        std::fs::symlink_metadata(rauc).ok().map(|m| m.file_type()),
        rauc_before.as_ref().map(|m| m.file_type())
    );

    drop(_purge);
    assert!(
        !Path::new("/usr/bin/flipslot").exists(),
        "purge left the binary"
    );
    assert!(!Path::new("/usr/bin/flipslot-image").exists());
    eprintln!(
        "{test}: install, checks and purge took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
