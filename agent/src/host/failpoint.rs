//! Failpoints: named places at the irreversible steps of an install, a bootloader update
//! and a health verdict, where a test can make the agent die as if the power failed.
//!
//! Armed only through the environment variable `FLIPSLOT_FAILPOINT`, a comma-separated list
//! of `NAME:ACTION`, where ACTION is `abort` (the process aborts: safe anywhere) or
//! `poweroff` (the machine powers off at once, without syncing: meant for test VMs only).
//! Unset in production, every failpoint is a no-op. The names are listed in [`NAMES`].

/// Every failpoint, in the order an update reaches them.
pub const NAMES: &[&str] = &[
    "install-after-mark-bad",
    "install-mid-write",
    "install-before-record",
    "install-before-activate",
    "grubenv-torn-write",
    "health-before-mark-bad",
];

/// The environment variable that arms failpoints.
pub const ENV: &str = "FLIPSLOT_FAILPOINT";

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort the process.
    Abort,
    /// Power the machine off without syncing.
    PowerOff,
}

/// The action armed for `name` in a `FLIPSLOT_FAILPOINT` value (pure).
pub fn armed(spec: &str, name: &str) -> Option<Action> {
    spec.split(',').find_map(|item| {
        let (n, action) = item.trim().split_once(':')?;
        if n != name {
            return None;
        }
        match action {
            "abort" => Some(Action::Abort),
            "poweroff" => Some(Action::PowerOff),
            _ => None,
        }
    })
}

/// Whether `name` is armed in this process's environment.
pub fn is_armed(name: &str) -> Option<Action> {
    let spec = std::env::var(ENV).ok()?;
    armed(&spec, name)
}

/// Dies here if `name` is armed.
pub fn hit(name: &str) {
    if let Some(action) = is_armed(name) {
        trigger(name, action);
    }
}

/// Carries out an action (never returns).
pub fn trigger(name: &str, action: Action) {
    eprintln!("flipslot: failpoint {name} hit ({action:?})");
    match action {
        Action::Abort => std::process::abort(),
        Action::PowerOff => {
            crate::host::sys::power_cut();
            std::process::abort()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(armed("a:abort", "a"), Some(Action::Abort));
        assert_eq!(armed("x:abort, a:poweroff", "a"), Some(Action::PowerOff));
        assert_eq!(armed("a:explode", "a"), None);
        assert_eq!(armed("ab:abort", "a"), None);
        assert_eq!(armed("", "a"), None);
    }
}
