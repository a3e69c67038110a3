//! What goes on the ESP for GRUB: the boot script (`grub.cfg`) implementing RAUC's A/B
//! counting, the initial environment block (`grubenv`), and the module list for
//! `grub-mkimage`. Pure: text and bytes only. `docs/reference-grub.cfg.md` explains the script.

use super::layout::{Layout, Partition};
use super::DiskError;

/// Directory of the ESP holding GRUB, its config and its environment (the `-p` prefix).
pub const EFI_DIR: &str = "/EFI/BOOT";
/// The removable-media boot path firmware looks for on x86_64.
pub const BOOT_EFI: &str = "BOOTX64.EFI";
/// Size of a GRUB environment block.
pub const GRUBENV_SIZE: usize = 1024;
/// First line of a GRUB environment block.
pub const GRUBENV_HEADER: &str = "# GRUB Environment Block\n";

/// GRUB modules built into `BOOTX64.EFI`: GPT, the filesystems of the ESP and of slots
/// (FAT, ext2/3/4, squashfs), the normal-mode script interpreter, the Linux loader, and the
/// commands `grub.cfg` uses (`load_env`/`save_env`, `[`, `echo`, `regexp`, `halt`, `reboot`,
/// `sleep`, `true`).
pub const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "squash4",
    "normal",
    "linux",
    "loadenv",
    "test",
    "echo",
    "configfile",
    "regexp",
    "halt",
    "reboot",
    "sleep",
    "true",
];

/// The variables of the initial environment: `ORDER` is the bootnames in layout order; the
/// first slot (which receives the bundle's image) is good (`OK=1`, `TRY=0`), the others are
/// empty, hence not bootable (`OK=0`, `TRY=0`).
pub fn initial_env(layout: &Layout) -> Vec<(String, String)> {
    initial_env_for(layout, false)
}

/// [`initial_env`], or with `all_written` every slot good (`OK=1`, `TRY=0`): provisioning
/// with `--write-all-slots` writes the image into every slot, so each is a fallback from
/// the first boot.
pub fn initial_env_for(layout: &Layout, all_written: bool) -> Vec<(String, String)> {
    let bootnames = layout.bootnames();
    let mut vars = vec![("ORDER".to_string(), bootnames.join(" "))];
    for (i, bn) in bootnames.iter().enumerate() {
        let ok = if i == 0 || all_written { "1" } else { "0" };
        vars.push((format!("{bn}_OK"), ok.to_string()));
        vars.push((format!("{bn}_TRY"), "0".to_string()));
    }
    vars
}

/// Encodes a GRUB environment block as `grub-editenv` writes it (the shared codec in
/// [`flipslot_bootenv::grubenv`]): the header, one `name=value\n` line per variable, `#` padding.
pub fn grubenv_block(vars: &[(String, String)]) -> Result<Vec<u8>, DiskError> {
    let err = |e: flipslot_bootenv::grubenv::GrubEnvError| DiskError::GrubEnv {
        reason: e.to_string(),
    };
    let mut env = flipslot_bootenv::grubenv::GrubEnv::new();
    for (name, value) in vars {
        env.set(name, value).map_err(err)?;
    }
    env.encode(GRUBENV_SIZE).map_err(err)
}

/// Parses a GRUB environment block into its variables, in order.
pub fn parse_grubenv(block: &[u8]) -> Result<Vec<(String, String)>, DiskError> {
    let env = flipslot_bootenv::grubenv::GrubEnv::parse(block).map_err(|e| DiskError::GrubEnv {
        reason: e.to_string(),
    })?;
    Ok(env
        .vars()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Single-quotes a word for GRUB script (the caller guarantees it has no `'`).
fn quote(word: &str) -> String {
    format!("'{word}'")
}

/// The `linux` and `initrd` lines and the entry of one slot.
fn slot_entry(layout: &Layout, slot: &Partition, bn: &str) -> String {
    let dev = format!("(${{flipslot_disk}},gpt{})", slot.number);
    let mut linux = format!(
        "linux {dev}{} root=PARTLABEL={} flipslot.slot={bn} rauc.slot={bn}",
        layout.kernel, slot.label
    );
    for word in &layout.cmdline {
        linux.push(' ');
        linux.push_str(&quote(word));
    }
    let mut entry = format!(
        "menuentry 'flipslot slot {bn} ({label})' --id slot-{bn} {{\n    \
         echo \"flipslot: booting slot {bn} from {dev} ({label})\"\n    \
         {linux}\n",
        label = slot.label
    );
    if let Some(initrd) = &layout.initrd {
        entry.push_str(&format!("    initrd {dev}{initrd}\n"));
    }
    entry.push_str(&format!(
        "    boot\n    \
         echo \"flipslot: slot {bn} failed to load; rebooting to try the next slot in ORDER\"\n    \
         sleep 5\n    \
         reboot\n"
    ));
    entry.push_str("}\n");
    entry
}

/// Generates `grub.cfg` for `layout`. The script is explained block by block in
/// `docs/reference-grub.cfg.md`.
pub fn grub_cfg(layout: &Layout) -> String {
    let slots: Vec<(&Partition, &str)> = layout
        .slots()
        .filter_map(|p| p.bootname().map(|bn| (p, bn)))
        .collect();
    let mut vars = vec!["ORDER".to_string()];
    for (_, bn) in &slots {
        vars.push(format!("{bn}_OK"));
        vars.push(format!("{bn}_TRY"));
    }
    let var_list = vars.join(" ");
    let state: Vec<String> = vars[1..].iter().map(|v| format!("{v}=${v}")).collect();
    let mut s = String::new();
    s.push_str(
        "# flipslot A/B boot script, generated by `flipslot-image disk` or `provision`; rebuild\n\
         # rather than edit it. See docs/reference-grub.cfg.md for what each block does.\n",
    );
    s.push_str("# Slots:");
    for (p, bn) in &slots {
        s.push_str(&format!(" {bn}=gpt{} ({})", p.number, p.label));
    }
    s.push_str("\n\nset timeout=0\nset timeout_style=hidden\n");
    s.push_str("set default=nothing-bootable\n\n");
    s.push_str(
        "# The disk this ESP is on: $root is the ESP, e.g. hd0,gpt1; keep what is before the\n\
         # last comma. Slots are partitions of the same disk.\n\
         set flipslot_disk=hd0\n\
         regexp --set=1:flipslot_disk '^(.*),[^,]*$' \"$root\"\n\
         export flipslot_disk\n\n",
    );
    s.push_str(&format!(
        "# Load the A/B variables (and only them) from grubenv next to this file.\n\
         load_env {var_list}\n\n"
    ));
    s.push_str(
        "# Walk ORDER: the first bootname that is good (OK=1) and untried (TRY=0) wins. A missing\n\
         # or garbage OK is not good; a missing or garbage TRY counts as tried.\n\
         set flipslot_slot=\"\"\n\
         for bn in $ORDER; do\n    \
         if [ -z \"$flipslot_slot\" ]; then\n",
    );
    for (_, bn) in &slots {
        s.push_str(&format!(
            "        if [ \"$bn\" = \"{bn}\" -a \"${bn}_OK\" = \"1\" -a \"${bn}_TRY\" = \"0\" ]; then\n            \
             set flipslot_slot=\"{bn}\"\n        \
             fi\n"
        ));
    }
    s.push_str("    fi\ndone\n\n");
    s.push_str(
        "# Count the trial: set the winner's TRY=1 in grubenv before booting it. Userspace resets\n\
         # it to 0 once the boot is good; if it never does, the next boot skips this slot.\n",
    );
    for (_, bn) in &slots {
        s.push_str(&format!(
            "if [ \"$flipslot_slot\" = \"{bn}\" ]; then\n    \
             set {bn}_TRY=1\n    \
             if save_env {bn}_TRY; then true; else\n        \
             echo \"flipslot: WARNING: cannot save {bn}_TRY=1 to grubenv: this boot is not counted\"\n    \
             fi\n    \
             set default=slot-{bn}\n\
             fi\n"
        ));
    }
    s.push_str(&format!(
        "if [ -z \"$flipslot_slot\" ]; then\n    \
         echo \"flipslot: no bootable slot: ORDER='$ORDER' {}\"\n    \
         echo \"flipslot: every slot in ORDER is bad (OK=0) or was tried and not committed (TRY=1)\"\n\
         fi\n\n",
        state.join(" ")
    ));
    s.push_str(
        "# One entry per slot; `default` names the winner. If its kernel or initrd does not load,\n\
         # `boot` returns and the entry reboots: the winner's TRY=1 is saved, so the next boot\n\
         # tries the next slot in ORDER.\n",
    );
    for (p, bn) in &slots {
        s.push_str(&slot_entry(layout, p, bn));
    }
    s.push_str(
        "\n# Nothing is bootable: rebooting would come back here, so stop.\n\
         menuentry 'flipslot: no bootable slot' --id nothing-bootable {\n    \
         echo \"flipslot: no bootable slot; halting (repair EFI/BOOT/grubenv on the ESP, or reflash)\"\n    \
         sleep 10\n    \
         halt\n\
         }\n",
    );
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;
    use crate::disk::layout::tests::EXAMPLE;

    #[test]
    fn env_block_round_trips_and_is_padded() {
        let layout = Layout::parse(EXAMPLE, "x").unwrap();
        let vars = initial_env(&layout);
        let block = grubenv_block(&vars).unwrap();
        assert_eq!(block.len(), GRUBENV_SIZE);
        let text = std::str::from_utf8(&block).unwrap();
        assert!(text.starts_with(
            "# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n#"
        ));
        assert!(text.ends_with("####"));
        assert_eq!(parse_grubenv(&block).unwrap(), vars);
        // Every slot written: every slot good.
        let all = initial_env_for(&layout, true);
        assert_eq!(all[3], ("B_OK".to_string(), "1".to_string()));
        assert_eq!(initial_env_for(&layout, false), vars);
    }

    #[test]
    fn env_block_rejects_bad_input() {
        let v = |n: &str, val: &str| vec![(n.to_string(), val.to_string())];
        assert!(grubenv_block(&v("A=B", "1")).is_err());
        // Newlines and backslashes are escaped the way grub-editenv does, not refused.
        let escaped = grubenv_block(&v("A", "1\n\\")).unwrap();
        assert_eq!(parse_grubenv(&escaped).unwrap(), v("A", "1\n\\"));
        assert!(grubenv_block(&v("A", &"x".repeat(1000))).is_err());
        assert!(parse_grubenv(b"hello").is_err());
        assert!(parse_grubenv(b"# GRUB Environment Block\nA=1").is_err());
        assert!(parse_grubenv(b"# GRUB Environment Block\nA\n").is_err());
    }

    #[test]
    fn config_walks_order_and_counts() {
        let layout = Layout::parse(EXAMPLE, "x").unwrap();
        let cfg = grub_cfg(&layout);
        assert!(cfg.contains("set timeout=0\n"));
        assert!(cfg.contains("load_env ORDER A_OK A_TRY B_OK B_TRY\n"));
        assert!(cfg.contains("for bn in $ORDER; do\n"));
        assert!(
            cfg.contains("if [ \"$bn\" = \"B\" -a \"$B_OK\" = \"1\" -a \"$B_TRY\" = \"0\" ]; then")
        );
        assert!(cfg.contains("set A_TRY=1\n    if save_env A_TRY; then"));
        assert!(cfg.contains(
            "linux (${flipslot_disk},gpt2)/boot/vmlinuz root=PARTLABEL=rootfs-a flipslot.slot=A \
             rauc.slot=A 'console=ttyS0' 'panic=-1'\n"
        ));
        assert!(cfg.contains("initrd (${flipslot_disk},gpt3)/boot/initrd.img\n"));
        assert!(cfg.contains("--id nothing-bootable {"));
        assert!(cfg.contains("    halt\n"));
        // Every brace and quote is balanced (a cheap syntax sanity check).
        assert_eq!(cfg.matches('{').count(), cfg.matches('}').count());
        for line in cfg.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let unescaped = line.replace("\\\"", "");
            assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
            assert_eq!(line.matches('\'').count() % 2, 0, "{line}");
        }
    }

    #[test]
    fn config_without_initrd_has_no_initrd_line() {
        let text = EXAMPLE.replace("initrd = \"/boot/initrd.img\"\n", "");
        let cfg = grub_cfg(&Layout::parse(&text, "x").unwrap());
        assert!(!cfg.contains("initrd ("));
    }
}
