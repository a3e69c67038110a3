//! Tests of the layout file: parsing, defaults, and every refusal with its message.
#![allow(clippy::unwrap_used)] // tests fail by panicking

use super::*;

pub(crate) const EXAMPLE: &str = r#"
bootloader = "grub-efi"
kernel = "/boot/vmlinuz"
initrd = "/boot/initrd.img"
cmdline = "console=ttyS0 panic=-1"
boot-attempts = 1

[[partition]]
label = "esp"
role = "esp"
size = "32M"

[[partition]]
label = "rootfs-a"
role = "slot"
class = "rootfs"
bootname = "A"
size = "128M"

[[partition]]
label = "rootfs-b"
role = "slot"
class = "rootfs"
bootname = "B"
size = "128M"

[[partition]]
label = "data"
role = "data"
size = "64M"
fs = "ext4"
from = "dir"
"#;

fn err_of(text: &str) -> String {
    Layout::parse(text, "test.toml").unwrap_err().to_string()
}

fn with_parts(parts: &str) -> String {
    format!("bootloader = \"grub-efi\"\nkernel = \"/boot/vmlinuz\"\n{parts}")
}

const ESP: &str = "[[partition]]\nlabel = \"esp\"\nrole = \"esp\"\nsize = \"8M\"\n";
const SLOT_A: &str =
    "[[partition]]\nlabel = \"a\"\nrole = \"slot\"\nclass = \"rootfs\"\nbootname = \"A\"\nsize = \"8M\"\n";

#[test]
fn example_parses_and_is_placed() {
    let l = Layout::parse(EXAMPLE, "x.toml").unwrap();
    assert_eq!(l.bootloader, Bootloader::GrubEfi);
    assert_eq!(l.cmdline, ["console=ttyS0", "panic=-1"]);
    assert_eq!(l.initrd.as_deref(), Some("/boot/initrd.img"));
    let starts: Vec<(u32, u64, u64)> = l
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.size))
        .collect();
    assert_eq!(
        starts,
        [
            (1, MIB, 32 * MIB),
            (2, 33 * MIB, 128 * MIB),
            (3, 161 * MIB, 128 * MIB),
            (4, 289 * MIB, 64 * MIB)
        ]
    );
    assert_eq!(l.bootnames(), ["A", "B"]);
    assert_eq!(l.initial_slot().unwrap().label, "rootfs-a");
    assert_eq!(l.esp().unwrap().number, 1);
    assert_eq!(l.disk_size(), 354 * MIB);
    assert_eq!(
        l.partitions[3].role,
        Role::Data {
            fs: DataFs::Ext4 { from_dir: true }
        }
    );
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("32M"), Ok(32 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert!(parse_size("1X").is_err());
    assert!(parse_size("").is_err());
    assert!(parse_size("99999999999T").is_err());
    let l = Layout::parse(
        &with_parts(&format!("{ESP}{}", SLOT_A.replace("\"8M\"", "4194304"))),
        "t",
    )
    .unwrap();
    assert_eq!(l.partitions[1].size, 4 << 20);
}

#[test]
fn explicit_starts_and_overlaps() {
    let text = with_parts(&format!(
        "{ESP}{}",
        SLOT_A.replace("size = \"8M\"", "size = \"8M\"\nstart = \"4M\"")
    ));
    let e = err_of(&text);
    assert!(e.contains("overlap"), "{e}");
    assert!(e.contains("\"esp\"") && e.contains("\"a\""), "{e}");
    assert!(e.starts_with("layout test.toml: "), "{e}");
    let ok = with_parts(&format!(
        "{}{ESP}",
        SLOT_A.replace("size = \"8M\"", "size = \"8M\"\nstart = \"100M\"")
    ));
    let l = Layout::parse(&ok, "t").unwrap();
    assert_eq!(l.partitions[0].start, 100 * MIB);
    assert_eq!(l.partitions[1].start, 108 * MIB);
    let e = err_of(&with_parts(
        &SLOT_A.replace("size = \"8M\"", "size = \"8M\"\nstart = 512"),
    ));
    assert!(e.contains("at least 1M"), "{e}");
}

#[test]
fn structural_errors_are_clear() {
    let e = err_of(&with_parts(SLOT_A));
    assert!(e.contains("no partition has role = \"esp\""), "{e}");
    let e = err_of(&with_parts(ESP));
    assert!(e.contains("at least one slot"), "{e}");
    let e = err_of(&with_parts(&format!(
        "{ESP}{SLOT_A}{}",
        SLOT_A.replace("\"a\"", "\"b\"")
    )));
    assert!(
        e.contains("bootname \"A\" is used by more than one slot"),
        "{e}"
    );
    let e = err_of(&with_parts(&format!(
        "{ESP}{SLOT_A}{}",
        SLOT_A.replace("\"A\"", "\"B\"")
    )));
    assert!(e.contains("label \"a\" is used by more than one"), "{e}");
    let e = err_of(&with_parts(&format!("{ESP}{ESP}")));
    assert!(e.contains("label"), "{e}");
    let e = err_of(&with_parts(&format!(
        "{ESP}{SLOT_A}{}",
        SLOT_A
            .replace("\"a\"", "\"b\"")
            .replace("\"A\"", "\"B\"")
            .replace("rootfs", "appfs")
    )));
    assert!(e.contains("more than one class"), "{e}");
}

#[test]
fn key_errors_are_clear() {
    let e = err_of(&with_parts(&format!(
        "{ESP}{}",
        SLOT_A.replace("bootname = \"A\"\n", "")
    )));
    assert!(
        e.contains("partition 2 (\"a\"): a slot needs a bootname"),
        "{e}"
    );
    let e = err_of(&with_parts(&format!(
        "{ESP}{}",
        SLOT_A.replace("\"A\"", "\"A-1\"")
    )));
    assert!(e.contains("bootname \"A-1\""), "{e}");
    let e = err_of(&with_parts(&format!(
        "{ESP}{}",
        SLOT_A.replace("\"slot\"", "\"boot\"")
    )));
    assert!(e.contains("role \"boot\""), "{e}");
    let e = err_of(&with_parts(&format!(
        "{}{SLOT_A}",
        ESP.replace("\"8M\"", "\"8M\"\nclass = \"x\"")
    )));
    assert!(e.contains("\"class\" does not apply"), "{e}");
    let e = err_of(&with_parts(&format!(
        "{ESP}{}",
        SLOT_A.replace("\"8M\"", "\"1000\"")
    )));
    assert!(e.contains("multiple of 4096"), "{e}");
    let e = err_of(&with_parts(&format!("{ESP}{SLOT_A}colour = 1\n")));
    assert!(e.contains("colour"), "{e}");
    let e = err_of(&with_parts(&format!(
        "{}{SLOT_A}",
        ESP.replace("\"8M\"", "\"1M\"")
    )));
    assert!(e.contains("esp needs at least"), "{e}");
    let e = err_of(&format!(
        "bootloader = \"u-boot\"\nkernel = \"/k\"\n{ESP}{SLOT_A}"
    ));
    assert!(e.contains("u-boot"), "{e}");
}

#[test]
fn boot_settings_are_checked() {
    let base = format!("{ESP}{SLOT_A}");
    let e = err_of(&format!(
        "bootloader = \"grub-efi\"\nkernel = \"boot/vmlinuz\"\n{base}"
    ));
    assert!(e.contains("kernel \"boot/vmlinuz\""), "{e}");
    let e = err_of(&format!(
        "bootloader = \"grub-efi\"\nkernel = \"/boot/../vmlinuz\"\n{base}"
    ));
    assert!(e.contains("kernel"), "{e}");
    let e = err_of(&format!(
        "bootloader = \"grub-efi\"\nkernel = \"/k\"\ncmdline = \"root=/dev/sda2\"\n{base}"
    ));
    assert!(e.contains("sets root="), "{e}");
    let e = err_of(&format!(
        "bootloader = \"grub-efi\"\nkernel = \"/k\"\ncmdline = \"a='b c'\"\n{base}"
    ));
    assert!(e.contains("quotes"), "{e}");
    let e = err_of(&format!(
        "bootloader = \"grub-efi\"\nkernel = \"/k\"\nboot-attempts = 3\n{base}"
    ));
    assert!(e.contains("boot-attempts = 3 is not supported"), "{e}");
}

#[test]
fn data_partitions() {
    let data = |extra: &str| {
        with_parts(&format!(
            "{ESP}{SLOT_A}[[partition]]\nlabel = \"data\"\nrole = \"data\"\nsize = \"16M\"\n{extra}"
        ))
    };
    let l = Layout::parse(&data(""), "t").unwrap();
    assert_eq!(
        l.partitions[2].role,
        Role::Data {
            fs: DataFs::Ext4 { from_dir: false }
        }
    );
    let l = Layout::parse(&data("fs = \"none\"\n"), "t").unwrap();
    assert_eq!(l.partitions[2].role, Role::Data { fs: DataFs::None });
    assert!(err_of(&data("fs = \"xfs\"\n")).contains("xfs"));
    assert!(err_of(&data("from = \"tar\"\n")).contains("tar"));
    assert!(err_of(&data("fs = \"none\"\nfrom = \"dir\"\n")).contains("needs fs"));
}

#[test]
fn names_are_checked() {
    assert!(valid_label("rootfs-a.1_x"));
    assert!(!valid_label("root fs"));
    assert!(!valid_label(&"x".repeat(37)));
    assert!(valid_bootname("system0"));
    assert!(!valid_bootname("A B"));
    assert!(valid_boot_path("/boot/vmlinuz-6.1.0+1"));
    assert!(!valid_boot_path("/boot//x"));
    assert!(!valid_boot_path("/boot/$x"));
    assert!(!valid_boot_path("/"));
}

#[test]
fn rest_of_the_disk_is_for_provisioning_only() {
    let rest_last = EXAMPLE.replace("size = \"64M\"", "size = \"rest\"");
    let e = err_of(&rest_last);
    assert!(
        e.contains("size = \"rest\"") && e.contains("flipslot-image provision"),
        "{e}"
    );
    assert!(e.contains("partition 4 (\"data\")"), "{e}");

    let prov = |text: &str| Layout::parse_for(text, "p.toml", LayoutKind::Provisioning);
    let l = prov(&rest_last).unwrap();
    let data = &l.partitions[3];
    assert!(data.rest);
    assert_eq!((data.start, data.size), (289 * MIB, 0));
    assert!(l.partitions[..3].iter().all(|p| !p.rest));
    // A layout with fixed sizes is fine for provisioning too.
    assert!(!prov(EXAMPLE).unwrap().partitions[3].rest);

    let not_last = with_parts(&format!(
        "{ESP}[[partition]]\nlabel = \"a\"\nrole = \"slot\"\nclass = \"rootfs\"\n\
         bootname = \"A\"\nsize = \"rest\"\n[[partition]]\nlabel = \"d\"\nrole = \"data\"\n\
         size = \"8M\"\n"
    ));
    let e = prov(&not_last).unwrap_err().to_string();
    assert!(e.contains("only allowed on the last partition"), "{e}");

    let esp_last = with_parts(&format!(
        "{SLOT_A}[[partition]]\nlabel = \"esp\"\nrole = \"esp\"\nsize = \"rest\"\n"
    ));
    let e = prov(&esp_last).unwrap_err().to_string();
    assert!(e.contains("an esp needs a fixed size"), "{e}");

    let with_start = EXAMPLE.replace("size = \"32M\"", "size = \"32M\"\nstart = \"1M\"");
    assert!(Layout::parse(&with_start, "x").is_ok());
    let e = prov(&with_start).unwrap_err().to_string();
    assert!(e.contains("start is not supported for provisioning"), "{e}");
}
