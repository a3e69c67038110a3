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
mod tests;
