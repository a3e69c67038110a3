//! The U-Boot backend: RAUC's `BOOT_ORDER` / `BOOT_<bootname>_LEFT` scheme in a U-Boot
//! environment read and written natively ([`super::ubootenv`]).
//!
//! The environment holds `BOOT_ORDER` (bootnames separated by blanks, most preferred first)
//! and per bootname `BOOT_<bootname>_LEFT`, the boot attempts left, in hexadecimal without a
//! prefix (`a` is ten). The boot script walks `BOOT_ORDER`, boots the first bootname with
//! attempts left and decrements its counter before booting; userspace resets the counter
//! once the boot is judged good. The rules are RAUC's (`src/bootloaders/uboot.c`):
//!
//! - a slot is good when its bootname is in `BOOT_ORDER` and its counter is above zero
//!   (a counter is parsed like `g_ascii_strtoull(s, NULL, 16)`; missing counts as zero);
//! - marking good sets the counter to `boot-attempts`; marking bad removes the bootname
//!   from `BOOT_ORDER` and sets the counter to zero;
//! - the primary is the first configured bootname in `BOOT_ORDER` with attempts left;
//! - activating a slot puts its bootname first in `BOOT_ORDER` (the others keep their
//!   order; an unset `BOOT_ORDER` becomes the slot then the other configured bootnames in
//!   config order) and sets its counter to `boot-attempts-primary`.
//!
//! Two deliberate differences: `BOOT_ORDER` is split on any blank (as U-Boot's shell does,
//! RAUC splits on spaces only), and an unset `BOOT_ORDER` is never created by marking bad.
//!
//! U-Boot has no "trying" flag; a slot whose counter is below the larger of the two
//! configured attempt counts has had an attempt consumed by the boot script that no
//! mark-good has reset, and is reported as [`SlotBootState::Trying`]. (If
//! `boot-attempts-primary` exceeds `boot-attempts`, a committed slot therefore still reads as
//! trying; marking it good again changes nothing and writes nothing.)
//!
//! Every operation is one locked read-modify-write of the environment that keeps all other
//! variables, and writes nothing when nothing changes.

use anyhow::{bail, Result};

use super::abstate::{AbState, SlotBootState};
use super::ubootenv::{self, EnvStore, UbootEnv};
use super::Bootloader;

/// The variable holding the boot order.
pub const BOOT_ORDER: &str = "BOOT_ORDER";

/// Attempts used when `boot-attempts` or `boot-attempts-primary` is unset or zero.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// The name of the attempts counter of `bootname`.
pub fn left_var(bootname: &str) -> String {
    format!("BOOT_{bootname}_LEFT")
}

/// Parses like GLib's `g_ascii_strtoull(s, NULL, 16)`: leading blanks, an optional sign
/// (a minus negates modulo 2^64), an optional `0x`, then hex digits up to the first other
/// character; no digits is 0, overflow saturates.
pub fn parse_counter(s: &str) -> u64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_hexdigit()))
        .unwrap_or(s);
    let mut value: u64 = 0;
    for c in s.chars() {
        let Some(d) = c.to_digit(16) else { break };
        value = match value
            .checked_mul(16)
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => v,
            None => {
                value = u64::MAX;
                break;
            }
        };
    }
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

/// RAUC's U-Boot rules over an environment, as pure functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UbootPolicy {
    bootnames: Vec<String>,
    boot_attempts: u32,
    boot_attempts_primary: u32,
}

impl UbootPolicy {
    /// Rules for the configured `bootnames` (config order); zero attempts mean
    /// [`DEFAULT_ATTEMPTS`].
    pub fn new(bootnames: Vec<String>, boot_attempts: u32, boot_attempts_primary: u32) -> Self {
        let or_default = |n: u32| if n == 0 { DEFAULT_ATTEMPTS } else { n };
        UbootPolicy {
            bootnames,
            boot_attempts: or_default(boot_attempts),
            boot_attempts_primary: or_default(boot_attempts_primary),
        }
    }

    /// The configured bootnames.
    pub fn bootnames(&self) -> &[String] {
        &self.bootnames
    }

    /// The counter a mark-good writes.
    pub fn boot_attempts(&self) -> u32 {
        self.boot_attempts
    }

    /// The counter an activation writes.
    pub fn boot_attempts_primary(&self) -> u32 {
        self.boot_attempts_primary
    }

    fn order(env: &UbootEnv) -> Option<Vec<String>> {
        env.get(BOOT_ORDER)
            .map(|o| o.split_ascii_whitespace().map(str::to_string).collect())
    }

    /// The attempts left of `bootname` (missing: 0).
    pub fn left(env: &UbootEnv, bootname: &str) -> u64 {
        env.get(&left_var(bootname))
            .map_or(0, |v| parse_counter(&v))
    }

    /// RAUC's get-state: in `BOOT_ORDER` with attempts left.
    pub fn is_good(&self, env: &UbootEnv, bootname: &str) -> bool {
        Self::order(env).is_some_and(|o| o.iter().any(|b| b == bootname))
            && Self::left(env, bootname) > 0
    }

    /// Good, bad, or trying (good with an attempt consumed since the last reset).
    pub fn slot_state(&self, env: &UbootEnv, bootname: &str) -> SlotBootState {
        if !self.is_good(env, bootname) {
            SlotBootState::Bad
        } else if Self::left(env, bootname)
            < u64::from(self.boot_attempts.max(self.boot_attempts_primary))
        {
            SlotBootState::Trying
        } else {
            SlotBootState::Good
        }
    }

    /// RAUC's get-primary: the first configured bootname in `BOOT_ORDER` with attempts left.
    pub fn primary(&self, env: &UbootEnv) -> Option<String> {
        Self::order(env)?
            .into_iter()
            .find(|b| self.bootnames.contains(b) && Self::left(env, b) > 0)
    }

    /// The whole state: `order` is `BOOT_ORDER` (duplicates dropped), `ok` is good, and
    /// `tried` is trying, for every configured bootname and every bootname in the order.
    pub fn state(&self, env: &UbootEnv) -> AbState {
        let mut state = AbState::default();
        for b in Self::order(env).unwrap_or_default() {
            if !state.order.contains(&b) {
                state.order.push(b);
            }
        }
        for b in self.bootnames.iter().chain(state.order.clone().iter()) {
            let s = self.slot_state(env, b);
            state.ok.insert(b.clone(), s != SlotBootState::Bad);
            state.tried.insert(b.clone(), s == SlotBootState::Trying);
        }
        state
    }

    /// RAUC's set-state.
    pub fn set_state(&self, env: &mut UbootEnv, bootname: &str, good: bool) -> Result<()> {
        let attempts = if good {
            self.boot_attempts
        } else {
            if let Some(order) = Self::order(env) {
                let kept: Vec<String> = order.into_iter().filter(|b| b != bootname).collect();
                env.set(BOOT_ORDER, &kept.join(" "))?;
            }
            0
        };
        env.set(&left_var(bootname), &format!("{attempts:x}"))?;
        Ok(())
    }

    /// RAUC's set-primary.
    pub fn set_primary(&self, env: &mut UbootEnv, bootname: &str) -> Result<()> {
        let rest = Self::order(env).unwrap_or_else(|| self.bootnames.clone());
        let mut order = vec![bootname.to_string()];
        order.extend(rest.into_iter().filter(|b| b != bootname));
        env.set(
            &left_var(bootname),
            &format!("{:x}", self.boot_attempts_primary),
        )?;
        env.set(BOOT_ORDER, &order.join(" "))?;
        Ok(())
    }
}

/// [`Bootloader`] over a U-Boot environment.
#[derive(Debug)]
pub struct UbootBackend<S: EnvStore> {
    store: S,
    policy: UbootPolicy,
    default_env: Option<UbootEnv>,
}

impl<S: EnvStore> UbootBackend<S> {
    /// A backend on `store` for the configured `bootnames` (in config order), with RAUC's
    /// `boot-attempts` and `boot-attempts-primary` (zero means [`DEFAULT_ATTEMPTS`]).
    pub fn new(
        store: S,
        bootnames: Vec<String>,
        boot_attempts: u32,
        boot_attempts_primary: u32,
    ) -> Self {
        UbootBackend {
            store,
            policy: UbootPolicy::new(bootnames, boot_attempts, boot_attempts_primary),
            default_env: None,
        }
    }

    /// Starts from `env` when no copy of the environment is valid (like `fw_setenv -f`,
    /// e.g. with `/etc/u-boot-initial-env` parsed by [`UbootEnv::parse_text`]); without it
    /// such an environment is an error.
    #[must_use]
    pub fn with_default_env(mut self, env: UbootEnv) -> Self {
        self.default_env = Some(env);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The rules in use.
    pub fn policy(&self) -> &UbootPolicy {
        &self.policy
    }

    fn check_bootname(&self, bootname: &str) -> Result<()> {
        if !self.policy.bootnames.iter().any(|b| b == bootname) {
            bail!(
                "unknown bootname {bootname:?} (configured bootnames: {})",
                self.policy.bootnames.join(", ")
            );
        }
        Ok(())
    }

    fn env(&mut self) -> Result<UbootEnv> {
        ubootenv::store::read_env_or(&mut self.store, self.default_env.as_ref())
    }

    fn update(
        &mut self,
        bootname: &str,
        what: &str,
        change: impl FnOnce(&UbootPolicy, &mut UbootEnv) -> Result<()>,
    ) -> Result<()> {
        self.check_bootname(bootname)?;
        let policy = &self.policy;
        let mut written = Vec::new();
        let wrote = ubootenv::store::modify(&mut self.store, self.default_env.as_ref(), |env| {
            let before = env.clone();
            change(policy, env)?;
            for name in [BOOT_ORDER.to_string(), left_var(bootname)] {
                if env.get(&name) != before.get(&name) {
                    let value = env.get(&name).unwrap_or_default().into_owned();
                    written.push(format!("{name}={value}"));
                }
            }
            Ok(())
        })?;
        if wrote {
            log::info!(
                "{}: {what} {bootname}: set {}",
                self.store.describe(),
                written.join(" ")
            );
        } else {
            log::debug!(
                "{}: {bootname} already in the wanted state",
                self.store.describe()
            );
        }
        Ok(())
    }
}

impl<S: EnvStore> Bootloader for UbootBackend<S> {
    fn name(&self) -> &'static str {
        "uboot"
    }

    fn bootnames(&self) -> &[String] {
        &self.policy.bootnames
    }

    fn state(&mut self) -> Result<AbState> {
        let env = self.env()?;
        Ok(self.policy.state(&env))
    }

    fn primary(&mut self) -> Result<Option<String>> {
        let env = self.env()?;
        Ok(self.policy.primary(&env))
    }

    fn slot_state(&mut self, bootname: &str) -> Result<SlotBootState> {
        self.check_bootname(bootname)?;
        let env = self.env()?;
        Ok(self.policy.slot_state(&env, bootname))
    }

    fn mark_good(&mut self, bootname: &str) -> Result<()> {
        self.update(bootname, "mark good", |p, env| {
            p.set_state(env, bootname, true)
        })
    }

    fn mark_bad(&mut self, bootname: &str) -> Result<()> {
        self.update(bootname, "mark bad", |p, env| {
            p.set_state(env, bootname, false)
        })
    }

    fn mark_active(&mut self, bootname: &str) -> Result<()> {
        self.update(bootname, "activate", |p, env| p.set_primary(env, bootname))
    }
}

#[cfg(test)]
mod tests {
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
}
