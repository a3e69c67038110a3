//! Shell completions with `clap_complete`, named the way bash-completion, zsh and fish
//! look them up.

use clap::Command;
use clap_complete::Shell;
use std::path::PathBuf;

/// One completion script.
#[derive(Debug, Clone)]
pub struct Script {
    /// Where it goes below the completions directory: `bash/NAME`, `zsh/_NAME` or
    /// `fish/NAME.fish` (the file names the shells' vendor directories use).
    pub path: PathBuf,
    /// The script.
    pub text: Vec<u8>,
}

/// The bash, zsh and fish completions of `cmd`, invoked as `bin`.
pub fn scripts(cmd: &Command, bin: &str) -> Vec<Script> {
    [
        (Shell::Bash, format!("bash/{bin}")),
        (Shell::Zsh, format!("zsh/_{bin}")),
        (Shell::Fish, format!("fish/{bin}.fish")),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut cmd = cmd.clone();
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, bin, &mut text);
        Script {
            path: path.into(),
            text,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs;

    #[test]
    fn every_script_offers_every_subcommand() {
        for p in programs().into_iter().filter(|p| p.completions) {
            let subs: Vec<String> = p
                .command
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .collect();
            for s in scripts(&p.command, p.page_name) {
                let text = String::from_utf8(s.text).unwrap();
                for sub in &subs {
                    assert!(text.contains(sub.as_str()), "{}: {sub}", s.path.display());
                }
            }
        }
    }

    #[test]
    fn file_names_follow_the_shells() {
        let p = &programs()[0];
        let paths: Vec<PathBuf> = scripts(&p.command, "flipslot")
            .into_iter()
            .map(|s| s.path)
            .collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("bash/flipslot"),
                "zsh/_flipslot".into(),
                "fish/flipslot.fish".into()
            ]
        );
    }
}
