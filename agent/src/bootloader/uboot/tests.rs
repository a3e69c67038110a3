use super::*;
use crate::bootloader::ubootenv::{Layout, MemEnvStore};

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn env(vars: &[(&str, &str)]) -> UbootEnv {
    let mut e = UbootEnv::new();
    for (n, v) in vars {
        e.set(n, v).unwrap();
    }
    e
}

fn pairs(e: &UbootEnv) -> Vec<(String, String)> {
    e.iter()
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

fn expect(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn ab() -> UbootPolicy {
    UbootPolicy::new(names(&["A", "B"]), 0, 0)
}

fn backend(vars: &[(&str, &str)], bootnames: &[&str]) -> UbootBackend<MemEnvStore> {
    let store = MemEnvStore::with_env(Layout::Redundant, 256, &env(vars)).unwrap();
    UbootBackend::new(store, names(bootnames), 0, 0)
}

fn stored(b: &mut UbootBackend<MemEnvStore>) -> Vec<(String, String)> {
    pairs(&b.store.env().unwrap())
}

#[test]
fn counters_parse_like_glib() {
    for (s, v) in [
        ("3", 3),
        ("a", 10),
        ("0x1F", 31),
        ("  ff", 255),
        ("+2", 2),
        ("7zz", 7),
        ("", 0),
        ("x", 0),
        ("0x", 0),
        ("-1", u64::MAX),
        ("ffffffffffffffffff", u64::MAX),
    ] {
        assert_eq!(parse_counter(s), v, "{s:?}");
    }
}

#[test]
fn get_state_and_primary() {
    let p = ab();
    let e = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "0"),
    ]);
    assert!(p.is_good(&e, "A"));
    assert!(!p.is_good(&e, "B"));
    assert_eq!(p.primary(&e).as_deref(), Some("A"));
    // Not in BOOT_ORDER: bad whatever the counter.
    let e = env(&[
        ("BOOT_ORDER", "A"),
        ("BOOT_A_LEFT", "1"),
        ("BOOT_B_LEFT", "3"),
    ]);
    assert_eq!(p.slot_state(&e, "B"), SlotBootState::Bad);
    assert_eq!(p.slot_state(&e, "A"), SlotBootState::Trying);
    // Missing counter: zero; unset order: nothing is good.
    let e = env(&[("BOOT_ORDER", "A B"), ("BOOT_B_LEFT", "2")]);
    assert!(!p.is_good(&e, "A"));
    assert_eq!(p.primary(&e).as_deref(), Some("B"));
    let e = env(&[("BOOT_A_LEFT", "3")]);
    assert_eq!(p.primary(&e), None);
    assert!(!p.is_good(&e, "A"));
    // Unconfigured names in the order are skipped; blanks of any kind split.
    let e = env(&[
        ("BOOT_ORDER", " X\tB  A "),
        ("BOOT_X_LEFT", "3"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "3"),
    ]);
    assert_eq!(p.primary(&e).as_deref(), Some("B"));
    // The primary may be trying.
    let e = env(&[
        ("BOOT_ORDER", "A B"),
        ("BOOT_A_LEFT", "1"),
        ("BOOT_B_LEFT", "3"),
    ]);
    assert_eq!(p.primary(&e).as_deref(), Some("A"));
}

#[test]
fn trying_is_below_the_larger_attempt_count() {
    let p = UbootPolicy::new(names(&["A", "B"]), 3, 5);
    let e = |left: &str| env(&[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", left)]);
    assert_eq!(p.slot_state(&e("5"), "A"), SlotBootState::Good);
    assert_eq!(p.slot_state(&e("4"), "A"), SlotBootState::Trying);
    assert_eq!(p.slot_state(&e("3"), "A"), SlotBootState::Trying);
    assert_eq!(p.slot_state(&e("0"), "A"), SlotBootState::Bad);
    assert_eq!(p.slot_state(&e("10"), "A"), SlotBootState::Good);
    assert_eq!(p.boot_attempts(), 3);
    assert_eq!(p.boot_attempts_primary(), 5);
}

#[test]
fn state_is_consistent_with_slot_state() {
    let p = UbootPolicy::new(names(&["A", "B", "C"]), 0, 0);
    let e = env(&[
        ("BOOT_ORDER", "B A B X"),
        ("BOOT_A_LEFT", "2"),
        ("BOOT_B_LEFT", "3"),
        ("BOOT_C_LEFT", "3"),
    ]);
    let s = p.state(&e);
    assert_eq!(s.order, names(&["B", "A", "X"]));
    for b in ["A", "B", "C", "X"] {
        assert_eq!(s.state(b), p.slot_state(&e, b), "{b}");
    }
    assert_eq!(s.state("A"), SlotBootState::Trying);
    assert_eq!(s.state("B"), SlotBootState::Good);
    assert_eq!(s.state("C"), SlotBootState::Bad);
}

#[test]
fn set_state_good_and_bad() {
    let p = UbootPolicy::new(names(&["A", "B"]), 0x1a, 0);
    let mut e = env(&[
        ("bootcmd", "run rauc"),
        ("BOOT_ORDER", " A  B "),
        ("BOOT_A_LEFT", "1"),
        ("BOOT_B_LEFT", "3"),
    ]);
    p.set_state(&mut e, "A", true).unwrap();
    assert_eq!(
        e.get("BOOT_A_LEFT").as_deref(),
        Some("1a"),
        "lower-case hex"
    );
    assert_eq!(
        e.get("BOOT_ORDER").as_deref(),
        Some(" A  B "),
        "order untouched"
    );
    p.set_state(&mut e, "A", false).unwrap();
    assert_eq!(
        pairs(&e),
        expect(&[
            ("bootcmd", "run rauc"),
            ("BOOT_ORDER", "B"),
            ("BOOT_A_LEFT", "0"),
            ("BOOT_B_LEFT", "3"),
        ])
    );
    p.set_state(&mut e, "B", false).unwrap();
    assert_eq!(e.get("BOOT_ORDER").as_deref(), Some(""));
    // Without BOOT_ORDER only the counter is written.
    let mut e = env(&[("BOOT_B_LEFT", "3")]);
    p.set_state(&mut e, "B", false).unwrap();
    assert_eq!(pairs(&e), expect(&[("BOOT_B_LEFT", "0")]));
}

#[test]
fn set_primary() {
    let p = UbootPolicy::new(names(&["A", "B", "C"]), 3, 5);
    let mut e = env(&[("BOOT_ORDER", "C  A B A"), ("BOOT_B_LEFT", "0")]);
    p.set_primary(&mut e, "A").unwrap();
    assert_eq!(e.get("BOOT_ORDER").as_deref(), Some("A C B"));
    assert_eq!(e.get("BOOT_A_LEFT").as_deref(), Some("5"));
    assert_eq!(
        e.get("BOOT_B_LEFT").as_deref(),
        Some("0"),
        "others untouched"
    );
    // Unset order: the slot, then the other configured bootnames in config order.
    let mut e = UbootEnv::new();
    p.set_primary(&mut e, "B").unwrap();
    assert_eq!(
        pairs(&e),
        expect(&[("BOOT_B_LEFT", "5"), ("BOOT_ORDER", "B A C")])
    );
    // Set but empty: just the slot (RAUC keeps the current order, here none).
    let mut e = env(&[("BOOT_ORDER", "")]);
    p.set_primary(&mut e, "C").unwrap();
    assert_eq!(e.get("BOOT_ORDER").as_deref(), Some("C"));
}

#[test]
fn backend_update_cycle_in_single_writes() {
    let mut b = backend(
        &[
            ("bootcmd", "run rauc"),
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ],
        &["A", "B"],
    );
    assert_eq!(b.name(), "uboot");
    assert_eq!(b.bootnames(), names(&["A", "B"]));
    assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
    // Install into B: mark it bad first, then activate it.
    b.mark_bad("B").unwrap();
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Bad);
    assert_eq!(b.store.writes.len(), 1);
    b.mark_active("B").unwrap();
    assert_eq!(b.store.writes, [1, 0], "alternating copies");
    assert_eq!(
        stored(&mut b),
        expect(&[
            ("bootcmd", "run rauc"),
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ])
    );
    assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);
    // Activating again changes nothing: no write.
    b.mark_active("B").unwrap();
    assert_eq!(b.store.writes.len(), 2);

    // The boot script consumes an attempt.
    ubootenv::store::modify(&mut b.store, None, |e| {
        e.set("BOOT_B_LEFT", "2").map_err(Into::into)
    })
    .unwrap();
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Trying);
    assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
    let s = b.state().unwrap();
    assert_eq!(s.state("B"), SlotBootState::Trying);
    assert_eq!(s.order, names(&["B", "A"]));
    b.mark_good("B").unwrap();
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);
    let writes = b.store.writes.len();
    b.mark_good("B").unwrap();
    assert_eq!(b.store.writes.len(), writes, "already good: no write");

    // Fallback: B used up its attempts.
    ubootenv::store::modify(&mut b.store, None, |e| {
        e.set("BOOT_B_LEFT", "0").map_err(Into::into)
    })
    .unwrap();
    assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Bad);
}

#[test]
fn unknown_bootname_and_no_primary() {
    let mut b = backend(&[("BOOT_ORDER", "A")], &["A", "B"]);
    let e = b.mark_active("C").unwrap_err().to_string();
    assert!(e.contains("\"C\"") && e.contains("A, B"), "{e}");
    assert!(b.slot_state("C").is_err());
    assert!(b.store.writes.is_empty());
    assert_eq!(b.primary().unwrap(), None, "A has no attempts left");
}

#[test]
fn invalid_env_is_an_error_unless_a_default_is_given() {
    let store = MemEnvStore::new(Layout::Single, vec![vec![0; 128]]);
    let mut b = UbootBackend::new(store, names(&["A", "B"]), 0, 0);
    let e = format!("{:#}", b.state().unwrap_err());
    assert!(e.contains("valid CRC"), "{e}");
    assert!(b.mark_active("A").is_err());
    assert!(b.store.writes.is_empty());

    let mut b = b.with_default_env(env(&[("bootcmd", "run rauc")]));
    assert_eq!(b.primary().unwrap(), None);
    b.mark_active("A").unwrap();
    assert_eq!(
        stored(&mut b),
        expect(&[
            ("bootcmd", "run rauc"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_ORDER", "A B"),
        ])
    );
    assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
}

#[test]
fn full_env_is_an_error_and_not_written() {
    let store = MemEnvStore::with_env(Layout::Single, 16, &env(&[("a", "1")])).unwrap();
    let mut b = UbootBackend::new(store, names(&["A", "B"]), 0, 0);
    let e = format!("{:#}", b.mark_active("A").unwrap_err());
    assert!(
        e.contains("memory environment") && e.contains("bytes"),
        "{e}"
    );
    assert!(b.store.writes.is_empty());
}
